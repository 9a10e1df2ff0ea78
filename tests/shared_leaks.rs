//! Leak check: creating, cloning, sending and dropping anonymous shared values leaves no
//! descriptor and no mapping behind.
//!
//! This file holds exactly one test, so that under `cargo test` no other test of the same
//! process opens descriptors or maps memory while it counts.

mod common;

use common::open_fds;
use multiproc::{Array, RawArray, RawValue, Value, pipe};

/// How many mappings of the crate's anonymous segments this process has.
fn shared_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:multiproc"))
        .count()
}

#[test]
fn create_clone_send_drop_cycles_leak_no_descriptor_and_no_mapping() {
    let (here, there) = pipe(true).unwrap();
    // Warm up once-per-process state.
    here.send(&Value::new(0u8).unwrap()).unwrap();
    let _: Value<u8> = there.recv().unwrap();

    let fds_before = open_fds();
    let maps_before = shared_mappings();

    for i in 0..200u64 {
        let v = Value::new(i).unwrap();
        let w = v.clone();
        *w.get_lock().unwrap() += 1;
        assert_eq!(v.get().unwrap(), i + 1);
        // Through a connection: the receiver maps its own copy.
        here.send(&v).unwrap();
        let received: Value<u64> = there.recv().unwrap();
        assert_eq!(received.get().unwrap(), i + 1);
        drop((v, w, received));

        let a = Array::<u32>::new(100).unwrap();
        a.get_lock().unwrap()[99] = 1;
        let r = RawValue::new(i).unwrap();
        r.set(r.get() + 1);
        let ra = RawArray::from_slice(&[i; 8]).unwrap();
        here.send(&(a.clone(), ra.clone())).unwrap();
        let (a2, ra2): (Array<u32>, RawArray<u64>) = there.recv().unwrap();
        assert_eq!(a2.to_vec().unwrap()[99], 1);
        assert_eq!(ra2.get(7), Some(i));
    }

    let fds_after = open_fds();
    assert_eq!(
        fds_before, fds_after,
        "descriptors leaked by 200 create/clone/send/drop cycles"
    );
    assert_eq!(
        maps_before,
        shared_mappings(),
        "mappings leaked by 200 create/clone/send/drop cycles"
    );
}

//! Leak checks for queues: queues made, passed to children and through pipes, used and
//! dropped, many times, leave no descriptor, no mapping and no zombie behind; a queue
//! cannot be made without a free descriptor, and one made before works on; and the
//! table of producers reuses the slots of processes that ended, so that more processes
//! than it has slots can use one queue over time.
//!
//! This file holds exactly one test, so that under `cargo test` no other test of the same
//! process opens descriptors or starts children while it counts.

mod common;

use common::{LONG, zombie_children};
use multiproc::{Error, GetError, Queue, StartMethod, active_children, get_context, pipe};

fn put_one(args: (Queue<u64>, u64)) {
    let (q, n) = args;
    q.put(&n).unwrap();
}

fn memfd_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:multiproc"))
        .count()
}

#[test]
fn queues_leave_no_descriptor_mapping_or_zombie_and_producer_slots_are_reused() {
    let ctx = get_context(StartMethod::Forkserver);
    // Warm up the fork server.
    ctx.spawn(put_one, (Queue::new().unwrap(), 0))
        .unwrap()
        .join()
        .unwrap();
    assert!(active_children().is_empty());
    let fds_before = common::open_fds();
    let maps_before = memfd_mappings();

    // Out of descriptors: a new queue is an error, and a queue made before works on.
    {
        let q = Queue::<u64>::new().unwrap();
        let clone = q.clone();
        let no_fds = common::DescriptorsUsedUp::leaving(0);
        assert!(matches!(Queue::<u64>::new(), Err(Error::Io(_))));
        q.put(&5).unwrap();
        assert_eq!(clone.get().unwrap(), 5);
        drop(no_fds);
    }

    for round in 0..100u64 {
        let q = Queue::<u64>::builder()
            .ring_bytes(16 << 10)
            .build()
            .unwrap();
        let (a, b) = pipe(true).unwrap();
        a.send(&q).unwrap();
        let q2: Queue<u64> = b.recv().unwrap();
        ctx.spawn(put_one, (q2.clone(), round))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), round);
        q2.put(&1).unwrap();
        assert_eq!(q.get().unwrap(), 1);
    }

    // One queue, more producer processes over time than the table has slots (256):
    // slots of ended processes are taken again, and the consumer still learns when
    // the last producer is gone.
    let q = Queue::<u64>::new().unwrap();
    for n in 0..300u64 {
        ctx.spawn(put_one, (q.clone(), n)).unwrap().join().unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), n);
    }
    q.close();
    assert!(matches!(
        q.get_timeout(LONG),
        Err(GetError::Failed(Error::NoProducers))
    ));
    drop(q);

    assert!(active_children().is_empty());
    let fds_after = common::open_fds();
    let grown: Vec<&String> = fds_after
        .iter()
        .filter(|f| !fds_before.contains(f))
        .collect();
    assert!(
        fds_after.len() <= fds_before.len(),
        "{} descriptors before, {} after; new: {grown:?}",
        fds_before.len(),
        fds_after.len()
    );
    assert_eq!(memfd_mappings(), maps_before, "queue mappings left behind");
    assert!(zombie_children().is_empty());
}

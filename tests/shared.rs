//! Shared memory: `Value`, `Array`, `RawValue`, `RawArray` shared with children,
//! exact locked increments, owner death, `SharedMemory` and `ShareableList` by name,
//! cleanup of named segments after the creator is SIGKILLed (only of the segments it
//! created), attaching only segments of this user, copies in and out at every alignment,
//! and corrupt handles.

mod common;

use std::io::ErrorKind;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use common::{CLEAN_METHODS, KillOnDrop, LONG, join_bounded};
use multiproc::{
    AcquireError, Array, Connection, Error, Lock, Process, RawArray, RawValue, ShareableList,
    SharedMemory, StartMethod, Value, pipe,
};

const FOREVER: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    flags: u32,
}

fn is_invalid_argument(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument(_))
}

fn io_kind(e: &Error) -> Option<ErrorKind> {
    match e {
        Error::Io(io) => Some(io.kind()),
        _ => None,
    }
}

fn shm_path(name: &str) -> std::path::PathBuf {
    Path::new("/dev/shm").join(name)
}

/// Polls until `/dev/shm/<name>` is gone, for at most [`LONG`]. Returns whether it went.
fn wait_unlinked(name: &str) -> bool {
    let deadline = Instant::now() + LONG;
    while shm_path(name).exists() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A name no other test (or test run) uses.
fn unique_name(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("multiproc_test_{what}_{}_{n}", std::process::id())
}

fn start_and_join(mut p: Process, what: &str) {
    p.start().unwrap();
    join_bounded(&mut p, what);
    assert_eq!(p.exitcode(), Some(0), "{what}: child failed");
}

// ---------------------------------------------------------------- child targets

fn write_value_and_array(
    (v, a, p): (Value<i64>, Array<u32>, Value<Point>),
) -> multiproc::Result<()> {
    assert_eq!(v.get()?, 7);
    v.set(-42)?;
    for (i, x) in a.get_lock()?.iter_mut().enumerate() {
        *x = i as u32 * 3;
    }
    let mut pt = p.get_lock()?;
    pt.y += 0.5;
    pt.tag = 99;
    Ok(())
}

fn increment((v, n): (Value<u64>, u32)) -> multiproc::Result<()> {
    for _ in 0..n {
        *v.get_lock()? += 1;
    }
    Ok(())
}

fn increment_array((a, n): (Array<u64>, u32)) -> multiproc::Result<()> {
    for _ in 0..n {
        let mut g = a.get_lock()?;
        g[0] += 1;
        g[1] += 2;
    }
    Ok(())
}

fn hold_lock_and_hang((v, conn): (Value<u32>, Connection)) -> multiproc::Result<()> {
    let mut g = v.get_lock()?;
    *g = 5;
    conn.send(&())?;
    thread::sleep(FOREVER);
    Ok(())
}

fn raw_round_trip((v, a): (RawValue<f64>, RawArray<u16>)) {
    assert_eq!(v.get(), 2.5);
    assert_eq!(a.to_vec(), [1, 2, 3, 4, 5]);
    v.set(-1.25);
    a.set(0, 100).unwrap();
    a.set_slice(3, &[400, 500]).unwrap();
    assert!(a.set(5, 0).is_err());
}

fn big_aligned((v, a): (Value<u128>, Array<u128>)) -> multiproc::Result<()> {
    *v.get_lock()? += 1;
    a.get_lock()?[1] = u128::MAX;
    Ok(())
}

fn value_through_connection(conn: Connection) -> multiproc::Result<()> {
    let v: Value<u64> = conn.recv()?;
    let a: RawArray<u8> = conn.recv()?;
    *v.get_lock()? += 10;
    a.set(0, b'!')?;
    conn.send(&"done")?;
    Ok(())
}

fn attach_by_name_and_write((name, size): (String, usize)) -> multiproc::Result<()> {
    let mut shm = SharedMemory::attach(&name)?;
    assert_eq!(shm.size(), size);
    assert_eq!(shm.name(), name);
    assert_eq!(&shm.buf()[..6], b"parent");
    shm.buf_mut()[..10].copy_from_slice(b"from child");
    Ok(())
}

fn write_received_shm(mut shm: SharedMemory) {
    shm.buf_mut()[0] = 0xab;
}

fn create_segments_and_hang(conn: Connection) -> multiproc::Result<()> {
    let shm = SharedMemory::create(None, 4096)?;
    let list = ShareableList::new(&[1u64, 2, 3], None)?;
    let kept = SharedMemory::create(None, 100)?;
    kept.keep_name();
    drop(kept);
    // The name of `kept` was sent too: it outlived its handle but not the process.
    conn.send(&(shm.name(), list.name()))?;
    thread::sleep(FOREVER);
    Ok(())
}

fn create_named_segments_and_hang(
    (conn, names): (Connection, Vec<String>),
) -> multiproc::Result<()> {
    let segments = names
        .iter()
        .map(|n| SharedMemory::create(Some(n), 64))
        .collect::<multiproc::Result<Vec<_>>>()?;
    conn.send(&true)?;
    thread::sleep(FOREVER);
    drop(segments);
    Ok(())
}

fn write_pattern_at((mut shm, offset, len): (SharedMemory, usize, usize)) -> multiproc::Result<()> {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ 0x5a).collect();
    shm.write_from(offset, &bytes)
}

fn create_kept_segment_and_return(conn: Connection) -> multiproc::Result<()> {
    let shm = SharedMemory::create(None, 64)?;
    shm.keep_name();
    conn.send(&shm.name())?;
    Ok(())
}

fn bump_list(name: String) -> multiproc::Result<()> {
    let mut list = ShareableList::<Point>::attach(&name)?;
    assert_eq!(list.len(), 3);
    let mut p = list.get(1).unwrap();
    p.x *= 10.0;
    list.set(1, p)?;
    assert!(list.set(3, p).is_err());
    assert!(ShareableList::<u64>::attach(&name).is_err());
    Ok(())
}

fn bump_received_list(mut list: ShareableList<u32>) -> multiproc::Result<()> {
    let last = list.len() - 1;
    list.set(last, 77)?;
    Ok(())
}

// ---------------------------------------------------------------- Value and Array

#[test]
fn value_and_array_are_shared_with_children() {
    for method in CLEAN_METHODS {
        let v = Value::new(7i64).unwrap();
        let a = Array::<u32>::new(10).unwrap();
        let origin = Point {
            x: 1.0,
            y: 2.0,
            tag: 3,
            flags: 4,
        };
        let p = Value::new(origin).unwrap();
        start_and_join(
            Process::new(write_value_and_array, (v.clone(), a.clone(), p.clone()))
                .start_method(method),
            &format!("{method}"),
        );
        assert_eq!(v.get().unwrap(), -42, "{method}");
        assert_eq!(
            a.to_vec().unwrap(),
            (0..10).map(|i| i * 3).collect::<Vec<u32>>(),
            "{method}"
        );
        assert_eq!(
            p.get().unwrap(),
            Point {
                y: 2.5,
                tag: 99,
                ..origin
            },
            "{method}"
        );
    }
}

#[test]
fn locked_increments_from_two_processes_are_exact() {
    // 2 x 200,000, as the benchmark does: contention is real, the count must be exact.
    const N: u32 = 200_000;
    for method in CLEAN_METHODS {
        let v = Value::new(0u64).unwrap();
        let mut children: Vec<Process> = (0..2)
            .map(|_| Process::new(increment, (v.clone(), N)).start_method(method))
            .collect();
        for c in &mut children {
            c.start().unwrap();
        }
        for c in &mut children {
            join_bounded(c, "incrementer");
            assert_eq!(c.exitcode(), Some(0), "{method}");
        }
        assert_eq!(v.get().unwrap(), 2 * u64::from(N), "{method}");
    }
}

#[test]
fn locked_array_updates_from_two_processes_are_exact() {
    const N: u32 = 5_000;
    let a = Array::from_slice(&[0u64, 0]).unwrap();
    let mut children: Vec<Process> = (0..2)
        .map(|_| {
            Process::new(increment_array, (a.clone(), N)).start_method(StartMethod::Forkserver)
        })
        .collect();
    for c in &mut children {
        c.start().unwrap();
    }
    // The parent takes part too.
    increment_array((a.clone(), N)).unwrap();
    for c in &mut children {
        join_bounded(c, "array incrementer");
        assert_eq!(c.exitcode(), Some(0));
    }
    assert_eq!(a.to_vec().unwrap(), [3 * u64::from(N), 6 * u64::from(N)]);
}

#[test]
fn value_lock_is_not_reentrant_and_times_out() {
    let v = Value::new(1u8).unwrap();
    let g = v.get_lock().unwrap();
    assert!(matches!(v.try_get_lock(), Err(AcquireError::AlreadyHeld)));
    assert!(
        v.get().is_err(),
        "a second lock in the holding thread must not wait"
    );
    let other = v.clone();
    let waited = thread::spawn(move || {
        let r = other.get_lock_timeout(Duration::from_millis(50));
        matches!(r, Err(AcquireError::Timeout))
    })
    .join()
    .unwrap();
    assert!(waited, "another thread got a held lock");
    drop(g);
    assert_eq!(v.get().unwrap(), 1);
    let a = Array::<u8>::new(2).unwrap();
    let held = a.get_lock().unwrap();
    assert!(matches!(a.try_get_lock(), Err(AcquireError::AlreadyHeld)));
    drop(held);
    assert!(a.try_get_lock().is_ok());
}

#[test]
fn a_value_whose_lock_holder_was_killed_reports_owner_died_until_marked_consistent() {
    for method in CLEAN_METHODS {
        let v = Value::new(0u32).unwrap();
        let (here, there) = pipe(true).unwrap();
        let mut p =
            KillOnDrop(Process::new(hold_lock_and_hang, (v.clone(), there)).start_method(method));
        p.0.start().unwrap();
        here.recv_timeout::<()>(LONG).unwrap();
        p.0.kill().unwrap();
        join_bounded(&mut p.0, "lock holder");
        match v.get_lock_timeout(LONG) {
            Err(AcquireError::OwnerDied(mut g)) => {
                assert_eq!(*g, 5, "{method}: the dead owner's write is visible");
                *g = 6;
            }
            other => panic!("{method}: expected OwnerDied, got {other:?}"),
        }
        // Dropped without repair (what `?` does): everyone is still told, `get` too.
        assert!(matches!(v.get(), Err(Error::OwnerDied)), "{method}");
        match v.try_get_lock() {
            Err(AcquireError::OwnerDied(g)) => {
                assert_eq!(*g, 6);
                g.mark_consistent();
            }
            other => panic!("{method}: expected OwnerDied again, got {other:?}"),
        }
        // Repaired: the next acquisitions are clean ones.
        assert_eq!(*v.get_lock().unwrap(), 6);
        assert_eq!(v.get().unwrap(), 6);
    }
}

#[test]
fn value_and_array_lock_timeouts_of_duration_max_wait_without_panicking() {
    let v = Value::new(3u16).unwrap();
    assert_eq!(*v.get_lock_timeout(Duration::MAX).unwrap(), 3);
    let a = Array::from_slice(&[1i8, 2]).unwrap();
    assert_eq!(&*a.get_lock_timeout(Duration::MAX).unwrap(), &[1, 2]);
    // Contended: the waiter sleeps with no deadline until the holder lets go.
    let held = v.get_lock().unwrap();
    let other = v.clone();
    let waiter = thread::spawn(move || other.get_lock_timeout(Duration::MAX).map(|g| *g).ok());
    thread::sleep(Duration::from_millis(150));
    drop(held);
    assert_eq!(waiter.join().unwrap(), Some(3));
}

#[test]
fn over_aligned_items_round_trip() {
    let v = Value::new(u128::MAX - 5).unwrap();
    let a = Array::from_slice(&[1u128, 2, 3]).unwrap();
    start_and_join(
        Process::new(big_aligned, (v.clone(), a.clone())).start_method(StartMethod::Forkserver),
        "big_aligned",
    );
    assert_eq!(v.get().unwrap(), u128::MAX - 4);
    assert_eq!(a.to_vec().unwrap(), [1, u128::MAX, 3]);
}

#[test]
fn values_travel_through_a_connection() {
    let (here, there) = pipe(true).unwrap();
    let mut p =
        KillOnDrop(Process::new(value_through_connection, there).start_method(StartMethod::Spawn));
    p.0.start().unwrap();
    let v = Value::new(5u64).unwrap();
    let a = RawArray::from_slice(b"?abc").unwrap();
    here.send(&v).unwrap();
    here.send(&a).unwrap();
    assert_eq!(here.recv_timeout::<String>(LONG).unwrap(), "done");
    join_bounded(&mut p.0, "value_through_connection");
    assert_eq!(p.0.exitcode(), Some(0));
    assert_eq!(v.get().unwrap(), 15);
    assert_eq!(a.to_vec(), b"!abc");
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Value<Point>>();
    check::<Array<u8>>();
    check::<RawValue<f32>>();
    check::<RawArray<i64>>();
    check::<SharedMemory>();
    check::<ShareableList<u16>>();
}

#[test]
fn zero_sized_items_are_refused() {
    assert!(Value::new(()).is_err());
    assert!(RawValue::new(()).is_err());
    assert!(Array::<()>::new(3).is_err());
    assert!(RawArray::<()>::from_slice(&[(), ()]).is_err());
    assert!(ShareableList::<()>::new(&[()], None).is_err());
}

// ---------------------------------------------------------------- raw types

#[test]
fn raw_value_and_raw_array_round_trip() {
    let v = RawValue::new(2.5f64).unwrap();
    let a = RawArray::from_slice(&[1u16, 2, 3, 4, 5]).unwrap();
    for method in CLEAN_METHODS {
        v.set(2.5);
        a.set_slice(0, &[1, 2, 3, 4, 5]).unwrap();
        start_and_join(
            Process::new(raw_round_trip, (v.clone(), a.clone())).start_method(method),
            &format!("raw {method}"),
        );
        assert_eq!(v.get(), -1.25, "{method}");
        assert_eq!(a.to_vec(), [100, 2, 3, 400, 500], "{method}");
    }
}

#[test]
fn raw_array_access_is_bounds_checked() {
    let a = RawArray::<i32>::new(4).unwrap();
    assert_eq!(a.len(), 4);
    assert!(!a.is_empty());
    assert_eq!(a.to_vec(), [0; 4]);
    a.set(3, -9).unwrap();
    assert_eq!(a.get(3), Some(-9));
    assert_eq!(a.get(4), None);
    assert!(is_invalid_argument(&a.set(4, 1).unwrap_err()));
    assert_eq!(a.get_slice(..), Some(vec![0, 0, 0, -9]));
    assert_eq!(a.get_slice(2..=3), Some(vec![0, -9]));
    assert_eq!(a.get_slice(4..), Some(vec![]));
    assert_eq!(a.get_slice(3..5), None);
    let (hi, lo) = (3, 2);
    assert_eq!(a.get_slice(hi..lo), None);
    assert!(a.set_slice(2, &[1, 2, 3]).is_err());
    assert!(a.set_slice(usize::MAX, &[1]).is_err());
    a.set_slice(1, &[7, 8]).unwrap();
    assert_eq!(a.to_vec(), [0, 7, 8, -9]);

    let empty = RawArray::<u64>::new(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.get(0), None);
    assert_eq!(empty.to_vec(), Vec::<u64>::new());
    let empty_locked = Array::<u64>::new(0).unwrap();
    assert!(empty_locked.get_lock().unwrap().is_empty());

    // Clones share the memory.
    let b = a.clone();
    b.set(0, 1).unwrap();
    assert_eq!(a.get(0), Some(1));
}

// ---------------------------------------------------------------- SharedMemory

#[test]
fn shared_memory_created_here_is_attached_by_name_in_a_child() {
    for method in CLEAN_METHODS {
        let mut shm = SharedMemory::create(None, 10_000).unwrap();
        assert!(shm.name().starts_with("psm_"), "{}", shm.name());
        assert_eq!(shm.size(), 10_000);
        assert!(shm.buf().iter().all(|&b| b == 0));
        assert!(shm_path(shm.name()).exists());
        shm.buf_mut()[..6].copy_from_slice(b"parent");
        start_and_join(
            Process::new(attach_by_name_and_write, (shm.name().to_string(), 10_000))
                .start_method(method),
            &format!("attach {method}"),
        );
        assert_eq!(&shm.buf()[..10], b"from child");
        let name = shm.name().to_string();
        drop(shm);
        assert!(
            !shm_path(&name).exists(),
            "the creator's handle left {name}"
        );
    }
}

#[test]
fn shared_memory_with_a_chosen_name() {
    let name = unique_name("chosen");
    let shm = SharedMemory::create(Some(&name), 123).unwrap();
    assert_eq!(shm.name(), name);
    assert_eq!(shm.size(), 123);
    assert_eq!(
        io_kind(&SharedMemory::create(Some(&name), 5).unwrap_err()),
        Some(ErrorKind::AlreadyExists)
    );
    // A leading slash, as Python accepts, names the same segment.
    let other = SharedMemory::attach(&format!("/{name}")).unwrap();
    assert_eq!(other.size(), 123);
    assert_eq!(other.name(), name);
    drop(other); // an attached handle leaves the name alone
    assert!(shm_path(&name).exists());
    drop(shm);
    assert!(!shm_path(&name).exists());

    for bad in ["", "/", "a/b", "nul\0", ".", "..", &"x".repeat(300)] {
        assert!(
            is_invalid_argument(&SharedMemory::create(Some(bad), 8).unwrap_err()),
            "{bad:?}"
        );
    }
    assert!(is_invalid_argument(
        &SharedMemory::create(None, 0).unwrap_err()
    ));
    assert_eq!(
        io_kind(&SharedMemory::attach(&unique_name("missing")).unwrap_err()),
        Some(ErrorKind::NotFound)
    );
}

#[test]
fn unlink_keep_name_and_persist() {
    // unlink: the name goes, the mapping stays usable.
    let mut shm = SharedMemory::create(None, 4096).unwrap();
    let name = shm.name().to_string();
    let attached = SharedMemory::attach(&name).unwrap();
    shm.unlink().unwrap();
    assert!(!shm_path(&name).exists());
    assert_eq!(
        io_kind(&shm.unlink().unwrap_err()),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        io_kind(&SharedMemory::attach(&name).unwrap_err()),
        Some(ErrorKind::NotFound)
    );
    shm.buf_mut()[0] = 42;
    assert_eq!(attached.buf()[0], 42);
    shm.close();
    attached.close();

    // keep_name: the name outlives the handle; anyone may unlink it.
    let shm = SharedMemory::create(None, 64).unwrap();
    let name = shm.name().to_string();
    shm.keep_name();
    shm.close();
    assert!(shm_path(&name).exists());
    SharedMemory::attach(&name).unwrap().unlink().unwrap();
    assert!(!shm_path(&name).exists());

    // persist: likewise (and it would outlive this process).
    let shm = SharedMemory::create(None, 64).unwrap();
    let name = shm.name().to_string();
    shm.persist();
    drop(shm);
    let again = SharedMemory::attach(&name).unwrap();
    assert_eq!(again.size(), 64);
    again.unlink().unwrap();
    assert!(!shm_path(&name).exists());
}

#[test]
fn shared_memory_travels_in_arguments_even_after_unlink() {
    let shm = SharedMemory::create(None, 16).unwrap();
    let attached = SharedMemory::attach(shm.name()).unwrap();
    shm.unlink().unwrap();
    start_and_join(
        Process::new(write_received_shm, attached).start_method(StartMethod::Spawn),
        "write_received_shm",
    );
    assert_eq!(shm.buf()[0], 0xab);
}

/// A named segment whose creator is SIGKILLed is unlinked by the library's tracker.
#[test]
fn named_segments_of_a_sigkilled_creator_are_unlinked() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = KillOnDrop(Process::new(create_segments_and_hang, there).start_method(method));
        p.0.start().unwrap();
        let (shm_name, list_name): (String, String) = here.recv_timeout(LONG).unwrap();
        assert!(shm_path(&shm_name).exists(), "{method}: {shm_name} missing");
        assert!(
            shm_path(&list_name).exists(),
            "{method}: {list_name} missing"
        );
        p.0.kill().unwrap();
        join_bounded(&mut p.0, "creator");
        assert_eq!(p.0.exitcode(), Some(-9));
        assert!(
            wait_unlinked(&shm_name),
            "{method}: {shm_name} still in /dev/shm {LONG:?} after its creator was killed"
        );
        assert!(
            wait_unlinked(&list_name),
            "{method}: {list_name} still in /dev/shm {LONG:?} after its creator was killed"
        );
    }
}

/// A forked child does not use its parent's tracker: a name it keeps is removed once
/// the child has ended, while the parent still runs.
#[test]
fn a_forked_child_tracks_its_own_segments() {
    // The parent's tracker exists before the fork.
    let mine = SharedMemory::create(None, 64).unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut p = KillOnDrop(
        Process::new(create_kept_segment_and_return, there).start_method(StartMethod::Fork),
    );
    p.0.start().unwrap();
    let name: String = here.recv_timeout(LONG).unwrap();
    join_bounded(&mut p.0, "forked creator");
    assert_eq!(p.0.exitcode(), Some(0));
    assert!(
        wait_unlinked(&name),
        "{name} outlived the forked child that created it"
    );
    assert!(shm_path(mine.name()).exists());
}

/// Replaces `/dev/shm/<name>` by a file of someone else's with `contents`.
fn recreate_under(name: &str, contents: &[u8]) {
    std::fs::remove_file(shm_path(name)).unwrap();
    std::fs::write(shm_path(name), contents).unwrap();
}

#[test]
fn a_segment_recreated_under_the_name_is_left_alone_by_the_creator_and_unlink() {
    let name = unique_name("recreated");
    let shm = SharedMemory::create(Some(&name), 64).unwrap();
    let attached = SharedMemory::attach(&name).unwrap();
    recreate_under(&name, b"someone else's");
    // The creator's handle, dropped: the name now names another file, which stays.
    drop(shm);
    assert_eq!(std::fs::read(shm_path(&name)).unwrap(), b"someone else's");
    // An explicit unlink through a handle of the old segment leaves it too.
    assert_eq!(
        io_kind(&attached.unlink().unwrap_err()),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(std::fs::read(shm_path(&name)).unwrap(), b"someone else's");
    std::fs::remove_file(shm_path(&name)).unwrap();
}

/// The tracker of a SIGKILLed creator removes the names it still owns, but not one that
/// someone removed and created again meanwhile.
#[test]
fn the_tracker_leaves_a_segment_recreated_under_a_killed_creators_name() {
    let (here, there) = pipe(true).unwrap();
    // The tracker unlinks in name order: once `theirs` (sorted after) is gone, the
    // tracker has dealt with `mine` too.
    let mine = unique_name("tracked_a");
    let theirs = unique_name("tracked_b");
    assert!(mine < theirs);
    let mut p = KillOnDrop(Process::new(
        create_named_segments_and_hang,
        (there, vec![mine.clone(), theirs.clone()]),
    ));
    p.0.start().unwrap();
    assert!(here.recv_timeout::<bool>(LONG).unwrap());
    recreate_under(&mine, b"someone else's");
    p.0.kill().unwrap();
    join_bounded(&mut p.0, "creator");
    assert!(
        wait_unlinked(&theirs),
        "{theirs} still in /dev/shm {LONG:?} after its creator was killed"
    );
    assert_eq!(
        std::fs::read(shm_path(&mine)).ok().as_deref(),
        Some(&b"someone else's"[..]),
        "the tracker removed a segment its creator did not create"
    );
    std::fs::remove_file(shm_path(&mine)).unwrap();
}

#[test]
fn attach_refuses_a_segment_owned_by_another_user() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: changing a segment's owner needs root");
        return;
    }
    let name = unique_name("foreign");
    let shm = SharedMemory::create(Some(&name), 64).unwrap();
    std::os::unix::fs::chown(shm_path(&name), Some(65534), Some(65534)).unwrap();
    let err = SharedMemory::attach(&name).unwrap_err();
    assert_eq!(io_kind(&err), Some(ErrorKind::PermissionDenied), "{err:?}");
    assert!(err.to_string().contains("65534"), "{err}");
    assert!(ShareableList::<u8>::attach(&name).is_err());
    // Its creator's handle still removes it: it is still the segment it created.
    drop(shm);
    assert!(!shm_path(&name).exists());
}

#[test]
fn attach_does_not_follow_a_symbolic_link_under_the_name() {
    let target = SharedMemory::create(None, 64).unwrap();
    let name = unique_name("link");
    std::os::unix::fs::symlink(shm_path(target.name()), shm_path(&name)).unwrap();
    let attached = SharedMemory::attach(&name);
    std::fs::remove_file(shm_path(&name)).unwrap();
    assert!(attached.is_err(), "attached through a link: {attached:?}");
}

#[test]
fn copies_in_and_out_of_shared_memory_give_the_right_bytes_at_every_alignment() {
    const SIZE: usize = 200;
    let mut shm = SharedMemory::create(None, SIZE).unwrap();
    let mut model = vec![0u8; SIZE];
    let mut stamp = 0u8;
    for offset in 0..24 {
        for len in 0..48 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    stamp = stamp.wrapping_add(37);
                    stamp
                })
                .collect();
            shm.write_from(offset, &bytes).unwrap();
            model[offset..offset + len].copy_from_slice(&bytes);
            let mut back = vec![0xee; len];
            shm.read_into(offset, &mut back).unwrap();
            assert_eq!(back, bytes, "offset {offset}, {len} bytes");
        }
        let mut all = vec![0u8; SIZE];
        shm.read_into(0, &mut all).unwrap();
        assert_eq!(all, model, "after writes at offset {offset}");
    }
    assert_eq!(shm.buf(), &model[..]);
    let mut one = [0u8; 1];
    for (offset, len) in [(SIZE, 1), (SIZE - 3, 4), (usize::MAX, 1)] {
        assert!(is_invalid_argument(
            &shm.read_into(offset, &mut vec![0; len]).unwrap_err()
        ));
        assert!(is_invalid_argument(
            &shm.write_from(offset, &vec![0; len]).unwrap_err()
        ));
    }
    shm.read_into(SIZE - 1, &mut one).unwrap();
    assert_eq!(one[0], model[SIZE - 1]);
    shm.read_into(SIZE, &mut []).unwrap();

    // A bulk copy, written by a child, read into destinations of every alignment.
    const BULK: usize = 9 << 20;
    let big = SharedMemory::create(None, BULK + 64).unwrap();
    let (offset, len) = (3, BULK + 50);
    start_and_join(
        Process::new(
            write_pattern_at,
            (SharedMemory::attach(big.name()).unwrap(), offset, len),
        ),
        "write_pattern_at",
    );
    let expected: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ 0x5a).collect();
    let mut dst = vec![0u8; len + 16];
    // Every shift: some make the destination word-aligned where the source is, which
    // takes the streaming path of large copies.
    for shift in 0..16 {
        dst.fill(0);
        big.read_into(offset, &mut dst[shift..shift + len]).unwrap();
        assert!(
            dst[shift..shift + len] == expected[..],
            "bulk copy into a destination shifted by {shift}"
        );
        assert!(
            dst[..shift]
                .iter()
                .chain(&dst[shift + len..])
                .all(|&b| b == 0)
        );
    }

    // RawArray's copies go the same way.
    let a = RawArray::<u8>::new(100).unwrap();
    let mut model = vec![0u8; 100];
    for start in 0..20 {
        for len in 0..30 {
            let items: Vec<u8> = (0..len).map(|i| (start * 7 + i * 3) as u8).collect();
            a.set_slice(start, &items).unwrap();
            model[start..start + len].copy_from_slice(&items);
            assert_eq!(a.get_slice(start..start + len), Some(items));
        }
    }
    assert_eq!(a.to_vec(), model);
    for (i, &x) in model.iter().enumerate() {
        assert_eq!(a.get(i), Some(x));
    }
    let points = RawArray::<Point>::new(5).unwrap();
    let p = Point {
        x: -1.5,
        y: 2.25,
        tag: 0xdead_beef,
        flags: 7,
    };
    points.set(3, p).unwrap();
    assert_eq!(points.get(3), Some(p));
    assert_eq!(points.get_slice(2..4), Some(vec![Point::zeroed(), p]));
}

#[test]
fn a_value_lock_timeout_of_duration_max_waits_instead_of_panicking() {
    let v = Value::new(1u8).unwrap();
    *v.get_lock_timeout(Duration::MAX).unwrap() += 1;
    assert_eq!(v.get().unwrap(), 2);
    let a = Array::<u8>::new(2).unwrap();
    a.get_lock_timeout(Duration::MAX).unwrap()[1] = 9;
    assert_eq!(a.to_vec().unwrap(), [0, 9]);
}

// ---------------------------------------------------------------- ShareableList

#[test]
fn shareable_list_attached_by_name_in_a_child() {
    let items = [
        Point {
            x: 1.0,
            y: 1.0,
            tag: 1,
            flags: 0,
        },
        Point {
            x: 2.0,
            y: 2.0,
            tag: 2,
            flags: 0,
        },
        Point {
            x: 3.0,
            y: 3.0,
            tag: 3,
            flags: 0,
        },
    ];
    let list = ShareableList::new(&items, None).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.get(2), Some(items[2]));
    assert_eq!(list.get(3), None);
    start_and_join(
        Process::new(bump_list, list.name().to_string()).start_method(StartMethod::Spawn),
        "bump_list",
    );
    assert_eq!(list.get(1).unwrap().x, 20.0);
    assert_eq!(list.to_vec()[0], items[0]);
    assert_eq!(list.shm().name(), list.name());
    let name = list.name().to_string();
    drop(list);
    assert!(!shm_path(&name).exists());
}

#[test]
fn shareable_list_travels_in_arguments_and_checks_its_header() {
    let name = unique_name("list");
    let list = ShareableList::new(&[5u32, 6, 7], Some(&name)).unwrap();
    assert_eq!(list.name(), name);
    start_and_join(
        Process::new(
            bump_received_list,
            ShareableList::<u32>::attach(&name).unwrap(),
        )
        .start_method(StartMethod::Forkserver),
        "bump_received_list",
    );
    assert_eq!(list.to_vec(), [5, 6, 77]);

    // Wrong item type, or a segment that is not a list.
    assert!(is_invalid_argument(
        &ShareableList::<u64>::attach(&name).unwrap_err()
    ));
    assert!(is_invalid_argument(
        &ShareableList::<u16>::attach(&name).unwrap_err()
    ));
    let plain = SharedMemory::create(None, 4096).unwrap();
    assert!(ShareableList::<u32>::attach(plain.name()).is_err());
    let tiny = SharedMemory::create(None, 3).unwrap();
    assert!(ShareableList::<u32>::attach(tiny.name()).is_err());
    let empty = ShareableList::<u8>::new(&[], None).unwrap();
    assert!(empty.is_empty());
    assert_eq!(ShareableList::<u8>::attach(empty.name()).unwrap().len(), 0);
}

// ---------------------------------------------------------------- corrupt handles

/// Sends `value`, receives it as `T`, and expects a decode error.
fn refused_as<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    value: &impl serde::Serialize,
    what: &str,
) {
    let (a, b) = pipe(true).unwrap();
    a.send(value).unwrap();
    match b.recv_timeout::<T>(LONG) {
        Err(Error::Decode(_)) => {}
        other => panic!("{what}: expected a decode error, got {other:?}"),
    }
}

#[test]
fn mismatched_handles_are_decode_errors() {
    refused_as::<Value<u64>>(&Value::new(1u32).unwrap(), "Value<u32> as Value<u64>");
    refused_as::<Array<u16>>(&Array::<u32>::new(4).unwrap(), "Array<u32> as Array<u16>");
    refused_as::<Value<u8>>(&Array::<u8>::new(4).unwrap(), "Array<u8> as Value<u8>");
    refused_as::<RawValue<u8>>(&RawArray::<u8>::new(4).unwrap(), "RawArray as RawValue");
    // Same header, other layout: the segment's length gives it away.
    refused_as::<Array<u8>>(&RawArray::<u8>::new(4).unwrap(), "RawArray as Array");
    refused_as::<RawArray<u8>>(&Array::<u8>::new(4).unwrap(), "Array as RawArray");
    refused_as::<RawValue<u32>>(&Value::new(1u32).unwrap(), "Value as RawValue");
    refused_as::<Value<u32>>(&RawValue::new(1u32).unwrap(), "RawValue as Value");
    refused_as::<Value<u32>>(&Lock::new().unwrap(), "Lock as Value");
    // A handle whose descriptor is a socket, not shared memory.
    let (x, _y) = pipe(true).unwrap();
    refused_as::<Value<u32>>(&(x, 4u8, 1u8), "socket as Value");
    refused_as::<SharedMemory>(&Lock::new().unwrap(), "Lock as SharedMemory");
    let plain = SharedMemory::create(None, 64).unwrap();
    refused_as::<ShareableList<u32>>(
        &SharedMemory::attach(plain.name()).unwrap(),
        "plain segment as ShareableList",
    );
}

#[test]
fn corrupt_bytes_are_decode_errors_not_panics() {
    // Deterministic pseudo-random bytes: no descriptors travel with them, so every
    // handle type must refuse them (and none may panic or hang).
    let (a, b) = pipe(true).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let check = |bytes: &[u8]| {
        macro_rules! refuse {
            ($($t:ty),*) => {$(
                a.send_bytes(bytes).unwrap();
                assert!(b.recv_timeout::<$t>(LONG).is_err(), "{} from {bytes:?}", stringify!($t));
            )*};
        }
        refuse!(
            Value<u32>,
            Array<u64>,
            RawValue<i8>,
            RawArray<Point>,
            SharedMemory,
            ShareableList<u16>
        );
    };
    check(&[]);
    check(&[0, 4, 1]);
    check(&[
        0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ]);
    for _ in 0..300 {
        let len = (next() % 24) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        check(&bytes);
    }
}

/// A segment larger than the machine's memory is mapped, not committed: creating one
/// is an answer (here a mapping whose pages come as touched), never the out-of-memory
/// killer.
#[test]
fn creating_a_segment_larger_than_memory_does_not_commit_it() {
    let len = 1usize << 40; // 1 TiB
    match multiproc::RawArray::<u8>::new(len) {
        Ok(a) => {
            assert_eq!(a.len(), len);
            a.set(len - 1, 7).unwrap();
            assert_eq!(a.get(len - 1), Some(7));
        }
        Err(e) => println!("refused: {e}"),
    }
}

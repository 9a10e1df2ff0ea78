//! Anonymous shared memory cannot be pulled away by a peer: the segments behind `Value`,
//! `Lock`, `RawArray` and the other primitives are sealed at their size, so a process
//! holding one cannot truncate (or grow) it, and a received segment without those seals
//! is refused with a decode error instead of being mapped.
//!
//! Timing: none; each test ends by itself (children are joined within `LONG`).

mod common;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use common::{CLEAN_METHODS, LONG};
use multiproc::{Connection, Error, Lock, RawArray, RawValue, Value, pipe};
use rustix::fs::{MemfdFlags, SealFlags};

/// EPERM: what `ftruncate` answers on a sealed segment.
const EPERM: i32 = 1;

/// The descriptors of this process that are the crate's anonymous segments, as paths
/// that open the segment again (`/proc/self/fd/N`).
fn segment_fds() -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_link(p).is_ok_and(|t| t.to_string_lossy().contains("memfd:multiproc"))
        })
        .collect()
}

/// Child: tries to shrink, then to grow, every segment it received. Returns, per
/// segment, the OS error of each attempt (`None`: it succeeded).
fn try_to_resize_received(
    (value, lock, raw): (Value<u64>, Lock, RawArray<u8>),
) -> Vec<(String, Option<i32>, Option<i32>)> {
    let outcomes = segment_fds()
        .into_iter()
        .map(|path| {
            let file = std::fs::OpenOptions::new().write(true).open(&path);
            let (shrink, grow) = match file {
                Ok(f) => (
                    f.set_len(0).err().and_then(|e| e.raw_os_error()),
                    f.set_len(1 << 20).err().and_then(|e| e.raw_os_error()),
                ),
                Err(e) => (e.raw_os_error(), e.raw_os_error()),
            };
            (path.display().to_string(), shrink, grow)
        })
        .collect();
    drop((value, lock, raw));
    outcomes
}

#[test]
fn a_child_cannot_truncate_a_received_value_or_lock_and_the_parent_keeps_working() {
    for method in CLEAN_METHODS {
        let value = Value::new(41u64).unwrap();
        let lock = Lock::new().unwrap();
        let raw = RawArray::from_slice(&[7u8; 100]).unwrap();
        let outcomes = multiproc::get_context(method)
            .spawn(
                try_to_resize_received,
                (value.clone(), lock.clone(), raw.clone()),
            )
            .unwrap()
            .join()
            .unwrap();
        // Checked before this process touches the memory: had a truncation succeeded,
        // that touch would be a SIGBUS.
        assert!(
            outcomes.len() >= 3,
            "{method}: the child saw {} segments, not the 3 it received: {outcomes:?}",
            outcomes.len()
        );
        for (fd, shrink, grow) in &outcomes {
            assert_eq!(
                *shrink,
                Some(EPERM),
                "{method}: shrinking {fd} was not refused"
            );
            assert_eq!(*grow, Some(EPERM), "{method}: growing {fd} was not refused");
        }
        *value.get_lock().unwrap() += 1;
        assert_eq!(value.get().unwrap(), 42);
        drop(lock.acquire().unwrap());
        assert_eq!(raw.to_vec(), [7u8; 100]);
    }
}

/// A memfd of `len` bytes with the given seals (`None`: created without sealing
/// allowed at all), in a `Connection` so that it travels as a handle.
///
/// A `Connection` serializes as (descriptor, readable, writable, size limit, whether its
/// peer is multiproc); received as `(RawValue<u8>, u64, bool)` or `(Value<u8>, u64,
/// bool)`, its `true, true` read as an item size of 1 and a count of 1: the handle of a
/// one-byte value in that segment.
fn crafted_handle(len: u64, seals: Option<SealFlags>) -> Connection {
    let flags = if seals.is_some() {
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING
    } else {
        MemfdFlags::CLOEXEC
    };
    let fd: OwnedFd = rustix::fs::memfd_create("crafted", flags).unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    if let Some(seals) = seals {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    Connection::from_socket(fd)
}

fn all_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

#[test]
fn a_received_segment_without_size_seals_is_refused_with_a_decode_error() {
    let (here, there) = pipe(true).unwrap();

    // A crafted segment that carries the seals is taken: the seals are what counts.
    here.send(&crafted_handle(1, Some(all_seals()))).unwrap();
    let (v, _, _): (RawValue<u8>, u64, bool) = there.recv_timeout(LONG).unwrap();
    v.set(9);
    assert_eq!(v.get(), 9);

    let unsealed: [(&str, Option<SealFlags>); 4] = [
        ("a memfd that cannot be sealed", None),
        ("a memfd with no seals", Some(SealFlags::empty())),
        (
            "a memfd that may still grow",
            Some(SealFlags::SHRINK | SealFlags::SEAL),
        ),
        (
            "a memfd whose seals may still change",
            Some(SealFlags::SHRINK | SealFlags::GROW),
        ),
    ];
    for (what, seals) in unsealed {
        here.send(&crafted_handle(1, seals)).unwrap();
        match there.recv_timeout::<(RawValue<u8>, u64, bool)>(LONG) {
            Err(Error::Decode(_)) => {}
            other => panic!("{what} as a RawValue: expected a decode error, got {other:?}"),
        }
    }

    // A locked Value: whatever the segment's length, an unsealed one is refused, while
    // exactly one length (the Value's layout) is taken when sealed.
    let mut taken = 0;
    for len in 1..=128 {
        here.send(&crafted_handle(len, None)).unwrap();
        match there.recv_timeout::<(Value<u8>, u64, bool)>(LONG) {
            Err(Error::Decode(_)) => {}
            other => panic!("an unsealed segment of {len} bytes as a Value: got {other:?}"),
        }
        here.send(&crafted_handle(len, Some(all_seals()))).unwrap();
        if let Ok((v, _, _)) = there.recv_timeout::<(Value<u8>, u64, bool)>(LONG) {
            v.set(3).unwrap();
            assert_eq!(v.get().unwrap(), 3);
            taken += 1;
        }
    }
    assert_eq!(taken, 1, "sealed segments taken as a Value<u8>");

    // A plain file is no segment either.
    let path = std::env::temp_dir().join(format!("multiproc_seals_{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(1).unwrap();
    here.send(&Connection::from_socket(OwnedFd::from(file)))
        .unwrap();
    match there.recv_timeout::<(RawValue<u8>, u64, bool)>(LONG) {
        Err(Error::Decode(_)) => {}
        other => panic!("a plain file as a RawValue: expected a decode error, got {other:?}"),
    }

    // The connection still works after the refusals.
    here.send(&5u32).unwrap();
    assert_eq!(there.recv_timeout::<u32>(LONG).unwrap(), 5);
}

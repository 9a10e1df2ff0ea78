//! Handles inside messages.
//!
//! While a value is encoded, each handle it contains (a connection, later locks, queues,
//! shared memory) duplicates its descriptor into a side list and writes only the index.
//! The transport sends the descriptors with the bytes (`SCM_RIGHTS`); on the receiving
//! side the decoder takes the descriptor back by index. Outside a multiproc transport
//! (say, `serde_json`) a handle refuses to serialize, with a clear error.

use std::cell::{Cell, RefCell};
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

use crate::error::Result;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    static REPEAT: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous side list when encoding or decoding ends, even by panic.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(prev) = self.previous.take() {
            self.key.with(|c| *c.borrow_mut() = prev);
        }
    }
}

/// Runs `f` while collecting the descriptors of handles it serializes.
pub(crate) fn collecting<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let previous = OUTGOING.with(|c| c.borrow_mut().replace(Vec::new()));
    let guard = Restore {
        key: &OUTGOING,
        previous: Some(previous),
    };
    let r = f();
    let fds = OUTGOING.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    (r, fds)
}

/// Runs `f`, a second encoding of a value whose first encoding's descriptors are the
/// ones sent: handles that count their copies in flight ([`is_repeat`]) must not count
/// this one.
pub(crate) fn repeating<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REPEAT.set(self.0);
        }
    }
    let _reset = Reset(REPEAT.replace(true));
    f()
}

/// Whether the encoding under way repeats one whose copy of each handle is already
/// counted (see [`repeating`]).
pub(crate) fn is_repeat() -> bool {
    REPEAT.get()
}

/// Runs `f` with `fds` available to the handles it deserializes.
pub(crate) fn providing<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let list = fds.into_iter().map(Some).collect();
    let previous = INCOMING.with(|c| c.borrow_mut().replace(list));
    let _guard = Restore {
        key: &INCOMING,
        previous: Some(previous),
    };
    f()
}

/// Serializes a descriptor as an index into the message's descriptor list.
pub(crate) fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|c| -> Result<usize, String> {
        let mut slot = c.borrow_mut();
        let list = slot.as_mut().ok_or_else(|| {
            "a multiproc handle can only be sent through multiproc (process arguments, connections)".to_string()
        })?;
        let dup = fd.try_clone_to_owned().map_err(|e| format!("cannot duplicate a handle: {e}"))?;
        list.push(dup);
        Ok(list.len() - 1)
    });
    match index {
        Ok(i) => s.serialize_u32(i as u32),
        Err(msg) => Err(S::Error::custom(msg)),
    }
}

/// Takes the descriptor a serialized index names.
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    INCOMING.with(|c| {
        let mut slot = c.borrow_mut();
        let list = slot.as_mut().ok_or_else(|| {
            D::Error::custom("a multiproc handle can only be received through multiproc")
        })?;
        list.get_mut(index).and_then(Option::take).ok_or_else(|| {
            D::Error::custom(format!(
                "message names handle {index}, which it did not carry"
            ))
        })
    })
}

/// A borrowed descriptor that serializes as a handle.
pub(crate) struct FdRef<'a>(pub(crate) BorrowedFd<'a>);

impl serde::Serialize for FdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

/// A descriptor received as a handle.
pub(crate) struct FdOwned(pub(crate) OwnedFd);

impl<'de> Deserialize<'de> for FdOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FdOwned, D::Error> {
        deserialize_fd(d).map(FdOwned)
    }
}

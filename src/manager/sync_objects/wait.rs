//! What every server object of this module needs: who calls, the calling thread's
//! identity, and a wait on a condition variable that ends when the caller's client goes.

use std::fmt;
use std::sync::{Condvar, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::deadline;
use crate::manager::{CallCx, CallError, ClientId};
use crate::sys::liveness;

/// How long a blocked call sleeps at most before it looks whether its client is still
/// connected: a vanished client's call ends within about this long.
pub(super) const SLICE: Duration = Duration::from_millis(50);

/// The client of a call and a way to learn that it left.
pub(super) struct Caller<'a> {
    pub(super) client: ClientId,
    presence: &'a dyn Presence,
}

/// Says whether a client is still connected.
pub(super) trait Presence {
    /// The client closed its connection.
    fn gone(&self) -> bool;
}

impl Presence for CallCx<'_> {
    fn gone(&self) -> bool {
        self.client_gone()
    }
}

/// A client's presence as a flag (the objects' own tests).
#[cfg(test)]
impl Presence for std::sync::atomic::AtomicBool {
    fn gone(&self) -> bool {
        self.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<'a> Caller<'a> {
    /// The caller of the call `cx` runs.
    pub(super) fn of(cx: &'a CallCx<'_>) -> Caller<'a> {
        Caller {
            client: cx.client(),
            presence: cx,
        }
    }

    /// A caller for the objects' own tests.
    #[cfg(test)]
    pub(super) fn new(client: ClientId, presence: &'a dyn Presence) -> Caller<'a> {
        Caller { client, presence }
    }

    /// Whether the client closed its connection (it died, or dropped its proxies).
    pub(super) fn gone(&self) -> bool {
        self.presence.gone()
    }
}

/// The thread that holds a lock, as its client names it: a thread of some process on
/// some machine. A random number drawn once per process tells machines (and PID
/// namespaces) apart; the pid tells a forked child from its parent, which inherits the
/// number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(super) struct ThreadToken {
    process: u64,
    pid: u32,
    tid: u32,
}

impl fmt::Debug for ThreadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {} of process {}", self.tid, self.pid)
    }
}

impl ThreadToken {
    /// The calling thread's token.
    pub(super) fn current() -> ThreadToken {
        static PROCESS: OnceLock<u64> = OnceLock::new();
        let process = *PROCESS.get_or_init(|| {
            let mut bytes = [0; 8];
            if crate::sys::net::random_bytes(&mut bytes).is_err() {
                // No randomness: the clock still tells this process's run from others.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                bytes = (nanos as u64).to_le_bytes();
            }
            u64::from_le_bytes(bytes)
        });
        let me = liveness::me().id;
        ThreadToken {
            process,
            pid: me.pid,
            tid: me.tid,
        }
    }

    /// Thread `tid` of an imaginary process (the objects' own tests).
    #[cfg(test)]
    pub(super) fn for_test(tid: u32) -> ThreadToken {
        ThreadToken {
            process: 1,
            pid: 1,
            tid,
        }
    }
}

/// The error for a method the object does not have.
pub(super) fn no_such_method(typeid: &str, method: &str) -> CallError {
    CallError::NoSuchMethod {
        typeid: typeid.to_owned(),
        method: method.to_owned(),
    }
}

/// How a wait on a server object ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Waited {
    /// What the caller waited for is there (and the caller still is).
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// The caller's client left: nobody waits for the answer any more.
    Gone,
}

/// Locks `m`, ignoring poisoning: every change to the objects' state is complete
/// before any call that could panic, so a poisoned state is still consistent.
pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv` (with `state`'s mutex released meanwhile) until `ready` holds,
/// `deadline` passes (`None`: never), or the caller's client is found gone, looking for
/// that at least every [`SLICE`]. The caller acts on [`Waited::Ready`] before it lets
/// go of the returned guard.
///
/// A wait that slept looks once more for its client when it finds `ready`: what it
/// waited for (a lock, a unit, an item) must go to a caller that will read the answer,
/// not to one killed while it waited. A wait that ends without acting passes a wake-up
/// on, in case it had taken one meant for another waiter.
pub(super) fn wait_on<'m, S>(
    mut state: MutexGuard<'m, S>,
    cv: &Condvar,
    deadline: Option<Instant>,
    caller: &Caller<'_>,
    mut ready: impl FnMut(&S) -> bool,
) -> (MutexGuard<'m, S>, Waited) {
    let mut next_check = deadline::after(SLICE);
    let mut slept = false;
    loop {
        if ready(&state) {
            if slept && caller.gone() {
                cv.notify_one();
                return (state, Waited::Gone);
            }
            return (state, Waited::Ready);
        }
        let left = deadline::remaining(deadline);
        if left == Some(Duration::ZERO) {
            cv.notify_one();
            return (state, Waited::TimedOut);
        }
        let to_check = deadline::remaining(next_check).unwrap_or(SLICE);
        if to_check.is_zero() {
            if caller.gone() {
                cv.notify_one();
                return (state, Waited::Gone);
            }
            next_check = deadline::after(SLICE);
            continue;
        }
        let sleep = left.map_or(to_check, |l| l.min(to_check));
        state = cv
            .wait_timeout(state, sleep)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        slept = true;
    }
}

/// A run of bytes that postcard writes and reads as one block (a queue item, encoded by
/// its client), not byte by byte.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Bytes(pub(super) Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// Borrowed bytes written as [`Bytes`] (a `put` sends its item without a copy).
pub(super) struct BytesRef<'a>(pub(super) &'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

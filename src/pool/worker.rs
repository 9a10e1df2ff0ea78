//! A worker process: it runs the initializer, then takes orders from its own queue and
//! reports each chunk's outcome on the pool's shared report queue, until it is told to
//! stop, has done its `maxtasksperchild`, or finds that its pool is gone.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use serde::de::DeserializeOwned;

use super::call::{self, CallCtx, Failure};
use crate::error::Error;
use crate::queue::Queue;
use crate::wire::codec;
use crate::wire::handles::{FdOwned, FdRef};

/// The header of what the pool tells one worker. A `Run` order's encoded chunk of
/// arguments follows it, to the end of the message (see [`send`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Order {
    /// Run the entry at `entry` on the chunk that follows.
    Run { job: u64, entry: u64 },
    /// Finish: no more work will come.
    Stop,
}

/// The header of what a worker tells the pool. A `Done` report whose outcome is `Ok` is
/// followed by the chunk's encoded outcome (see `call::ChunkOutcome`), to the end of the
/// message: the worker encodes it once, and it is not copied to join the two.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// A chunk is done: its outcome follows, or why it could not run.
    Done {
        worker: u64,
        job: u64,
        outcome: Result<(), Failure>,
    },
    /// The worker has done its `maxtasksperchild` and is leaving.
    Retiring { worker: u64 },
    /// The initializer failed: the worker is leaving.
    InitFailed { worker: u64, failure: Failure },
    /// Put by the pool itself after it found a worker ended: every report that worker
    /// made comes before it.
    Ended { worker: u64 },
}

/// Puts a message on a pool queue: `head` encoded, then `body` as it is. A message
/// without a body is what `queue.put(head)` puts.
pub(crate) fn send<T: Serialize + DeserializeOwned>(
    queue: &Queue<T>,
    head: &T,
    body: &[u8],
) -> Result<(), Error> {
    let mut small = [0; 64];
    let large;
    let head = match codec::encode_plain_into(head, &mut small)? {
        Some(len) => &small[..len],
        None => {
            large = codec::encode_plain(head)?;
            &large[..]
        }
    };
    queue.put_bytes(head, body)
}

/// Takes a message of a pool queue apart: its header, and where its body starts.
pub(crate) fn open<T: DeserializeOwned>(message: &[u8]) -> Result<(T, usize), Error> {
    codec::decode_prefix(message)
}

/// An initializer: its entry, its encoded argument and the descriptors of the handles
/// in it (a queue, a lock: they travel in the worker's arguments, as they may).
pub(crate) struct Initializer {
    pub(crate) entry: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// An initializer shared by the pool's workers (each new one gets it in its arguments).
#[derive(Clone)]
pub(crate) struct SharedInit(pub(crate) Arc<Initializer>);

impl std::fmt::Debug for SharedInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initializer")
            .field("handles", &self.0.fds.len())
            .finish()
    }
}

impl Serialize for SharedInit {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedInit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Initializer::deserialize(d).map(|i| SharedInit(Arc::new(i)))
    }
}

/// The descriptors of an initializer's handles, in a worker's arguments.
struct Fds<'a>(&'a [OwnedFd]);

impl Serialize for Fds<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for fd in self.0 {
            seq.serialize_element(&FdRef(fd.as_fd()))?;
        }
        seq.end()
    }
}

impl Serialize for Initializer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.entry, &self.bytes, Fds(&self.fds)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Initializer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (entry, bytes, fds) = <(u64, Vec<u8>, Vec<FdOwned>)>::deserialize(d)?;
        Ok(Initializer {
            entry,
            bytes,
            fds: fds.into_iter().map(|f| f.0).collect(),
        })
    }
}

/// Everything a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) serial: u64,
    pub(crate) orders: Queue<Order>,
    pub(crate) reports: Queue<Report>,
    pub(crate) initializer: Option<SharedInit>,
    pub(crate) max_tasks: Option<u64>,
}

/// The worker's whole life (the target of its process).
pub(crate) fn worker_main(w: WorkerArgs) {
    crate::process::install_panic_hook();
    // Orders come from the pool only.
    w.orders.close();
    let ctx = CallCtx::default();
    if let Some(init) = w.initializer.and_then(|i| Arc::try_unwrap(i.0).ok()) {
        let failure = match call::run(init.entry, init.bytes, 0, init.fds, &ctx) {
            Ok(()) => match codec::decode::<Result<(), Failure>>(&ctx.out.borrow(), Vec::new()) {
                Ok(Ok(())) => None,
                Ok(Err(f)) => Some(f),
                Err(e) => Some(Failure::Codec(e.to_string())),
            },
            Err(f) => Some(f),
        };
        if let Some(failure) = failure {
            let _ = w.reports.put(&Report::InitFailed {
                worker: w.serial,
                failure,
            });
            return;
        }
    }
    let mut done = 0u64;
    loop {
        let message = match w.orders.get_bytes() {
            Ok(m) => m,
            // A damaged order: go on with the next.
            Err(Error::Decode(_)) => continue,
            // The pool is gone (no producer of orders left), or the queue failed.
            Err(_) => return,
        };
        let (job, entry, start) = match open::<Order>(&message) {
            Ok((Order::Run { job, entry }, start)) => (job, entry, start),
            // Told to stop: no more work will come.
            Ok((Order::Stop, _)) => return,
            Err(_) => continue,
        };
        let outcome = call::run(entry, message, start, Vec::new(), &ctx);
        let out = ctx.out.borrow();
        let body: &[u8] = if outcome.is_ok() { &out } else { &[] };
        let report = Report::Done {
            worker: w.serial,
            job,
            outcome,
        };
        if send(&w.reports, &report, body).is_err() {
            return;
        }
        drop(out);
        done += 1;
        if w.max_tasks.is_some_and(|m| done >= m) {
            let _ = w.reports.put(&Report::Retiring { worker: w.serial });
            return;
        }
    }
}

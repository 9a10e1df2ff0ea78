//! A worker process: it runs the initializer, then takes orders from its own queue and
//! reports each chunk's outcome on the pool's shared report queue, until it is told to
//! stop, has done its `maxtasksperchild`, or finds that its pool is gone.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::call::{self, Failure};
use crate::error::Error;
use crate::queue::Queue;
use crate::wire::handles::{FdOwned, FdRef};

/// What the pool tells one worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Order {
    /// Run the entry at `entry` on the encoded chunk `args`.
    Run {
        job: u64,
        entry: u64,
        args: ChunkArgs,
    },
    /// Finish: no more work will come.
    Stop,
}

/// A chunk's encoded arguments: shared with the pool's record of the job (kept to run it
/// again), so that giving it to a worker copies them only into the queue.
#[derive(Clone, Debug)]
pub(crate) struct ChunkArgs(pub(crate) Arc<Vec<u8>>);

impl Serialize for ChunkArgs {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ChunkArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Vec::<u8>::deserialize(d).map(|v| ChunkArgs(Arc::new(v)))
    }
}

/// What a worker tells the pool.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The outcome of a chunk (see `call::ChunkOutcome`), encoded.
    Done {
        worker: u64,
        job: u64,
        outcome: Result<Vec<u8>, Failure>,
    },
    /// The worker has done its `maxtasksperchild` and is leaving.
    Retiring { worker: u64 },
    /// The initializer failed: the worker is leaving.
    InitFailed { worker: u64, failure: Failure },
    /// Put by the pool itself after it found a worker ended: every report that worker
    /// made comes before it.
    Ended { worker: u64 },
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
    if let Some(init) = w.initializer.and_then(|i| Arc::try_unwrap(i.0).ok()) {
        let failure = match call::run(init.entry, init.bytes, init.fds) {
            Ok(out) => match crate::wire::codec::decode::<Result<(), Failure>>(&out, Vec::new()) {
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
        match w.orders.get() {
            Ok(Order::Run { job, entry, args }) => {
                let args = Arc::try_unwrap(args.0).unwrap_or_else(|shared| shared.to_vec());
                let outcome = call::run(entry, args, Vec::new());
                let report = Report::Done {
                    worker: w.serial,
                    job,
                    outcome,
                };
                if w.reports.put(&report).is_err() {
                    return;
                }
                done += 1;
                if w.max_tasks.is_some_and(|m| done >= m) {
                    let _ = w.reports.put(&Report::Retiring { worker: w.serial });
                    return;
                }
            }
            // Told to stop, or the pool is gone (no producer of orders left).
            Ok(Order::Stop) | Err(Error::NoProducers) => return,
            // A damaged order: go on with the next.
            Err(Error::Decode(_)) => continue,
            Err(_) => return,
        }
    }
}

//! Where a pool's tasks run: worker processes on this machine ([`local`]), or the
//! ranks of an MPI job (`mpi`, feature `mpi`). Both take the same jobs (an entry of
//! this binary and a chunk of encoded arguments) and give back the same encoded
//! outcomes, so that everything above this module is one code for both.

pub(crate) mod local;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;

use std::sync::Arc;

use crate::error::Result;

/// What a job's outcome goes to: its encoded outcome, or why it has none.
pub(crate) type Sink = Box<dyn FnOnce(Result<Outcome>) + Send>;

/// A job's encoded outcome (see `call::ChunkOutcome`): the report it came in, whose
/// bytes from `start` on are the outcome's.
pub(crate) struct Outcome {
    pub(crate) report: Vec<u8>,
    pub(crate) start: usize,
}

impl Outcome {
    /// The outcome's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.report.get(self.start..).unwrap_or_default()
    }
}

/// The running side of a pool: each method is one `match` over the backends.
pub(crate) enum Backend {
    /// Worker processes of this machine.
    Local(Arc<local::Core>),
    /// The other ranks of the MPI job this process is rank 0 of.
    #[cfg(feature = "mpi")]
    Mpi(Arc<mpi::Core>),
}

impl Backend {
    /// Adds a job running the entry at `entry` on `args`; its id. `Err` once the pool
    /// is closed or broken.
    pub(crate) fn submit(
        &self,
        entry: u64,
        args: Vec<u8>,
        sink: Sink,
        callback: bool,
    ) -> Result<u64> {
        match self {
            Backend::Local(c) => c.submit(entry, args, sink, callback),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.submit(entry, args, sink, callback),
        }
    }

    /// Cancels a job no worker has been given yet; false if it runs or is done.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        match self {
            Backend::Local(c) => c.cancel(id),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.cancel(id),
        }
    }

    /// Cancels every job no worker has been given yet.
    pub(crate) fn cancel_pending(&self) {
        match self {
            Backend::Local(c) => c.cancel_pending(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.cancel_pending(),
        }
    }

    /// Whether a job has been given to a worker and is not done.
    pub(crate) fn running(&self, id: u64) -> bool {
        match self {
            Backend::Local(c) => c.running(id),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.running(id),
        }
    }

    /// No new jobs; the workers end once the jobs submitted are done.
    pub(crate) fn close(&self) {
        match self {
            Backend::Local(c) => c.close(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.close(),
        }
    }

    /// Stops at once: every job not done fails with `Error::Cancelled`.
    pub(crate) fn terminate(&self) {
        match self {
            Backend::Local(c) => c.terminate(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.terminate(),
        }
    }

    /// Waits until the workers have ended (after `close` or `terminate`).
    pub(crate) fn join(&self) -> Result<()> {
        match self {
            Backend::Local(c) => c.join(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.join(),
        }
    }

    /// The pids of the current workers (of this machine's processes: empty for ranks).
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            Backend::Local(c) => c.pids(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(_) => Vec::new(),
        }
    }
}

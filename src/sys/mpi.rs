//! An MPI communicator that threads share (feature `mpi`): the bindings' handles are
//! plain pointers for the library, which the compiler cannot know are safe to use from
//! several threads.

use mpi::Threading;
use mpi::topology::{AnyProcess, Communicator, InterCommunicator, Process, SimpleCommunicator};

/// The communicator rank 0 reaches its workers through.
pub(crate) enum Comm {
    /// The job's world: the workers are its ranks 1 and up.
    World(SimpleCommunicator),
    /// The link to workers this process started (`MPI_Comm_spawn`): they are its remote
    /// group.
    Spawned(InterCommunicator),
}

impl Comm {
    /// The process of rank `r` (of the remote group, for spawned workers).
    pub(crate) fn process_at_rank(&self, r: i32) -> Process<'_> {
        match self {
            Comm::World(c) => c.process_at_rank(r),
            Comm::Spawned(c) => c.process_at_rank(r),
        }
    }

    /// Any process of the communicator (any worker, for spawned workers).
    pub(crate) fn any_process(&self) -> AnyProcess<'_> {
        match self {
            Comm::World(c) => c.any_process(),
            Comm::Spawned(c) => c.any_process(),
        }
    }

    /// The ranks that are workers.
    pub(crate) fn workers(&self) -> std::ops::Range<i32> {
        match self {
            Comm::World(c) => 1..c.size(),
            Comm::Spawned(c) => 0..c.remote_size(),
        }
    }
}

/// A [`Comm`] that any thread may use.
pub(crate) struct SharedComm(Comm);

// SAFETY: a communicator handle is an opaque pointer into the MPI library, which the
// library lets any thread use at once when it was initialized with
// `MPI_THREAD_MULTIPLE`; `SharedComm::new` accepts no other level. Nothing here frees
// the handle: it lives until `MPI_Finalize`, at the process's exit.
unsafe impl Send for SharedComm {}
// SAFETY: as for `Send`: under `MPI_THREAD_MULTIPLE` concurrent calls on one
// communicator are the library's to order; the Rust side holds no state of its own.
unsafe impl Sync for SharedComm {}

impl SharedComm {
    /// `comm`, to share between threads; `None` unless MPI runs with
    /// `MPI_THREAD_MULTIPLE`.
    pub(crate) fn new(comm: Comm, threading: Threading) -> Option<SharedComm> {
        (threading == Threading::Multiple).then_some(SharedComm(comm))
    }

    /// The communicator.
    pub(crate) fn comm(&self) -> &Comm {
        &self.0
    }
}

/// Finalizes MPI in a spawned worker without disconnecting from its parent first, as the
/// bindings' `Universe` would: with Open MPI 4.1 that disconnect crashes (or fails, when
/// the parent does not disconnect too), while both sides' `MPI_Finalize` ends the link
/// cleanly.
pub(crate) fn finalize_spawned(universe: mpi::environment::Universe) {
    std::mem::forget(universe);
    // SAFETY: MPI was initialized (the universe existed) and is finalized once: the
    // universe, whose drop would finalize, is forgotten above. The process exits right
    // after, making no MPI call.
    unsafe {
        mpi::ffi::MPI_Finalize();
    }
}

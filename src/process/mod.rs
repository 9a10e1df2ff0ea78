//! `Process`: run a function of yours in a child process (Python's
//! `multiprocessing.Process`), the start methods, and the process-wide queries.
//!
//! The modules read top-down, each using only those below it:
//! `context` (constructors bound to a method) → `spawn` (`JoinHandle`) → `handle`
//! (`Process`) → `launch` (the parent's side of a start) → `bootstrap` (the child's
//! side, from the load-time hook) → `forkserver` → `children` (watching, reaping, the
//! registry) → `current` (who this process is) → `task` (what passes between parent and
//! child) → `target` and `method` (the public traits and start methods).

mod bootstrap;
mod children;
mod context;
mod current;
mod forkserver;
mod handle;
mod launch;
mod method;
mod spawn;
mod target;
mod task;

pub(crate) use self::task::{install_panic_hook, panic_parts};

pub use self::context::{Context, get_context};
pub use self::current::{ParentProcess, ProcessInfo, current_process, parent_process};
pub use self::handle::Process;
pub use self::method::{StartMethod, get_all_start_methods, get_start_method, set_start_method};
pub use self::spawn::{JoinHandle, spawn};
pub use self::target::{Run, Target};

/// Whether this process was started as a child of this crate (its bootstrap marker is
/// in the environment): such a process is never anything else, whatever else it
/// inherited (an MPI rank's variables, for one).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn started_as_child() -> bool {
    std::env::var_os(task::SPAWN_ENV).is_some() || std::env::var_os(task::FORKSERVER_ENV).is_some()
}

/// The processes this one started that are still running, reaping any that ended
/// (Python's `active_children()`).
pub fn active_children() -> Vec<ProcessInfo> {
    children::active()
}

/// The number of CPUs this process may use.
pub fn cpu_count() -> usize {
    crate::sys::proc::cpu_count()
}

//! Starting a child with each start method.
//!
//! Every method gives the child the same thing: a bootstrap socket on which the parent
//! later reads the child's [`Outcome`](super::bootstrap::Outcome), a [`Task`] naming the
//! entry function, and the arguments with their descriptors. The parent never waits
//! for the child to start: a child that dies early closes its socket and ends its pid,
//! which is what `join` watches, so nothing can hang on a child that never reports.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, OnceLock};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::process::bootstrap::{self, EntryFn, SPAWN_ENV, Task};
use crate::process::children::{self, Child, Watch};
use crate::process::{StartMethod, current, forkserver};
use crate::sys::image::{self, ExeId};
use crate::sys::{fd as sysfd, proc as sysproc};
use crate::wire::codec::{self, Encoded};

/// What to start.
pub(crate) struct Spec {
    pub(crate) entry: EntryFn,
    pub(crate) args: Encoded,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) identity: Vec<u32>,
}

fn exe_id() -> Result<ExeId> {
    static ID: OnceLock<ExeId> = OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(*id);
    }
    let id = ExeId::current()?;
    Ok(*ID.get_or_init(|| id))
}

pub(crate) fn launch(method: StartMethod, spec: Spec) -> Result<Arc<Child>> {
    let Spec {
        entry,
        args,
        name,
        daemon,
        identity,
    } = spec;
    let Encoded {
        bytes,
        fds: arg_owned,
    } = args;
    let task = Task {
        exe: exe_id()?,
        entry: image::entry_offset(entry),
        args: bytes,
        name: name.clone(),
        daemon,
        identity,
        parent_pid: sysproc::getpid(),
        parent_name: current::name(),
    };
    let (mine, theirs) = sysfd::socketpair()?;
    let outcome = Connection::new(mine, true, true);
    match method {
        StartMethod::Spawn => {
            let pid = sysproc::spawn_self(theirs.as_fd(), SPAWN_ENV)?;
            drop(theirs);
            let watch = match sysproc::pidfd_open(pid) {
                Ok(pidfd) => Watch::Own { pidfd },
                Err(e) => {
                    let _ = sysproc::send_signal(pid, libc::SIGKILL);
                    let _ = sysproc::reap(pid, true);
                    return Err(e.into());
                }
            };
            // A child that died already makes this fail with Closed: join reports it.
            let arg_fds: Vec<BorrowedFd<'_>> = arg_owned.iter().map(|f| f.as_fd()).collect();
            match outcome.send_raw(&codec::encode_plain(&task)?, &arg_fds) {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => {
                    let _ = sysproc::send_signal(pid, libc::SIGKILL);
                    let _ = sysproc::reap(pid, true);
                    return Err(e);
                }
            }
            Ok(Child::new(pid, name, daemon, watch, outcome))
        }
        StartMethod::Fork => {
            let threads = sysproc::thread_count();
            if threads > 1 {
                tracing::warn!(
                    threads,
                    "fork start method used while this process has {threads} threads; the child may deadlock \
                     (use forkserver or spawn)"
                );
            }
            match sysproc::fork()? {
                sysproc::Forked::Child => {
                    drop(outcome);
                    children::forget_all_after_fork();
                    forkserver::forget_after_fork();
                    current::reset_after_fork();
                    let conn = Connection::new(theirs, true, true);
                    let parent = task.parent_pid;
                    // Same memory image: the entry needs no executable check.
                    bootstrap::run_task(conn, task, arg_owned, parent, false)
                }
                sysproc::Forked::Parent(pid) => {
                    drop(theirs);
                    let pidfd = match sysproc::pidfd_open(pid) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = sysproc::send_signal(pid, libc::SIGKILL);
                            let _ = sysproc::reap(pid, true);
                            return Err(e.into());
                        }
                    };
                    Ok(Child::new(pid, name, daemon, Watch::Own { pidfd }, outcome))
                }
            }
        }
        StartMethod::Forkserver => {
            let (status_mine, status_theirs) = sysfd::socketpair()?;
            let pid = forkserver::start_child(
                &codec::encode_plain(&task)?,
                &theirs,
                &status_theirs,
                &arg_owned,
            )?;
            drop(theirs);
            drop(status_theirs);
            let pidfd = sysproc::pidfd_open(pid).ok();
            Ok(Child::new(
                pid,
                name,
                daemon,
                Watch::Server {
                    status: status_mine,
                    pidfd,
                },
                outcome,
            ))
        }
    }
}

//! The children of this process: how each one is watched and reaped, the registry
//! behind `active_children`, and the exit-time join (Python's `_exit_function`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::process::current::ProcessInfo;
use crate::process::task::Outcome;
use crate::sys::forklocal::ForkLocal;
use crate::sys::{fd as sysfd, proc as sysproc};

/// How the end of a child is observed.
pub(crate) enum Watch {
    /// Our own child (spawn, fork): the pidfd turns readable at exit; `waitid` reaps it.
    Own { pidfd: OwnedFd },
    /// A child of the fork server, which reaps it and writes its exit code on `status`.
    /// The pidfd (sent by the server) is the sentinel, and tells whether the child still
    /// runs once the server is gone.
    Server {
        status: OwnedFd,
        pidfd: Option<OwnedFd>,
    },
}

/// A started child, shared by its `Process` handle and the registry.
pub(crate) struct Child {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    watch: Watch,
    exitcode: Mutex<Option<i32>>,
    /// Serialises blocking reaps of one child.
    reaping: Mutex<()>,
    /// The parent end of the bootstrap socket: the child's outcome arrives here.
    outcome: Mutex<Option<Connection>>,
    /// The fork server vanished before reporting this child's exit.
    server_lost: AtomicBool,
}

impl Child {
    pub(crate) fn new(
        pid: u32,
        name: String,
        daemon: bool,
        watch: Watch,
        outcome: Connection,
    ) -> Arc<Child> {
        Arc::new(Child {
            pid,
            name,
            daemon,
            watch,
            exitcode: Mutex::new(None),
            reaping: Mutex::new(()),
            outcome: Mutex::new(Some(outcome)),
            server_lost: AtomicBool::new(false),
        })
    }

    pub(crate) fn info(&self) -> ProcessInfo {
        ProcessInfo {
            name: self.name.clone(),
            pid: self.pid,
            daemon: self.daemon,
        }
    }

    fn stored(&self) -> Option<i32> {
        *self.exitcode.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, code: i32) -> i32 {
        *self.exitcode.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
        code
    }

    /// The descriptor that is readable once the child has ended (Python's `sentinel`):
    /// its pidfd when there is one. The status socket of a fork-server child also turns
    /// readable when the server dies, which ends nothing; it serves only a child without
    /// a pidfd.
    pub(crate) fn sentinel(&self) -> BorrowedFd<'_> {
        match &self.watch {
            Watch::Own { pidfd }
            | Watch::Server {
                pidfd: Some(pidfd), ..
            } => pidfd.as_fd(),
            Watch::Server { status, .. } => status.as_fd(),
        }
    }

    /// The exit code if the child has ended, without blocking.
    pub(crate) fn poll(&self) -> Result<Option<i32>> {
        if let Some(c) = self.stored() {
            return Ok(Some(c));
        }
        match &self.watch {
            Watch::Own { .. } => {
                let Ok(_g) = self.reaping.try_lock() else {
                    return Ok(None); // another thread is reaping it right now
                };
                if let Some(c) = self.stored() {
                    return Ok(Some(c));
                }
                match sysproc::reap(self.pid, false) {
                    Ok(Some(code)) => Ok(Some(self.store(code))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Watch::Server { status, pidfd } => {
                if self.server_lost.load(Ordering::Relaxed) {
                    return orphan_state(pidfd.as_ref());
                }
                if !sysfd::wait_readable(status.as_fd(), Some(Duration::ZERO))? {
                    let Some(p) = pidfd else {
                        return Ok(None);
                    };
                    if !sysfd::wait_readable(p.as_fd(), Some(Duration::ZERO))? {
                        return Ok(None);
                    }
                    // The child ended; the server writes its code as soon as it reaps
                    // it (or its end of stream, if it died meanwhile).
                    if !sysfd::wait_readable(status.as_fd(), Some(STATUS_GRACE))? {
                        return Err(Error::PeerDied(format!(
                            "the fork server has not reported the exit of this process \
                             {STATUS_GRACE:?} after it ended"
                        )));
                    }
                }
                let _g = self.reaping.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = self.stored() {
                    return Ok(Some(c));
                }
                let mut buf = [0u8; 4];
                let mut got = 0;
                while got < 4 {
                    let n = sysfd::read(status.as_fd(), &mut buf[got..])?;
                    if n == 0 {
                        self.server_lost.store(true, Ordering::Relaxed);
                        return orphan_state(pidfd.as_ref());
                    }
                    got += n;
                }
                Ok(Some(self.store(i32::from_le_bytes(buf))))
            }
        }
    }

    /// Waits for the child to end, up to `deadline` (`None`: as long as it takes).
    /// Returns `None` if it is still running when the deadline passes.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        if let Some(c) = self.stored() {
            return Ok(Some(c));
        }
        if let (Watch::Own { .. }, None) = (&self.watch, deadline) {
            // The direct way: one blocking waitid.
            let _g = self.reaping.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = self.stored() {
                return Ok(Some(c));
            }
            let code = sysproc::reap(self.pid, true)?.unwrap_or(0);
            return Ok(Some(self.store(code)));
        }
        loop {
            if let Some(c) = self.poll()? {
                return Ok(Some(c));
            }
            let left = crate::deadline::remaining(deadline);
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            sysfd::wait_readable(self.sentinel(), left)?;
        }
    }

    /// Waits until the child's report can be read or the child has ended, up to
    /// `deadline`. Returns whether the report (or its end of stream) is readable; `false`
    /// also when no report is expected any more.
    pub(crate) fn wait_report_or_end(&self, deadline: Option<Instant>) -> Result<bool> {
        let slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = slot.as_ref() else {
            return Ok(false);
        };
        let ready = sysfd::poll_readable(
            &[conn.as_fd(), self.sentinel()],
            crate::deadline::remaining(deadline),
        )?;
        Ok(ready[0])
    }

    /// Sends a signal unless the child is known to have ended.
    pub(crate) fn signal(&self, sig: i32) -> Result<()> {
        if self.stored().is_some() {
            return Ok(());
        }
        match &self.watch {
            Watch::Own { pidfd }
            | Watch::Server {
                pidfd: Some(pidfd), ..
            } => sysproc::pidfd_signal(pidfd.as_fd(), sig)?,
            Watch::Server { pidfd: None, .. } => sysproc::send_signal(self.pid, sig)?,
        }
        Ok(())
    }

    /// Closes the parent's end of the report channel: nobody will read it, and a child
    /// blocked writing a large result must not wait for a reader forever.
    pub(crate) fn discard_outcome(&self) {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Takes the child's report, waiting for it up to `deadline` (`None`: no limit).
    /// `Ok(None)`: the child ended without one (killed, or `exit` called in the target),
    /// or the report was taken before.
    pub(crate) fn take_outcome<R: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<Outcome<R>>> {
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = slot.as_ref() else {
            return Ok(None);
        };
        let r = conn.recv_value::<Outcome<R>>(deadline);
        match r {
            Ok(o) => {
                *slot = None;
                Ok(Some(o))
            }
            Err(Error::Closed) => {
                *slot = None;
                Ok(None)
            }
            Err(Error::Timeout) => Err(Error::Timeout),
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }
}

/// How long the fork server may take to report the exit of a child that has ended.
const STATUS_GRACE: Duration = Duration::from_secs(5);

/// A child whose fork server is gone: running while its pidfd says so; ended (with an
/// exit code nobody can tell any more) otherwise.
fn orphan_state(pidfd: Option<&OwnedFd>) -> Result<Option<i32>> {
    match pidfd {
        Some(p) if !sysfd::wait_readable(p.as_fd(), Some(Duration::ZERO))? => Ok(None),
        _ => Err(server_lost()),
    }
}

fn server_lost() -> Error {
    Error::PeerDied("the fork server died before reporting the exit of this process".into())
}

/// Children started by this process and not yet known to have ended.
static CHILDREN: ForkLocal<Vec<Arc<Child>>> = ForkLocal::new(Vec::new);
static HOOK: Once = Once::new();

fn registry() -> std::sync::MutexGuard<'static, Vec<Arc<Child>>> {
    CHILDREN.lock()
}

/// Records a new child; reaps ended ones (as Python's `_cleanup`) so none stays a zombie.
pub(crate) fn register(child: &Arc<Child>) {
    HOOK.call_once(|| sysproc::at_exit(exit_hook));
    let mut list = registry();
    list.retain(|c| matches!(c.poll(), Ok(None)));
    list.push(child.clone());
}

/// Forgets a child (after `close`).
pub(crate) fn unregister(pid: u32) {
    registry().retain(|c| c.pid != pid);
}

/// The children still running, reaping the ones that ended.
pub(crate) fn active() -> Vec<ProcessInfo> {
    let mut list = registry();
    list.retain(|c| matches!(c.poll(), Ok(None)));
    list.iter().map(|c| c.info()).collect()
}

/// In a freshly forked child: the parent's children are not ours.
///
/// Their descriptors stay open in this process (closing them would need the old lock);
/// they are close-on-exec and few.
pub(crate) fn forget_all_after_fork() {
    CHILDREN.reset_after_fork();
}

extern "C" fn exit_hook() {
    join_all_at_exit();
}

/// Python's exit behaviour: terminate daemon children, then join every child.
pub(crate) fn join_all_at_exit() {
    if !CHILDREN.is_created() {
        return;
    }
    let list: Vec<Arc<Child>> = std::mem::take(&mut *registry());
    for c in &list {
        if c.daemon {
            let _ = c.signal(libc::SIGTERM);
        }
    }
    for c in &list {
        c.discard_outcome();
        let _ = c.wait(None);
    }
}

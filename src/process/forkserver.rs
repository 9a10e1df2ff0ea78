//! The fork server: a single-threaded process, started once as a fresh execution of the
//! binary, that forks each child on request.
//!
//! Children so made inherit nothing from the caller but their task (as with spawn) and
//! cost only a `fork` of a small process (as with fork). The server reaps its children
//! and writes each exit code to a per-child status channel. It exits when the process
//! that started it goes away (its socket reaches end of stream); daemon children then
//! die with it through their parent-death signal.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::process::bootstrap::{self, FORKSERVER_ENV, Task};
use crate::sys::forklocal::ForkLocal;
use crate::sys::{fd as sysfd, proc as sysproc};
use crate::wire::codec;

#[derive(Serialize, Deserialize)]
enum Reply {
    Started(u32),
    Failed(String),
}

/// The client's view of its server.
struct Server {
    conn: Connection,
    pid: u32,
    /// The process that started it; a forked child must start its own.
    owner: u32,
}

static SERVER: ForkLocal<Option<Server>> = ForkLocal::new(|| None);
/// The server socket's descriptor number, readable without the lock after a fork.
static SERVER_FD: AtomicI32 = AtomicI32::new(-1);

fn launch() -> Result<Server> {
    let (mine, theirs) = sysfd::socketpair()?;
    let pid = sysproc::spawn_self(theirs.as_fd(), FORKSERVER_ENV)?;
    SERVER_FD.store(mine.as_raw_fd(), Ordering::Relaxed);
    Ok(Server {
        conn: Connection::new(mine, true, true),
        pid,
        owner: sysproc::getpid(),
    })
}

/// Asks the server to fork a child for `task`. The child gets `boot` as its bootstrap
/// socket and `args` as the descriptors of its arguments; its exit code will be written
/// to `status`. Returns the child's pid.
pub(crate) fn start_child(
    task: &[u8],
    boot: &OwnedFd,
    status: &OwnedFd,
    args: &[OwnedFd],
) -> Result<u32> {
    let mut fds = Vec::with_capacity(2 + args.len());
    fds.push(boot.as_fd());
    fds.push(status.as_fd());
    fds.extend(args.iter().map(|a| a.as_fd()));
    let mut slot = SERVER.lock();
    let me = sysproc::getpid();
    let mut last_error = None;
    for _attempt in 0..2 {
        if slot.as_ref().is_none_or(|s| s.owner != me) {
            SERVER_FD.store(-1, Ordering::Relaxed);
            *slot = Some(launch()?);
        }
        let server = slot.as_ref().expect("server was just set");
        let sent = server
            .conn
            .send_raw(task, &fds)
            .and_then(|()| server.conn.recv::<Reply>());
        match sent {
            Ok(Reply::Started(pid)) => return Ok(pid),
            Ok(Reply::Failed(msg)) => return Err(Error::Bootstrap(msg)),
            Err(e) => {
                // The server died (or was killed): reap it and start a new one, once.
                SERVER_FD.store(-1, Ordering::Relaxed);
                let old = slot.take().expect("server present");
                let _ = sysproc::reap(old.pid, false);
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or(Error::Closed))
}

/// In a freshly forked child: the parent's server connection is not ours to use.
/// Its socket is closed here so that the server sees end of stream when the parent
/// goes, whatever this child does.
pub(crate) fn forget_after_fork() {
    SERVER.reset_after_fork();
    let raw = SERVER_FD.swap(-1, Ordering::Relaxed);
    if raw >= 0 {
        sysfd::close_leaked(raw);
    }
}

/// One child the server is watching.
struct Watched {
    pid: u32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's main loop. Runs from the load-time hook; never returns.
pub(crate) fn serve(raw_fd: &str) -> ! {
    sysproc::ignore_sigpipe();
    let Some(fd) = raw_fd
        .parse()
        .ok()
        .and_then(|n| sysfd::adopt_inherited(n).ok())
    else {
        sysproc::exit_now(1)
    };
    let conn = Connection::new(fd, true, true);
    let me = sysproc::getpid();
    // Children inherit the hook instead of each installing it.
    bootstrap::install_panic_hook();
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        let ready = {
            let mut fds = vec![conn.as_fd()];
            fds.extend(watched.iter().map(|w| w.pidfd.as_fd()));
            match sysfd::poll_readable(&fds, None) {
                Ok(r) => r,
                Err(_) => sysproc::exit_now(1),
            }
        };
        // Report children that ended.
        let mut i = 0;
        let mut index = 1;
        while i < watched.len() {
            if ready[index] {
                if let Ok(Some(code)) = sysproc::reap(watched[i].pid, false) {
                    let w = watched.swap_remove(i);
                    let _ = sysfd::write_all(w.status.as_fd(), &code.to_le_bytes());
                    index += 1;
                    continue;
                }
            }
            i += 1;
            index += 1;
        }
        if !ready[0] {
            continue;
        }
        let (bytes, mut fds) = match conn.recv_raw(None) {
            Ok(x) => x,
            // The owner went away: so do we (daemon children follow by their death signal).
            Err(_) => sysproc::exit_now(0),
        };
        let task: Task = match codec::decode(&bytes, Vec::new()) {
            Ok(t) if fds.len() >= 2 => t,
            _ => {
                let _ = conn.send(&Reply::Failed("malformed fork request".into()));
                continue;
            }
        };
        let args = fds.split_off(2);
        let status = fds.pop().expect("two descriptors");
        let boot = fds.pop().expect("two descriptors");
        match sysproc::fork() {
            Ok(sysproc::Forked::Child) => {
                drop(conn);
                drop(watched);
                drop(status);
                bootstrap::run_task(Connection::new(boot, true, true), task, args, me, true)
            }
            Ok(sysproc::Forked::Parent(pid)) => {
                drop(boot);
                drop(args);
                match sysproc::pidfd_open(pid) {
                    Ok(pidfd) => watched.push(Watched { pid, pidfd, status }),
                    Err(_) => {
                        // Cannot watch it: wait for it now rather than leave a zombie.
                        let code = sysproc::reap(pid, true).ok().flatten().unwrap_or(-9);
                        let _ = sysfd::write_all(status.as_fd(), &code.to_le_bytes());
                    }
                }
                if conn.send(&Reply::Started(pid)).is_err() {
                    sysproc::exit_now(0);
                }
            }
            Err(e) => {
                let _ = conn.send(&Reply::Failed(format!("fork failed: {e}")));
            }
        }
    }
}

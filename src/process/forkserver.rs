//! The fork server: a single-threaded process, started once as a fresh execution of the
//! binary, that forks each child on request.
//!
//! Children so made inherit nothing from the caller but their task (as with spawn) and
//! cost only a `fork` of a small process (as with fork). The server reaps its children
//! and writes each exit code to a per-child status channel; with each start it also
//! hands back a pidfd of the child, so the child stays observable if the server dies.
//! It exits when the process that started it goes away (its socket reaches end of
//! stream); daemon children then die with it through their parent-death signal.
//!
//! A request is a few bytes and two descriptors (the child's bootstrap and status
//! sockets): the task, with its arguments and their handles, goes from the caller to the
//! child directly, so the server never blocks on a large request nor holds the
//! arguments' handles. A start that fails on this side fails alone (this process out of
//! descriptors for the reply's pidfd included: the reply is still read whole, and the
//! child forked for it finds no task and exits, reaped by the server); only a server that
//! is gone or stopped answering is replaced, and the old one is reaped, never left a
//! zombie.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::process::task::{self, FORKSERVER_ENV};
use crate::sys::forklocal::ForkLocal;
use crate::sys::{fd as sysfd, image, proc as sysproc};
use crate::wire::codec;

/// How long the server may take to answer a request, its own start included.
const REPLY_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
enum Request {
    /// Fork a child; its bootstrap and status sockets travel with the request.
    Fork,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// The child's pid; its pidfd travels with the reply.
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

impl Server {
    /// Ends a server that is gone or no longer answers, and reaps it. The kill makes
    /// the reap prompt whatever state the server is in (one at end of stream is leaving
    /// anyway); its children run on, watched through their pidfds.
    fn retire(self) {
        SERVER_FD.store(-1, Ordering::Relaxed);
        let _ = sysproc::send_signal(self.pid, libc::SIGKILL);
        drop(self.conn);
        let _ = sysproc::reap(self.pid, true);
    }
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

/// What went wrong with one request.
enum Failure {
    /// Nothing reached the server: this start fails, the server is fine.
    Local(Error),
    /// The server is gone (end of stream, reset).
    Gone(Error),
    /// The server is there but the exchange broke (no answer in time, a garbled reply,
    /// a request cut short): it cannot be trusted with another request.
    Broken(Error),
}

fn exchange(
    server: &Server,
    fds: &[BorrowedFd<'_>],
) -> std::result::Result<(u32, Option<OwnedFd>), Failure> {
    let request = codec::encode_plain(&Request::Fork).map_err(Failure::Local)?;
    match server.conn.send_raw(&request, fds) {
        Ok(()) => {}
        // Refused before a byte was written.
        Err(e @ (Error::MessageTooLarge { .. } | Error::InvalidArgument(_) | Error::Encode(_))) => {
            return Err(Failure::Local(e));
        }
        Err(e @ Error::Closed) => return Err(Failure::Gone(e)),
        Err(e) => return Err(Failure::Broken(e)),
    }
    let (bytes, mut fds) = match server.conn.recv_raw(crate::deadline::after(REPLY_DEADLINE)) {
        Ok(x) => x,
        Err(e @ Error::Closed) => return Err(Failure::Gone(e)),
        // The reply arrived whole but this process had no room for the child's pidfd.
        // The server is in step and fine; the child it forked gets no task (the caller
        // drops its bootstrap end), exits on its own and is reaped by the server.
        Err(Error::Io(e)) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            return Err(Failure::Local(Error::Io(e)));
        }
        Err(Error::Timeout) => {
            return Err(Failure::Broken(Error::Bootstrap(format!(
                "the fork server did not answer within {REPLY_DEADLINE:?}"
            ))));
        }
        Err(e) => return Err(Failure::Broken(e)),
    };
    match codec::decode::<Reply>(&bytes, Vec::new()) {
        Ok(Reply::Started(pid)) => Ok((pid, fds.pop())),
        Ok(Reply::Failed(msg)) => Err(Failure::Local(Error::Bootstrap(msg))),
        Err(e) => Err(Failure::Broken(e)),
    }
}

/// Asks the server to fork a child. The child gets `boot` as its bootstrap socket (its
/// task arrives there, from the caller) and its exit code will be written to `status`.
/// Returns the child's pid and, when the server could open one, its pidfd.
pub(crate) fn start_child(boot: &OwnedFd, status: &OwnedFd) -> Result<(u32, Option<OwnedFd>)> {
    let fds = [boot.as_fd(), status.as_fd()];
    let mut slot = SERVER.lock();
    let me = sysproc::getpid();
    let mut last_error = Error::Closed;
    for _attempt in 0..2 {
        if slot.as_ref().is_none_or(|s| s.owner != me) {
            SERVER_FD.store(-1, Ordering::Relaxed);
            *slot = Some(launch()?);
        }
        let server = slot.as_ref().expect("server was just set");
        match exchange(server, &fds) {
            Ok(started) => return Ok(started),
            Err(Failure::Local(e)) => return Err(e),
            Err(Failure::Gone(e)) => {
                // It died (or was killed): reap it and start a new one, once.
                slot.take().expect("server present").retire();
                last_error = e;
            }
            Err(Failure::Broken(e)) => {
                // Its children keep running; their pidfds keep them observable.
                slot.take().expect("server present").retire();
                return Err(e);
            }
        }
    }
    Err(last_error)
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

/// How a forked child takes its task from its bootstrap socket and runs it, given the
/// server's pid (whose death takes a daemon down): `bootstrap::server_child`.
pub(crate) type RunChild = fn(Connection, u32) -> !;

/// The server's main loop, on the socket to its owner. Runs from the load-time hook;
/// never returns.
pub(crate) fn serve(conn: Connection, run: RunChild) -> ! {
    sysproc::ignore_sigpipe();
    let me = sysproc::getpid();
    // Children inherit the hook and the segment table instead of each making them.
    task::install_panic_hook();
    image::read_segments_before_forking();
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
            // The owner went away (or its stream is beyond repair): so do we (daemon
            // children follow by their death signal).
            Err(_) => sysproc::exit_now(0),
        };
        if !matches!(codec::decode(&bytes, Vec::new()), Ok(Request::Fork)) || fds.len() != 2 {
            let _ = conn.send(&Reply::Failed("malformed fork request".into()));
            continue;
        }
        let status = fds.pop().expect("two descriptors");
        let boot = fds.pop().expect("two descriptors");
        match sysproc::fork() {
            Ok(sysproc::Forked::Child) => {
                drop(conn);
                drop(watched);
                drop(status);
                run(task::process_channel(boot), me)
            }
            Ok(sysproc::Forked::Parent(pid)) => {
                drop(boot);
                let reply = codec::encode_plain(&Reply::Started(pid));
                match sysproc::pidfd_open(pid) {
                    Ok(pidfd) => {
                        let sent = reply.and_then(|r| conn.send_raw(&r, &[pidfd.as_fd()]));
                        watched.push(Watched { pid, pidfd, status });
                        if sent.is_err() {
                            sysproc::exit_now(0);
                        }
                    }
                    Err(_) => {
                        // Cannot watch it: wait for it now rather than leave a zombie.
                        let code = sysproc::reap(pid, true).ok().flatten().unwrap_or(-9);
                        let _ = sysfd::write_all(status.as_fd(), &code.to_le_bytes());
                        if reply.and_then(|r| conn.send_raw(&r, &[])).is_err() {
                            sysproc::exit_now(0);
                        }
                    }
                }
            }
            Err(e) => {
                let _ = conn.send(&Reply::Failed(format!("fork failed: {e}")));
            }
        }
    }
}

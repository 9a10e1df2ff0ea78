//! Starting a child with each start method.
//!
//! Every method gives the child the same thing: a bootstrap socket on which the parent
//! later reads the child's [`Outcome`](super::task::Outcome), a [`Task`] naming the
//! entry function, and the arguments with their descriptors. The parent never waits
//! for the child to start: a child that dies early closes its socket and ends its pid,
//! which is what `join` watches, so nothing can hang on a child that never reports.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock, mpsc};

use crate::error::{Error, Result};
use crate::process::bootstrap;
use crate::process::children::{self, Child, Watch};
use crate::process::method::StartMethod;
use crate::process::task::{self, Entry, SPAWN_ENV, Task};
use crate::process::{current, forkserver};
use crate::sys::forklocal::ForkLocal;
use crate::sys::image::{self, ExeId};
use crate::sys::{fd as sysfd, proc as sysproc};
use crate::wire::codec::{self, Encoded};

/// What to start.
pub(crate) struct Spec {
    pub(crate) entry: Entry,
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

/// The task's encoding in two parts whose concatenation is the whole: everything up to
/// its arguments' length, then the arguments' bytes (its last field), taken out of it
/// so they are sent from where they are rather than copied into the task's bytes.
fn encode_task(task: &mut Task) -> Result<[Vec<u8>; 2]> {
    let args = std::mem::take(&mut task.args);
    let mut head = codec::encode_plain(&*task)?;
    // Empty, the arguments were one byte, their length 0: it becomes their length.
    if head.pop() != Some(0) {
        return Err(Error::Encode(
            "a task's encoding does not end with its arguments".into(),
        ));
    }
    head.extend_from_slice(&codec::encode_plain(&args.len())?);
    Ok([head, args])
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
    let mut task = Task {
        exe: exe_id()?,
        entry: image::entry_offset(entry),
        args: bytes,
        name: name.clone(),
        daemon,
        identity,
        parent_pid: sysproc::getpid(),
        parent_name: current::name(),
    };
    if method != StartMethod::Fork {
        // Executing the binary again runs the task only if the crate's hook is the main
        // program's (not a library's loaded into, say, a Python interpreter).
        image::check_hook(bootstrap::load_hook()).map_err(|e| Error::Bootstrap(e.to_string()))?;
    }
    let (mine, theirs) = sysfd::socketpair()?;
    let outcome = task::process_channel(mine);
    // Spawn and forkserver send the task after the child exists: refuse one too large to
    // send before there is a child to take back.
    let task_bytes = match method {
        StartMethod::Fork => [Vec::new(), Vec::new()],
        _ => {
            let parts = encode_task(&mut task)?;
            let len = parts[0].len() + parts[1].len();
            let limit = outcome.max_message_size();
            if len + 4 > limit {
                return Err(Error::MessageTooLarge {
                    len: len as u64,
                    limit,
                });
            }
            parts
        }
    };
    match method {
        StartMethod::Spawn => {
            let pid = on_lasting_thread(daemon, move || {
                let r = sysproc::spawn_self(theirs.as_fd(), SPAWN_ENV);
                drop(theirs);
                r
            })?;
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
            let [head, args] = &task_bytes;
            match task::send_request(&outcome, head, args, &arg_fds) {
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
            // Counting threads reads /proc; only pay for it when the warning can be seen.
            if tracing::enabled!(tracing::Level::WARN) {
                let threads = sysproc::thread_count();
                if threads > 1 {
                    tracing::warn!(
                        threads,
                        "fork start method used while this process has {threads} threads; the child may \
                         deadlock (use forkserver or spawn)"
                    );
                }
            }
            // Installed here once, so that forked children inherit it instead of each
            // writing the hook anew (every page a child writes is a copy).
            task::install_panic_hook();
            image::read_segments_before_forking();
            let parent_end = outcome.as_fd().as_raw_fd();
            let pid = on_lasting_thread(daemon, move || {
                // Hold the standard streams' locks across the fork, as an atfork handler
                // would: the child then owns them (they are re-entrant) instead of
                // inheriting them held by a thread that does not exist there.
                let out = std::io::stdout().lock();
                let err = std::io::stderr().lock();
                let forked = sysproc::fork();
                drop(err);
                drop(out);
                match forked {
                    Ok(sysproc::Forked::Child) => {
                        forked_child(parent_end, theirs, task, arg_owned, entry)
                    }
                    // Here the child's end, task and argument handles are dropped.
                    Ok(sysproc::Forked::Parent(pid)) => Ok(pid),
                    Err(e) => Err(e),
                }
            })?;
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
        StartMethod::Forkserver => {
            let (status_mine, status_theirs) = sysfd::socketpair()?;
            let (pid, pidfd) = forkserver::start_child(&theirs, &status_theirs)?;
            drop(theirs);
            drop(status_theirs);
            // The task goes to the child itself, not through the server: the server's
            // requests stay a few bytes (never blocked on a full socket), and it never
            // holds the arguments' handles.
            let arg_fds: Vec<BorrowedFd<'_>> = arg_owned.iter().map(|f| f.as_fd()).collect();
            let [head, args] = &task_bytes;
            match task::send_request(&outcome, head, args, &arg_fds) {
                // A child that died already: join reports it.
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => {
                    match &pidfd {
                        Some(p) => sysproc::pidfd_signal(p.as_fd(), libc::SIGKILL)?,
                        None => sysproc::send_signal(pid, libc::SIGKILL)?,
                    }
                    return Err(e);
                }
            }
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

/// The child side of the fork start method, right after the fork.
fn forked_child(
    parent_end: RawFd,
    theirs: OwnedFd,
    task: Task,
    arg_owned: Vec<OwnedFd>,
    entry: Entry,
) -> ! {
    // The parent's end belongs to a frame this child never returns to.
    sysfd::close_leaked(parent_end);
    children::forget_all_after_fork();
    forkserver::forget_after_fork();
    current::reset_after_fork();
    LAUNCHER.reset_after_fork();
    let conn = task::process_channel(theirs);
    let parent = task.parent_pid;
    // Same memory image: the entry is called as it is, with no executable or offset
    // check (which knows only the main executable, and the crate may live in a
    // library).
    bootstrap::run_task(conn, task, arg_owned, parent, Some(entry.entry()))
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that lives as long as the process, with the process that started it.
static LAUNCHER: ForkLocal<Option<(u32, mpsc::Sender<Job>)>> = ForkLocal::new(|| None);

/// Runs `f` on a thread that lives as long as the process when `needed`.
///
/// The kernel's parent-death signal, which takes a daemon down with its parent, fires
/// when the *thread* that created the child ends. A daemon created from a short-lived
/// thread would die with that thread; created here, it dies with the process.
fn on_lasting_thread<T: Send + 'static>(
    needed: bool,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if !needed || sysproc::on_main_thread() {
        return f();
    }
    let me = sysproc::getpid();
    let sender = {
        let mut slot = LAUNCHER.lock();
        match slot.as_ref() {
            Some((owner, tx)) if *owner == me => Some(tx.clone()),
            _ => {
                let (tx, rx) = mpsc::channel::<Job>();
                let started = std::thread::Builder::new()
                    .name("multiproc-launcher".into())
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    });
                match started {
                    Ok(_) => {
                        *slot = Some((me, tx.clone()));
                        Some(tx)
                    }
                    Err(_) => None,
                }
            }
        }
    };
    let Some(sender) = sender else {
        return f();
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(f());
    });
    if let Err(mpsc::SendError(job)) = sender.send(job) {
        // The launcher thread is gone (it cannot be, short of a panic): forget it and run
        // the job here rather than fail.
        LAUNCHER.lock().take();
        job();
    }
    done_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the process launcher thread failed")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Connection;
    use crate::process::target::Target;
    use crate::process::task::Outcome;

    fn triple(x: u32) -> u32 {
        x * 3
    }

    fn return_entry_of<F: Target<u32, u32>>(_: F) -> Entry {
        task::return_entry::<F, u32, u32>()
    }

    #[test]
    fn a_task_sent_in_two_parts_is_the_encoding_of_the_whole_task() {
        for n in [0, 1, 127, 128, 300_000] {
            let args: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut task = Task {
                exe: exe_id().unwrap(),
                entry: 9,
                args: args.clone(),
                name: "two parts".into(),
                daemon: true,
                identity: vec![1, 2],
                parent_pid: 77,
                parent_name: "parent".into(),
            };
            let [head, rest] = encode_task(&mut task).unwrap();
            assert!(rest == args);
            task.args = args;
            assert!(
                [head, rest].concat() == codec::encode_plain(&task).unwrap(),
                "{n}"
            );
        }
    }

    /// A library that links the crate is outside the main executable, where the offset
    /// lookup finds no entry: a forked child must call the entry it was handed.
    #[test]
    fn a_forked_child_runs_the_entry_it_is_handed_when_the_offset_names_none() {
        let entry = return_entry_of(triple);
        let task = Task {
            exe: exe_id().unwrap(),
            entry: image::entry_offset(entry) ^ 0x5a5a_5a50,
            args: codec::encode_plain(&14u32).unwrap(),
            name: "forked".into(),
            daemon: false,
            identity: Vec::new(),
            parent_pid: sysproc::getpid(),
            parent_name: current::name(),
        };
        assert!(image::entry_at::<Connection>(task.entry).is_none());
        let (mine, theirs) = sysfd::socketpair().unwrap();
        let parent_end = mine.as_raw_fd();
        // As the fork start method does: the hook exists before the fork, and the child
        // owns the standard streams' locks instead of inheriting them held.
        task::install_panic_hook();
        let out = std::io::stdout().lock();
        let err = std::io::stderr().lock();
        let forked = sysproc::fork().unwrap();
        drop(err);
        drop(out);
        let pid = match forked {
            sysproc::Forked::Child => forked_child(parent_end, theirs, task, Vec::new(), entry),
            sysproc::Forked::Parent(pid) => pid,
        };
        drop(theirs);
        let conn = Connection::new(mine, true, true);
        let outcome = conn.recv_timeout::<Outcome<u32>>(std::time::Duration::from_secs(60));
        if outcome.is_err() {
            // Never leave the test waiting on a child that cannot finish.
            let _ = sysproc::send_signal(pid, libc::SIGKILL);
        }
        let code = sysproc::reap(pid, true).unwrap();
        match outcome {
            Ok(Outcome::Returned(n)) => assert_eq!(n, 42),
            Ok(Outcome::Failed(why)) => panic!("the child did not run its entry: {why}"),
            Ok(Outcome::Panicked { message, .. }) => panic!("the child panicked: {message}"),
            Err(e) => panic!("no report from the child: {e}"),
        }
        assert_eq!(code, Some(0));
    }
}

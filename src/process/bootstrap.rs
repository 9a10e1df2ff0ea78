//! The child's side of process creation: what a child is told (a [`Task`]), how it
//! finds and runs the target, and what it reports back (an [`Outcome`]).
//!
//! A spawned child is a fresh execution of the same binary. The crate's load-time hook
//! (see `sys::image`) runs before `main`, notices the bootstrap marker in the
//! environment, takes the task from the inherited socket, runs it and exits: the
//! program's `main` never runs in a child, so no line is needed at the top of `main`.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{ExitCode, Termination};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::process::{Run, children, current, forkserver};
use crate::sys::image::{self, ExeId};
use crate::sys::{fd as sysfd, proc as sysproc};
use crate::wire::codec;

/// Environment marker of a spawned child; its value is the bootstrap descriptor number.
pub(crate) const SPAWN_ENV: &str = "MULTIPROC_SPAWN_FD";
/// Environment marker of the fork server; its value is its socket's descriptor number.
pub(crate) const FORKSERVER_ENV: &str = "MULTIPROC_FORKSERVER_FD";

/// How long a spawned child waits for its task before giving up.
const TASK_DEADLINE: Duration = Duration::from_secs(60);

/// A type-erased entry: decodes the arguments, runs the target, reports the outcome on
/// the connection, and returns the exit code.
pub(crate) type EntryFn = fn(&[u8], Vec<OwnedFd>, &Connection) -> i32;

/// Everything a child needs to become the requested process.
#[derive(Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) exe: ExeId,
    pub(crate) entry: u64,
    pub(crate) args: Vec<u8>,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) identity: Vec<u32>,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
}

/// What a child reports when its target ends.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    /// The target returned this value.
    Returned(R),
    /// The target panicked.
    Panicked {
        message: String,
        location: Option<String>,
    },
    /// The target never ran.
    Failed(String),
}

impl<R> Outcome<R> {
    fn exitcode(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked { .. } | Outcome::Failed(_) => 1,
        }
    }
}

fn report<R: Serialize>(conn: &Connection, outcome: Outcome<R>) -> i32 {
    let code = outcome.exitcode();
    if let Err(e) = conn.send(&outcome) {
        // The result itself may be what failed to encode: say so instead.
        if matches!(e, crate::Error::Encode(_)) {
            let _ = conn.send(&Outcome::<()>::Failed(format!(
                "cannot encode the result: {e}"
            )));
            return 1;
        }
    }
    code
}

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records where a panic happened, then lets the previous hook print it as usual.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let loc = info.location().map(|l| l.to_string());
            PANIC_LOCATION.with(|p| *p.borrow_mut() = loc);
            previous(info);
        }));
    });
}

fn panic_outcome<R>(payload: Box<dyn std::any::Any + Send>) -> Outcome<R> {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let location = PANIC_LOCATION.with(|p| p.borrow_mut().take());
    Outcome::Panicked { message, location }
}

fn decode_args<A: DeserializeOwned>(args: &[u8], fds: Vec<OwnedFd>) -> Result<A, String> {
    codec::decode(args, fds).map_err(|e| format!("cannot decode the arguments: {e}"))
}

/// The exit status a `main` returning `r` would have (`Err` prints itself and is 1).
fn status_of<R: Termination>(r: R) -> i32 {
    let code = r.report();
    if code == ExitCode::SUCCESS {
        return 0;
    }
    // ExitCode keeps its number private; find it among the 8-bit statuses.
    (1..=255u8)
        .find(|n| code == ExitCode::from(*n))
        .map_or(1, i32::from)
}

/// Entry for `Process::new`: the target's value decides the exit code, as `main`'s does.
pub(crate) fn entry_discard<F, A, R>(args: &[u8], fds: Vec<OwnedFd>, conn: &Connection) -> i32
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned,
    R: Termination,
{
    let a: A = match decode_args(args, fds) {
        Ok(a) => a,
        Err(msg) => return report(conn, Outcome::<()>::Failed(msg)),
    };
    let f = image::summon::<F>();
    match catch_unwind(AssertUnwindSafe(move || status_of(f(a)))) {
        Ok(status) => {
            report(conn, Outcome::Returned(()));
            status
        }
        Err(p) => report(conn, panic_outcome::<()>(p)),
    }
}

/// Entry for `spawn`: the target's value goes back to the parent.
pub(crate) fn entry_return<F, A, R>(args: &[u8], fds: Vec<OwnedFd>, conn: &Connection) -> i32
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    let a: A = match decode_args(args, fds) {
        Ok(a) => a,
        Err(msg) => return report(conn, Outcome::<()>::Failed(msg)),
    };
    let f = image::summon::<F>();
    match catch_unwind(AssertUnwindSafe(move || f(a))) {
        Ok(r) => report(conn, Outcome::Returned(r)),
        Err(p) => report(conn, panic_outcome::<()>(p)),
    }
}

/// Entry for `Process::from_run`: the object travels as the argument and runs itself.
pub(crate) fn entry_run<T: Run>(args: &[u8], fds: Vec<OwnedFd>, conn: &Connection) -> i32 {
    let obj: T = match decode_args(args, fds) {
        Ok(o) => o,
        Err(msg) => return report(conn, Outcome::<()>::Failed(msg)),
    };
    match catch_unwind(AssertUnwindSafe(move || obj.run())) {
        Ok(()) => report(conn, Outcome::Returned(())),
        Err(p) => report(conn, panic_outcome::<()>(p)),
    }
}

/// Called by the load-time hook in every process that links the crate.
pub(crate) fn on_load() {
    sysproc::register_fork_handler();
    if let Some(v) = sysproc::take_env(SPAWN_ENV) {
        spawned_child(&v.to_string_lossy());
    }
    if let Some(v) = sysproc::take_env(FORKSERVER_ENV) {
        forkserver::serve(&v.to_string_lossy());
    }
}

fn adopt(raw: &str) -> OwnedFd {
    match raw
        .parse()
        .ok()
        .and_then(|n| sysfd::adopt_inherited(n).ok())
    {
        Some(fd) => fd,
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "multiproc: bootstrap descriptor {raw:?} is not open"
            );
            sysproc::exit_now(1)
        }
    }
}

/// A spawned child: take the task, run it, exit. Never returns into `main`.
fn spawned_child(raw_fd: &str) -> ! {
    sysproc::ignore_sigpipe();
    let conn = Connection::new(adopt(raw_fd), true, true);
    let (bytes, fds) = match conn.recv_raw(Some(Instant::now() + TASK_DEADLINE)) {
        Ok(x) => x,
        // The parent died or gave up before sending the task.
        Err(_) => sysproc::exit_now(1),
    };
    let task: Task = match codec::decode(&bytes, Vec::new()) {
        Ok(t) => t,
        Err(e) => {
            report(
                &conn,
                Outcome::<()>::Failed(format!("cannot decode the task: {e}")),
            );
            sysproc::exit_now(1)
        }
    };
    let parent = task.parent_pid;
    run_task(conn, task, fds, parent, true)
}

/// Runs a task in this (new) process and exits with its code.
///
/// `expected_parent` is the process whose death must take a daemon down with it.
pub(crate) fn run_task(
    conn: Connection,
    task: Task,
    fds: Vec<OwnedFd>,
    expected_parent: u32,
    check_exe: bool,
) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| {
        current::become_child(&task);
        if task.daemon && !sysproc::die_with_parent(expected_parent).unwrap_or(false) {
            // The parent is already gone: a daemon must not outlive it.
            return 1;
        }
        if check_exe {
            match ExeId::current() {
                Ok(me) if me == task.exe => {}
                _ => {
                    return report(
                        &conn,
                        Outcome::<()>::Failed(
                            "the executable changed on disk since the parent started; rebuild and restart".into(),
                        ),
                    );
                }
            }
        }
        install_panic_hook();
        let entry = image::entry_at(task.entry);
        entry(&task.args, fds, &conn)
    }))
    .unwrap_or(1);
    finish(code)
}

/// The end of every child: join its own children as a normal exit would, flush output,
/// and exit without unwinding into code that belongs to the parent.
pub(crate) fn finish(code: i32) -> ! {
    children::join_all_at_exit();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sysproc::exit_now(code)
}

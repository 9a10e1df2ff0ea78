//! The child's side of process creation, from the load-time hook down: who may turn
//! this process into a child, taking the task, running it, and the end of every child.
//!
//! A spawned child is a fresh execution of the same binary. The crate's load-time hook
//! (placed with `sys::image::load_hook`) runs before `main`, notices the bootstrap
//! marker in the environment, takes the task from the inherited socket, runs it and
//! exits: the program's `main` never runs in a child, so no line is needed at the top of
//! `main`.
//!
//! Nothing inherited from outside can make a program a child. The marker is obeyed only
//! outside secure-execution mode (setuid, file capabilities), and only when its
//! descriptor is a connected Unix stream socket made by this process's own parent under the same
//! user and group; otherwise it is dropped with a warning and `main` runs as usual. The
//! task then runs only an entry that this binary really has (see `sys::image`).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::connection::Connection;
use crate::process::task::{self, FORKSERVER_ENV, Outcome, SPAWN_ENV, Task};
use crate::process::{children, current, forkserver};
use crate::sys::image::{self, EntryFn, ExeId};
use crate::sys::{fd as sysfd, proc as sysproc};

/// How long a spawned child waits for its task before giving up.
const TASK_DEADLINE: Duration = Duration::from_secs(60);

image::load_hook! {
    /// Runs [`on_load`] before `main` in every binary that links this crate.
    static ON_LOAD = on_load;
}

/// The crate's load hook. Process creation that executes the binary again checks that
/// it lies in the main executable; reading it also keeps it in every such link.
pub(crate) fn load_hook() -> extern "C" fn() {
    std::hint::black_box(ON_LOAD)
}

/// Called by the load-time hook in every process that links the crate.
fn on_load() {
    sysproc::register_fork_handler();
    sysfd::register_fork_handler();
    // Both markers go, whatever happens next: the program's own children must not
    // inherit them.
    let spawn = sysproc::take_env(SPAWN_ENV);
    let server = sysproc::take_env(FORKSERVER_ENV);
    if spawn.is_none() && server.is_none() {
        return;
    }
    if image::secure_execution() {
        tracing::warn!("multiproc: bootstrap marker ignored in secure-execution mode");
        return;
    }
    if let Some(fd) = spawn.and_then(|v| from_parent(SPAWN_ENV, &v.to_string_lossy())) {
        spawned_child(fd);
    }
    if let Some(fd) = server.and_then(|v| from_parent(FORKSERVER_ENV, &v.to_string_lossy())) {
        forkserver::serve(Connection::new(fd, true, true), server_child);
    }
}

/// The bootstrap socket a marker names, if the parent really passed it; `None` (and a
/// warning) otherwise, and the program goes on to `main`.
fn from_parent(marker: &str, value: &str) -> Option<OwnedFd> {
    let Some(m) = sysproc::Marker::parse(value) else {
        tracing::warn!("multiproc: ignoring {marker}={value:?}: not a bootstrap marker");
        return None;
    };
    match sysfd::adopt_from_parent(m.fd, m.parent) {
        Ok(fd) => {
            if m.close_rest {
                // The parent's libc could not close what it left open by mistake.
                sysfd::close_from(m.fd + 1);
            }
            Some(fd)
        }
        // A real child whose parent died in the instant before this check: nobody
        // waits for its task, and the program's `main` is not what it was started for.
        Err(sysfd::Refusal::ParentGone) => sysproc::exit_now(1),
        Err(sysfd::Refusal::Foreign(why)) => {
            tracing::warn!("multiproc: ignoring {marker}: {why}");
            None
        }
    }
}

/// A spawned child: take the task, run it, exit. Never returns into `main`.
fn spawned_child(fd: OwnedFd) -> ! {
    sysproc::ignore_sigpipe();
    take_task(task::process_channel(fd), None)
}

/// A child the fork server forked (`server` is the server's pid): take the task from
/// the caller, run it, exit.
pub(crate) fn server_child(conn: Connection, server: u32) -> ! {
    take_task(conn, Some(server))
}

/// Takes the task from the bootstrap socket and runs it. `parent` is the process whose
/// death must take a daemon down, when it is not the one the task names.
fn take_task(conn: Connection, parent: Option<u32>) -> ! {
    let (bytes, fds) = match task::recv_request(&conn, crate::deadline::after(TASK_DEADLINE)) {
        Ok(x) => x,
        // The parent died or gave up before sending the task.
        Err(_) => sysproc::exit_now(1),
    };
    let task: Task = match bytes.decode() {
        Ok(t) => t,
        Err(e) => {
            task::report(
                &conn,
                Outcome::<()>::Failed(format!("cannot decode the task: {e}")),
            );
            sysproc::exit_now(1)
        }
    };
    let parent = parent.unwrap_or(task.parent_pid);
    run_task(conn, task, fds, parent, None)
}

/// Runs a task in this (new) process and exits with its code.
///
/// `expected_parent` is the process whose death must take a daemon down with it.
/// `forked_entry` is the entry itself in a child forked straight from the parent (same
/// memory, whichever object the crate lives in: no executable or offset check); `None`
/// in a fresh execution of the binary, which checks the executable and looks the
/// task's offset up among this binary's entries.
pub(crate) fn run_task(
    conn: Connection,
    task: Task,
    fds: Vec<OwnedFd>,
    expected_parent: u32,
    forked_entry: Option<EntryFn<Connection>>,
) -> ! {
    // Processes this one forks (by any means) must not hold the report channel: the
    // parent sees its end of stream when this process ends, not when they do.
    sysfd::keep_out_of_forks(conn.as_fd());
    let code = catch_unwind(AssertUnwindSafe(|| {
        current::become_child(
            &task.name,
            task.daemon,
            &task.identity,
            task.parent_pid,
            &task.parent_name,
        );
        if task.daemon && !sysproc::die_with_parent(expected_parent).unwrap_or(false) {
            // The parent is already gone: a daemon must not outlive it.
            return 1;
        }
        let entry = match forked_entry {
            Some(entry) => entry,
            None => match checked_entry(&task) {
                Ok(entry) => entry,
                Err(why) => return task::report(&conn, Outcome::<()>::Failed(why)),
            },
        };
        task::install_panic_hook();
        entry(task.args, fds, &conn)
    }))
    .unwrap_or(1);
    finish(code)
}

/// The entry a task names in a fresh execution of the binary, if the binary is the
/// parent's and really has that entry; why not otherwise.
fn checked_entry(task: &Task) -> std::result::Result<EntryFn<Connection>, String> {
    match ExeId::current() {
        Ok(me) if me == task.exe => {}
        _ => {
            return Err(
                "the executable changed on disk since the parent started; rebuild and restart"
                    .into(),
            );
        }
    }
    image::entry_at::<Connection>(task.entry).ok_or_else(|| {
        format!(
            "the task names no entry of this program (offset {:#x})",
            task.entry
        )
    })
}

/// The end of every child: join its own children as a normal exit would, flush output,
/// and exit without unwinding into code that belongs to the parent.
pub(crate) fn finish(code: i32) -> ! {
    children::join_all_at_exit();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sysproc::exit_now(code)
}

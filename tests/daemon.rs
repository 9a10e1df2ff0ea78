//! Daemon children never outlive their parent, even when it is SIGKILLed; non-daemon
//! children are joined when their parent exits normally.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{KillOnDrop, LONG, METHODS, is_gone, join_bounded, kill_pid, wait_gone};
use multiproc::{Connection, Error, Process, StartMethod, current_process, pipe};

/// How long a daemon is given to disappear after its parent: the kernel acts at once, the
/// bound is for a loaded machine.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A daemon that reports its pid and whether it knows it is a daemon, then sleeps
/// "forever" (long enough for any test; bounded so a failed test leaves nothing for long).
fn daemon_body(conn: Connection) {
    conn.send(&(std::process::id(), current_process().daemon))
        .unwrap();
    thread::sleep(Duration::from_secs(300));
}

/// Starts a daemon child with `method`, then sleeps until killed.
fn parent_of_a_daemon_then_sleep((conn, method): (Connection, StartMethod)) {
    let mut d = Process::new(daemon_body, conn)
        .daemon(true)
        .start_method(method);
    d.start().unwrap();
    thread::sleep(Duration::from_secs(300));
}

/// Starts a daemon child with `method`, passes on its report once it runs, then returns
/// (a normal exit).
fn parent_of_a_daemon_then_return((conn, method): (Connection, StartMethod)) {
    let (mine, theirs) = pipe(true).unwrap();
    let mut d = Process::new(daemon_body, theirs)
        .daemon(true)
        .start_method(method);
    d.start().unwrap();
    let report: (u32, bool) = mine.recv_timeout(LONG).unwrap();
    conn.send(&report).unwrap();
}

/// Sleeps a little, then reports.
fn late_sender(conn: Connection) {
    thread::sleep(Duration::from_millis(500));
    conn.send(&"late but delivered").unwrap();
}

/// Starts a non-daemon child with `method` and returns at once.
fn parent_of_a_slow_child((conn, method): (Connection, StartMethod)) {
    let mut c = Process::new(late_sender, conn).start_method(method);
    c.start().unwrap();
}

/// Tries to start a child from a daemon; reports whether that was refused.
fn daemon_tries_to_have_children(conn: Connection) {
    let mut p = Process::new(late_sender, conn.try_clone().unwrap());
    let refused = matches!(p.start(), Err(Error::InvalidState(_)));
    conn.send(&refused).unwrap();
}

#[test]
fn a_daemon_dies_when_its_parent_is_sigkilled() {
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut parent =
            Process::new(parent_of_a_daemon_then_sleep, (there, method)).start_method(method);
        parent.start().unwrap();
        let mut parent = KillOnDrop(parent);
        let (daemon_pid, daemon_flag) = here
            .recv_timeout::<(u32, bool)>(LONG)
            .unwrap_or_else(|e| panic!("{method}: no word from the daemon: {e:?}"));
        assert!(
            daemon_flag,
            "{method}: the child does not know it is a daemon"
        );
        assert!(!is_gone(daemon_pid), "{method}: the daemon is not running");

        let killed_at = Instant::now();
        parent.0.kill().unwrap();
        join_bounded(&mut parent.0, method.as_str());
        assert_eq!(parent.0.exitcode(), Some(-9), "{method}");
        let gone = wait_gone(daemon_pid, GONE_WITHIN);
        let took = killed_at.elapsed();
        if !gone {
            kill_pid(daemon_pid);
        }
        assert!(
            gone,
            "{method}: daemon {daemon_pid} outlived its SIGKILLed parent by {GONE_WITHIN:?}"
        );
        // The promise: gone within 2 s (the kernel acts at once; CPython leaves it running).
        assert!(
            took <= Duration::from_secs(2),
            "{method}: daemon {daemon_pid} took {took:?} to go after its parent was SIGKILLed"
        );
    }
}

#[test]
fn a_daemon_is_terminated_when_its_parent_returns() {
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut parent =
            Process::new(parent_of_a_daemon_then_return, (there, method)).start_method(method);
        parent.start().unwrap();
        let mut parent = KillOnDrop(parent);
        let (daemon_pid, _) = here
            .recv_timeout::<(u32, bool)>(LONG)
            .unwrap_or_else(|e| panic!("{method}: no word from the daemon: {e:?}"));
        join_bounded(&mut parent.0, method.as_str());
        assert_eq!(parent.0.exitcode(), Some(0), "{method}");
        let gone = wait_gone(daemon_pid, GONE_WITHIN);
        if !gone {
            kill_pid(daemon_pid);
        }
        assert!(
            gone,
            "{method}: daemon {daemon_pid} outlived its parent's exit"
        );
    }
}

#[test]
fn a_non_daemon_child_is_joined_when_its_parent_returns() {
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut parent = Process::new(parent_of_a_slow_child, (there, method)).start_method(method);
        parent.start().unwrap();
        join_bounded(&mut parent, method.as_str());
        assert_eq!(parent.exitcode(), Some(0), "{method}");
        // The grandchild ended before its parent could: its message is already here.
        assert!(
            here.poll(Some(Duration::ZERO)).unwrap(),
            "{method}: the parent exited before its non-daemon child finished"
        );
        let got = here.recv_timeout::<String>(LONG).unwrap();
        assert_eq!(got, "late but delivered", "{method}");
    }
}

#[test]
fn a_daemon_started_from_a_short_lived_thread_outlives_the_thread() {
    // Under `cargo test` every test is a thread; the kernel's parent-death signal follows
    // the creating thread, but a daemon belongs to the process.
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let starter = thread::spawn(move || {
            let mut d = Process::new(daemon_body, there)
                .daemon(true)
                .start_method(method);
            d.start().unwrap();
            d
        });
        let d = starter.join().unwrap();
        let mut d = KillOnDrop(d);
        let (pid, _) = here
            .recv_timeout::<(u32, bool)>(LONG)
            .unwrap_or_else(|e| panic!("{method}: no word from the daemon: {e:?}"));
        // Give a wrongly delivered death signal time to act.
        thread::sleep(Duration::from_millis(300));
        assert!(
            d.0.is_alive(),
            "{method}: the daemon died with the thread that started it: {:?}",
            d.0.exitcode()
        );
        assert!(!is_gone(pid), "{method}");
        d.0.kill().unwrap();
        join_bounded(&mut d.0, method.as_str());
    }
}

#[test]
fn a_daemon_may_not_have_children() {
    let (here, there) = pipe(true).unwrap();
    let mut d = Process::new(daemon_tries_to_have_children, there)
        .daemon(true)
        .start_method(StartMethod::Forkserver);
    d.start().unwrap();
    let refused = here.recv_timeout::<bool>(LONG);
    join_bounded(&mut d, "forkserver");
    assert!(refused.unwrap(), "a daemon started a child");
}

fn noop(_: ()) {}

#[test]
fn daemon_flag_cannot_change_after_start() {
    let mut p = Process::new(noop, ()).start_method(StartMethod::Spawn);
    p.set_daemon(true).unwrap();
    assert!(p.is_daemon());
    p.set_daemon(false).unwrap();
    p.start().unwrap();
    assert!(matches!(p.set_daemon(true), Err(Error::InvalidState(_))));
    join_bounded(&mut p, "spawn");
}

//! The life of a `Process` under every start method: exit codes, `join` with a timeout,
//! starting twice, names, `current_process`/`parent_process` seen from the child,
//! `active_children`, and results and panics coming back through `spawn`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use common::{CLEAN_METHODS, KillOnDrop, LONG, METHODS, join_bounded, ppid_and_state};
use multiproc::{
    Connection, Error, Process, Run, StartMethod, active_children, current_process, get_context,
    parent_process, pipe,
};
use serde::{Deserialize, Serialize};

/// How long a "long-running" child sleeps: far longer than any test waits for it; every
/// test kills such a child itself.
const FOREVER: Duration = Duration::from_secs(600);

fn noop(_: ()) {}

fn panics(_: ()) {
    panic!("deliberate panic in the child");
}

fn exits(code: i32) {
    std::process::exit(code);
}

fn exits_with_result(code: i32) -> u32 {
    std::process::exit(code);
}

/// Says it is running (with its pid), then sleeps until killed.
fn ready_then_sleep(conn: Connection) {
    conn.send(&std::process::id()).unwrap();
    thread::sleep(FOREVER);
}

fn ready_then_sleep_with_result(conn: Connection) -> u32 {
    conn.send(&std::process::id()).unwrap();
    thread::sleep(FOREVER);
    0
}

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

fn panics_with_line(_: ()) -> u32 {
    panic!("boom from line {}", line!());
}

/// Starts a child running [`ready_then_sleep`] and waits until it says it runs.
fn start_sleeper(method: StartMethod) -> (KillOnDrop, u32) {
    let (here, there) = pipe(true).unwrap();
    let mut p = Process::new(ready_then_sleep, there).start_method(method);
    p.start().unwrap();
    let guard = KillOnDrop(p);
    let pid: u32 = here
        .recv_timeout(LONG)
        .unwrap_or_else(|e| panic!("{method}: sleeper never reported: {e:?}"));
    assert_eq!(
        Some(pid),
        guard.0.pid(),
        "{method}: pid reported by the child"
    );
    (guard, pid)
}

#[test]
fn exitcode_is_zero_after_a_normal_return() {
    for method in METHODS {
        let mut p = Process::new(noop, ()).start_method(method);
        p.start().unwrap();
        join_bounded(&mut p, method.as_str());
        assert_eq!(p.exitcode(), Some(0), "{method}");
        assert!(!p.is_alive(), "{method}");
    }
}

#[test]
fn exitcode_is_one_after_a_panic() {
    for method in METHODS {
        let mut p = Process::new(panics, ()).start_method(method);
        p.start().unwrap();
        join_bounded(&mut p, method.as_str());
        assert_eq!(p.exitcode(), Some(1), "{method}");
    }
}

#[test]
fn exitcode_is_minus_nine_after_kill() {
    for method in METHODS {
        let (mut guard, _) = start_sleeper(method);
        let p = &mut guard.0;
        p.kill().unwrap();
        join_bounded(p, method.as_str());
        assert_eq!(p.exitcode(), Some(-9), "{method}");
        assert!(!p.is_alive(), "{method}");
    }
}

#[test]
fn exitcode_is_minus_fifteen_after_terminate() {
    for method in METHODS {
        let (mut guard, _) = start_sleeper(method);
        let p = &mut guard.0;
        p.terminate().unwrap();
        join_bounded(p, method.as_str());
        assert_eq!(p.exitcode(), Some(-15), "{method}");
    }
}

#[test]
fn exitcode_is_the_status_given_to_process_exit() {
    for method in METHODS {
        for code in [7, 42] {
            let mut p = Process::new(exits, code).start_method(method);
            p.start().unwrap();
            join_bounded(&mut p, method.as_str());
            assert_eq!(p.exitcode(), Some(code), "{method}");
        }
    }
}

#[test]
fn exitcode_is_none_while_running_and_join_timeout_returns_false() {
    for method in METHODS {
        let (mut guard, _) = start_sleeper(method);
        let p = &mut guard.0;
        assert_eq!(p.exitcode(), None, "{method}: exitcode while running");
        assert!(p.is_alive(), "{method}");
        let ended = p.join_timeout(Duration::from_millis(300)).unwrap();
        assert!(
            !ended,
            "{method}: join_timeout returned true for a sleeping child"
        );
        assert!(p.is_alive(), "{method}: is_alive after join_timeout");
        assert_eq!(p.exitcode(), None, "{method}: exitcode after join_timeout");
        p.kill().unwrap();
        join_bounded(p, method.as_str());
        assert_eq!(p.exitcode(), Some(-9), "{method}");
    }
}

fn returns_result(fail: bool) -> Result<(), String> {
    if fail {
        Err("the target failed".into())
    } else {
        Ok(())
    }
}

fn returns_exit_code(code: u8) -> std::process::ExitCode {
    std::process::ExitCode::from(code)
}

#[test]
fn exitcode_follows_what_the_target_returns_as_main_would() {
    for method in CLEAN_METHODS {
        let cases: [(Process, i32); 4] = [
            (Process::new(returns_result, false), 0),
            (Process::new(returns_result, true), 1),
            (Process::new(returns_exit_code, 0), 0),
            (Process::new(returns_exit_code, 3), 3),
        ];
        for (p, expected) in cases {
            let mut p = p.start_method(method);
            p.start().unwrap();
            join_bounded(&mut p, method.as_str());
            assert_eq!(p.exitcode(), Some(expected), "{method}");
        }
    }
}

#[test]
fn exitcode_is_none_before_start() {
    let p = Process::new(noop, ());
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert_eq!(p.pid(), None);
}

#[test]
fn start_twice_is_an_error() {
    for method in METHODS {
        let mut p = Process::new(noop, ()).start_method(method);
        p.start().unwrap();
        let second = p.start();
        assert!(
            matches!(second, Err(Error::InvalidState(_))),
            "{method}: second start gave {second:?}"
        );
        join_bounded(&mut p, method.as_str());
        assert_eq!(
            p.exitcode(),
            Some(0),
            "{method}: the first child is unharmed"
        );
        let third = p.start();
        assert!(
            matches!(third, Err(Error::InvalidState(_))),
            "{method}: start after join gave {third:?}"
        );
    }
}

#[test]
fn close_while_running_is_an_error() {
    let (mut guard, _) = start_sleeper(StartMethod::Forkserver);
    let p = &mut guard.0;
    assert!(matches!(p.close(), Err(Error::InvalidState(_))));
    p.kill().unwrap();
    join_bounded(p, "forkserver");
    p.close().unwrap();
    assert!(matches!(p.start(), Err(Error::InvalidState(_))));
}

/// `Process-N` with a number that grows with each process created here.
fn default_number(name: &str) -> u32 {
    let n = name
        .strip_prefix("Process-")
        .unwrap_or_else(|| panic!("default name {name:?} is not Process-N"));
    n.parse()
        .unwrap_or_else(|_| panic!("default name {name:?} is not Process-N"))
}

#[test]
fn default_names_are_process_n() {
    let a = Process::new(noop, ());
    let b = Process::new(noop, ());
    let na = default_number(a.get_name());
    let nb = default_number(b.get_name());
    // Other tests in this process create processes too: only the order is certain.
    assert!(na >= 1);
    assert!(nb > na, "{} then {}", a.get_name(), b.get_name());
}

#[test]
fn custom_names_are_kept() {
    let mut p = Process::new(noop, ()).name("my-worker");
    assert_eq!(p.get_name(), "my-worker");
    p.set_name("renamed");
    assert_eq!(p.get_name(), "renamed");
}

/// What a child knows about itself.
#[derive(Serialize, Deserialize, Debug)]
struct Identity {
    name: String,
    pid: u32,
    daemon: bool,
    parent: Option<(String, u32)>,
}

fn report_identity(conn: Connection) {
    let me = current_process();
    let parent = parent_process().map(|p| (p.name, p.pid));
    conn.send(&Identity {
        name: me.name,
        pid: me.pid,
        daemon: me.daemon,
        parent,
    })
    .unwrap();
}

fn identity_of(p: Process, method: StartMethod, conn: &Connection) -> (Identity, Process) {
    let mut p = p.start_method(method);
    p.start().unwrap();
    let got = conn.recv_timeout::<Identity>(LONG);
    join_bounded(&mut p, method.as_str());
    let got = got.unwrap_or_else(|e| panic!("{method}: no identity from the child: {e:?}"));
    assert_eq!(p.exitcode(), Some(0), "{method}");
    (got, p)
}

#[test]
fn current_process_in_the_main_process() {
    let me = current_process();
    assert_eq!(me.name, "MainProcess");
    assert_eq!(me.pid, std::process::id());
    assert!(!me.daemon);
    assert_eq!(parent_process(), None);
}

#[test]
fn current_process_in_a_child_has_its_name_and_pid() {
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let named = Process::new(report_identity, there.try_clone().unwrap()).name("custom-name");
        let (id, p) = identity_of(named, method, &here);
        assert_eq!(id.name, "custom-name", "{method}");
        assert_eq!(Some(id.pid), p.pid(), "{method}");
        assert_ne!(id.pid, std::process::id(), "{method}");
        assert!(!id.daemon, "{method}");

        let unnamed = Process::new(report_identity, there);
        let default_name = unnamed.get_name().to_string();
        default_number(&default_name);
        let (id, _) = identity_of(unnamed, method, &here);
        assert_eq!(
            id.name, default_name,
            "{method}: the child knows its default name"
        );
    }
}

#[test]
fn daemon_flag_is_seen_by_the_child() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let p = Process::new(report_identity, there).daemon(true);
        assert!(p.is_daemon());
        let (id, _) = identity_of(p, method, &here);
        assert!(id.daemon, "{method}");
    }
}

#[test]
fn parent_process_in_a_child_is_the_process_that_started_it() {
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let (id, _) = identity_of(Process::new(report_identity, there), method, &here);
        assert_eq!(
            id.parent,
            Some(("MainProcess".to_string(), std::process::id())),
            "{method}"
        );
    }
}

/// Sends back its own name and the default name of the first process it creates.
fn name_a_grandchild(conn: Connection) {
    let first = Process::new(noop, ());
    let second = Process::new(noop, ());
    conn.send(&(
        current_process().name,
        first.get_name().to_string(),
        second.get_name().to_string(),
    ))
    .unwrap();
}

#[test]
fn default_names_nest_as_in_python() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(name_a_grandchild, there).start_method(method);
        p.start().unwrap();
        let got = here.recv_timeout::<(String, String, String)>(LONG);
        join_bounded(&mut p, method.as_str());
        let (me, first, second) = got.unwrap();
        assert_eq!(me, p.get_name(), "{method}");
        assert_eq!(first, format!("{me}:1"), "{method}");
        assert_eq!(second, format!("{me}:2"), "{method}");
    }
}

#[test]
fn active_children_lists_running_children_only() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(ready_then_sleep, there)
            .name("listed-child")
            .start_method(method);
        p.start().unwrap();
        let mut guard = KillOnDrop(p);
        let pid: u32 = here.recv_timeout(LONG).unwrap();
        // Other tests run children at the same time: look for ours only.
        let listed = active_children();
        let ours = listed.iter().find(|c| c.pid == pid);
        let ours = ours.unwrap_or_else(|| panic!("{method}: {pid} missing from {listed:?}"));
        assert_eq!(ours.name, "listed-child", "{method}");
        assert!(!ours.daemon, "{method}");

        guard.0.kill().unwrap();
        join_bounded(&mut guard.0, method.as_str());
        let listed = active_children();
        assert!(
            listed.iter().all(|c| c.pid != pid),
            "{method}: {pid} still listed after it ended: {listed:?}"
        );
    }
}

#[test]
fn active_children_drops_children_that_ended_without_join() {
    let mut p = Process::new(noop, ()).start_method(StartMethod::Forkserver);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    // Wait for the end through the sentinel, without joining.
    let ready = multiproc::wait(&[&p], Some(LONG)).unwrap();
    assert_eq!(ready, vec![0]);
    let listed = active_children();
    assert!(listed.iter().all(|c| c.pid != pid), "{listed:?}");
    join_bounded(&mut p, "forkserver");
}

#[test]
fn spawn_returns_the_value() {
    for method in METHODS {
        let h = get_context(method).spawn(add, (40, 2)).unwrap();
        assert_eq!(h.join().unwrap(), 42, "{method}");
    }
    assert_eq!(multiproc::spawn(add, (1, 2)).unwrap().join().unwrap(), 3);
}

#[test]
fn panic_message_and_location_come_back_through_spawn_join() {
    for method in METHODS {
        let h = get_context(method).spawn(panics_with_line, ()).unwrap();
        match h.join() {
            Err(Error::Panicked { message, location }) => {
                let line: u32 = message
                    .strip_prefix("boom from line ")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or_else(|| panic!("{method}: unexpected message {message:?}"));
                let location = location.unwrap_or_else(|| panic!("{method}: no location"));
                let expected = format!("{}:{line}:", file!());
                assert!(
                    location.starts_with(&expected),
                    "{method}: location {location:?}, expected {expected}<column>"
                );
            }
            other => panic!("{method}: expected Panicked, got {other:?}"),
        }
    }
}

#[test]
fn spawn_join_reports_an_exit_without_result_as_worker_lost() {
    for method in METHODS {
        let h = get_context(method).spawn(exits_with_result, 7).unwrap();
        let pid = h.pid();
        match h.join() {
            Err(Error::WorkerLost { pid: p, exitcode }) => {
                assert_eq!(p, pid, "{method}");
                assert_eq!(exitcode, 7, "{method}");
            }
            other => panic!("{method}: expected WorkerLost, got {other:?}"),
        }
    }
}

#[test]
fn spawn_join_reports_a_killed_child_as_worker_lost() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut h = get_context(method)
            .spawn(ready_then_sleep_with_result, there)
            .unwrap();
        let reported = here.recv_timeout::<u32>(LONG);
        h.process().kill().unwrap();
        assert_eq!(reported.unwrap(), h.pid(), "{method}");
        match h.join_timeout(LONG) {
            Err(Error::WorkerLost { pid, exitcode }) => {
                assert_eq!(pid, h.pid(), "{method}");
                assert_eq!(exitcode, -9, "{method}");
            }
            other => panic!("{method}: expected WorkerLost, got {other:?}"),
        }
    }
}

#[test]
fn spawn_join_timeout_gives_timeout_while_the_child_runs() {
    let (here, there) = pipe(true).unwrap();
    let mut h = multiproc::spawn(ready_then_sleep_with_result, there).unwrap();
    let reported = here.recv_timeout::<u32>(LONG);
    let early = h.join_timeout(Duration::from_millis(200));
    h.process().kill().unwrap();
    reported.unwrap();
    assert!(matches!(early, Err(Error::Timeout)), "got {early:?}");
    assert!(matches!(
        h.join_timeout(LONG),
        Err(Error::WorkerLost { exitcode: -9, .. })
    ));
}

fn big_text(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// Builds a large result, says so, and returns it (a string: encoding it is one copy, so
/// the child starts writing at once).
fn big_result((conn, len): (Connection, usize)) -> String {
    let text = big_text(len);
    conn.send(&()).unwrap();
    text
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

#[test]
fn spawn_join_timeout_can_be_retried_while_a_large_result_arrives() {
    // The child is stopped while its result is half written, so that a join_timeout
    // expires in the middle of the result; the handle must stay usable and the next
    // try must give the whole value. A result travels through the socket only below
    // the large-message size (larger ones go whole, in a sealed file), and one just below
    // it is larger than a socket's buffer (208 KiB by default): the child blocks
    // half-way.
    const LEN: usize = multiproc::LARGE_MESSAGE_THRESHOLD - 4096;
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut h = get_context(method).spawn(big_result, (there, LEN)).unwrap();
        let pid = h.pid();
        here.recv_timeout::<()>(LONG).unwrap();
        // Let the child fill the socket and block in the middle of the result.
        thread::sleep(Duration::from_millis(500));
        signal(pid, "STOP");
        let early = h.join_timeout(Duration::from_millis(300));
        signal(pid, "CONT");
        assert!(
            matches!(early, Err(Error::Timeout)),
            "{method}: got {early:?}"
        );
        let got = h.join_timeout(LONG);
        let _ = h.process().kill();
        let got = got.unwrap_or_else(|e| panic!("{method}: retried join gave {e:?}"));
        assert_eq!(got.len(), LEN, "{method}");
        assert!(got == big_text(LEN), "{method}: wrong text");
    }
}

/// Python's "subclass Process and override run".
#[derive(Serialize, Deserialize)]
struct Doubler {
    value: u64,
    reply: Connection,
}

impl Run for Doubler {
    fn run(self) {
        self.reply.send(&(self.value * 2)).unwrap();
    }
}

#[test]
fn from_run_runs_the_object_in_the_child() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = get_context(method).process_from_run(Doubler {
            value: 21,
            reply: there,
        });
        p.start().unwrap();
        let got = here.recv_timeout::<u64>(LONG);
        join_bounded(&mut p, method.as_str());
        assert_eq!(got.unwrap(), 42, "{method}");
        assert_eq!(p.exitcode(), Some(0), "{method}");
    }
}

/// Set in the parent before a spawn; a spawned child is a fresh execution of the binary
/// and must see its initial value (a forked child would see the parent's).
static MARK: AtomicU32 = AtomicU32::new(0);

fn spawned_view(_: ()) -> (u32, u32) {
    (MARK.load(Ordering::SeqCst), std::process::id())
}

#[test]
fn spawn_start_method_runs_a_fresh_copy_of_the_test_binary() {
    MARK.store(1234, Ordering::SeqCst);
    let h = get_context(StartMethod::Spawn)
        .spawn(spawned_view, ())
        .unwrap();
    let pid = h.pid();
    // The spawned child is our own child (not the fork server's).
    if let Some((ppid, _)) = ppid_and_state(pid) {
        assert_eq!(ppid, std::process::id());
    }
    let (mark, child_pid) = h.join().unwrap();
    assert_eq!(child_pid, pid);
    assert_ne!(child_pid, std::process::id());
    assert_eq!(mark, 0, "the spawned child saw the parent's memory");

    let mut p = Process::new(noop, ()).start_method(StartMethod::Spawn);
    p.start().unwrap();
    join_bounded(&mut p, "spawn");
    assert_eq!(p.exitcode(), Some(0));
}

/// How long a grandchild left behind by an aborted child sleeps: far beyond the 1 s that
/// `join` may take, short enough that a test on a `join` that waits for it still ends.
const GRANDCHILD_SLEEP: Duration = Duration::from_secs(10);

fn sleep_a_while(_: ()) {
    thread::sleep(GRANDCHILD_SLEEP);
}

/// Forks a grandchild that sleeps, tells the parent its pid, then aborts.
fn fork_a_sleeper_then_abort(conn: Connection) -> u32 {
    let mut g = Process::new(sleep_a_while, ()).start_method(StartMethod::Fork);
    g.start().unwrap();
    conn.send(&g.pid().unwrap()).unwrap();
    std::process::abort()
}

#[test]
fn join_of_an_aborted_child_is_not_delayed_by_a_grandchild_it_forked() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let h = get_context(method)
            .spawn(fork_a_sleeper_then_abort, there)
            .unwrap();
        let grandchild: u32 = here.recv_timeout(LONG).unwrap();
        let gone = common::wait_gone(h.pid(), LONG);
        let started = std::time::Instant::now();
        let joined = if gone { Some(h.join()) } else { None };
        let took = started.elapsed();
        common::kill_pid(grandchild);
        assert!(gone, "{method}: the child did not abort");
        match joined {
            Some(Err(Error::WorkerLost { exitcode: -6, .. })) => {}
            other => panic!("{method}: expected WorkerLost by SIGABRT, got {other:?}"),
        }
        assert!(
            took < Duration::from_secs(1),
            "{method}: join of a dead child took {took:?} while its grandchild lived"
        );
    }
}

#[test]
fn join_timeouts_of_duration_max_wait_for_the_end_without_panicking() {
    for method in METHODS {
        let mut p = get_context(method).process(noop, ());
        p.start().unwrap();
        assert!(p.join_timeout(Duration::MAX).unwrap(), "{method}");
        assert_eq!(p.exitcode(), Some(0), "{method}");
        let mut h = get_context(method).spawn(add, (40, 2)).unwrap();
        assert_eq!(h.join_timeout(Duration::MAX).unwrap(), 42, "{method}");
    }
}

//! The fork server under stress: a start whose arguments carry more handles than one
//! message holds, and children that outlive a killed server.
//!
//! Bounds: waits are [`LONG`] (generous); nothing here is timed tightly.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{KillOnDrop, LONG, is_gone, kill_pid, ppid_and_state, wait_gone, zombie_children};
use multiproc::{Connection, Lock, Process, StartMethod, get_context, pipe};

/// The tests share this process's fork server and one of them kills it: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for a word (or end of stream) on `conn`, then returns.
fn wait_for_word(conn: Connection) {
    let _ = conn.recv::<u8>();
}

/// Takes and releases every lock it was given, and says how many.
fn use_locks(locks: Vec<Lock>) -> usize {
    for l in &locks {
        drop(l.acquire().unwrap());
    }
    locks.len()
}

fn start_waiter() -> (KillOnDrop, Connection) {
    let (here, there) = pipe(true).unwrap();
    let mut p = Process::new(wait_for_word, there).start_method(StartMethod::Forkserver);
    p.start().unwrap();
    (KillOnDrop(p), here)
}

#[test]
fn a_start_with_more_handles_than_one_message_holds_leaves_other_children_running() {
    let _one = serial();
    let (mut running, tell) = start_waiter();
    let server = ppid_and_state(running.0.pid().unwrap()).unwrap().0;
    let locks: Vec<Lock> = (0..70).map(|_| Lock::new().unwrap()).collect();
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let mut h = get_context(method).spawn(use_locks, locks.clone()).unwrap();
        assert_eq!(h.join_timeout(LONG).unwrap(), 70, "{method}");
    }
    // The child started before is untouched, under the same server, which is not a
    // zombie, and no replaced server was left one either.
    assert!(running.0.is_alive(), "the running child was reported gone");
    assert_eq!(
        ppid_and_state(running.0.pid().unwrap()).map(|(ppid, _)| ppid),
        Some(server),
        "the fork server was replaced"
    );
    assert!(!is_gone(server), "the fork server ended");
    assert!(
        zombie_children().is_empty(),
        "zombies: {:?}",
        zombie_children()
    );
    tell.send(&1u8).unwrap();
    assert!(running.0.join_timeout(LONG).unwrap());
    assert_eq!(running.0.exitcode(), Some(0));
}

#[test]
fn a_fork_server_child_outliving_its_server_is_alive_until_it_ends() {
    let _one = serial();
    let (mut child, tell) = start_waiter();
    let pid = child.0.pid().unwrap();
    let server = ppid_and_state(pid).unwrap().0;
    assert_ne!(server, std::process::id());
    kill_pid(server);
    assert!(wait_gone(server, LONG), "the fork server did not die");
    // The server is gone; the child runs on.
    assert!(!is_gone(pid));
    assert!(child.0.is_alive(), "a running child was reported gone");
    assert_eq!(child.0.exitcode(), None);
    assert!(
        !child.0.join_timeout(Duration::from_millis(300)).unwrap(),
        "join returned while the child still ran"
    );
    assert!(child.0.is_alive());
    tell.send(&1u8).unwrap();
    // Its exit code went with the server; that it ended is what join reports.
    let _ = child.0.join_timeout(LONG);
    assert!(is_gone(pid), "join returned before the child ended");
    assert!(!child.0.is_alive());
    // A new server serves the next start.
    let (mut next, tell) = start_waiter();
    tell.send(&1u8).unwrap();
    assert!(next.0.join_timeout(LONG).unwrap());
    assert_eq!(next.0.exitcode(), Some(0));
    assert!(
        zombie_children().is_empty(),
        "zombies: {:?}",
        zombie_children()
    );
}

/// Starts a fork-server child that waits on `word`, reports its pid and the server's,
/// and returns: its exit-time join must then wait for that child.
fn start_a_waiter_and_return((report, word): (Connection, Connection)) {
    let mut g = Process::new(wait_for_word, word).start_method(StartMethod::Forkserver);
    g.start().unwrap();
    let pid = g.pid().unwrap();
    let server = ppid_and_state(pid).unwrap().0;
    report.send(&(pid, server)).unwrap();
    // Wait until the server is gone, so the exit-time join runs without it.
    let _ = report.recv::<u8>();
}

#[test]
fn the_exit_time_join_waits_for_a_child_whose_fork_server_died() {
    let _one = serial();
    let (here, there) = pipe(true).unwrap();
    let (word_here, word_there) = pipe(true).unwrap();
    let mut parent = KillOnDrop(
        Process::new(start_a_waiter_and_return, (there, word_there))
            .start_method(StartMethod::Spawn),
    );
    parent.0.start().unwrap();
    let (child, server): (u32, u32) = here.recv_timeout(LONG).unwrap();
    kill_pid(server);
    assert!(wait_gone(server, LONG), "the fork server did not die");
    here.send(&1u8).unwrap();
    // The parent returned and now joins its child at exit, which runs on.
    assert!(
        !parent.0.join_timeout(Duration::from_millis(500)).unwrap(),
        "the parent exited while its child still ran"
    );
    assert!(!is_gone(child));
    word_here.send(&1u8).unwrap();
    assert!(parent.0.join_timeout(LONG).unwrap());
    assert_eq!(parent.0.exitcode(), Some(0));
    assert!(wait_gone(child, LONG));
}

fn square(x: u64) -> u64 {
    x * x
}

/// Zombies among the children of process `parent`.
fn zombies_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(ppid_and_state(pid), Some((ppid, 'Z')) if ppid == parent))
        .collect()
}

/// In a process of its own (it lowers its descriptor limit): starts fork-server
/// children with 0 to 7 descriptors left free, and says what went wrong, if anything.
fn start_with_few_descriptors_left(_: ()) -> Vec<String> {
    let mut problems = Vec::new();
    let ctx = get_context(StartMethod::Forkserver);
    let (mut running, tell) = start_waiter();
    let server = ppid_and_state(running.0.pid().unwrap()).unwrap().0;
    let mut out_of_descriptors = 0;
    for free in 0..8 {
        let used_up = common::DescriptorsUsedUp::leaving(free);
        let started = ctx.spawn(square, 3u64);
        drop(used_up);
        match started.and_then(|mut h| h.join_timeout(LONG)) {
            Ok(9) => {}
            Err(multiproc::Error::Io(e))
                if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) =>
            {
                out_of_descriptors += 1;
            }
            other => problems.push(format!("{free} free: {other:?}")),
        }
        if is_gone(server) {
            problems.push(format!("{free} free: the fork server ended"));
        }
        if !running.0.is_alive() {
            problems.push(format!("{free} free: the running child was reported gone"));
        }
    }
    if out_of_descriptors == 0 {
        problems.push("no start failed for want of descriptors".into());
    }
    // The server still serves, reaped the child it forked for a failed start, and the
    // running child ends normally.
    let mut h = ctx.spawn(square, 4u64).unwrap();
    if h.join_timeout(LONG).ok() != Some(16) {
        problems.push("the next start failed".into());
    }
    for _ in 0..3000 {
        if zombies_of(server).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !zombies_of(server).is_empty() {
        problems.push(format!("the server left zombies: {:?}", zombies_of(server)));
    }
    tell.send(&1u8).unwrap();
    if running.0.join_timeout(LONG).ok() != Some(true) || running.0.exitcode() != Some(0) {
        problems.push(format!(
            "the running child ended with {:?}",
            running.0.exitcode()
        ));
    }
    problems
}

#[test]
fn a_start_that_runs_out_of_descriptors_fails_alone_and_the_server_runs_on() {
    let _one = serial();
    let mut h = get_context(StartMethod::Spawn)
        .spawn(start_with_few_descriptors_left, ())
        .unwrap();
    let problems = h.join_timeout(LONG).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn waiting_on_a_fork_server_child_whose_server_died_returns_only_when_it_ends() {
    let _one = serial();
    let (child, tell) = start_waiter();
    let pid = child.0.pid().unwrap();
    let server = ppid_and_state(pid).unwrap().0;
    kill_pid(server);
    assert!(wait_gone(server, LONG), "the fork server did not die");
    let ready = multiproc::wait(&[&child.0], Some(Duration::from_millis(300))).unwrap();
    assert!(ready.is_empty(), "wait reported a running child as ended");
    assert!(child.0.is_alive());
    tell.send(&1u8).unwrap();
    assert_eq!(multiproc::wait(&[&child.0], Some(LONG)).unwrap(), vec![0]);
    assert!(is_gone(pid), "wait returned before the child ended");
    assert!(!child.0.is_alive());
}

#[test]
fn the_exit_code_of_a_fork_server_child_is_known_when_wait_returns() {
    let _one = serial();
    for _ in 0..5 {
        let (mut child, tell) = start_waiter();
        tell.send(&1u8).unwrap();
        assert_eq!(multiproc::wait(&[&child.0], Some(LONG)).unwrap(), vec![0]);
        assert_eq!(child.0.exitcode(), Some(0));
        assert!(child.0.join_timeout(LONG).unwrap());
    }
}

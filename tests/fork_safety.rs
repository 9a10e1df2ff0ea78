//! The fork start method in a multi-threaded program: a lock that another thread held at
//! the moment of the fork must not hang the child.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::LONG;
use multiproc::{Process, StartMethod};

fn noop(_: ()) {}

/// Another thread takes a lock, signals, keeps it a moment, then lets go by itself; a
/// child is forked meanwhile. The fork must not leave the child a copy of the lock held
/// by a thread that does not exist in the child.
fn fork_while_another_thread_holds<F>(what: &str, lock: F)
where
    F: FnOnce(mpsc::Sender<()>) + Send + 'static,
{
    let (held_tx, held_rx) = mpsc::channel();
    let holder = thread::spawn(move || lock(held_tx));
    held_rx.recv().unwrap();
    let mut p = Process::new(noop, ()).start_method(StartMethod::Fork);
    let started = p.start();
    holder.join().unwrap();
    started.unwrap();
    let ended = p.join_timeout(LONG).unwrap();
    if !ended {
        let _ = p.kill();
        let _ = p.join();
    }
    assert!(
        ended,
        "the forked child hung: {what} was held by another thread at the fork"
    );
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn a_forked_child_ends_when_another_thread_held_stdout() {
    fork_while_another_thread_holds("the stdout lock", |held| {
        let mut out = std::io::stdout().lock();
        held.send(()).unwrap();
        thread::sleep(Duration::from_millis(300));
        out.flush().unwrap();
    });
}

#[test]
fn a_forked_child_ends_when_another_thread_held_stderr() {
    fork_while_another_thread_holds("the stderr lock", |held| {
        let mut err = std::io::stderr().lock();
        held.send(()).unwrap();
        thread::sleep(Duration::from_millis(300));
        err.flush().unwrap();
    });
}

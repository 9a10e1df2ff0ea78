//! S2 (seeds 000, 001): start ten processes in a loop, then ten processes that each
//! start a thread inside themselves.
//!
//! The tutorial's `time.sleep(1)` is shortened to 200 ms, and the parent joins the
//! children explicitly (Python joins non-daemon children when the program ends; so does
//! multiproc, but here the next part should not start before they are done). Inside a
//! child the thread is joined before `run` returns: a Rust process ends when its main
//! function returns, whatever other threads are doing.

use std::thread;
use std::time::Duration;

use multiproc::{Process, current_process};

const PAUSE: Duration = Duration::from_millis(200);

/// Seed 001: `print(f'Process: {index}')`.
fn process(index: u32) {
    println!("Process: {index}");
}

/// Seed 000: the thread's task prints its thread id (`threading.get_ident()`).
fn thread_run() {
    println!(
        "  thread {:?} running inside process {} (pid {})",
        thread::current().id(),
        current_process().name,
        std::process::id()
    );
}

/// Seed 000: a process that starts a thread inside itself.
fn run(name: u32) {
    thread::sleep(PAUSE);
    println!("hello-{name}");
    let t = thread::spawn(thread_run);
    t.join().expect("the thread panicked");
}

pub fn main() -> multiproc::Result<()> {
    println!("-- ten processes (seed 001) --");
    let mut children = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(process, i);
        p.start()?;
        children.push(p);
    }
    for p in &mut children {
        p.join()?;
    }

    println!("-- ten processes, each starting a thread (seed 000) --");
    let mut children = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(run, i);
        p.start()?;
        children.push(p);
    }
    for p in &mut children {
        p.join()?;
    }
    let codes: Vec<_> = children.iter().map(|p| p.exitcode()).collect();
    println!("exit codes: {codes:?}");
    Ok(())
}

//! S6 (seeds 000, 001): a `Lock` serialising the printing of a hundred processes, and a
//! `Lock` held inside a struct's `run` (seed 001's `Process` subclass).
//!
//! Seed 000: each of a hundred processes takes the lock, prints `hello world i` and
//! releases it; the guard returned by `acquire` is Python's `try: ... finally:
//! l.release()`. The processes start in order but run concurrently, so the numbers come
//! out in whatever order they reach the lock, as in Python; the lock only keeps each line
//! whole.
//!
//! Seed 001: `MyProcess(loop, lock)` for `loop` in 10..15; each round sleeps 0.1 s, then
//! prints its pid and round under the lock. The struct implements [`Run`]; the lock is one
//! of its fields and travels to the child with it.

use std::thread;
use std::time::Duration;

use multiproc::{Lock, Process, Run};
use serde::{Deserialize, Serialize};

const ROUND: Duration = Duration::from_millis(100);

/// Seed 000's `f(l, i)`.
fn f((l, i): (Lock, u32)) -> multiproc::Result<()> {
    let _held = l.acquire()?;
    println!("hello world {i}");
    Ok(())
}

/// Seed 001's `MyProcess(Process)`.
#[derive(Serialize, Deserialize)]
struct MyProcess {
    loop_count: u32,
    lock: Lock,
}

impl Run for MyProcess {
    fn run(self) {
        let pid = std::process::id();
        for count in 0..self.loop_count {
            thread::sleep(ROUND);
            match self.lock.acquire() {
                Ok(_held) => println!("Pid: {pid} LoopCount: {count}"),
                Err(e) => eprintln!("Pid: {pid}: {e}"),
            }
        }
    }
}

/// Joins every process and checks that each ended well.
fn join_all(processes: &mut [Process]) -> multiproc::Result<()> {
    for p in processes.iter_mut() {
        p.join()?;
    }
    let failed = processes.iter().filter(|p| p.exitcode() != Some(0)).count();
    if failed > 0 {
        eprintln!("{failed} processes did not end well");
    }
    Ok(())
}

pub fn main() -> multiproc::Result<()> {
    println!("-- a hundred processes printing under one lock (seed 000) --");
    let lock = Lock::new()?;
    let mut processes = Vec::new();
    for num in 0..100 {
        let mut p = Process::new(f, (lock.clone(), num));
        p.start()?;
        processes.push(p);
    }
    join_all(&mut processes)?;

    println!("-- MyProcess(loop, lock) for loop in 10..15 (seed 001) --");
    let lock = Lock::new()?;
    let mut processes = Vec::new();
    for i in 10..15 {
        let mut p = Process::from_run(MyProcess {
            loop_count: i,
            lock: lock.clone(),
        });
        p.start()?;
        processes.push(p);
    }
    join_all(&mut processes)?;
    Ok(())
}

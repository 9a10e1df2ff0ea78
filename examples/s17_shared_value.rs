//! S17 (seeds 003, 004): a shared `Value('i', 0)` incremented by two processes, first
//! without a lock, then with one.
//!
//! Without a lock, `v.value += num` is a read and then a write (each under the value's
//! own lock, as in Python, but not the two together): the two processes' rounds
//! interleave, and the printed values mix, like the tutorial's `145891213161720`. If both
//! read before either writes, one increment is lost and the total is short of 20.
//!
//! With a [`Lock`] held around all five rounds, one process runs its rounds, then the
//! other: `1 2 3 4 5` then `8 11 14 17 20` when the first process (adding 1) takes the
//! lock first, which it usually does since it starts first.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use multiproc::{Lock, Process, Value};

const ROUND: Duration = Duration::from_millis(100);

/// Without a lock: `v.value += num; print(v.value, end="")`, five times.
fn job((v, num): (Value<i32>, i32)) -> multiproc::Result<()> {
    for _ in 0..5 {
        thread::sleep(ROUND);
        let x = v.get()?;
        v.set(x + num)?;
        print!("{}", v.get()?);
        io::stdout().flush()?;
    }
    Ok(())
}

/// With a lock around the five rounds: `v.value += num; print(v.value)`.
fn job_locked((v, num, l): (Value<i32>, i32, Lock)) -> multiproc::Result<()> {
    let _held = l.acquire()?;
    for _ in 0..5 {
        thread::sleep(ROUND);
        let x = v.get()?;
        v.set(x + num)?;
        println!("{}", v.get()?);
    }
    Ok(())
}

/// Starts both processes, then joins both.
fn run_pair(mut p1: Process, mut p2: Process) -> multiproc::Result<()> {
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}

pub fn main() -> multiproc::Result<()> {
    println!("-- without a lock --");
    let v = Value::new(0i32)?;
    run_pair(
        Process::new(job, (v.clone(), 1)),
        Process::new(job, (v.clone(), 3)),
    )?;
    println!();
    println!(
        "final value: {} (20 unless an increment was lost)",
        v.get()?
    );

    println!("-- with a lock --");
    let l = Lock::new()?;
    let v = Value::new(0i32)?;
    run_pair(
        Process::new(job_locked, (v.clone(), 1, l.clone())),
        Process::new(job_locked, (v.clone(), 3, l.clone())),
    )?;
    println!("final value: {}", v.get()?);
    Ok(())
}

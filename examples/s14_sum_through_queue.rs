//! S14 (seeds 003, 004): two processes compute `sum(i + i**2 + i**3)` and return their
//! results through a `Queue`; the parent adds them.
//!
//! A process's function cannot hand a value back by returning it in Python's
//! `Process`, hence the queue: each job puts its sum, the parent joins both and gets two
//! results. First the tutorial's program as it is (both processes sum over
//! `range(1000)`); then the work split for real: each process takes one half of
//! `0..1_000_000`, sends which half it did with its sum, and the parent checks the total
//! against the same sum computed here serially (249999833333583333000000: half the
//! figure seed 003 prints in its efficiency comparison, whose processes each sum all of
//! `range(1000000)`).
//!
//! Python's integers have no bound; the sums of cubes up to a million pass `u64`, so the
//! sums are `u128`. Joining before getting, as the tutorial does, is safe: a `put` is
//! complete when it returns (there is no feeder thread that must flush before the
//! child can end).

use std::ops::Range;

use multiproc::{Process, Queue};

/// `sum(i + i**2 + i**3 for i in range)`.
fn sum_of_powers(range: Range<u64>) -> u128 {
    range
        .map(|i| {
            let i = u128::from(i);
            i + i * i + i * i * i
        })
        .sum()
}

/// The tutorial's `job(q)`: the sum over `range(1000)`, put in the queue.
fn job(q: Queue<u128>) -> multiproc::Result<()> {
    q.put(&sum_of_powers(0..1000))
}

/// One half of the work: the sum over `range`, put with the half's number.
fn half_job((q, half, range): (Queue<(u32, u128)>, u32, Range<u64>)) -> multiproc::Result<()> {
    q.put(&(half, sum_of_powers(range)))
}

/// Starts both processes, then joins both (`p1.start(); p2.start(); p1.join(); p2.join()`).
fn run_pair(mut p1: Process, mut p2: Process) -> multiproc::Result<()> {
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}

pub fn main() -> multiproc::Result<()> {
    println!("-- the tutorial: both processes sum over range(1000) --");
    let q = Queue::new()?;
    run_pair(Process::new(job, q.clone()), Process::new(job, q.clone()))?;
    let res1 = q.get()?;
    println!("{res1}");
    let res2 = q.get()?;
    println!("{res2}");
    println!("{}", res1 + res2);

    const N: u64 = 1_000_000;
    println!("-- the work split: each process sums one half of 0..{N} --");
    let q = Queue::new()?;
    run_pair(
        Process::new(half_job, (q.clone(), 1, 0..N / 2)),
        Process::new(half_job, (q.clone(), 2, N / 2..N)),
    )?;
    let mut total = 0;
    for _ in 0..2 {
        let (half, sum) = q.get()?;
        println!("half {half}: {sum}");
        total += sum;
    }
    let serial = sum_of_powers(0..N);
    println!("sum of both halves: {total}");
    println!(
        "serial sum:         {serial} ({})",
        if total == serial {
            "equal"
        } else {
            "DIFFERENT"
        }
    );
    Ok(())
}

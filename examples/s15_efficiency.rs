//! S15 (seed 003): the same work done serially, by two threads and by two processes,
//! each timed.
//!
//! The tutorial's job is `sum(i + i**2 + i**3 for i in range(1000000))`, done twice.
//! In CPython the two threads take longer than the serial loop (the GIL lets one run at
//! a time, and they fight over it) and the two processes take about half. Rust threads
//! have no such lock: both run at once, so two threads are as fast as two processes,
//! and cost less to start. Processes are for what threads cannot give: separate
//! memory, a crash that stays in its process, a job that may be killed. The numbers
//! printed are measured on this machine each time (they vary with how many cores it
//! has and how busy they are); the job runs fifty times longer than the tutorial's, so
//! that it outweighs starting a process.
//!
//! As in the tutorial, threads and processes send their results through a `Queue`.

use std::thread;
use std::time::{Duration, Instant};

use multiproc::{Process, Queue};

/// Iterations per job: fifty times the tutorial's million.
const N: u64 = 50_000_000;

/// `sum(i + i**2 + i**3 for i in range(N))`, with Python's unbounded integers as `u128`.
/// Each `i` passes through `black_box`, so that the compiler really loops instead of
/// finding the sum's closed form.
fn sum_of_powers() -> u128 {
    (0..N)
        .map(|i| {
            let i = u128::from(std::hint::black_box(i));
            i + i * i + i * i * i
        })
        .sum()
}

/// The tutorial's `job(q)`.
fn job(q: Queue<u128>) {
    q.put(&sum_of_powers()).expect("put");
}

fn timed(
    what: &str,
    f: impl FnOnce() -> multiproc::Result<u128>,
) -> multiproc::Result<(u128, Duration)> {
    let start = Instant::now();
    let res = f()?;
    let took = start.elapsed();
    println!("{what:<12} {res}   cost time: {:.3} s", took.as_secs_f64());
    Ok((res, took))
}

pub fn main() -> multiproc::Result<()> {
    let (serial, t_serial) = timed("normal:", || {
        let mut res = 0;
        for _ in 0..2 {
            res += sum_of_powers();
        }
        Ok(res)
    })?;
    let (threads, t_threads) = timed("multithread:", || {
        let q = Queue::new()?;
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                thread::spawn(move || job(q))
            })
            .collect();
        for w in workers {
            w.join().expect("a job thread panicked");
        }
        Ok(q.get()? + q.get()?)
    })?;
    let (processes, t_processes) = timed("multicore:", || {
        let q = Queue::new()?;
        let mut p1 = Process::new(job, q.clone());
        let mut p2 = Process::new(job, q.clone());
        p1.start()?;
        p2.start()?;
        p1.join()?;
        p2.join()?;
        Ok(q.get()? + q.get()?)
    })?;
    assert_eq!(serial, threads);
    assert_eq!(serial, processes);
    let ratio = |t: Duration| t_serial.as_secs_f64() / t.as_secs_f64();
    println!(
        "speed-up over serial: threads {:.2}x, processes {:.2}x on {} CPU(s) \
         (CPython's tutorial: threads 0.46x, processes 1.83x)",
        ratio(t_threads),
        ratio(t_processes),
        multiproc::cpu_count()
    );
    Ok(())
}

//! S16 (seed 003): a `Pool(processes=3)`; `map(job, range(10))`, one
//! `apply_async(job, (3,)).get()`, and a list of `apply_async` results gathered.
//!
//! `map` gives every input to the workers and returns the results in order;
//! `apply_async` gives one task and returns at once an `AsyncResult`, whose `get` waits
//! for the value. As the tutorial says, `apply_async` takes one set of arguments, so
//! getting what `map` gives takes a loop: submit all, then `get` each, in order. Python
//! passes the arguments as a tuple, `(3,)`; a Rust target takes one argument, here the
//! number itself (several would travel as a tuple).
//!
//! Without `processes` a pool has as many workers as the machine has CPUs
//! (`Pool::new(0)`); `Pool::builder().processes(3)` is the tutorial's `processes=3`. To
//! show that the work is shared, the last part also asks each task for its worker's
//! pid.

use std::collections::BTreeSet;

use multiproc::Pool;

/// The tutorial's `job(x)`: `x * x`.
fn job(x: u64) -> u64 {
    x * x
}

/// `job(x)` with the pid of the worker that ran it.
fn job_where(x: u64) -> (u64, u32) {
    (job(x), std::process::id())
}

/// The tutorial's `multicore()`.
fn multicore() -> multiproc::Result<()> {
    let pool = Pool::builder().processes(3).build()?;
    let res = pool.map(job, 0..10)?;
    println!("{res:?}");
    let res = pool.apply_async(job, 3)?;
    println!("{}", res.get()?);
    let multi_res = (0..10)
        .map(|i| pool.apply_async(job, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let gathered = multi_res
        .into_iter()
        .map(|res| res.get())
        .collect::<multiproc::Result<Vec<_>>>()?;
    println!("{gathered:?}");

    let multi_res = (0..10)
        .map(|i| pool.apply_async(job_where, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let mut workers = BTreeSet::new();
    for res in multi_res {
        let (value, pid) = res.get()?;
        workers.insert(pid);
        print!("{value}@{pid} ");
    }
    println!();
    println!(
        "the same ten squares by apply_async, with their workers' pids: {} of the pool's \
         workers {:?} took part (main process {})",
        workers.len(),
        pool.pids(),
        std::process::id()
    );
    pool.close();
    pool.join()
}

pub fn main() -> multiproc::Result<()> {
    multicore()
}

//! S7 (seeds 000, 001): a `Pool` of worker processes, tasks given with `apply_async`, a
//! callback that runs in the main process, then `close` and `join`.
//!
//! Seed 000 runs `foo(i)` (sleep, print its pid, return `i + 100`) ten times on a
//! `Pool(5)` with `callback=bar`; `bar` prints the result and `os.getpid()`, which is
//! the main process's pid: the callback runs in the parent, not in the worker. Here
//! `foo` returns its worker's pid with the result, and the callback prints three pids
//! side by side: the worker's, its own (`std::process::id()` where it runs) and the
//! main process's, which the last two equal. The callback is a closure, and runs on a
//! thread of the pool in the parent, in the order tasks complete; it may capture what
//! it needs (here a channel, to count the callbacks).
//!
//! The seed creates its `Pool(5)` inside the loop, a new pool for every task, and
//! closes only the last one; in CPython each earlier pool is kept alive by its pending
//! result, runs its one task, and is collected some time later. In Rust a pool that
//! goes out of scope is terminated (as leaving a `with Pool(...)` block is), and its
//! unfinished tasks fail with `Error::Cancelled`: one pool, made before the loop, is
//! what the seed means. Its commented-out `pool.apply(...)` runs
//! the tasks one at a time (`apply` waits for its result); a second part shows that
//! with three tasks.
//!
//! Seed 001 gives four tasks to a `Pool(3)`: three start at once and the fourth waits
//! for a free worker; "Main process started" prints before any task ends, since
//! `apply_async` does not wait, and "Main process ended" after `join`.
//!
//! The tasks sleep less than the seeds' two and three seconds, so that the example
//! stays short.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use multiproc::Pool;

/// How long a task sleeps (the seeds: 2 s and 3 s).
const NAP: Duration = Duration::from_millis(500);

/// Seed 000's `foo(i)`: sleeps, prints its pid, returns `i + 100`, and the worker's pid
/// with it.
fn foo(i: u32) -> (u32, u32) {
    thread::sleep(NAP);
    println!("in progress {}", std::process::id());
    (i + 100, std::process::id())
}

/// Seed 001's `function(index)`.
fn function(index: u32) {
    println!("Start process: {index}");
    thread::sleep(NAP);
    println!("End process: {index}");
}

/// Seed 000 with `apply_async` and `callback=bar`.
fn with_callback() -> multiproc::Result<()> {
    let main_pid = std::process::id();
    println!("main process {main_pid}");
    let pool = Pool::new(5)?;
    println!("Pool(5): workers {:?}", pool.pids());
    let (done, callbacks) = mpsc::channel();
    let started = Instant::now();
    for i in 0..10 {
        let done = done.clone();
        // Seed 000's `bar(arg)`, run in this process when `foo(i)` has returned.
        let bar = move |&(arg, worker): &(u32, u32)| {
            let here = std::process::id();
            println!(
                "-->exec done: {arg} (worker {worker}; callback in {here}, main {main_pid}: {})",
                if here == main_pid {
                    "same process"
                } else {
                    "ANOTHER PROCESS"
                }
            );
            let _ = done.send(here == main_pid && worker != main_pid);
        };
        let failed = |e: &multiproc::Error| println!("foo failed: {e}");
        pool.apply_async_with(foo, i, bar, failed)?;
    }
    drop(done);
    pool.close();
    pool.join()?;
    println!(
        "close(); join() returned after {} ms",
        started.elapsed().as_millis()
    );
    // Python's `join` returns once every callback has run.
    let mut ran: Vec<bool> = callbacks.try_iter().collect();
    let at_join = ran.len();
    // The channel ends once every callback has run (or been dropped unrun).
    ran.extend(callbacks.iter());
    let in_main = ran.iter().filter(|&&ok| ok).count();
    println!(
        "{at_join} of 10 callbacks had run when join() returned, {} in all; \
         {in_main} ran in the main process for a task run in a worker",
        ran.len()
    );
    Ok(())
}

/// Seed 000's commented-out `pool.apply(func=foo, args=(i,))`: one task at a time.
fn with_apply() -> multiproc::Result<()> {
    let pool = Pool::new(5)?;
    let started = Instant::now();
    for i in 0..3 {
        let (result, worker) = pool.apply(foo, i)?;
        println!(
            "apply(foo, {i}) = {result} from worker {worker}, at {} ms",
            started.elapsed().as_millis()
        );
    }
    pool.close();
    pool.join()?;
    println!(
        "three tasks of {} ms each with apply took {} ms: one after another",
        NAP.as_millis(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Seed 001: four tasks on a `Pool(3)`.
fn four_on_three() -> multiproc::Result<()> {
    let pool = Pool::new(3)?;
    let started = Instant::now();
    let results = (0..4)
        .map(|i| pool.apply_async(function, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    println!("Main process started");
    pool.close();
    pool.join()?;
    println!("Main process ended");
    for r in results {
        r.get()?;
    }
    println!(
        "four tasks of {} ms on three workers took {} ms: two rounds",
        NAP.as_millis(),
        started.elapsed().as_millis()
    );
    Ok(())
}

pub fn main() -> multiproc::Result<()> {
    println!("-- seed 000: Pool(5), apply_async with a callback --");
    with_callback()?;
    println!("-- seed 000's commented-out apply: serial --");
    with_apply()?;
    println!("-- seed 001: Pool(3), four tasks --");
    four_on_three()
}

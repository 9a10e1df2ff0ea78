//! A tour of the seed scenarios: runs every scenario example that exists, in order, each
//! under a header, then lists the scenarios (of S1–S18) that have no example yet, if any, and
//! what each one is waiting for.
//!
//! Each scenario is also an example of its own: `cargo run --release --example s01_process_identity`.

#[path = "s01_process_identity.rs"]
mod s01;
#[path = "s02_many_processes.rs"]
mod s02;
#[path = "s03_queue.rs"]
mod s03;
#[path = "s04_pipe.rs"]
mod s04;
#[path = "s05_manager_dict.rs"]
mod s05;
#[path = "s06_lock.rs"]
mod s06;
#[path = "s07_pool_callback.rs"]
mod s07;
#[path = "s08_run_trait.rs"]
mod s08;
#[path = "s09_daemon.rs"]
mod s09;
#[path = "s10_bounded_queue.rs"]
mod s10;
#[path = "s11_fork_vs_spawn.rs"]
mod s11;
#[path = "s12_pool_map.rs"]
mod s12;
#[path = "s13_thread_vs_process.rs"]
mod s13;
#[path = "s14_sum_through_queue.rs"]
mod s14;
#[path = "s15_efficiency.rs"]
mod s15;
#[path = "s16_pool_job.rs"]
mod s16;
#[path = "s17_shared_value.rs"]
mod s17;
#[path = "s18_value_array.rs"]
mod s18;

use std::time::Instant;

type Scenario = fn() -> multiproc::Result<()>;

/// The scenarios with an example: id, seeds, what it shows, its entry point.
const PRESENT: &[(&str, &str, &str, Scenario)] = &[
    (
        "S1",
        "000",
        "parent and child identity (pids, parent pid)",
        s01::main,
    ),
    (
        "S2",
        "000, 001",
        "ten processes in a loop; a process that starts a thread",
        s02::main,
    ),
    (
        "S3",
        "000",
        "a child puts ['shen', None, 1995] into a Queue, the parent gets it",
        s03::main,
    ),
    (
        "S4",
        "000, 001",
        "Pipe: duplex conversation; Producer/Consumer",
        s04::main,
    ),
    (
        "S5",
        "000",
        "Manager: a dict with int, str and float keys and a list, written by ten processes",
        s05::main,
    ),
    (
        "S6",
        "000, 001",
        "a Lock serialising the printing of a hundred processes; a Lock inside run",
        s06::main,
    ),
    (
        "S7",
        "000, 001",
        "Pool(5) / Pool(3): apply_async with a callback in the main process; close, join",
        s07::main,
    ),
    (
        "S8",
        "001",
        "a struct implementing Run (Process subclass with run)",
        s08::main,
    ),
    (
        "S9",
        "001",
        "daemon processes; join with a timeout; \"end\"",
        s09::main,
    ),
    (
        "S10",
        "001",
        "producer/consumer with Queue(10), two Semaphores and a Lock",
        s10::main,
    ),
    (
        "S11",
        "001",
        "fork vs spawn: what a child sees of a queue made before it",
        s11::main,
    ),
    (
        "S12",
        "001",
        "Pool.map over a list of inputs: hashing this crate's source files",
        s12::main,
    ),
    (
        "S13",
        "003, 004",
        "Thread and Process side by side",
        s13::main,
    ),
    (
        "S14",
        "003, 004",
        "two processes return sums through a Queue; the parent adds them",
        s14::main,
    ),
    (
        "S15",
        "003",
        "serial vs two threads vs two processes, timed, results through a Queue",
        s15::main,
    ),
    (
        "S16",
        "003",
        "Pool.map(job, range(10)), apply_async(job, 3).get(), a list of apply_async results",
        s16::main,
    ),
    (
        "S17",
        "003, 004",
        "a shared Value incremented by two processes, without and with a Lock",
        s17::main,
    ),
    ("S18", "004", "shared memory: Value and Array", s18::main),
];

/// The scenarios without an example yet, and what each is waiting for.
const MISSING: &[(&str, &str, &str)] = &[];

fn main() -> multiproc::Result<()> {
    let tour = Instant::now();
    for (id, seeds, what, run) in PRESENT {
        println!();
        println!("==================== {id} (seed {seeds}): {what} ====================");
        let started = Instant::now();
        run()?;
        println!(
            "-------------------- {id} done in {} ms",
            started.elapsed().as_millis()
        );
    }
    println!();
    println!(
        "==================== {} of 18 scenarios ran in {} ms ====================",
        PRESENT.len(),
        tour.elapsed().as_millis()
    );
    if MISSING.is_empty() {
        println!("Every scenario has its example.");
    } else {
        println!("Still missing ({}):", MISSING.len());
    }
    for (id, what, waiting_for) in MISSING {
        println!("  {id:<4} {what}  [{waiting_for}]");
    }
    Ok(())
}

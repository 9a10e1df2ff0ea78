//! S13 (seeds 003, 004): a thread and a process side by side, with the same API shape:
//! create with a target and arguments, start, join.
//!
//! `std::thread::Builder` plays `threading.Thread` (its `spawn` is `start`), and
//! `multiproc::Process` plays `multiprocessing.Process`. The thread runs inside this
//! process (same pid); the process is a new one (another pid). A last part shows that
//! `multiproc::spawn` is to processes what `std::thread::spawn` is to threads: both
//! hand back the function's value on `join`.

use std::thread;

use multiproc::Process;

fn job_t((_a, _d): (i32, i32)) {
    println!(
        "tttt  (thread {:?}, pid {})",
        thread::current().id(),
        std::process::id()
    );
}

fn job_p((_a, _d): (i32, i32)) {
    println!("pppp  (pid {})", std::process::id());
}

/// Seed 004: one function run by both a thread and a process.
fn job((_a, _d): (i32, i32)) {
    println!("aaaaa (pid {})", std::process::id());
}

fn square(x: u64) -> u64 {
    x * x
}

pub fn main() -> multiproc::Result<()> {
    println!("main pid {}", std::process::id());

    println!("-- seed 003: job_t in a thread, job_p in a process --");
    let t1 = thread::Builder::new().name("t1".into()); // threading.Thread(target=job_t, args=(1, 2))
    let mut p1 = Process::new(job_p, (1, 2)); // multiprocessing.Process(target=job_p, args=(1, 2))
    let t1 = t1.spawn(|| job_t((1, 2)))?; // t1.start()
    p1.start()?; // p1.start()
    t1.join().expect("the thread panicked"); // t1.join()
    p1.join()?; // p1.join()

    println!("-- seed 004: the same function in both --");
    let t1 = thread::Builder::new().spawn(|| job((1, 2)))?;
    let mut p1 = Process::new(job, (1, 2));
    p1.start()?;
    t1.join().expect("the thread panicked");
    p1.join()?;

    println!("-- returning a value: std::thread::spawn vs multiproc::spawn --");
    let t = thread::spawn(|| square(7));
    let p = multiproc::spawn(square, 7)?;
    let in_thread = t.join().expect("the thread panicked");
    let child_pid = p.pid();
    let in_process = p.join()?;
    println!("thread returned {in_thread}; process {child_pid} returned {in_process}");
    Ok(())
}

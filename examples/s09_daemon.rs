//! S9 (seed 001): daemon processes. `join` with a timeout returns while the daemon is
//! still running, the program prints "end", and when the program (the daemons' parent)
//! ends, its daemons are terminated.
//!
//! The tutorial's program is run here as a (non-daemon) child process, `program`, so that
//! its end can be watched from outside: it starts the three daemons, reports their pids
//! through a pipe, joins each with a timeout, prints "end" and returns. The
//! example then checks (waiting at most 5 s) that the daemons are gone. A round is
//! 300 ms instead of the tutorial's second; the `join` timeout (the tutorial's
//! `join(1)`) is 250 ms, a little less than a round, so that which daemon has finished
//! when "end" is printed does not depend on a race between `sleep` and `join`.
//!
//! A second part kills such a parent with SIGKILL, so none of its exit handling runs: its
//! daemon goes all the same.

use std::thread;
use std::time::{Duration, Instant};

use multiproc::{Connection, Error, Process, Run, current_process, pipe};
use serde::{Deserialize, Serialize};

const ROUND: Duration = Duration::from_millis(300);
const JOIN_TIMEOUT: Duration = Duration::from_millis(250);
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// What the program tells the example through the pipe.
#[derive(Serialize, Deserialize)]
enum Report {
    /// A daemon was started with this pid.
    Started(u32),
    /// The program is about to return; these daemons are still running.
    Returning(Vec<u32>),
}

#[derive(Serialize, Deserialize)]
struct MyProcess {
    loop_count: u32,
}

impl Run for MyProcess {
    fn run(self) {
        let pid = current_process().pid;
        for count in 0..self.loop_count {
            thread::sleep(ROUND);
            println!("Pid: {pid} LoopCount: {count}");
        }
        println!("Pid: {pid} finished all {} rounds", self.loop_count);
    }
}

/// The tutorial's main program, running as a child. `report` is the sending end of a
/// one-way pipe to the example. A failure makes the child's exit code 1.
fn program(report: Connection) {
    if let Err(e) = tutorial_main(&report) {
        panic!("the program failed: {e}");
    }
}

fn tutorial_main(report: &Connection) -> multiproc::Result<()> {
    let mut processes = Vec::new();
    for i in 2..5 {
        let mut p = Process::from_run(MyProcess { loop_count: i }).daemon(true);
        p.start()?;
        report.send(&Report::Started(p.pid().unwrap_or(0)))?;
        processes.push(p);
    }
    for p in &mut processes {
        let started = Instant::now();
        let ended = p.join_timeout(JOIN_TIMEOUT)?;
        println!(
            "  join(timeout={}ms) on {} returned after {} ms: ended={ended}, is_alive()={}",
            JOIN_TIMEOUT.as_millis(),
            p.get_name(),
            started.elapsed().as_millis(),
            p.is_alive()
        );
    }
    println!("end");
    let running: Vec<&Process> = processes.iter().filter(|p| p.is_alive()).collect();
    let names: Vec<String> = running
        .iter()
        .map(|p| format!("{} (pid {})", p.get_name(), p.pid().unwrap_or(0)))
        .collect();
    println!("  the program returns; daemons still running: {names:?}");
    let pids = running.iter().filter_map(|p| p.pid()).collect();
    report.send(&Report::Returning(pids))?;
    Ok(())
}

/// A parent that starts one long daemon, reports it and then waits to be killed.
fn doomed_parent(report: Connection) {
    let mut p = Process::from_run(MyProcess { loop_count: 100 }).daemon(true);
    p.start().expect("start the daemon");
    report
        .send(&Report::Started(p.pid().unwrap_or(0)))
        .expect("report the daemon");
    // Killed long before this ends; bounded all the same.
    let _ = p.join_timeout(Duration::from_secs(10));
}

/// The state letter of a process from `/proc/<pid>/stat`, `None` if there is none.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Waits up to `limit` for the process to disappear (or become a zombie).
fn wait_gone(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        match proc_state(pid) {
            None | Some('Z') | Some('X') => return Some(start.elapsed()),
            Some(_) if start.elapsed() >= limit => return None,
            Some(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub fn main() -> multiproc::Result<()> {
    let (rx, tx) = pipe(false)?;
    let mut parent = Process::new(program, tx).name("program");
    parent.start()?;
    println!(
        "started {} (pid {}), the tutorial's main program",
        parent.get_name(),
        parent.pid().unwrap_or(0)
    );

    let mut daemons = Vec::new();
    let mut running = Vec::new();
    loop {
        match rx.recv::<Report>() {
            Ok(Report::Started(pid)) => daemons.push(pid),
            Ok(Report::Returning(pids)) => running = pids,
            Err(Error::Closed) => break, // the program has returned
            Err(e) => return Err(e),
        }
    }
    parent.join()?;
    println!(
        "{} ended with exit code {:?}; its daemons were {daemons:?}, still running at its end: {running:?}",
        parent.get_name(),
        parent.exitcode()
    );
    for pid in daemons {
        let how = if running.contains(&pid) {
            "was still running when its parent returned"
        } else {
            "had finished on its own"
        };
        match wait_gone(pid, GONE_WITHIN) {
            Some(after) => println!(
                "daemon {pid} {how}; gone {} ms after its parent ended",
                after.as_millis()
            ),
            None => println!(
                "daemon {pid} {how}; STILL RUNNING {} s after its parent ended",
                GONE_WITHIN.as_secs()
            ),
        }
    }

    println!("-- a parent killed with SIGKILL --");
    let (rx, tx) = pipe(false)?;
    let mut parent = Process::new(doomed_parent, tx).name("doomed");
    parent.start()?;
    let daemon = match rx.recv::<Report>()? {
        Report::Started(pid) => pid,
        Report::Returning(_) => unreachable!("doomed_parent reports one start"),
    };
    thread::sleep(ROUND + ROUND / 2);
    parent.kill()?;
    parent.join()?;
    println!(
        "{} (pid {}) killed: exit code {:?}",
        parent.get_name(),
        parent.pid().unwrap_or(0),
        parent.exitcode()
    );
    match wait_gone(daemon, GONE_WITHIN) {
        Some(after) => println!(
            "its daemon {daemon}: gone {} ms after the parent was killed",
            after.as_millis()
        ),
        None => println!(
            "its daemon {daemon}: STILL RUNNING {} s after the parent was killed",
            GONE_WITHIN.as_secs()
        ),
    }
    Ok(())
}

//! S8 (seed 001): "subclass `Process` and override `run`". A struct with its own field
//! (`loop_count`) implements [`Run`]; the object is sent to the child, where `run` is
//! called and prints the child's pid on each round.
//!
//! The tutorial sleeps one second per round; here a round is 100 ms. The tutorial also
//! marks the processes as daemons and does not join them, so its program ends at once
//! and the daemons are terminated before they print anything (S9 shows that). Here
//! they are daemons too but are joined, so every round is seen.

use std::thread;
use std::time::Duration;

use multiproc::{Process, Run, current_process};
use serde::{Deserialize, Serialize};

const ROUND: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct MyProcess {
    loop_count: u32,
}

impl MyProcess {
    fn new(loop_count: u32) -> MyProcess {
        MyProcess { loop_count }
    }
}

impl Run for MyProcess {
    fn run(self) {
        let me = current_process();
        for count in 0..self.loop_count {
            thread::sleep(ROUND);
            println!("Pid: {} LoopCount: {count}  ({})", me.pid, me.name);
        }
    }
}

pub fn main() -> multiproc::Result<()> {
    let mut processes = Vec::new();
    for i in 2..5 {
        let mut p = Process::from_run(MyProcess::new(i)).daemon(true);
        p.start()?;
        println!(
            "started {} (pid {}) with loop_count {i}",
            p.get_name(),
            p.pid().unwrap_or(0)
        );
        processes.push(p);
    }
    for p in &mut processes {
        p.join()?;
        println!("{} ended with exit code {:?}", p.get_name(), p.exitcode());
    }
    Ok(())
}

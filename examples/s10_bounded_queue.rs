//! S10 (seed 001): producer and consumer around a bounded `Queue(10)`, with two
//! semaphores and a lock.
//!
//! As in the tutorial, `empty = Semaphore(2)` counts the free places the producer may
//! fill and `full = Semaphore(0)` the items the consumer may take, so at most two items
//! wait in the buffer however large its own bound (10) is; the lock makes each round's
//! queue operation and its message one step. `Producer` and `Consumer` are structs
//! implementing [`Run`] (the tutorial's `Process` subclasses), daemons as there.
//!
//! The tutorial loops forever with a one-second pause per round; here each side runs
//! [`ROUNDS`] rounds with a 100 ms pause, so the example ends by itself. The queue size
//! printed is read under the lock, which every put and get here also holds, so it is
//! exact (Python warns `qsize` is approximate when nothing keeps the queue still).

use std::thread;
use std::time::Duration;

use multiproc::{Lock, Process, Queue, Run, Semaphore};
use serde::{Deserialize, Serialize};

/// Items the producer puts, and the consumer takes.
const ROUNDS: u32 = 8;
/// The tutorial's `time.sleep(1)` inside the lock.
const PAUSE: Duration = Duration::from_millis(100);

/// What both sides share: the tutorial's `(buffer, empty, full, lock)`.
#[derive(Clone, Serialize, Deserialize)]
struct Shared {
    buffer: Queue<u32>,
    empty: Semaphore,
    full: Semaphore,
    lock: Lock,
}

#[derive(Serialize, Deserialize)]
struct Producer(Shared);

impl Producer {
    fn rounds(&self) -> multiproc::Result<()> {
        let Shared {
            buffer,
            empty,
            full,
            lock,
        } = &self.0;
        for item in 1..=ROUNDS {
            empty.acquire()?; // take a free place
            {
                let _held = lock.acquire()?;
                buffer.put(&item)?;
                println!(
                    "Producer append an element ({item}); {} in the buffer",
                    buffer.qsize()
                );
                thread::sleep(PAUSE);
            }
            full.release()?; // one more item to take
        }
        Ok(())
    }
}

impl Run for Producer {
    fn run(self) {
        if let Err(e) = self.rounds() {
            panic!("producer: {e}");
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Consumer(Shared);

impl Consumer {
    fn rounds(&self) -> multiproc::Result<()> {
        let Shared {
            buffer,
            empty,
            full,
            lock,
        } = &self.0;
        for _ in 0..ROUNDS {
            full.acquire()?; // wait for an item
            {
                let _held = lock.acquire()?;
                let item = buffer.get()?;
                println!(
                    "Consumer pop an element ({item}); {} in the buffer",
                    buffer.qsize()
                );
                thread::sleep(PAUSE);
            }
            empty.release()?; // its place is free again
        }
        Ok(())
    }
}

impl Run for Consumer {
    fn run(self) {
        if let Err(e) = self.rounds() {
            panic!("consumer: {e}");
        }
    }
}

pub fn main() -> multiproc::Result<()> {
    let shared = Shared {
        buffer: Queue::with_maxsize(10)?,
        empty: Semaphore::new(2)?,
        full: Semaphore::new(0)?,
        lock: Lock::new()?,
    };
    println!(
        "buffer = Queue({}), empty = Semaphore(2), full = Semaphore(0); {ROUNDS} rounds each",
        shared.buffer.maxsize()
    );
    let mut p = Process::from_run(Producer(shared.clone())).daemon(true);
    let mut c = Process::from_run(Consumer(shared.clone())).daemon(true);
    c.start()?;
    p.start()?;
    p.join()?;
    c.join()?;
    for (name, proc) in [("producer", &p), ("consumer", &c)] {
        if proc.exitcode() != Some(0) {
            println!(
                "the {name} did not end well: exit code {:?}",
                proc.exitcode()
            );
        }
    }
    println!(
        "afterwards: {} in the buffer, empty = {}, full = {}",
        shared.buffer.qsize(),
        shared.empty.get_value(),
        shared.full.get_value()
    );
    println!("Main Process end");
    Ok(())
}

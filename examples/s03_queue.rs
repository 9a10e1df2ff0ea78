//! S3 (seed 000): a child puts a list-like record into a `Queue`, the parent gets it.
//!
//! Processes cannot reach each other's objects, so the tutorial passes the parent's
//! queue to the child in its arguments (`args=(q,)`); the child puts
//! `['shen', None, 1995]` and the parent's `q.get()` returns it. A Python list may mix
//! types and hold `None`; the Rust record is a tuple whose middle field is an
//! `Option`, and any serde type of plain data travels the same way.
//!
//! The seed's commented-out first version does the same between threads with
//! `queue.Queue`; a `multiproc::Queue` also serves threads, so a second part runs it with
//! a thread in place of the child.

use std::thread;

use multiproc::{Process, Queue};

/// Python's `['shen', None, 1995]`: a name, a missing value, a year.
type Record = (String, Option<String>, u32);

fn record() -> Record {
    ("shen".to_string(), None, 1995)
}

/// The child: `q.put(['shen', None, 1995])`.
fn f(q: Queue<Record>) -> multiproc::Result<()> {
    println!("child (pid {}) puts {:?}", std::process::id(), record());
    q.put(&record())
}

pub fn main() -> multiproc::Result<()> {
    println!("-- between processes --");
    let q = Queue::new()?;
    let mut p = Process::new(f, q.clone());
    p.start()?;
    let got: Record = q.get()?;
    println!("parent (pid {}) got {got:?}", std::process::id());
    p.join()?;

    println!("-- between threads (the seed's commented-out version) --");
    let q = Queue::new()?;
    let t = {
        let q = q.clone();
        thread::spawn(move || q.put(&record()))
    };
    let got: Record = q.get()?;
    println!("main thread got {got:?}");
    t.join().expect("the thread panicked")?;
    Ok(())
}

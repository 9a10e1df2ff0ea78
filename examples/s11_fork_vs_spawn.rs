//! S11 (seed 001): fork vs spawn, and what a child inherits.
//!
//! The tutorial's program has a module-level `buffer = Queue()`; a child started with
//! `Process(target=worker)` (no arguments) puts 1 into `buffer`, and the parent prints
//! `buffer.qsize()`: 1 under fork, 0 under spawn. A forked child is a copy of the parent's
//! memory, so its `buffer` is the parent's queue; a spawned child is a fresh interpreter
//! that imports the module again and so makes a new `buffer` of its own, which the
//! parent never sees.
//!
//! Rust has no modules re-run on import. What plays the part here:
//!
//! - **A queue passed in the arguments** is the same queue under every start method: its
//!   shared memory travels with the task. The parent sees `qsize() == 1` each time. This
//!   is the way to share a queue, in Python too.
//! - **A global**: `static BUFFER: OnceLock<Queue<u32>>`, filled by the parent's `main`,
//!   is the counterpart of the module-level queue. A child started with **fork** is a copy
//!   of the parent's memory, the mapping of the queue's shared memory included, so it
//!   finds the parent's queue there (1). A child started with **spawn** is a fresh run of
//!   the executable whose `main` never runs: `BUFFER` is empty, the child makes a queue of
//!   its own (Python's re-created `buffer`), and the parent's stays empty (0).
//!   **Forkserver** children are forks of a server that is itself such a fresh run: they
//!   see what spawned children see (0).
//! - A plain `static MARK: AtomicU32`, set by the parent before the start, shows the same
//!   rule without a queue: a forked child reads the parent's value, the others the
//!   initial one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use multiproc::{GetError, Queue, StartMethod, get_context};

/// The module-level `buffer = Queue()`: set by `main` in the parent, empty in a child
/// that did not inherit the parent's memory.
static BUFFER: OnceLock<Queue<u32>> = OnceLock::new();

/// A global the parent changes before starting children.
static MARK: AtomicU32 = AtomicU32::new(0);
const MARK_SET_BY_MAIN: u32 = 1995;

/// The module-level queue, made here if this process has none yet (as a spawned Python
/// child re-creates it on import).
fn buffer() -> multiproc::Result<&'static Queue<u32>> {
    if let Some(q) = BUFFER.get() {
        return Ok(q);
    }
    let q = Queue::new()?;
    Ok(BUFFER.get_or_init(|| q))
}

/// Empties the parent's queue between runs.
fn drain(q: &Queue<u32>) -> multiproc::Result<()> {
    loop {
        match q.try_get() {
            Ok(_) => {}
            Err(GetError::Empty) => return Ok(()),
            Err(GetError::Failed(e)) => return Err(e),
        }
    }
}

/// The tutorial's `worker`, given the queue in its arguments: `buffer.put(1)`.
fn worker_with_argument(buffer: Queue<u32>) -> multiproc::Result<()> {
    buffer.put(&1)
}

/// What the child saw of the globals.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    /// `BUFFER` was already set when the child looked.
    inherited_buffer: bool,
    /// `BUFFER.qsize()` in the child after its put.
    child_qsize: usize,
    /// The value of `MARK` in the child.
    mark: u32,
}

/// The tutorial's `worker`, using the global: `buffer.put(1)`.
fn put_into_global() -> multiproc::Result<Seen> {
    let inherited_buffer = BUFFER.get().is_some();
    let q = buffer()?;
    q.put(&1)?;
    Ok(Seen {
        inherited_buffer,
        child_qsize: q.qsize(),
        mark: MARK.load(Ordering::Relaxed),
    })
}

/// The child's side of [`put_into_global`]: what it saw, or a panic with the error,
/// which the parent's `join` reports.
fn worker_with_global(_: ()) -> Seen {
    put_into_global().unwrap_or_else(|e| panic!("worker: {e}"))
}

pub fn main() -> multiproc::Result<()> {
    let global = buffer()?;
    MARK.store(MARK_SET_BY_MAIN, Ordering::Relaxed);
    println!(
        "parent (pid {}): BUFFER holds a queue, MARK = {MARK_SET_BY_MAIN}",
        std::process::id()
    );

    let methods = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ];
    let mut passed = Vec::new();
    let mut globals = Vec::new();
    for method in methods {
        let ctx = get_context(method);
        println!("-- {} --", method.as_str());

        let q = Queue::new()?;
        let mut p = ctx.process(worker_with_argument, q.clone());
        p.start()?;
        p.join()?;
        let n = q.qsize();
        println!("  queue passed in the arguments: the parent's qsize() = {n}");
        passed.push(n);

        let seen = ctx.spawn(worker_with_global, ())?.join()?;
        let n = global.qsize();
        if seen.inherited_buffer {
            println!(
                "  global BUFFER: the child found the parent's queue in its copy of memory \
                 and put 1; the parent's qsize() = {n}"
            );
        } else {
            println!(
                "  global BUFFER: empty in the child (main did not run there); it made its \
                 own queue and put 1 (its qsize() = {}); the parent's qsize() = {n}",
                seen.child_qsize
            );
        }
        println!("  global MARK: the child read {}", seen.mark);
        globals.push(n);
        drain(global)?;
    }

    println!("-- buffer.qsize() in the parent --");
    println!(
        "{:<38} {:>5} {:>6} {:>11}",
        "", "fork", "spawn", "forkserver"
    );
    println!(
        "{:<38} {:>5} {:>6} {:>11}",
        "queue passed in the arguments", passed[0], passed[1], passed[2]
    );
    println!(
        "{:<38} {:>5} {:>6} {:>11}",
        "global queue (Python's module-level)", globals[0], globals[1], globals[2]
    );
    Ok(())
}

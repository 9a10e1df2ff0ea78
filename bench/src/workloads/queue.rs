//! Queues between processes: small items from one or two producer processes to the
//! parent, 1 MiB items from a producer to the parent, and `JoinableQueue` round trips.
//! The rates count from the first item received to the last: the items (or bytes) after
//! the first over that time, so that no process start is timed.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcSender};
use multiproc::{JoinableQueue, Process, Queue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Figures;
use super::large::WarmCopy;
use super::sync::join_ok;
use crate::limits::{BareRings, FutexPingPong};
use crate::measure::{Contender, time_mean};
use crate::{BenchResult, Settings};

/// How long the parent waits for a child's first item or answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Children that are killed when dropped before they are joined, so that a repetition that
/// fails leaves no child blocked on a queue (the parent joins its children when it exits).
struct Children(Vec<Process>);

impl Children {
    /// Starts `process` and keeps it.
    fn start(&mut self, mut process: Process) -> BenchResult<()> {
        process.start()?;
        self.0.push(process);
        Ok(())
    }

    /// Joins every child, checking that each ended well.
    fn join_all(mut self, who: &str) -> BenchResult<()> {
        while let Some(p) = self.0.pop() {
            join_ok(p, who)?;
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.kill();
        }
    }
}

/// The parent's handle on a new queue, closed for putting: the parent only takes, so a
/// `get` on the empty queue fails (`NoProducers`) instead of waiting for ever once no
/// producer is left, as when one dies. Each producer gets a handle of its own (a clone).
fn consumer_queue<T: Serialize + DeserializeOwned>() -> BenchResult<Queue<T>> {
    let q = Queue::new()?;
    q.close();
    Ok(q)
}

// ---- small items ----

/// Items through the queue per repetition, all producers together.
fn small_items(s: &Settings) -> u64 {
    s.pick(100_000, 500_000)
}

/// Repetitions of the small-item workloads.
fn small_reps(s: &Settings) -> usize {
    s.pick(3, 5)
}

/// Items per second: the `items` after the first over the `secs` from the first to the last.
fn rate(items: u64, secs: f64) -> BenchResult<f64> {
    if items < 2 || secs <= 0.0 {
        return Err(format!("no rate from {items} items in {secs} s").into());
    }
    Ok((items - 1) as f64 / secs)
}

/// Checks that the items of every producer come in order: producer `k` puts the values
/// `k * each..(k + 1) * each`.
struct InOrder {
    each: u64,
    next: Vec<u64>,
}

impl InOrder {
    fn new(producers: u64, each: u64) -> InOrder {
        InOrder {
            each,
            next: (0..producers).map(|k| k * each).collect(),
        }
    }

    fn check(&mut self, who: &str, v: u64) -> BenchResult<()> {
        let k = (v / self.each) as usize;
        match self.next.get_mut(k) {
            Some(next) if *next == v => {
                *next += 1;
                Ok(())
            }
            Some(next) => {
                Err(format!("{who} delivered {v}, expected {next} from producer {k}").into())
            }
            None => Err(format!("{who} delivered {v}, which no producer put").into()),
        }
    }
}

/// Producer: puts `first..first + n` in order.
fn produce((q, first, n): (Queue<u64>, u64, u64)) -> multiproc::Result<()> {
    for v in first..first + n {
        q.put(&v)?;
    }
    Ok(())
}

/// One repetition with multiproc: `producers` processes put `each` integers each into
/// `q`; the parent takes them all and checks their order. msgs/s from the first item
/// received to the last.
fn multiproc_small(q: &Queue<u64>, producers: u64, each: u64) -> BenchResult<f64> {
    let mut children = Children(Vec::new());
    for k in 0..producers {
        children.start(Process::new(produce, (q.clone(), k * each, each)))?;
    }
    let mut order = InOrder::new(producers, each);
    let first = q
        .get_timeout(ANSWER_TIMEOUT)
        .map_err(multiproc::Error::from)?;
    order.check("multiproc", first)?;
    let started = Instant::now();
    for _ in 1..producers * each {
        order.check("multiproc", q.get()?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    children.join_all("the producer")?;
    rate(producers * each, secs)
}

/// One repetition of the bare rings: msgs/s.
fn limit_small(rings: &mut BareRings, producers: u64, each: u64) -> BenchResult<f64> {
    let elapsed = rings.run(each)?;
    rate(producers * each, elapsed.as_secs_f64())
}

/// Child: connects to the parent's one-shot server and sends `0..n`, one message each.
fn ipc_produce((server, n): (String, u64)) -> Result<(), String> {
    let tx = IpcSender::<u64>::connect(server).map_err(|e| e.to_string())?;
    for v in 0..n {
        tx.send(v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One repetition with ipc-channel: a child started by multiproc connects an
/// `IpcSender<u64>` to the parent's one-shot server and sends `n` integers; the first
/// comes with the connection. msgs/s from the first received to the last.
fn ipc_small(n: u64) -> BenchResult<f64> {
    let (server, name) = IpcOneShotServer::<u64>::new()?;
    let mut process = Process::new(ipc_produce, (name, n));
    process.start()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.accept());
    });
    let (receiver, first) = match rx.recv_timeout(ANSWER_TIMEOUT) {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => return Err(format!("ipc-channel accept: {e}").into()),
        Err(_) => {
            let _ = process.kill();
            return Err("the ipc-channel producer sent nothing".into());
        }
    };
    let started = Instant::now();
    let mut order = InOrder::new(1, n);
    order.check("ipc-channel", first)?;
    for _ in 1..n {
        order.check("ipc-channel", receiver.recv()?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    join_ok(process, "the ipc-channel producer")?;
    rate(n, secs)
}

/// `queue_small_1p1c`: msgs/s of `u64`s through a `Queue` from one producer process to the
/// parent. Limit: a bare single-producer, single-consumer ring in shared memory;
/// ipc-channel: an `IpcSender<u64>` from a child to the parent.
pub fn queue_small_1p1c(s: &Settings) -> BenchResult<Figures> {
    let n = small_items(s);
    let q = consumer_queue()?;
    let mut rings = BareRings::new(1)?;
    // A first, shorter run each, untimed: the queue's and the ring's pages are mapped.
    multiproc_small(&q, 1, n / 10)?;
    limit_small(&mut rings, 1, n / 10)?;
    ipc_small(n / 10)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_small(&q, 1, n)?])),
        Contender::new("limit", || Ok(vec![limit_small(&mut rings, 1, n)?])),
        Contender::new("ipc-channel", || Ok(vec![ipc_small(n)?])),
    ];
    Figures::interleaved(small_reps(s), &mut contenders)
}

/// `queue_small_2p1c`: the same from two producer processes, half of the items each.
/// Limit: two bare rings, one per producer, that the parent takes from in turn.
pub fn queue_small_2p1c(s: &Settings) -> BenchResult<Figures> {
    let each = small_items(s) / 2;
    let q = consumer_queue()?;
    let mut rings = BareRings::new(2)?;
    multiproc_small(&q, 2, each / 10)?;
    limit_small(&mut rings, 2, each / 10)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_small(&q, 2, each)?])),
        Contender::new("limit", || Ok(vec![limit_small(&mut rings, 2, each)?])),
    ];
    Figures::interleaved(small_reps(s), &mut contenders)
}

// ---- large items ----

/// The size of a large item: 1 MiB.
const MIB: usize = 1 << 20;

/// Distinct first bytes of the large items: item `i` starts with `i % LARGE_VARIANTS`
/// (CPython's producer cycles through as many prebuilt items).
const LARGE_VARIANTS: u64 = 8;

/// The byte at offset `i` of a large item after the first: a period (251) that no power
/// of two divides, as in the other large workloads.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Producer: puts `n` items of 1 MiB, item `i` starting with `i % LARGE_VARIANTS`.
fn produce_large((q, n): (Queue<Vec<u8>>, u64)) -> multiproc::Result<()> {
    let mut item: Vec<u8> = (0..MIB).map(pattern).collect();
    for i in 0..n {
        item[0] = (i % LARGE_VARIANTS) as u8;
        q.put(&item)?;
    }
    Ok(())
}

/// Checks large item `i`: its length, its first byte and its last.
fn check_large(i: u64, item: &[u8]) -> BenchResult<()> {
    let first = (i % LARGE_VARIANTS) as u8;
    if item.len() == MIB && item[0] == first && item[MIB - 1] == pattern(MIB - 1) {
        Ok(())
    } else {
        Err(format!("multiproc delivered another item {i}").into())
    }
}

/// One repetition with multiproc: a producer process puts `n` items of 1 MiB into `q`; the
/// parent takes and checks them. MB/s (10⁶ bytes per second) of the items after the first,
/// from the first received to the last.
fn multiproc_large(q: &Queue<Vec<u8>>, n: u64) -> BenchResult<f64> {
    let mut children = Children(Vec::new());
    children.start(Process::new(produce_large, (q.clone(), n)))?;
    let first = q
        .get_timeout(ANSWER_TIMEOUT)
        .map_err(multiproc::Error::from)?;
    check_large(0, &first)?;
    let started = Instant::now();
    for i in 1..n {
        check_large(i, &q.get()?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    children.join_all("the producer")?;
    Ok(rate(n, secs)? * MIB as f64 / 1e6)
}

/// `queue_large`: MB/s of 1 MiB `Vec<u8>` items through a `Queue` from a producer process
/// to the parent, 256 items a repetition (64 in a quick run). Limit: memcpy, as for the
/// other large workloads.
pub fn queue_large(s: &Settings) -> BenchResult<Figures> {
    let n = s.pick(64, 256);
    let q = consumer_queue()?;
    let mut limit = WarmCopy::new();
    multiproc_large(&q, (n / 10).max(2))?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_large(&q, n)?])),
        Contender::new("limit", || Ok(vec![limit.once() * 1e3])),
    ];
    Figures::interleaved(s.pick(3, 5), &mut contenders)
}

// ---- JoinableQueue round trips ----

/// The item that tells the task child to end.
const STOP: u64 = u64::MAX;

/// Child: gets items and marks each done, until [`STOP`] (which it marks done too).
fn do_tasks(q: JoinableQueue<u64>) -> multiproc::Result<()> {
    loop {
        let v = q.get()?;
        q.task_done()?;
        if v == STOP {
            return Ok(());
        }
    }
}

/// The parent's side of the round trips: a `JoinableQueue` and the child doing its tasks.
struct Joinable {
    q: JoinableQueue<u64>,
    child: Children,
}

impl Joinable {
    fn start() -> BenchResult<Joinable> {
        let q = JoinableQueue::<u64>::new()?;
        let mut child = Children(Vec::new());
        child.start(Process::new(do_tasks, q.clone()))?;
        Ok(Joinable { q, child })
    }

    /// `n` round trips: put an item, wait until the child has marked it done.
    fn round_trips(&mut self, n: usize) -> BenchResult<()> {
        for i in 0..n as u64 {
            self.q.put(&i)?;
            if !self.q.join_timeout(ANSWER_TIMEOUT) {
                return Err("the task child does not mark its task done".into());
            }
        }
        Ok(())
    }

    fn close(self) -> BenchResult<()> {
        self.q.put(&STOP)?;
        self.child.join_all("the task")
    }
}

/// `joinable_roundtrip`: microseconds per `put` + `join` in the parent and `get` +
/// `task_done` in a child, on a `JoinableQueue`. Limit: the bare futex ping-pong of
/// `event_pingpong` (a round trip that sleeps in the kernel each way).
pub fn joinable_roundtrip(s: &Settings) -> BenchResult<Figures> {
    let mut limit = FutexPingPong::start()?;
    let mut joinable = Joinable::start()?;
    let per_rep = s.pick(2_000, 5_000);
    limit.round_trips(per_rep / 10)?;
    joinable.round_trips(per_rep / 10)?;
    let figures = {
        let mut contenders = [
            Contender::new("limit", || {
                Ok(vec![time_mean(per_rep, |n| Ok(limit.round_trips(n)?))?])
            }),
            Contender::new("multiproc", || {
                Ok(vec![time_mean(per_rep, |n| joinable.round_trips(n))?])
            }),
        ];
        Figures::interleaved(s.pick(5, 9), &mut contenders)?
    };
    limit.close()?;
    joinable.close()?;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_put_through_clones_of_the_closed_consumer_handle() {
        let q = consumer_queue::<u64>().unwrap();
        assert!(multiproc_small(&q, 2, 1_000).unwrap() > 0.0);
        // Every producer has ended: an empty queue says so instead of waiting.
        assert!(matches!(q.get(), Err(multiproc::Error::NoProducers)));
    }

    #[test]
    fn in_order_refuses_an_item_out_of_its_producers_order() {
        let mut order = InOrder::new(2, 10);
        for v in [0, 10, 1, 11] {
            order.check("test", v).unwrap();
        }
        assert!(order.check("test", 13).is_err());
        assert!(order.check("test", 20).is_err());
    }
}

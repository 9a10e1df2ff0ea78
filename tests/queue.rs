//! CPython's queue behaviours (`test_queue`, `test_joinable_queue`, `test_qsize`,
//! `test_timeout`, `test_no_import_lock_contention`-style puts from children of
//! `_test_multiprocessing.py`), ported to processes of every start method: FIFO per
//! producer with several producers and consumers, every item exactly once, `maxsize`,
//! `Full`/`Empty`, `qsize`, timeouts, `JoinableQueue`, items from 0 bytes to 64 MiB,
//! queues through pipes and to grandchildren, the no-producer-left error, and items
//! holding handles refused.
//!
//! Timing: a timeout must not return early, and must return within several seconds of
//! its expiry (loose bounds, for a loaded machine).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{LONG, METHODS};
use multiproc::{
    Error, GetError, JoinableQueue, PutError, Queue, SimpleQueue, StartMethod, get_context, pipe,
    spawn,
};

/// A timeout tests measure.
const SHORT: Duration = Duration::from_millis(300);
/// Slack allowed past a timeout on a loaded machine.
const SLACK: Duration = Duration::from_secs(10);

fn put_range(args: (Queue<(u32, u32)>, u32, u32)) {
    let (q, producer, n) = args;
    for i in 0..n {
        q.put(&(producer, i)).unwrap();
    }
}

fn take_all(q: Queue<(u32, u32)>) -> Vec<(u32, u32)> {
    q.close();
    let mut got = Vec::new();
    loop {
        match q.get_timeout(LONG) {
            Ok(item) => got.push(item),
            Err(GetError::Failed(Error::NoProducers)) => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

/// test_queue with 4 producers and 2 consumers: each producer's items come out in its
/// order, and every item comes out exactly once.
#[test]
fn four_producers_two_consumers_keep_each_producers_order_and_lose_nothing() {
    const N: u32 = 5_000;
    for method in METHODS {
        let ctx = get_context(method);
        let q = Queue::<(u32, u32)>::new().unwrap();
        let consumers: Vec<_> = (0..2)
            .map(|_| ctx.spawn(take_all, q.clone()).unwrap())
            .collect();
        let producers: Vec<_> = (0..4)
            .map(|p| ctx.spawn(put_range, (q.clone(), p, N)).unwrap())
            .collect();
        q.close();
        for p in producers {
            p.join().unwrap();
        }
        let mut seen = BTreeMap::<u32, Vec<u32>>::new();
        for c in consumers {
            let got = c.join().unwrap();
            // Within one consumer, each producer's items are increasing.
            let mut last = BTreeMap::new();
            for (p, i) in &got {
                if let Some(prev) = last.insert(*p, *i) {
                    assert!(
                        prev < *i,
                        "{method:?}: producer {p} out of order: {prev} then {i}"
                    );
                }
                seen.entry(*p).or_default().push(*i);
            }
        }
        for p in 0..4 {
            let mut items = seen.remove(&p).unwrap_or_default();
            items.sort_unstable();
            assert_eq!(
                items,
                (0..N).collect::<Vec<_>>(),
                "{method:?}: producer {p}"
            );
        }
    }
}

#[test]
fn items_come_out_in_the_order_one_producer_put_them() {
    let q = Queue::new().unwrap();
    for i in 0..1000u32 {
        q.put(&i).unwrap();
    }
    for i in 0..1000u32 {
        assert_eq!(q.get().unwrap(), i);
    }
}

/// test_qsize
#[test]
fn qsize_counts_puts_minus_gets() {
    let q = Queue::new().unwrap();
    assert_eq!(q.qsize(), 0);
    assert!(q.empty());
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
    assert!(q.empty());
}

/// test_queue's `maxsize` part: `put` blocks when full, its timeout form fails with
/// Full after about its timeout, and the nowait forms answer at once.
#[test]
fn a_full_queue_blocks_put_and_times_out_with_full() {
    let q = Queue::with_maxsize(2).unwrap();
    q.put(&1).unwrap();
    assert!(!q.full());
    q.put(&2).unwrap();
    assert!(q.full());
    assert!(matches!(q.try_put(&3), Err(PutError::Full)));
    let t = Instant::now();
    assert!(matches!(q.put_timeout(&3, SHORT), Err(PutError::Full)));
    let took = t.elapsed();
    assert!(took >= SHORT && took < SHORT + SLACK, "took {took:?}");
    assert_eq!(q.get().unwrap(), 1);
    q.try_put(&3).unwrap();
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 3);
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
}

fn get_later(q: Queue<u32>) -> u32 {
    std::thread::sleep(SHORT);
    q.get().unwrap()
}

#[test]
fn a_blocked_put_goes_on_when_a_consumer_in_another_process_makes_room() {
    for method in METHODS {
        let q = Queue::with_maxsize(1).unwrap();
        q.put(&1).unwrap();
        let child = get_context(method).spawn(get_later, q.clone()).unwrap();
        q.put_timeout(&2, LONG).unwrap();
        assert_eq!(child.join().unwrap(), 1, "{method:?}");
        assert_eq!(q.get().unwrap(), 2);
    }
}

/// test_timeout: get with a timeout returns Empty about on time, never early.
#[test]
fn get_with_a_timeout_returns_empty_about_on_time() {
    let q = Queue::<u8>::new().unwrap();
    let t = Instant::now();
    assert!(matches!(q.get_timeout(SHORT), Err(GetError::Empty)));
    let took = t.elapsed();
    assert!(took >= SHORT && took < SHORT + SLACK, "took {took:?}");
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    assert!(matches!(
        Error::from(q.try_get().unwrap_err()),
        Error::Empty
    ));
    // Duration::MAX means no deadline: an item arriving later is taken.
    q.put(&9).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 9);
}

fn sized(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + n) as u8).collect()
}

fn echo_sizes(args: (Queue<Vec<u8>>, Queue<Vec<u8>>, usize)) {
    let (from, to, n) = args;
    for _ in 0..n {
        to.put(&from.get().unwrap()).unwrap();
    }
}

/// Items of 0 bytes, 1 byte, around the ring's streaming threshold, larger than the
/// ring, and 64 MiB, through a child and back.
#[test]
fn items_from_zero_bytes_to_64_mib_pass_intact() {
    let sizes = [
        0,
        1,
        7,
        8,
        9,
        1000,
        (64 << 10) - 9,
        64 << 10,
        300 << 10,
        3 << 20,
        64 << 20,
    ];
    let to_child = Queue::<Vec<u8>>::builder()
        .ring_bytes(256 << 10)
        .build()
        .unwrap();
    let back = Queue::<Vec<u8>>::new().unwrap();
    let child = spawn(echo_sizes, (to_child.clone(), back.clone(), sizes.len())).unwrap();
    for n in sizes {
        to_child.put(&sized(n)).unwrap();
        let got = back.get_timeout(LONG).unwrap();
        assert_eq!(got.len(), n);
        assert!(got == sized(n), "item of {n} bytes changed on the way");
    }
    child.join().unwrap();
}

#[test]
fn unit_and_empty_items_count_as_items() {
    let q = Queue::<()>::new().unwrap();
    for _ in 0..10 {
        q.put(&()).unwrap();
    }
    assert_eq!(q.qsize(), 10);
    for _ in 0..10 {
        q.get().unwrap();
    }
    assert!(q.empty());
}

fn worker_done(q: JoinableQueue<u32>) -> u32 {
    q.close();
    let mut sum = 0;
    loop {
        match q.get_timeout(LONG) {
            Ok(n) => {
                std::thread::sleep(Duration::from_millis(2));
                sum += n;
                q.task_done().unwrap();
            }
            Err(GetError::Failed(Error::NoProducers)) => return sum,
            Err(e) => panic!("{e}"),
        }
    }
}

/// test_joinable_queue: join returns only once every item had its task_done, and one
/// task_done too many is an error.
#[test]
fn join_returns_only_after_every_task_done_and_an_extra_task_done_fails() {
    for method in METHODS {
        let q = JoinableQueue::new().unwrap();
        let workers: Vec<_> = (0..2)
            .map(|_| get_context(method).spawn(worker_done, q.clone()).unwrap())
            .collect();
        for n in 1..=20 {
            q.put(&n).unwrap();
        }
        assert!(q.join_timeout(LONG), "{method:?}: join timed out");
        assert!(q.empty());
        q.close();
        let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(total, 210);
        assert!(matches!(q.task_done(), Err(Error::InvalidState(_))));
    }
}

#[test]
fn join_times_out_while_an_item_is_unfinished() {
    let q = JoinableQueue::new().unwrap();
    q.put(&1).unwrap();
    let t = Instant::now();
    assert!(!q.join_timeout(SHORT));
    assert!(t.elapsed() >= SHORT);
    q.get().unwrap();
    assert!(!q.join_timeout(Duration::ZERO));
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::ZERO));
    q.join();
}

fn forward_to_grandchild(q: Queue<String>) {
    let grandchild = spawn(put_hello, q.clone()).unwrap();
    grandchild.join().unwrap();
}

fn put_hello(q: Queue<String>) {
    q.put(&format!("hello from {}", std::process::id()))
        .unwrap();
}

#[test]
fn a_queue_passed_to_a_grandchild_is_the_same_queue() {
    for method in METHODS {
        let q = Queue::<String>::new().unwrap();
        let child = get_context(method)
            .spawn(forward_to_grandchild, q.clone())
            .unwrap();
        let msg = q.get_timeout(LONG).unwrap();
        assert!(msg.starts_with("hello from "), "{method:?}: {msg}");
        child.join().unwrap();
    }
}

#[test]
fn a_queue_sent_through_a_pipe_is_the_same_queue() {
    let (a, b) = pipe(true).unwrap();
    let q = Queue::<u64>::new().unwrap();
    a.send(&q).unwrap();
    let q2: Queue<u64> = b.recv().unwrap();
    q2.put(&42).unwrap();
    assert_eq!(q.get().unwrap(), 42);
    // Each handle is closed separately.
    q2.close();
    q.put(&43).unwrap();
    assert_eq!(q2.get().unwrap(), 43);
}

fn put_then_exit(q: Queue<u32>) {
    q.put(&7).unwrap();
    std::process::exit(0);
}

/// CPython's feeder thread can lose an item put just before the process exits; here
/// `put` is complete when it returns.
#[test]
fn an_item_put_just_before_the_producer_exits_is_not_lost() {
    for method in METHODS {
        let q = Queue::<u32>::new().unwrap();
        let mut p = get_context(method).process(put_then_exit, q.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(q.try_get().unwrap(), 7, "{method:?}");
    }
}

fn produce_three(q: Queue<u32>) {
    for i in 0..3 {
        q.put(&i).unwrap();
    }
}

fn sleep_forever(_q: Queue<u32>) {
    std::thread::sleep(Duration::from_secs(600));
}

/// No handle that could put is left: get returns NoProducers instead of waiting
/// forever, whether the producers dropped their handles or were killed.
#[test]
fn get_reports_no_producers_once_every_producer_is_gone() {
    for method in METHODS {
        let ctx = get_context(method);
        let q = Queue::<u32>::new().unwrap();
        let child = ctx.spawn(produce_three, q.clone()).unwrap();
        q.close();
        let all: Vec<u32> = q.iter().collect::<multiproc::Result<_>>().unwrap();
        assert_eq!(all, [0, 1, 2], "{method:?}");
        child.join().unwrap();
        assert!(matches!(q.get(), Err(Error::NoProducers)));

        // A producer killed while holding its handle.
        let q = Queue::<u32>::new().unwrap();
        let mut p = ctx.process(sleep_forever, q.clone());
        p.start().unwrap();
        q.close();
        assert!(
            matches!(q.get_timeout(SHORT), Err(GetError::Empty)),
            "{method:?}"
        );
        p.kill().unwrap();
        p.join().unwrap();
        let t = Instant::now();
        assert!(matches!(
            q.get_timeout(LONG),
            Err(GetError::Failed(Error::NoProducers))
        ));
        assert!(t.elapsed() < SLACK);
    }
}

#[test]
fn an_open_handle_in_this_process_keeps_get_waiting() {
    let q = Queue::<u8>::new().unwrap();
    let other = q.clone();
    q.close();
    assert!(matches!(q.get_timeout(SHORT), Err(GetError::Empty)));
    drop(other);
    assert!(matches!(
        q.get_timeout(LONG),
        Err(GetError::Failed(Error::NoProducers))
    ));
}

#[test]
fn put_on_a_closed_handle_fails() {
    let q = Queue::<u8>::new().unwrap();
    q.close();
    assert!(matches!(q.put(&1), Err(Error::InvalidState(_))));
}

#[test]
fn an_item_holding_a_connection_is_refused_with_an_encode_error() {
    let (a, _b) = pipe(true).unwrap();
    let q = Queue::<multiproc::Connection>::new().unwrap();
    match q.put(&a) {
        Err(Error::Encode(msg)) => assert!(msg.contains("handles"), "{msg}"),
        other => panic!("expected an encode error, got {other:?}"),
    }
    assert!(q.empty());
}

#[test]
fn an_item_of_the_wrong_type_is_a_decode_error_and_the_next_one_comes_through() {
    let (a, b) = pipe(true).unwrap();
    let q = Queue::<String>::new().unwrap();
    a.send(&q).unwrap();
    let as_numbers: Queue<u64> = b.recv().unwrap();
    as_numbers.put(&u64::MAX).unwrap();
    q.put(&"fine".to_string()).unwrap();
    assert!(matches!(q.get(), Err(Error::Decode(_))));
    assert_eq!(q.get().unwrap(), "fine");
}

fn simple_child(q: SimpleQueue<(String, Option<u32>, u32)>) {
    q.put(&("shen".into(), None, 1995)).unwrap();
}

#[test]
fn a_simple_queue_carries_a_record_from_a_child() {
    let q = SimpleQueue::new().unwrap();
    assert!(q.empty());
    let child = get_context(StartMethod::Spawn)
        .spawn(simple_child, q.clone())
        .unwrap();
    assert_eq!(q.get().unwrap(), ("shen".to_string(), None, 1995));
    child.join().unwrap();
    q.close();
    assert!(matches!(q.get(), Err(Error::NoProducers)));
}

#[test]
fn many_threads_put_and_get_on_clones() {
    let q = Queue::<(u32, u32)>::with_maxsize(16).unwrap();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    q.put(&(p, i)).unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                q.close();
                q.iter().map(Result::unwrap).collect::<Vec<_>>()
            })
        })
        .collect();
    q.close();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<_> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<_> = (0..4)
        .flat_map(|p| (0..2000).map(move |i| (p, i)))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn bad_sizes_are_refused() {
    assert!(matches!(
        Queue::<u8>::with_maxsize(usize::MAX),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Queue::<u8>::builder().ring_bytes(usize::MAX).build(),
        Err(Error::InvalidArgument(_))
    ));
    // Rounded up to the smallest ring.
    Queue::<u8>::builder().ring_bytes(0).build().unwrap();
}

/// A consumer waiting on an empty queue, and a producer waiting on a full one, sleep:
/// after their brief spin they use next to no CPU.
#[test]
fn blocked_get_and_put_sleep_instead_of_spinning() {
    let q = Queue::<u32>::new().unwrap();
    let consumer = q.clone();
    let blocked = common::cpu_while_blocked(
        move || assert_eq!(consumer.get().unwrap(), 1),
        || q.put(&1).unwrap(),
    );
    common::assert_idle_while_blocked("get", blocked);

    let q = Queue::<u32>::with_maxsize(1).unwrap();
    q.put(&0).unwrap();
    let producer = q.clone();
    let blocked = common::cpu_while_blocked(
        move || producer.put(&1).unwrap(),
        || assert_eq!(q.get().unwrap(), 0),
    );
    common::assert_idle_while_blocked("put", blocked);
}

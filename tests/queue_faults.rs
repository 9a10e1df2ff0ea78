//! Queues when processes die mid-operation: a producer SIGKILLed in the middle of a
//! `put` (small items, and large ones streamed through a small ring) and a consumer
//! SIGKILLed in the middle of a `get`, fifty times each on one queue. After every kill
//! the queue still works for the others: the next item comes through, every item seen
//! is intact, in its producer's order, and none is delivered twice (a killed consumer
//! loses at most the item it was taking).
//!
//! Timing: the only bound is [`LONG`] on each `get`; a kill lands at a moment picked
//! from a pseudo-random sequence.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use common::{KillOnDrop, LONG};
use multiproc::{Connection, Error, GetError, Process, Queue, pipe};
use serde::{Deserialize, Serialize};

const ITERATIONS: u64 = 50;

/// The producer number of the items that mark the end of a round.
const MARKER: u64 = u64::MAX;

/// A ring of 64 KiB: items above 16 KiB are streamed through it in parts.
const RING: usize = 64 << 10;

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    producer: u64,
    seq: u64,
    body: Vec<u8>,
}

/// The body every item of (`producer`, `seq`) carries: its length varies from a few
/// bytes (one record) to several times the ring (a stream).
fn body(producer: u64, seq: u64) -> Vec<u8> {
    let len = match seq % 4 {
        0 => 3,
        1 => 1000,
        2 => 40 << 10,
        _ => 200 << 10,
    };
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(31)
                .wrapping_add(producer.wrapping_mul(7).wrapping_add(seq)) as u8
        })
        .collect()
}

fn item(producer: u64, seq: u64) -> Item {
    Item {
        producer,
        seq,
        body: body(producer, seq),
    }
}

fn check_intact(it: &Item) {
    assert!(
        it.body == body(it.producer, it.seq),
        "item {}/{} arrived damaged",
        it.producer,
        it.seq
    );
}

/// A small pseudo-random sequence (xorshift), for kill moments.
struct Moments(u64);

impl Moments {
    fn next_micros(&mut self, max: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros(self.0 % max)
    }
}

fn produce_forever(args: (Queue<Item>, u64)) {
    let (q, producer) = args;
    for seq in 0.. {
        q.put(&item(producer, seq)).unwrap();
    }
}

/// Takes items until `marker` (the parent's own item) comes: everything before it.
fn drain_until(q: &Queue<Item>, marker: u64) -> Vec<Item> {
    let mut got = Vec::new();
    loop {
        let it = q
            .get_timeout(LONG)
            .expect("the queue stays usable after a kill");
        check_intact(&it);
        if it.producer == marker {
            return got;
        }
        got.push(it);
    }
}

#[test]
fn a_producer_sigkilled_mid_put_never_corrupts_or_blocks_the_queue() {
    let q = Queue::<Item>::builder().ring_bytes(RING).build().unwrap();
    let mut moments = Moments(0x9e37_79b9_7f4a_7c15);
    const PARENT: u64 = MARKER;
    for round in 0..ITERATIONS {
        let mut victim = KillOnDrop(Process::new(produce_forever, (q.clone(), round)));
        victim.0.start().unwrap();
        // Let it put a few items (some streamed), then kill it at a random moment:
        // usually in the middle of a put, often blocked mid-stream on a full ring.
        let mut got = Vec::new();
        for _ in 0..round % 5 {
            let it = q.get_timeout(LONG).unwrap();
            check_intact(&it);
            got.push(it);
        }
        thread::sleep(moments.next_micros(3000));
        victim.0.kill().unwrap();
        victim.0.join().unwrap();
        // Another producer gets through (it may have to wait for room, so it puts from
        // a thread while this one consumes), and so does a consumer.
        let marker = {
            let q = q.clone();
            thread::spawn(move || q.put_timeout(&item(PARENT, round), LONG))
        };
        got.extend(drain_until(&q, PARENT));
        marker.join().unwrap().unwrap();
        // The victim's items are intact (checked), in order, each once.
        let seqs: Vec<u64> = got.iter().map(|it| it.seq).collect();
        assert!(
            got.iter().all(|it| it.producer == round),
            "round {round}: {seqs:?}"
        );
        assert!(
            seqs.windows(2).all(|w| w[0] + 1 == w[1]) && seqs.first().is_none_or(|s| *s == 0),
            "round {round}: items missing, repeated or out of order: {seqs:?}"
        );
        assert!(q.empty(), "round {round}: items after the marker");
    }
}

/// Takes items, and reports each one's sequence number through `report` as soon as it
/// has it.
fn consume_and_report(args: (Queue<Item>, Connection)) {
    let (q, report) = args;
    loop {
        let it = q.get().unwrap();
        check_intact(&it);
        report.send(&it.seq).unwrap();
    }
}

#[test]
fn a_consumer_sigkilled_mid_get_loses_at_most_its_item_and_blocks_nobody() {
    let q = Queue::<Item>::builder().ring_bytes(RING).build().unwrap();
    let mut moments = Moments(0x2545_f491_4f6c_dd1d);
    let mut next_seq = 0u64;
    for round in 0..ITERATIONS {
        let (mine, theirs) = pipe(true).unwrap();
        let mut victim = KillOnDrop(Process::new(consume_and_report, (q.clone(), theirs)));
        victim.0.start().unwrap();
        // Items for the victim, put while it takes them; it is killed at a random
        // moment, often in the middle of copying a streamed item out.
        let first = next_seq;
        let producer = {
            let q = q.clone();
            let n = 8 + round % 8;
            thread::spawn(move || {
                for seq in first..first + n {
                    q.put(&item(0, seq)).unwrap();
                }
                n
            })
        };
        thread::sleep(moments.next_micros(4000));
        victim.0.kill().unwrap();
        victim.0.join().unwrap();
        let mut taken = BTreeSet::new();
        while let Ok(true) = mine.poll(Some(Duration::ZERO)) {
            match mine.recv::<u64>() {
                Ok(seq) => assert!(taken.insert(seq), "round {round}: {seq} reported twice"),
                Err(_) => break,
            }
        }
        // The rest is still in the queue, for this consumer (which must not wait on the
        // dead one's lock).
        // Until the producer is done and nothing is left (`qsize` counts an item until
        // its last part is taken, even one that the victim was in the middle of).
        let mut rest = Vec::new();
        while !(producer.is_finished() && q.qsize() == 0) {
            match q.get_timeout(Duration::from_millis(200)) {
                Ok(it) => {
                    check_intact(&it);
                    rest.push(it.seq);
                }
                Err(GetError::Empty) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let n = producer.join().unwrap();
        next_seq += n;
        for seq in &rest {
            assert!(
                !taken.contains(seq),
                "round {round}: item {seq} delivered twice"
            );
        }
        assert!(
            rest.windows(2).all(|w| w[0] < w[1]),
            "round {round}: {rest:?}"
        );
        let seen = taken.len() + rest.len();
        assert!(
            seen as u64 + 1 >= n && seen as u64 <= n,
            "round {round}: {n} items put, {} taken by the victim, {} left: more than one lost",
            taken.len(),
            rest.len()
        );
    }
    // Still a working queue.
    q.put(&item(1, 1)).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap().seq, 1);
}

fn hold_handle_forever(_q: Queue<Item>) {
    thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_consumer_learns_that_every_producer_was_killed() {
    let q = Queue::<Item>::new().unwrap();
    let mut producers: Vec<KillOnDrop> = (0..3)
        .map(|_| {
            let mut p = Process::new(hold_handle_forever, q.clone());
            p.start().unwrap();
            KillOnDrop(p)
        })
        .collect();
    q.close();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(300)),
        Err(GetError::Empty)
    ));
    for p in &mut producers {
        p.0.kill().unwrap();
        p.0.join().unwrap();
    }
    assert!(matches!(q.get(), Err(Error::NoProducers)));
}

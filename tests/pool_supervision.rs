//! The pool when its workers die or hang: twenty runs of 2,000 tasks while a random
//! worker is SIGKILLed mid-run (every call returns, only the chunk the killed worker held
//! fails, with `WorkerLost`, or runs again when retries are on, and the pool keeps its
//! size); a task over its time limit fails with `Timeout` and the pool goes on.
//!
//! Timing: kill moments come from a pseudo-random sequence; every wait is bounded by
//! [`LONG`].

mod common;

use std::thread;
use std::time::Duration;

use common::LONG;
use multiproc::{Error, Pool};

const RUNS: u64 = 20;
const TASKS: u64 = 2_000;
const CHUNK: usize = 25;

/// About 100 µs of work, so that a run lasts long enough to be cut into.
fn work(x: u64) -> u64 {
    let mut acc = x;
    for i in 0..20_000u64 {
        acc = std::hint::black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    std::hint::black_box(acc);
    x * 3
}

struct Moments(u64);

impl Moments {
    fn next(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

/// Runs the tasks while a random worker is killed at a random moment; the results.
fn run_with_a_kill(pool: &Pool, moments: &mut Moments) -> Vec<multiproc::Result<u64>> {
    let delay = Duration::from_millis(5 + moments.next(60));
    let pids = pool.pids();
    let victim = pids[moments.next(pids.len() as u64) as usize];
    let killer = thread::spawn(move || {
        thread::sleep(delay);
        common::kill_pid(victim);
    });
    let results: Vec<_> = pool.imap_chunked(work, 0..TASKS, CHUNK).collect();
    killer.join().unwrap();
    results
}

#[test]
fn a_random_worker_sigkilled_mid_map_fails_only_the_chunk_it_held() {
    let pool = Pool::new(2).unwrap();
    let mut moments = Moments(0x5851_f42d_4c95_7f2d);
    let mut lost_runs = 0;
    for run in 0..RUNS {
        let results = run_with_a_kill(&pool, &mut moments);
        assert_eq!(results.len(), TASKS as usize, "run {run}");
        let failed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Ok(v) => {
                    assert_eq!(*v, i as u64 * 3, "run {run}: task {i}");
                    None
                }
                Err(Error::WorkerLost { .. }) => Some(i),
                Err(e) => panic!("run {run}: task {i} failed with {e}"),
            })
            .collect();
        // The killed worker held at most one chunk at work: the failures, if any, are
        // exactly that chunk.
        if let Some(&first) = failed.first() {
            lost_runs += 1;
            assert_eq!(first % CHUNK, 0, "run {run}: failures {failed:?}");
            assert_eq!(
                failed,
                (first..first + CHUNK).collect::<Vec<_>>(),
                "run {run}"
            );
        }
        // Replaced: the pool keeps its size.
        let mut tries = 0;
        while pool.pids().len() != 2 && tries < 100 {
            thread::sleep(Duration::from_millis(20));
            tries += 1;
        }
        assert_eq!(
            pool.pids().len(),
            2,
            "run {run}: the pool did not keep its size"
        );
    }
    // The kills land mid-run (a run takes a few hundred ms, a kill comes within 65 ms).
    assert!(
        lost_runs >= RUNS / 2,
        "only {lost_runs} of {RUNS} kills hit a task"
    );
}

#[test]
fn with_retries_a_random_worker_sigkilled_mid_map_costs_no_result() {
    let pool = Pool::builder().processes(2).retries(2).build().unwrap();
    let mut moments = Moments(0x2545_f491_4f6c_dd1d);
    for run in 0..RUNS / 2 {
        let results = run_with_a_kill(&pool, &mut moments);
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap(), i as u64 * 3, "run {run}: task {i}");
        }
    }
}

fn sleep_ms(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_task_over_its_time_limit_fails_with_timeout_and_the_pool_goes_on() {
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let stuck = pool.apply_async(sleep_ms, 600_000).unwrap();
    let fine: Vec<_> = (0..10)
        .map(|i| pool.apply_async(sleep_ms, i).unwrap())
        .collect();
    let mut stuck = stuck;
    assert!(matches!(stuck.get_timeout(LONG), Err(Error::Timeout)));
    for (i, r) in fine.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), i as u64);
    }
    assert_eq!(pool.map(sleep_ms, 0..4).unwrap(), [0, 1, 2, 3]);
    assert_eq!(pool.pids().len(), 2);
}

fn abort_now(_: u8) -> u8 {
    std::process::abort();
}

#[test]
fn a_worker_that_aborts_fails_its_task_with_its_signal_and_is_replaced() {
    let pool = Pool::new(2).unwrap();
    match pool.apply(abort_now, 0) {
        Err(e @ Error::WorkerLost { .. }) => assert_eq!(e.signal(), Some(6)),
        other => panic!("expected WorkerLost by SIGABRT, got {other:?}"),
    }
    assert_eq!(pool.map(sleep_ms, [1, 2, 3]).unwrap(), [1, 2, 3]);
    assert_eq!(pool.pids().len(), 2);
}

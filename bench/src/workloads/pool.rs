//! The process pool: small tasks through `map` (in Python's default chunks and one item
//! per chunk) and `apply_async` with a callback, and a CPU-bound job split over the
//! workers. Every pool (multiproc's, procspawn's) has two workers and is started before
//! any timing: only the tasks are timed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::Pool;

use super::Figures;
use crate::limits::{BareEchoRings, fork_split};
use crate::measure::Contender;
use crate::{BenchResult, Settings};

/// Workers of every pool, and processes of the split job's limit.
pub(super) const WORKERS: usize = 2;

/// How long the parent waits for a pool's results.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// procspawn tasks in flight at a time: each holds two ipc-channel channels (their
/// descriptors) until it is joined, so 20,000 at once would run out of descriptors; 64
/// keep both workers busy.
const PROCSPAWN_WINDOW: usize = 64;

/// The small task: gives its argument back.
fn identity(x: u64) -> u64 {
    x
}

/// Checks that `got` is `0..n`, in order.
fn check_identity(who: &str, got: &[u64], n: u64) -> BenchResult<()> {
    if got.len() as u64 != n {
        return Err(format!("{who} gave back {} results for {n} items", got.len()).into());
    }
    match got.iter().zip(0..n).find(|&(&v, i)| v != i) {
        Some((v, i)) => Err(format!("{who} gave back {v} for item {i}").into()),
        None => Ok(()),
    }
}

/// Microseconds per item of a run of `n` items that took `elapsed`.
fn per_item(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n as f64
}

/// A pool of [`WORKERS`] workers, with the default start method.
fn start_pool() -> BenchResult<Pool> {
    Ok(Pool::builder().processes(WORKERS).build()?)
}

/// One `map` of `identity` over `0..n` (in chunks of `chunksize`; Python's default when
/// `None`), checked: microseconds per item.
pub(super) fn multiproc_map(pool: &Pool, n: u64, chunksize: Option<usize>) -> BenchResult<f64> {
    let started = Instant::now();
    let mut pending = match chunksize {
        None => pool.map_async(identity, 0..n)?,
        Some(c) => pool.map_async_chunked(identity, 0..n, c)?,
    };
    let got = pending.get_timeout(ANSWER_TIMEOUT)?;
    let elapsed = started.elapsed();
    check_identity("multiproc", &got, n)?;
    Ok(per_item(elapsed, n))
}

/// One run of the bare echo rings over `n` items: microseconds per item.
fn limit_echo(rings: &mut BareEchoRings, n: u64) -> BenchResult<f64> {
    Ok(per_item(rings.run(n)?, n))
}

/// procspawn's pool running `identity` on `0..n`, one task per item, at most
/// [`PROCSPAWN_WINDOW`] in flight; each result is checked as it is joined, in order.
/// Microseconds per item.
fn procspawn_tasks(pool: &procspawn::Pool, n: u64) -> BenchResult<f64> {
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(PROCSPAWN_WINDOW);
    let mut done = 0;
    for i in 0..n {
        if in_flight.len() == PROCSPAWN_WINDOW {
            join_procspawn(&mut in_flight, &mut done)?;
        }
        in_flight.push_back(pool.spawn(i, identity as fn(u64) -> u64));
    }
    while !in_flight.is_empty() {
        join_procspawn(&mut in_flight, &mut done)?;
    }
    let elapsed = started.elapsed();
    if done != n {
        return Err(format!("procspawn completed {done} of {n} tasks").into());
    }
    Ok(per_item(elapsed, n))
}

/// Joins the oldest procspawn task in flight, which must give back `done`.
fn join_procspawn(
    in_flight: &mut VecDeque<procspawn::JoinHandle<u64>>,
    done: &mut u64,
) -> BenchResult<()> {
    let Some(mut handle) = in_flight.pop_front() else {
        return Ok(());
    };
    let v = handle.join_timeout(ANSWER_TIMEOUT)?;
    if v != *done {
        return Err(format!("procspawn gave back {v} for item {done}").into());
    }
    *done += 1;
    Ok(())
}

/// procspawn's pool of [`WORKERS`] workers, warmed up with a few tasks.
fn start_procspawn_pool() -> BenchResult<procspawn::Pool> {
    let pool = procspawn::Pool::new(WORKERS)?;
    procspawn_tasks(&pool, 2 * PROCSPAWN_WINDOW as u64)?;
    Ok(pool)
}

/// `pool_map_small`: microseconds per item of `pool.map(identity, 0..200,000)`, Python's
/// default chunk size (four chunks per worker). Limit: the bare echo rings.
pub fn pool_map_small(s: &Settings) -> BenchResult<Figures> {
    let n = 200_000;
    let pool = start_pool()?;
    let mut rings = BareEchoRings::new(WORKERS)?;
    multiproc_map(&pool, n / 10, None)?;
    limit_echo(&mut rings, n / 10)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_map(&pool, n, None)?])),
        Contender::new("limit", || Ok(vec![limit_echo(&mut rings, n)?])),
    ];
    Figures::interleaved(s.pick(3, 5), &mut contenders)
}

/// `pool_map_chunk1`: microseconds per item of `pool.map_chunked(identity, 0..20,000, 1)`:
/// one task per item. Limit: the bare echo rings; procspawn: its pool running the same
/// 20,000 calls, one `spawn` each.
pub fn pool_map_chunk1(s: &Settings) -> BenchResult<Figures> {
    let n = 20_000;
    let pool = start_pool()?;
    let mut rings = BareEchoRings::new(WORKERS)?;
    let peer = start_procspawn_pool()?;
    multiproc_map(&pool, n / 10, Some(1))?;
    limit_echo(&mut rings, n / 10)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_map(&pool, n, Some(1))?])),
        Contender::new("limit", || Ok(vec![limit_echo(&mut rings, n)?])),
        Contender::new("procspawn", || Ok(vec![procspawn_tasks(&peer, n)?])),
    ];
    Figures::interleaved(s.pick(3, 5), &mut contenders)
}

/// `n` tasks `apply_async_with(identity, i, callback, error_callback)`, the callback
/// counting completions in this process; then every result is waited for and checked,
/// and the count too. Microseconds per task, from the first submission to the last result.
fn multiproc_apply_async(pool: &Pool, n: u64) -> BenchResult<f64> {
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let completed = completed.clone();
        let failed = failed.clone();
        pending.push(pool.apply_async_with(
            identity,
            i,
            move |_: &u64| {
                completed.fetch_add(1, Ordering::Relaxed);
            },
            move |_: &multiproc::Error| {
                failed.fetch_add(1, Ordering::Relaxed);
            },
        )?);
    }
    for (i, r) in (0..n).zip(&mut pending) {
        let v = r.get_timeout(ANSWER_TIMEOUT)?;
        if v != i {
            return Err(format!("multiproc gave back {v} for task {i}").into());
        }
    }
    let elapsed = started.elapsed();
    // Each callback runs before its result is ready: all have run by now.
    let (completed, failed) = (
        completed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    if completed != n || failed != 0 {
        return Err(
            format!("{completed} callbacks and {failed} error callbacks for {n} tasks").into(),
        );
    }
    Ok(per_item(elapsed, n))
}

/// `pool_apply_async`: microseconds per task of 20,000 `apply_async_with` with a callback
/// counting completions, then waiting for all. Limit: the bare echo rings; procspawn: its
/// pool's `spawn` (a task with a handle; it has no callbacks), the completions counted as
/// the handles are joined.
pub fn pool_apply_async(s: &Settings) -> BenchResult<Figures> {
    let n = 20_000;
    let pool = start_pool()?;
    let mut rings = BareEchoRings::new(WORKERS)?;
    let peer = start_procspawn_pool()?;
    multiproc_apply_async(&pool, n / 10)?;
    limit_echo(&mut rings, n / 10)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_apply_async(&pool, n)?])),
        Contender::new("limit", || Ok(vec![limit_echo(&mut rings, n)?])),
        Contender::new("procspawn", || Ok(vec![procspawn_tasks(&peer, n)?])),
    ];
    Figures::interleaved(s.pick(3, 5), &mut contenders)
}

// ---- a CPU-bound job ----

/// `sum(i + i**2 + i**3 for i in range(lo, hi))` with Python's unbounded integers as
/// `u128` (the tutorial's job). Each `i` passes through `black_box`, so that the compiler
/// really loops instead of finding the sum's closed form.
fn sum_of_powers(lo: u64, hi: u64) -> u128 {
    (lo..hi)
        .map(|i| {
            let i = u128::from(std::hint::black_box(i));
            i + i * i + i * i * i
        })
        .sum()
}

/// The job as a pool task: one share of the range.
fn sum_part((lo, hi): (u64, u64)) -> u128 {
    sum_of_powers(lo, hi)
}

/// The serial job over `0..n`: its sum and how long it took.
pub(super) fn serial(n: u64) -> (u128, Duration) {
    let started = Instant::now();
    let sum = sum_of_powers(0, n);
    (sum, started.elapsed())
}

/// How long the pool takes for the job over `0..n` split in [`WORKERS`] equal tasks (one
/// chunk each), its sum checked against `expected`.
pub(super) fn split_time(pool: &Pool, n: u64, expected: u128) -> BenchResult<Duration> {
    let w = WORKERS as u64;
    let parts: Vec<(u64, u64)> = (0..w).map(|k| (k * n / w, (k + 1) * n / w)).collect();
    let started = Instant::now();
    let sums = pool
        .map_async_chunked(sum_part, parts, 1)?
        .get_timeout(ANSWER_TIMEOUT)?;
    let split = started.elapsed();
    if sums.iter().sum::<u128>() != expected {
        return Err("the pool's sum differs from the serial one".into());
    }
    Ok(split)
}

/// Speedup of the pool over the serial job, both timed now: the serial time over the
/// pool's ([`split_time`]).
fn multiproc_speedup(pool: &Pool, n: u64) -> BenchResult<f64> {
    let (expected, alone) = serial(n);
    let split = split_time(pool, n, expected)?;
    Ok(alone.as_secs_f64() / split.as_secs_f64())
}

/// Speedup of [`WORKERS`] bare forked processes over the serial job, both timed now.
fn limit_speedup(n: u64) -> BenchResult<f64> {
    let (expected, alone) = serial(n);
    let (sum, split) = fork_split(n, WORKERS as u64, sum_of_powers)?;
    if sum != expected {
        return Err("the forked processes' sum differs from the serial one".into());
    }
    Ok(alone.as_secs_f64() / split.as_secs_f64())
}

/// `pool_cpu_speedup`: the serial job's time over the time of the same job split over the
/// pool's two workers (higher is better). Limit: the same split over two bare forked
/// processes, their results through a pipe, forks and reaping timed.
pub fn pool_cpu_speedup(s: &Settings) -> BenchResult<Figures> {
    let n = s.pick(40_000_000, 100_000_000);
    let pool = start_pool()?;
    multiproc_speedup(&pool, n / 10)?;
    limit_speedup(n / 10)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_speedup(&pool, n)?])),
        Contender::new("limit", || Ok(vec![limit_speedup(n)?])),
    ];
    Figures::interleaved(s.pick(5, 9), &mut contenders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_sums_the_powers() {
        // 0 + (1 + 1 + 1) + (2 + 4 + 8)
        assert_eq!(sum_of_powers(0, 3), 17);
        assert_eq!(
            sum_of_powers(0, 1000),
            sum_of_powers(0, 400) + sum_of_powers(400, 1000)
        );
    }

    #[test]
    fn check_identity_refuses_a_wrong_or_missing_result() {
        check_identity("test", &[0, 1, 2], 3).unwrap();
        assert!(check_identity("test", &[0, 2, 1], 3).is_err());
        assert!(check_identity("test", &[0, 1], 3).is_err());
    }
}

//! Locks, shared values and events across processes.

use std::time::{Duration, Instant};

use multiproc::{Barrier, Event, Lock, Process, Value};

use super::Figures;
use crate::limits::{self, BareLock, FutexPingPong, SpinPingPong};
use crate::measure::{Contender, time_mean};
use crate::{BenchResult, Settings};

/// How long one side of a ping-pong waits for the other before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the answering child waits for the next ping before it ends by itself.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Ends a child and checks that it ended well.
pub(super) fn join_ok(mut process: Process, who: &str) -> BenchResult<()> {
    process.join()?;
    match process.exitcode() {
        Some(0) => Ok(()),
        code => Err(format!("{who} child ended with exit code {code:?}").into()),
    }
}

// ---- lock_uncontended ----

/// `n` acquisitions of `lock`, each released at once (the guard is dropped).
fn acquire_release(lock: &Lock, n: usize) -> BenchResult<()> {
    for _ in 0..n {
        let guard = lock.acquire().map_err(multiproc::Error::from)?;
        drop(guard);
    }
    Ok(())
}

/// `lock_uncontended`: nanoseconds per acquire + release of a free `Lock`; limit = the bare
/// futex lock in a shared page.
pub fn lock_uncontended(s: &Settings) -> BenchResult<Figures> {
    let bare = BareLock::new()?;
    let lock = Lock::new()?;
    let per_rep = s.pick(1_000_000, 4_000_000);
    bare.acquire_release(per_rep / 10);
    acquire_release(&lock, per_rep / 10)?;
    let ns = |us: f64| us * 1e3;
    let mut contenders = [
        Contender::new("limit", || {
            let us = time_mean(per_rep, |n| {
                bare.acquire_release(n);
                Ok(())
            })?;
            Ok(vec![ns(us)])
        }),
        Contender::new("multiproc", || {
            Ok(vec![ns(time_mean(per_rep, |n| acquire_release(&lock, n))?)])
        }),
    ];
    Figures::interleaved(s.pick(5, 11), &mut contenders)
}

// ---- value_contended ----

/// Processes that increment the shared value.
const PROCS: usize = 2;
/// Increments per process.
const INCREMENTS: u32 = 200_000;

/// Child: waits at the start gate, then does `n` increments of `v`, each under the
/// value's lock.
fn add_locked((v, n, gate): (Value<i64>, u32, Barrier)) -> multiproc::Result<()> {
    gate.wait_timeout(IDLE_TIMEOUT)?;
    for _ in 0..n {
        *v.get_lock()? += 1;
    }
    Ok(())
}

/// Checks the final count; a wrong one is a failure of the workload, not a figure.
fn check_count(who: &str, got: i64) -> BenchResult<()> {
    let expected = PROCS as i64 * i64::from(INCREMENTS);
    if got == expected {
        Ok(())
    } else {
        let msg = format!(
            "!!! value_contended: {who} counted {got}, expected {expected}: \
             {} increments LOST — the lock does not exclude !!!",
            expected - got
        );
        eprintln!("{msg}");
        Err(msg.into())
    }
}

/// One run with multiproc: a `Value<i64>` and two processes that wait at a `Barrier`
/// until both are ready; seconds from the parent's arrival at the barrier, last, to the
/// last join.
fn value_multiproc() -> BenchResult<f64> {
    let v = Value::new(0i64)?;
    let gate = Barrier::new(PROCS as u32 + 1)?;
    let mut children: Vec<Process> = (0..PROCS)
        .map(|_| Process::new(add_locked, (v.clone(), INCREMENTS, gate.clone())))
        .collect();
    for p in &mut children {
        p.start()?;
    }
    // Arrive last, so that the clock starts before the children are let go.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while gate.n_waiting() < PROCS as u32 {
        if Instant::now() > deadline {
            return Err("the incrementing children do not reach the start gate".into());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let started = Instant::now();
    gate.wait_timeout(ANSWER_TIMEOUT)?;
    for p in children {
        join_ok(p, "the incrementing")?;
    }
    let secs = started.elapsed().as_secs_f64();
    check_count("multiproc", v.get()?)?;
    Ok(secs)
}

/// One run of the limit: two forked processes, a bare futex mutex and a bare start gate;
/// seconds from opening the gate to the last `waitpid`.
fn value_limit() -> BenchResult<f64> {
    let (count, elapsed) = limits::futex_mutex_increments(PROCS, INCREMENTS)?;
    check_count("the bare futex mutex", i64::from(count))?;
    Ok(elapsed.as_secs_f64())
}

/// `value_contended`: 2 processes × 200,000 locked increments of a shared integer, in
/// seconds from a start gate that both processes wait at to their joins; the final count
/// is checked every time.
pub fn value_contended(s: &Settings) -> BenchResult<Figures> {
    value_limit()?;
    value_multiproc()?;
    let mut contenders = [
        Contender::new("limit", || Ok(vec![value_limit()?])),
        Contender::new("multiproc", || Ok(vec![value_multiproc()?])),
    ];
    Figures::interleaved(s.pick(5, 11), &mut contenders)
}

// ---- event_pingpong ----

/// Child: waits for `ping`, clears it and sets `pong`, until `stop` is set (with a ping).
fn answer((ping, pong, stop): (Event, Event, Event)) -> Result<(), String> {
    loop {
        if !ping.wait(Some(IDLE_TIMEOUT)) {
            return Err("no ping for a minute".to_string());
        }
        ping.clear();
        if stop.is_set() {
            return Ok(());
        }
        pong.set();
    }
}

/// The parent's side of a ping-pong on two `Event`s.
struct EventPingPong {
    ping: Event,
    pong: Event,
    stop: Event,
    process: Process,
}

impl EventPingPong {
    fn start() -> BenchResult<EventPingPong> {
        let (ping, pong, stop) = (Event::new()?, Event::new()?, Event::new()?);
        let mut process = Process::new(answer, (ping.clone(), pong.clone(), stop.clone()));
        process.start()?;
        Ok(EventPingPong {
            ping,
            pong,
            stop,
            process,
        })
    }

    fn round_trips(&mut self, n: usize) -> BenchResult<()> {
        for _ in 0..n {
            self.ping.set();
            if !self.pong.wait(Some(ANSWER_TIMEOUT)) {
                return Err("the Event ping-pong child does not answer".into());
            }
            self.pong.clear();
        }
        Ok(())
    }

    fn close(self) -> BenchResult<()> {
        self.stop.set();
        self.ping.set();
        join_ok(self.process, "the Event ping-pong")
    }
}

/// `event_pingpong`: microseconds per round trip of two processes alternating on two
/// `Event`s; limit = a bare futex ping-pong on two words of a shared page, floor = a
/// ping-pong spinning on two words of a shared page.
pub fn event_pingpong(s: &Settings) -> BenchResult<Figures> {
    let mut limit = FutexPingPong::start()?;
    let mut floor = SpinPingPong::start()?;
    let mut events = EventPingPong::start()?;
    let per_rep = s.pick(2_000, 5_000);
    limit.round_trips(per_rep / 10)?;
    floor.round_trips(per_rep / 10)?;
    floor.rest();
    events.round_trips(per_rep / 10)?;
    let figures = {
        let mut contenders = [
            Contender::new("limit", || {
                Ok(vec![time_mean(per_rep, |n| Ok(limit.round_trips(n)?))?])
            }),
            Contender::new("floor", || {
                // The idle child sleeps between batches; waking it is not timed.
                floor.wake();
                let us = time_mean(per_rep, |n| Ok(floor.round_trips(n)?))?;
                floor.rest();
                Ok(vec![us])
            }),
            Contender::new("multiproc", || {
                Ok(vec![time_mean(per_rep, |n| events.round_trips(n))?])
            }),
        ];
        Figures::interleaved(s.pick(5, 9), &mut contenders)?
    };
    limit.close()?;
    floor.close()?;
    events.close()?;
    Ok(figures)
}

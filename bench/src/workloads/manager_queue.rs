//! A manager's queue between two processes: the parent puts an integer on one managed
//! queue, a child gets it and puts it on another, the parent gets it back. Each of the
//! four calls is a request to the manager's server process; the two `get`s wait there
//! for the other side's `put`. Only the round trips are timed; the manager, the queues
//! and the child are started before. Limit: the blocking socket-pair echo (one round
//! trip that sleeps in the kernel); floor: the busy-polling one.

use multiproc::{Manager, Process, QueueProxy};

use super::Figures;
use crate::limits::{EchoWait, SocketpairEcho};
use crate::measure::{Contender, time_mean};
use crate::{BenchResult, Settings};

/// The item that ends the child.
const STOP: u64 = u64::MAX;

/// The child: gets every item from `inbox` and puts it on `outbox`, until [`STOP`].
fn echo((inbox, outbox): (QueueProxy<u64>, QueueProxy<u64>)) -> multiproc::Result<()> {
    loop {
        let item = inbox.get()?;
        if item == STOP {
            return Ok(());
        }
        outbox.put(&item)?;
    }
}

/// `n` round trips through the child, each item checked.
fn round_trips(inbox: &QueueProxy<u64>, outbox: &QueueProxy<u64>, n: usize) -> BenchResult<()> {
    for i in 0..n as u64 {
        inbox.put(&i)?;
        let back = outbox.get()?;
        if back != i {
            return Err(format!("manager_queue_rtt: sent {i}, got {back} back").into());
        }
    }
    Ok(())
}

/// `manager_queue_rtt`: microseconds per round trip through two managed queues (a put
/// by the parent, a get and a put by a child, a get by the parent).
pub fn manager_queue_rtt(s: &Settings) -> BenchResult<Figures> {
    let n = s.pick(2_000, 10_000);
    let manager = Manager::start()?;
    let inbox = manager.queue::<u64>()?;
    let outbox = manager.queue::<u64>()?;
    let mut child = Process::new(echo, (inbox.clone(), outbox.clone()));
    child.start()?;
    let mut limit = SocketpairEcho::start(16, EchoWait::Blocking)?;
    let mut floor = SocketpairEcho::start(16, EchoWait::BusyPoll)?;
    round_trips(&inbox, &outbox, n / 10)?;
    let per_us = |e: &mut SocketpairEcho| -> BenchResult<f64> {
        let t = std::time::Instant::now();
        e.round_trips(n)?;
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        e.rest()?;
        Ok(us)
    };
    let figures = {
        let mut contenders = [
            Contender::new("multiproc", || {
                Ok(vec![time_mean(n, |n| round_trips(&inbox, &outbox, n))?])
            }),
            Contender::new("limit", || Ok(vec![per_us(&mut limit)?])),
            Contender::new("floor", || Ok(vec![per_us(&mut floor)?])),
        ];
        Figures::interleaved(s.pick(3, 5), &mut contenders)?
    };
    inbox.put(&STOP)?;
    child.join()?;
    if child.exitcode() != Some(0) {
        return Err(format!("the echoing child ended with {:?}", child.exitcode()).into());
    }
    limit.close()?;
    floor.close()?;
    Ok(figures)
}

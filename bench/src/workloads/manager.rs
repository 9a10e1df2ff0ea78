//! A manager's dict used from a child process: `set` and `get` of a small key and
//! value, each a request to the manager's server process and its reply. Only the
//! operations are timed; the manager, the dict and the child are started before.
//! Limit: the blocking socket-pair echo (one round trip that sleeps in the kernel);
//! floor: the busy-polling one.

use multiproc::{Connection, DictProxy, Manager, Process};

use super::Figures;
use crate::limits::{EchoWait, SocketpairEcho};
use crate::measure::Contender;
use crate::{BenchResult, Settings};

/// Which operation a child times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Op {
    Set,
    Get,
}

/// The child: for each `(op, n)` it is sent, runs `n` operations on the dict and
/// answers with microseconds per operation (or why it failed); `n == 0` ends it.
fn timed_ops(args: (DictProxy<u64, u64>, Connection)) {
    let (d, conn) = args;
    while let Ok((op, n)) = conn.recv::<(Op, u64)>() {
        if n == 0 {
            return;
        }
        let started = std::time::Instant::now();
        let mut failed = None;
        for i in 0..n {
            let r = match op {
                Op::Set => d.set(&(i % 64), &i),
                Op::Get => d.get(&(i % 64)).map(drop),
            };
            if let Err(e) = r {
                failed = Some(e.to_string());
                break;
            }
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
        let answer: Result<f64, String> = failed.map_or(Ok(us), Err);
        if conn.send(&answer).is_err() {
            return;
        }
    }
}

/// The manager, its dict, and a child timing operations on it.
struct DictChild {
    _manager: Manager,
    conn: Connection,
    child: Process,
}

impl DictChild {
    fn start() -> BenchResult<DictChild> {
        let manager = Manager::start()?;
        let d = manager.dict::<u64, u64>()?;
        for i in 0..64 {
            d.set(&i, &i)?;
        }
        let (conn, there) = multiproc::pipe(true)?;
        let mut child = Process::new(timed_ops, (d, there));
        child.start()?;
        Ok(DictChild {
            _manager: manager,
            conn,
            child,
        })
    }

    fn run(&self, op: Op, n: u64) -> BenchResult<f64> {
        self.conn.send(&(op, n))?;
        let answer: Result<f64, String> = self.conn.recv()?;
        Ok(answer?)
    }

    fn close(mut self) -> BenchResult<()> {
        self.conn.send(&(Op::Set, 0u64))?;
        self.child.join()?;
        Ok(())
    }
}

fn measure(s: &Settings, op: Op) -> BenchResult<Figures> {
    let n = s.pick(5_000, 20_000);
    let child = DictChild::start()?;
    let mut limit = SocketpairEcho::start(16, EchoWait::Blocking)?;
    let mut floor = SocketpairEcho::start(16, EchoWait::BusyPoll)?;
    child.run(op, n / 10)?;
    let per_us = |e: &mut SocketpairEcho| -> BenchResult<f64> {
        let t = std::time::Instant::now();
        e.round_trips(n as usize)?;
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        e.rest()?;
        Ok(us)
    };
    let figures = {
        let mut contenders = [
            Contender::new("multiproc", || Ok(vec![child.run(op, n)?])),
            Contender::new("limit", || Ok(vec![per_us(&mut limit)?])),
            Contender::new("floor", || Ok(vec![per_us(&mut floor)?])),
        ];
        Figures::interleaved(s.pick(3, 5), &mut contenders)?
    };
    child.close()?;
    limit.close()?;
    floor.close()?;
    Ok(figures)
}

/// `manager_dict_set`: microseconds per `d.set(&k, &v)` of a manager's dict of `u64`,
/// from a child process.
pub fn manager_dict_set(s: &Settings) -> BenchResult<Figures> {
    measure(s, Op::Set)
}

/// `manager_dict_get`: microseconds per `d.get(&k)` of a manager's dict of `u64`, from
/// a child process.
pub fn manager_dict_get(s: &Settings) -> BenchResult<Figures> {
    measure(s, Op::Get)
}

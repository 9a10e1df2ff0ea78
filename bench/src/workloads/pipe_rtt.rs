//! Round trips of a small message between the parent and a child that echoes it.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use multiproc::{Connection, Process, StartMethod};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Figures;
use crate::limits::{EchoWait, SocketpairEcho};
use crate::measure::{Contender, time_mean};
use crate::{BenchResult, Settings};

/// The raw message: 8 bytes.
const MSG: &[u8; 8] = b"pingpong";

/// The small value: CPython sends the tuple `(42, 3.25, "hello")`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Small {
    id: u64,
    x: f64,
    tag: String,
}

fn small() -> Small {
    Small {
        id: 42,
        x: 3.25,
        tag: "hello".to_string(),
    }
}

/// What travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    /// [`MSG`], as bytes.
    Bytes,
    /// [`small()`], as a serde value.
    Value,
}

/// A parent side of a ping-pong with an echoing child.
trait Echo {
    /// `n` round trips.
    fn round_trips(&mut self, n: usize) -> BenchResult<()>;
    /// After a batch: lets a child that spins while it waits sleep until the next one.
    fn rest(&mut self) -> BenchResult<()> {
        Ok(())
    }
    /// Ends the child and reaps it.
    fn close(self: Box<Self>) -> BenchResult<()>;
}

impl Echo for SocketpairEcho {
    fn round_trips(&mut self, n: usize) -> BenchResult<()> {
        Ok(SocketpairEcho::round_trips(self, n)?)
    }

    fn rest(&mut self) -> BenchResult<()> {
        Ok(SocketpairEcho::rest(self)?)
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        Ok(SocketpairEcho::close(*self)?)
    }
}

/// Ends a child whose input was closed and checks that it ended well.
pub(super) fn join_ok(mut process: Process) -> BenchResult<()> {
    process.join()?;
    match process.exitcode() {
        Some(0) => Ok(()),
        code => Err(format!("echo child ended with exit code {code:?}").into()),
    }
}

// ---- multiproc ----

fn echo_bytes(conn: Connection) {
    while let Ok(b) = conn.recv_bytes() {
        if conn.send_bytes(&b).is_err() {
            break;
        }
    }
}

fn echo_value(conn: Connection) {
    while let Ok(v) = conn.recv::<Small>() {
        if conn.send(&v).is_err() {
            break;
        }
    }
}

struct MultiprocEcho {
    conn: Connection,
    process: Process,
    payload: Payload,
    value: Small,
}

impl MultiprocEcho {
    fn start(payload: Payload) -> BenchResult<MultiprocEcho> {
        let (conn, theirs) = multiproc::pipe(true)?;
        let mut process = match payload {
            Payload::Bytes => Process::new(echo_bytes, theirs),
            Payload::Value => Process::new(echo_value, theirs),
        };
        process.start()?;
        Ok(MultiprocEcho {
            conn,
            process,
            payload,
            value: small(),
        })
    }
}

impl Echo for MultiprocEcho {
    fn round_trips(&mut self, n: usize) -> BenchResult<()> {
        match self.payload {
            Payload::Bytes => {
                for _ in 0..n {
                    self.conn.send_bytes(MSG)?;
                    if self.conn.recv_bytes()? != MSG {
                        return Err("multiproc echoed other bytes".into());
                    }
                }
            }
            Payload::Value => {
                for _ in 0..n {
                    self.conn.send(&self.value)?;
                    if self.conn.recv::<Small>()? != self.value {
                        return Err("multiproc echoed another value".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        let MultiprocEcho { conn, process, .. } = *self;
        drop(conn);
        join_ok(process)
    }
}

// ---- ipc-channel ----

/// The channel ends a bytes echo child hands to the parent: (to the child, from the child).
pub(super) type BytesEnds = (IpcBytesSender, IpcBytesReceiver);
/// The same for values.
pub(super) type ValueEnds<T> = (IpcSender<T>, IpcReceiver<T>);

/// Child: connects to the parent's one-shot server, hands over its channel ends, echoes.
pub(super) fn ipc_echo_bytes(server: String) {
    let boot = IpcSender::<BytesEnds>::connect(server).expect("connect to the parent");
    let (to_child, from_parent) = ipc::bytes_channel().expect("bytes channel");
    let (to_parent, from_child) = ipc::bytes_channel().expect("bytes channel");
    boot.send((to_child, from_child))
        .expect("send the channel ends");
    while let Ok(b) = from_parent.recv() {
        if to_parent.send(&b).is_err() {
            break;
        }
    }
}

/// Child: as [`ipc_echo_bytes`], for values of type `T`.
pub(super) fn ipc_echo_value<T: Serialize + DeserializeOwned>(server: String) {
    let boot = IpcSender::<ValueEnds<T>>::connect(server).expect("connect to the parent");
    let (to_child, from_parent) = ipc::channel::<T>().expect("channel");
    let (to_parent, from_child) = ipc::channel::<T>().expect("channel");
    boot.send((to_child, from_child))
        .expect("send the channel ends");
    while let Ok(v) = from_parent.recv() {
        if to_parent.send(v).is_err() {
            break;
        }
    }
}

/// Starts `child(server name)` with multiproc's spawn and takes the ends it hands over,
/// giving up if it does not connect within a minute.
pub(super) fn ipc_connect<T, F>(child: F) -> BenchResult<(Process, T)>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(String) + Copy + Send + 'static,
{
    let (server, name) = IpcOneShotServer::<T>::new()?;
    let mut process = multiproc::get_context(StartMethod::Spawn).process(child, name);
    process.start()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.accept().map(|(_, ends)| ends));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(ends)) => Ok((process, ends)),
        Ok(Err(e)) => Err(format!("ipc-channel accept: {e}").into()),
        Err(_) => {
            let _ = process.kill();
            Err("the ipc-channel echo child did not connect".into())
        }
    }
}

enum IpcEnds {
    Bytes(BytesEnds),
    Value(ValueEnds<Small>),
}

struct IpcEcho {
    ends: IpcEnds,
    process: Process,
    value: Small,
}

impl IpcEcho {
    fn start(payload: Payload) -> BenchResult<IpcEcho> {
        let (process, ends) = match payload {
            Payload::Bytes => {
                let (p, ends) = ipc_connect::<BytesEnds, _>(ipc_echo_bytes)?;
                (p, IpcEnds::Bytes(ends))
            }
            Payload::Value => {
                let (p, ends) = ipc_connect::<ValueEnds<Small>, _>(ipc_echo_value::<Small>)?;
                (p, IpcEnds::Value(ends))
            }
        };
        Ok(IpcEcho {
            ends,
            process,
            value: small(),
        })
    }
}

impl Echo for IpcEcho {
    fn round_trips(&mut self, n: usize) -> BenchResult<()> {
        match &self.ends {
            IpcEnds::Bytes((tx, rx)) => {
                for _ in 0..n {
                    tx.send(MSG)?;
                    if rx.recv()? != MSG {
                        return Err("ipc-channel echoed other bytes".into());
                    }
                }
            }
            IpcEnds::Value((tx, rx)) => {
                for _ in 0..n {
                    tx.send(self.value.clone())?;
                    if rx.recv()? != self.value {
                        return Err("ipc-channel echoed another value".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        let IpcEcho { ends, process, .. } = *self;
        drop(ends);
        join_ok(process)
    }
}

// ---- the workloads ----

fn measure(s: &Settings, payload: Payload) -> BenchResult<Figures> {
    let mut echoes: Vec<(&'static str, Box<dyn Echo>)> = vec![
        (
            "limit",
            Box::new(SocketpairEcho::start(MSG.len(), EchoWait::Blocking)?),
        ),
        (
            "floor",
            Box::new(SocketpairEcho::start(MSG.len(), EchoWait::BusyPoll)?),
        ),
        ("multiproc", Box::new(MultiprocEcho::start(payload)?)),
        ("ipc-channel", Box::new(IpcEcho::start(payload)?)),
    ];
    let per_rep = s.pick(5_000, 20_000);
    let warm_up = per_rep / 10;
    for (name, echo) in &mut echoes {
        echo.round_trips(warm_up)
            .and_then(|()| echo.rest())
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let figures = {
        let mut contenders: Vec<Contender<'_>> = echoes
            .iter_mut()
            .map(|(name, echo)| {
                Contender::new(name, move || {
                    let us = time_mean(per_rep, |n| echo.round_trips(n))?;
                    echo.rest()?;
                    Ok(vec![us])
                })
            })
            .collect();
        Figures::interleaved(s.pick(5, 9), &mut contenders)?
    };
    for (name, echo) in echoes {
        echo.close().map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(figures)
}

/// `pipe_rtt_bytes`: 8 bytes each way; limit = blocking socketpair ping-pong, floor = the
/// same ping-pong busy-polling.
pub fn bytes(s: &Settings) -> BenchResult<Figures> {
    measure(s, Payload::Bytes)
}

/// `pipe_rtt_value`: a small serde value each way; limit and floor = the same socketpair
/// ping-pongs of 8 bytes.
pub fn value(s: &Settings) -> BenchResult<Figures> {
    measure(s, Payload::Value)
}

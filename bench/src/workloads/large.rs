//! Large messages: 64 MiB round trips through a pipe to a child that echoes them, and a
//! 64 MiB result coming back from a child. Rates are GB/s one way: the bytes of one
//! message over half a round trip (for a result: from the child's return to the result
//! in hand).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcSender};
use multiproc::{Connection, Process, StartMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Figures;
use super::pipe_rtt::{BytesEnds, ValueEnds, ipc_connect, ipc_echo_bytes, ipc_echo_value, join_ok};
use super::shm::PageBuf;
use crate::limits;
use crate::measure::Contender;
use crate::{BenchResult, Settings};

/// The size of every message: 64 MiB.
const SIZE: usize = 64 << 20;

/// f64s in a message of [`SIZE`] bytes.
const F64S: usize = SIZE / 8;

/// How long a child is given to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Repetitions: each is one round trip (or one child) per contender, about a tenth of a
/// second each.
fn reps(s: &Settings) -> usize {
    s.pick(2, 5)
}

/// `SIZE` bytes that are not all alike: byte `i` is `i % 251`.
fn bytes() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

/// `F64S` distinct f64s.
fn floats() -> Vec<f64> {
    (0..F64S).map(|i| i as f64 * 0.5).collect()
}

/// Checks an echoed or returned message without comparing all of it: its length, and
/// one element in every 4,096 (and the last).
fn check<T: PartialEq>(who: &str, got: &[T], sent: &[T]) -> BenchResult<()> {
    let last = sent.len().saturating_sub(1);
    let same = got.len() == sent.len()
        && (0..sent.len())
            .step_by(4096)
            .chain([last])
            .all(|i| got[i] == sent[i]);
    if same {
        Ok(())
    } else {
        Err(format!("{who} delivered another message").into())
    }
}

/// GB/s one way of a round trip of `bytes` bytes that took `secs`.
fn one_way(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (secs / 2.0) / 1e9
}

/// The limit of every large workload (and of `queue_large`): GB/s of a copy of [`SIZE`]
/// bytes between two warm, page-aligned buffers (memcpy).
pub(super) struct WarmCopy {
    src: PageBuf,
    dst: PageBuf,
}

impl WarmCopy {
    pub(super) fn new() -> WarmCopy {
        let mut w = WarmCopy {
            src: PageBuf::new(SIZE),
            dst: PageBuf::new(SIZE),
        };
        w.src.get_mut().copy_from_slice(&bytes());
        w.once();
        w
    }

    /// One copy: GB/s.
    pub(super) fn once(&mut self) -> f64 {
        let started = Instant::now();
        limits::warm_copy(self.src.get(), self.dst.get_mut());
        SIZE as f64 / started.elapsed().as_secs_f64() / 1e9
    }
}

// ---- round trips through an echoing child ----

/// What travels in a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    /// `send_bytes` / `recv_bytes` of 64 MiB.
    Bytes,
    /// `send` / `recv` of a 64 MiB `Vec<u8>`.
    Value,
    /// `send` / `recv` of a `Vec<f64>` of 8 M elements.
    F64,
}

fn echo_bytes(conn: Connection) {
    while let Ok(b) = conn.recv_bytes() {
        if conn.send_bytes(&b).is_err() {
            break;
        }
    }
}

fn echo_value<T: Serialize + DeserializeOwned>(conn: Connection) {
    while let Ok(v) = conn.recv::<T>() {
        if conn.send(&v).is_err() {
            break;
        }
    }
}

/// One large round trip, timed, against a child that echoes: GB/s one way.
trait LargeEcho {
    fn round_trip(&mut self) -> BenchResult<f64>;
    fn close(self: Box<Self>) -> BenchResult<()>;
}

struct MultiprocEcho {
    conn: Connection,
    process: Process,
    payload: Payload,
    bytes: Vec<u8>,
    floats: Vec<f64>,
}

impl MultiprocEcho {
    fn start(payload: Payload) -> BenchResult<MultiprocEcho> {
        let (conn, theirs) = multiproc::pipe(true)?;
        let mut process = match payload {
            Payload::Bytes => Process::new(echo_bytes, theirs),
            Payload::Value => Process::new(echo_value::<Vec<u8>>, theirs),
            Payload::F64 => Process::new(echo_value::<Vec<f64>>, theirs),
        };
        process.start()?;
        Ok(MultiprocEcho {
            conn,
            process,
            payload,
            bytes: bytes(),
            floats: floats(),
        })
    }
}

impl LargeEcho for MultiprocEcho {
    fn round_trip(&mut self) -> BenchResult<f64> {
        let started = Instant::now();
        match self.payload {
            Payload::Bytes => {
                self.conn.send_bytes(&self.bytes)?;
                let got = self.conn.recv_bytes_timeout(ANSWER_TIMEOUT)?;
                let secs = started.elapsed().as_secs_f64();
                check("multiproc", &got, &self.bytes)?;
                Ok(one_way(SIZE, secs))
            }
            Payload::Value => {
                self.conn.send(&self.bytes)?;
                let got: Vec<u8> = self.conn.recv_timeout(ANSWER_TIMEOUT)?;
                let secs = started.elapsed().as_secs_f64();
                check("multiproc", &got, &self.bytes)?;
                Ok(one_way(SIZE, secs))
            }
            Payload::F64 => {
                self.conn.send(&self.floats)?;
                let got: Vec<f64> = self.conn.recv_timeout(ANSWER_TIMEOUT)?;
                let secs = started.elapsed().as_secs_f64();
                check("multiproc", &got, &self.floats)?;
                Ok(one_way(SIZE, secs))
            }
        }
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        let MultiprocEcho { conn, process, .. } = *self;
        drop(conn);
        join_ok(process)
    }
}

enum IpcEnds {
    Bytes(BytesEnds),
    Value(ValueEnds<Vec<u8>>),
    F64(ValueEnds<Vec<f64>>),
}

struct IpcEcho {
    ends: IpcEnds,
    process: Process,
    bytes: Vec<u8>,
    floats: Vec<f64>,
}

impl IpcEcho {
    fn start(payload: Payload) -> BenchResult<IpcEcho> {
        let (process, ends) = match payload {
            Payload::Bytes => {
                let (p, e) = ipc_connect::<BytesEnds, _>(ipc_echo_bytes)?;
                (p, IpcEnds::Bytes(e))
            }
            Payload::Value => {
                let (p, e) = ipc_connect::<ValueEnds<Vec<u8>>, _>(ipc_echo_value::<Vec<u8>>)?;
                (p, IpcEnds::Value(e))
            }
            Payload::F64 => {
                let (p, e) = ipc_connect::<ValueEnds<Vec<f64>>, _>(ipc_echo_value::<Vec<f64>>)?;
                (p, IpcEnds::F64(e))
            }
        };
        Ok(IpcEcho {
            ends,
            process,
            bytes: bytes(),
            floats: floats(),
        })
    }
}

impl LargeEcho for IpcEcho {
    fn round_trip(&mut self) -> BenchResult<f64> {
        let started = Instant::now();
        match &self.ends {
            IpcEnds::Bytes((tx, rx)) => {
                tx.send(&self.bytes)?;
                let got = rx.recv()?;
                let secs = started.elapsed().as_secs_f64();
                check("ipc-channel", &got, &self.bytes)?;
                Ok(one_way(SIZE, secs))
            }
            IpcEnds::Value((tx, rx)) => {
                // The message is built from a clone, as a user keeping the vector would.
                tx.send(self.bytes.clone())?;
                let got = rx.recv()?;
                let secs = started.elapsed().as_secs_f64();
                check("ipc-channel", &got, &self.bytes)?;
                Ok(one_way(SIZE, secs))
            }
            IpcEnds::F64((tx, rx)) => {
                tx.send(self.floats.clone())?;
                let got = rx.recv()?;
                let secs = started.elapsed().as_secs_f64();
                check("ipc-channel", &got, &self.floats)?;
                Ok(one_way(SIZE, secs))
            }
        }
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        let IpcEcho { ends, process, .. } = *self;
        drop(ends);
        join_ok(process)
    }
}

fn measure_echo(s: &Settings, payload: Payload) -> BenchResult<Figures> {
    let mut limit = WarmCopy::new();
    let mut echoes: Vec<(&'static str, Box<dyn LargeEcho>)> = vec![
        ("multiproc", Box::new(MultiprocEcho::start(payload)?)),
        ("ipc-channel", Box::new(IpcEcho::start(payload)?)),
    ];
    // A first round trip each, untimed: the children's buffers and code are warm.
    for (name, echo) in &mut echoes {
        echo.round_trip().map_err(|e| format!("{name}: {e}"))?;
    }
    let figures = {
        let mut contenders: Vec<Contender<'_>> = echoes
            .iter_mut()
            .map(|(name, echo)| Contender::new(name, move || Ok(vec![echo.round_trip()?])))
            .collect();
        contenders.push(Contender::new("limit", || Ok(vec![limit.once()])));
        Figures::interleaved(reps(s), &mut contenders)?
    };
    for (name, echo) in echoes {
        echo.close().map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(figures)
}

/// `pipe_large_bytes`: 64 MiB with `send_bytes` / `recv_bytes` to a child that echoes;
/// ipc-channel: `IpcBytesSender` / `IpcBytesReceiver`. Limit: memcpy of 64 MiB.
pub fn pipe_large_bytes(s: &Settings) -> BenchResult<Figures> {
    measure_echo(s, Payload::Bytes)
}

/// `pipe_large_value`: a 64 MiB `Vec<u8>` with `send` / `recv`; ipc-channel:
/// `IpcSender<Vec<u8>>` (plain serde, no `serde_bytes`).
pub fn pipe_large_value(s: &Settings) -> BenchResult<Figures> {
    measure_echo(s, Payload::Value)
}

/// `pipe_large_f64`: a `Vec<f64>` of 8 M elements (64 MiB) with `send` / `recv`;
/// ipc-channel: `IpcSender<Vec<f64>>`.
pub fn pipe_large_f64(s: &Settings) -> BenchResult<Figures> {
    measure_echo(s, Payload::F64)
}

// ---- a large result from a child ----

/// This machine's monotonic clock in nanoseconds: the same clock in every process, so a
/// child's reading and its parent's can be subtracted.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// GB/s of [`SIZE`] bytes handed over between the child's reading `sent_ns` and now.
fn rate_since(sent_ns: u64) -> BenchResult<f64> {
    match monotonic_ns().checked_sub(sent_ns) {
        Some(ns) if ns > 0 => Ok(SIZE as f64 / ns as f64),
        _ => Err("the child's clock reading is later than the parent's".into()),
    }
}

/// Child: builds 64 MiB, reads the clock, and returns both.
fn make_large(_: ()) -> (u64, Vec<u8>) {
    let data = bytes();
    (monotonic_ns(), data)
}

/// One child started with `spawn` returns 64 MiB; GB/s from the child's return to the
/// result in hand and the child joined.
fn multiproc_result(expected: &[u8]) -> BenchResult<f64> {
    let (sent, got) = multiproc::spawn(make_large, ())?.join()?;
    let rate = rate_since(sent)?;
    check("multiproc", &got, expected)?;
    Ok(rate)
}

/// Child: connects to the parent's one-shot server and sends 64 MiB as its first message,
/// with its clock reading from just before the send.
fn ipc_send_large(server: String) {
    let tx = IpcSender::<(u64, Vec<u8>)>::connect(server).expect("connect to the parent");
    let data = bytes();
    tx.send((monotonic_ns(), data)).expect("send the result");
}

/// The same with ipc-channel: a child started by multiproc with the same start method
/// (forkserver) connects to a one-shot server and sends the 64 MiB as its first message;
/// the clock runs from the child's send to the message in hand and the child joined.
fn ipc_result(expected: &[u8]) -> BenchResult<f64> {
    let (server, name) = IpcOneShotServer::<(u64, Vec<u8>)>::new()?;
    let mut process = multiproc::get_context(StartMethod::Forkserver).process(ipc_send_large, name);
    process.start()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.accept().map(|(_, data)| data));
    });
    let (sent, got) = match rx.recv_timeout(ANSWER_TIMEOUT) {
        Ok(Ok(data)) => data,
        Ok(Err(e)) => return Err(format!("ipc-channel accept: {e}").into()),
        Err(_) => {
            let _ = process.kill();
            return Err("the ipc-channel child sent nothing".into());
        }
    };
    join_ok(process)?;
    let rate = rate_since(sent)?;
    check("ipc-channel", &got, expected)?;
    Ok(rate)
}

/// `spawn_result_large`: a child returns a 64 MiB `Vec<u8>` from `spawn(...).join()`,
/// GB/s from the moment the child's function returns (a reading of the monotonic clock,
/// which every process shares) to the result in hand and the child joined: the cost of
/// handing a result back, without the child's start or the building of its data.
/// ipc-channel: the child sends it on an `IpcSender`.
pub fn spawn_result_large(s: &Settings) -> BenchResult<Figures> {
    let expected = bytes();
    let mut limit = WarmCopy::new();
    multiproc_result(&expected)?;
    ipc_result(&expected)?;
    let mut contenders = [
        Contender::new("multiproc", || Ok(vec![multiproc_result(&expected)?])),
        Contender::new("ipc-channel", || Ok(vec![ipc_result(&expected)?])),
        Contender::new("limit", || Ok(vec![limit.once()])),
    ];
    Figures::interleaved(reps(s), &mut contenders)
}

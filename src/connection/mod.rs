//! `Pipe` and `Connection`: message channels between processes (Python's
//! `multiprocessing.connection`).
//!
//! A connection is one end of a Unix stream socket (or, from a [`Listener`] or
//! [`Client`], a TCP one). Messages are framed as CPython frames them, values are
//! encoded with serde, and handles inside values (another `Connection`, for instance)
//! travel as real descriptors: only over a Unix socket, so over TCP `send` refuses a
//! value holding one. An error raised by a value's own `Serialize` or `Deserialize`
//! comes back with its words in [`Error::Encode`] or [`Error::Decode`].
//!
//! Timeouts follow one rule: a timed call that hands something back (a message, a
//! connection) reports running out of time as [`Error::Timeout`]
//! ([`recv_timeout`](Connection::recv_timeout),
//! [`recv_bytes_timeout`](Connection::recv_bytes_timeout),
//! [`accept_timeout`](Listener::accept_timeout), [`ClientBuilder::timeout`]); one that
//! only waits for a state says whether it came ([`poll`](Connection::poll) returns
//! `Ok(false)`, [`wait`] an empty list). A timeout too large for the clock
//! (`Duration::MAX`) means no deadline.

mod auth;
mod listener;
mod wait;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::listener::{
    Address, Client, ClientBuilder, DEFAULT_BACKLOG, DEFAULT_HANDSHAKE_TIMEOUT, Listener,
    ListenerBuilder, MAX_PENDING_HANDSHAKES, ToAddress,
};
pub use self::wait::{Waitable, wait};
use crate::deadline;
use crate::error::{Error, Result};
use crate::sys::fd::{self as sysfd, Received};
use crate::sys::net as sysnet;
use crate::wire::codec;
use crate::wire::frame::{self, ByteSource, DEFAULT_MAX_MESSAGE_SIZE, FrameReader};
use crate::wire::handles::{FdOwned, FdRef};

/// Most handles (descriptors) one message may carry; see [`Connection::send`].
///
/// ```
/// assert_eq!(multiproc::MAX_HANDLES_PER_MESSAGE, 64);
/// ```
pub const MAX_HANDLES_PER_MESSAGE: usize = sysfd::MAX_FDS_PER_MESSAGE;

/// How long a receiver keeps checking for a message before it sleeps in the kernel.
/// A reply that comes within this window costs no wake-up (about 30 µs on a VM).
const SPIN: Duration = Duration::from_micros(30);

/// How long of [`SPIN`] a receiver checks without yielding its CPU: about a round trip
/// through a socket between two CPUs.
const PURE_SPIN: Duration = Duration::from_micros(5);

/// A yield that takes this long ran another task: this CPU is wanted (by the peer, or by
/// other work). A yield with nothing else to run returns in well under a microsecond.
const SLOW_YIELD: Duration = Duration::from_micros(2);

thread_local! {
    /// Whether this thread's last receive that yielded found its CPU wanted by another
    /// task. Polling alone would then keep a peer waiting for this CPU from answering,
    /// so the next receive yields from its first empty check; a receive whose yields
    /// all come back at once clears it.
    static CPU_SHARED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Creates a pair of connected [`Connection`]s, like Python's `Pipe(duplex)`.
///
/// With `duplex` both ends send and receive. Without it the first end only receives
/// and the second only sends, as in Python.
///
/// ```
/// let (a, b) = multiproc::pipe(true)?;
/// a.send(&("hello", 42))?;
/// let got: (String, i32) = b.recv()?;
/// assert_eq!(got, ("hello".to_string(), 42));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let (x, y) = sysfd::socketpair()?;
    if duplex {
        Ok((
            Connection::new(x, true, true),
            Connection::new(y, true, true),
        ))
    } else {
        Ok((
            Connection::new(x, true, false),
            Connection::new(y, false, true),
        ))
    }
}

/// One end of a message channel.
///
/// All methods take `&self`: a connection can be shared between threads (sends are
/// serialised with each other, and so are receives). Dropping it closes it; the peer then
/// receives [`Error::Closed`] once it has read everything sent before.
pub struct Connection {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    limit: AtomicUsize,
    reading: Mutex<ReadState>,
    writing: Mutex<()>,
    /// Set when a receive stopped inside a frame: the stream position is lost.
    broken: AtomicBool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A receive in progress: kept across calls so that a timeout never loses bytes.
#[derive(Debug, Default)]
struct ReadState {
    frame: FrameReader,
    fds: Vec<OwnedFd>,
    /// Why descriptors sent with the frame being read were lost, if they were.
    lost: Option<std::io::Error>,
}

/// Reads from the socket, collecting passed descriptors, honouring a deadline, and
/// spinning briefly before sleeping.
struct SocketSource<'a> {
    fd: BorrowedFd<'a>,
    fds: &'a mut Vec<OwnedFd>,
    lost: &'a mut Option<std::io::Error>,
    deadline: Option<Instant>,
}

impl ByteSource for SocketSource<'_> {
    fn read_some(&mut self, buf: &mut [u8], frame_start: bool) -> Result<usize> {
        let attempt = |this: &mut Self, buf: &mut [u8], nonblocking: bool| -> Result<Received> {
            Ok(if frame_start {
                sysfd::recv_with_fds(this.fd, buf, this.fds, this.lost, nonblocking)?
            } else {
                sysfd::recv_plain(this.fd, buf, nonblocking)?
            })
        };
        // The clock is read only once nothing is waiting; the spin never outlasts the
        // caller's deadline.
        let mut started = None;
        // Poll alone first, unless the last receive found this CPU wanted by another
        // task (see `CPU_SHARED`): then yield from the start.
        let pure = if CPU_SHARED.get() {
            Duration::ZERO
        } else {
            PURE_SPIN
        };
        let mut shared = None;
        loop {
            if let Received::Bytes(n) = attempt(self, buf, true)? {
                if let Some(shared) = shared {
                    CPU_SHARED.set(shared);
                }
                return Ok(n);
            }
            let now = Instant::now();
            let since = *started.get_or_insert(now);
            let spent = now.saturating_duration_since(since);
            if spent < SPIN && self.deadline.is_none_or(|d| now < d) {
                // A peer on another CPU answers within a few microseconds, and a yield
                // per check would delay seeing it; a peer waiting for this CPU answers
                // only once this thread yields.
                if spent >= pure {
                    std::thread::yield_now();
                    // A yield that let another task run comes back late.
                    let slow = now.elapsed() >= SLOW_YIELD;
                    shared = Some(shared.unwrap_or(false) || slow);
                }
                continue;
            }
            if let Some(shared) = shared {
                CPU_SHARED.set(shared);
            }
            match self.deadline {
                None => {
                    if let Received::Bytes(n) = attempt(self, buf, false)? {
                        return Ok(n);
                    }
                }
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if !sysfd::wait_readable(self.fd, Some(left))? {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, readable: bool, writable: bool) -> Connection {
        Connection {
            fd,
            readable,
            writable,
            limit: AtomicUsize::new(DEFAULT_MAX_MESSAGE_SIZE),
            reading: Mutex::new(ReadState::default()),
            writing: Mutex::new(()),
            broken: AtomicBool::new(false),
        }
    }

    /// Wraps a connected stream socket (for example one end of a `UnixStream`).
    pub fn from_socket(fd: OwnedFd) -> Connection {
        Connection::new(fd, true, true)
    }

    /// Whether this end may receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end may send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The largest message this end sends or accepts (default 256 MiB).
    pub fn max_message_size(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the largest message this end sends or accepts. A longer incoming message is
    /// refused with [`Error::MessageTooLarge`] before anything is allocated for it.
    pub fn set_max_message_size(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// A second handle to the same end (a duplicated descriptor).
    pub fn try_clone(&self) -> Result<Connection> {
        let c = Connection::new(sysfd::dup(self.fd.as_fd())?, self.readable, self.writable);
        c.set_max_message_size(self.max_message_size());
        Ok(c)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::state("this end of the pipe is read-only"));
        }
        Ok(())
    }

    fn check_readable(&self) -> Result<()> {
        if !self.readable {
            return Err(Error::state("this end of the pipe is write-only"));
        }
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::Decode(
                "connection lost its framing after an earlier error".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn send_raw(&self, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.check_writable()?;
        let limit = self.max_message_size();
        if body.len() > limit {
            return Err(Error::MessageTooLarge {
                len: body.len() as u64,
                limit,
            });
        }
        if fds.len() > MAX_HANDLES_PER_MESSAGE {
            return Err(Error::InvalidArgument(format!(
                "a message may carry at most {MAX_HANDLES_PER_MESSAGE} handles, not {}",
                fds.len()
            )));
        }
        if !fds.is_empty() && !sysnet::carries_descriptors(self.fd.as_fd())? {
            // Refused before a byte is written, so the stream stays in step.
            return Err(Error::Encode(
                "a handle (a Connection, a Lock, shared memory, ...) cannot be sent over \
                 this connection (TCP, or another socket that is not a Unix one): only a \
                 Unix socket carries descriptors"
                    .into(),
            ));
        }
        let mut h = [0u8; 12];
        let header = frame::encode_header(body.len(), &mut h);
        let _g = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        match sysfd::send_all(self.fd.as_fd(), &[header, body], fds) {
            Ok(()) => Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EPIPE)
                    || e.raw_os_error() == Some(libc::ECONNRESET) =>
            {
                Err(Error::Closed)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Receives one frame; `deadline` bounds the wait. A timeout keeps what was read:
    /// the next receive continues the same frame.
    pub(crate) fn recv_raw(&self, deadline: Option<Instant>) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        self.check_readable()?;
        let mut guard = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let mut src = SocketSource {
            fd: self.fd.as_fd(),
            fds: &mut state.fds,
            lost: &mut state.lost,
            deadline,
        };
        match state.frame.read(&mut src, self.max_message_size()) {
            Ok(body) => {
                let fds = std::mem::take(&mut state.fds);
                match state.lost.take() {
                    // The message is read whole, so the stream keeps its place; without
                    // all its descriptors it is refused alone.
                    Some(why) => Err(Error::Io(why)),
                    None => Ok((body, fds)),
                }
            }
            Err(Error::Timeout) => Err(Error::Timeout),
            Err(Error::Closed) if !state.frame.in_progress() => Err(Error::Closed),
            Err(e) => Err(self.lose_framing(e)),
        }
    }

    fn lose_framing(&self, e: Error) -> Error {
        self.broken.store(true, Ordering::Relaxed);
        match e {
            Error::Io(io) if io.raw_os_error() == Some(libc::ECONNRESET) => Error::Closed,
            e => e,
        }
    }

    /// Sends a value (Python's `send`). Handles inside it travel as descriptors.
    ///
    /// Only a Unix socket carries descriptors: over TCP a value holding a handle (a
    /// `Connection`, a `Lock`, shared memory) is refused with [`Error::Encode`] before
    /// anything is written, and the connection stays usable.
    ///
    /// One message carries at most [`MAX_HANDLES_PER_MESSAGE`] handles (64; the kernel
    /// allows 253 descriptors per message): a value holding more is refused with
    /// [`Error::InvalidArgument`] before anything is written. Send such a value in parts.
    /// (Process arguments have no such limit: they travel in as many messages as needed.)
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let enc = codec::encode(value)?;
        let fds: Vec<BorrowedFd<'_>> = enc.fds.iter().map(|f| f.as_fd()).collect();
        self.send_raw(&enc.bytes, &fds)
    }

    /// Receives a value sent with [`send`](Self::send), waiting as long as it takes.
    ///
    /// [`Error::Closed`] when the peer closed its end (or died) and everything it sent
    /// has been read. A message whose handles this process has no free descriptors for
    /// is consumed and refused alone ([`Error::Io`], `EMFILE`); the next one is read as
    /// usual.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let (body, fds) = self.recv_raw(None)?;
        codec::decode(&body, fds)
    }

    /// Like [`recv`](Self::recv), giving up with [`Error::Timeout`] after `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let (body, fds) = self.recv_raw(deadline::after(timeout))?;
        codec::decode(&body, fds)
    }

    /// Sends raw bytes as one message (Python's `send_bytes`); readable by CPython's
    /// `Connection.recv_bytes` on a socket that speaks the same framing.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.send_raw(bytes, &[])
    }

    /// Receives one message's bytes (Python's `recv_bytes`).
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.recv_raw(None)?.0)
    }

    /// Like [`recv_bytes`](Self::recv_bytes), giving up with [`Error::Timeout`].
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        Ok(self.recv_raw(deadline::after(timeout))?.0)
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`). A message longer than `buf` is still consumed and comes back
    /// whole inside [`Error::BufferTooShort`].
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let (message, _) = self.recv_raw(None)?;
        match buf.get_mut(..message.len()) {
            Some(dst) => {
                dst.copy_from_slice(&message);
                Ok(message.len())
            }
            None => Err(Error::BufferTooShort { message }),
        }
    }

    /// Whether a message (or end of stream) is ready to read: at once with
    /// `Some(Duration::ZERO)` (Python's default), within a timeout, or `None` to wait
    /// as long as it takes.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_readable()?;
        Ok(sysfd::wait_readable(self.fd.as_fd(), timeout)?)
    }

    /// Closes this end (dropping it does the same).
    pub fn close(self) {}
}

/// Sent inside a message, a connection travels as a descriptor: the receiver gets its own
/// handle to the same end, the sender keeps its own.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            FdRef(self.fd.as_fd()),
            self.readable,
            self.writable,
            self.max_message_size() as u64,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Connection, D::Error> {
        let (fd, readable, writable, limit) = <(FdOwned, bool, bool, u64)>::deserialize(d)?;
        let c = Connection::new(fd.0, readable, writable);
        c.set_max_message_size(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(c)
    }
}

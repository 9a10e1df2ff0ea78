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
//! Large values go through the socket without an intermediate copy: a value whose
//! encoding reaches [`LARGE_MESSAGE_THRESHOLD`] bytes is measured, then encoded a second
//! time straight into the socket after the frame's header (long runs of bytes or
//! numbers are sent from the value's own memory), and a receiver reads a long run of
//! bytes that ends the value straight into the `Vec<u8>` it becomes. The sender's and the
//! receiver's copies run at the same time, which made this faster than passing a file.
//! Process arguments and results travel the same way. Raw bytes sent with
//! [`send_bytes_mapped`](Connection::send_bytes_mapped) go in an anonymous file (a
//! `memfd`) sealed against any change, for a receiver that maps them
//! ([`recv_bytes_mapped`](Connection::recv_bytes_mapped): no copy at all).
//!
//! A sender uses files only where both ends are known to be multiproc: the ends made by
//! [`pipe`], the channels of process arguments and results, and connections received
//! inside a message from one of those. [`Connection::from_socket`] and the connections of
//! a [`Listener`] or [`Client`] (Unix or TCP) frame every message as CPython frames it,
//! so a Python peer reads them (unless their builder's `multiproc_peer` declares the
//! peer multiproc). Any Unix-socket connection accepts an out-of-band
//! message; the receiver's [`max_message_size`](Connection::max_message_size) holds for
//! it as for any other, and a file that is not sealed against writing and resizing, or
//! whose size is not the one announced, is refused with [`Error::Decode`] before anything
//! is mapped (the connection stays usable).
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
use crate::sys::memfd_body::{self, MappedBody};
use crate::sys::net as sysnet;
use crate::wire::codec::{self, Measured};
use crate::wire::frame::{self, ByteSource, DEFAULT_MAX_MESSAGE_SIZE, Frame, FrameReader};
use crate::wire::handles::{FdOwned, FdRef};

/// Most handles (descriptors) one message may carry; see [`Connection::send`].
///
/// ```
/// assert_eq!(multiproc::MAX_HANDLES_PER_MESSAGE, 64);
/// ```
pub const MAX_HANDLES_PER_MESSAGE: usize = sysfd::MAX_FDS_PER_MESSAGE;

/// Values whose encoding reaches this many bytes are streamed: measured, then encoded
/// straight into the socket instead of into a buffer first; bytes sent with
/// [`Connection::send_bytes_mapped`] from this size on travel in a sealed `memfd`, on
/// connections with multiproc at both ends (see
/// [large messages](Connection#large-messages)). Below it one encoding into memory costs
/// less than two passes, and a file than its creation and mapping.
///
/// ```
/// assert_eq!(multiproc::LARGE_MESSAGE_THRESHOLD, 256 * 1024);
/// ```
pub const LARGE_MESSAGE_THRESHOLD: usize = 256 << 10;

/// The send buffer a Unix-socket connection asks for before its first large message.
const LARGE_SEND_BUFFER: usize = 4 << 20;

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
///
/// # Large messages
///
/// A value whose encoding reaches [`LARGE_MESSAGE_THRESHOLD`] bytes is encoded twice:
/// once only to measure it, then straight into the socket after the header, with long
/// runs of bytes or numbers sent from the value's own memory; no copy of the encoding is
/// held in memory. Like [`send_bytes`](Self::send_bytes) of as many bytes, such a `send`
/// returns only once the peer has read most of it (have it read in another thread or
/// process). The value's `Serialize` must write the same bytes both times: if it does
/// not, or fails the second time, or the socket fails midway, part of a message is in the
/// stream, so `send` returns [`Error::Encode`] (or the socket's error) and every later
/// send on this connection fails with [`Error::Encode`]. A receiver reads a long run of
/// bytes or numbers that ends a value (a `Vec<u8>`, `Vec<f32>` or `Vec<f64>` of 1 MiB or more,
/// alone or as a struct's last field, a process's returned vector) straight into the
/// vector it becomes. To find such a run, the value's `Deserialize` first runs on the
/// message's first bytes with that vector empty, then again on the whole message; a
/// `Deserialize` with side effects sees both. Process arguments and results travel the
/// same way.
///
/// [`send_bytes_mapped`](Self::send_bytes_mapped) puts large bytes in an anonymous file
/// (a `memfd`), sealed so that no one can change or resize it any more, and sends only
/// the file's descriptor, for a receiver that maps it
/// ([`recv_bytes_mapped`](Self::recv_bytes_mapped), no copy).
///
/// A sender does this only when both ends are known to be multiproc: the ends made by
/// [`pipe`], the channels of process arguments and results, and connections received in
/// a message from one of those. A connection from [`Connection::from_socket`], a
/// [`Listener`] or a [`Client`] (Unix or TCP) frames every message as CPython does, so a
/// Python peer reads it, unless its builder declared the peer multiproc
/// ([`ListenerBuilder::multiproc_peer`], [`ClientBuilder::multiproc_peer`]; Unix sockets
/// only). Every Unix-socket connection accepts a message in a file: its
/// length is held to [`max_message_size`](Self::max_message_size), and a file not sealed
/// against writing and resizing, or not of the announced size, is refused with
/// [`Error::Decode`] before anything is mapped; the connection stays usable.
pub struct Connection {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    /// The peer is multiproc: large bodies may go out of band (see the module docs).
    known_peer: bool,
    limit: AtomicUsize,
    reading: Mutex<ReadState>,
    writing: Mutex<()>,
    /// Set when a receive stopped inside a frame: the stream position is lost.
    broken: AtomicBool,
    /// Set when a send stopped inside a frame (see [`send`](Self::send)).
    send_broken: AtomicBool,
    /// Whether the socket's send buffer was widened for a large message.
    widened: AtomicBool,
}

/// A body being streamed: unless it was sent whole, its connection can no longer send
/// (see [`Connection::send`]), also when a value's `Serialize` panics midway.
struct BodyInFlight<'a> {
    broken: &'a AtomicBool,
    whole: bool,
}

impl Drop for BodyInFlight<'_> {
    fn drop(&mut self) {
        if !self.whole {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("known_peer", &self.known_peer)
            .finish()
    }
}

/// A received message's bytes: in memory, or a read-only mapping of the sealed file it
/// came in.
#[derive(Debug)]
enum Body {
    Owned(Vec<u8>),
    Mapped(MappedBody),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Mapped(m) => m,
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Body::Owned(v) => v,
            Body::Mapped(m) => m.to_vec(),
        }
    }
}

/// A received message: one body, or one read in two parts ([`Frame::Split`]).
enum Got {
    Body(Body),
    Split(Vec<u8>, crate::wire::bulk::Run),
}

/// How a receive wants an out-of-band body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Copied into a `Vec`.
    Owned,
    /// Mapped read-only.
    Mapped,
    /// Copied, for a byte message: no descriptor but the body's file may come with it.
    OwnedBytes,
    /// Mapped, for a byte message.
    MappedBytes,
}

/// One received message's bytes, from
/// [`recv_bytes_mapped`](Connection::recv_bytes_mapped): a large message is the sealed
/// file it came in, mapped read-only (no copy); a small one is an ordinary buffer.
/// Dereferences to `[u8]`; dropping it unmaps the file.
///
/// The bytes never change: the sender sealed the file against writes before sending it.
///
/// ```
/// let (a, b) = multiproc::pipe(true)?;
/// let big = vec![7u8; 4 << 20];
/// a.send_bytes_mapped(&big)?;
/// let msg = b.recv_bytes_mapped()?;
/// assert!(msg.is_mapped());
/// assert_eq!(&msg[..], &big[..]);
/// b.send_bytes_mapped(&msg)?; // sent on as it is: `&msg` is a `&[u8]`
/// assert_eq!(a.recv_bytes()?, big);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct MappedBytes(Body);

impl MappedBytes {
    /// Whether the bytes are a mapping of the file they came in (a large message from a
    /// multiproc peer), rather than a buffer they were read into.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Body::Mapped(_))
    }

    /// The bytes in a `Vec` (a copy when they are mapped).
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_vec()
    }

    /// Decodes the value encoded after the first `skip` bytes; a buffer (not a mapping)
    /// may be kept by the value (see `codec::decode_owned`).
    pub(crate) fn decode_after<T: DeserializeOwned>(self, skip: usize) -> Result<T> {
        match self.0 {
            Body::Owned(v) => codec::decode_owned(v, skip, Vec::new()),
            Body::Mapped(m) => codec::decode(m.get(skip..).unwrap_or_default(), Vec::new()),
        }
    }
}

impl std::ops::Deref for MappedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        self
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
    /// A connection made by this crate on a socketpair whose other end is multiproc too
    /// (a pipe, a child's channels): large bodies go out of band.
    pub(crate) fn new(fd: OwnedFd, readable: bool, writable: bool) -> Connection {
        Connection::with_peer(fd, readable, writable, true)
    }

    fn with_peer(fd: OwnedFd, readable: bool, writable: bool, known_peer: bool) -> Connection {
        Connection {
            fd,
            readable,
            writable,
            known_peer,
            limit: AtomicUsize::new(DEFAULT_MAX_MESSAGE_SIZE),
            reading: Mutex::new(ReadState::default()),
            writing: Mutex::new(()),
            broken: AtomicBool::new(false),
            send_broken: AtomicBool::new(false),
            widened: AtomicBool::new(false),
        }
    }

    /// Wraps a connected stream socket (for example one end of a `UnixStream`).
    ///
    /// The peer may be anything (a Python process, say), so every message is framed as
    /// CPython frames it, large ones included; large messages *from* a multiproc peer
    /// that sends them out of band are still accepted.
    pub fn from_socket(fd: OwnedFd) -> Connection {
        Connection::with_peer(fd, true, true, false)
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
        let c = Connection::with_peer(
            sysfd::dup(self.fd.as_fd())?,
            self.readable,
            self.writable,
            self.known_peer,
        );
        c.set_max_message_size(self.max_message_size());
        Ok(c)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::state("this end of the pipe is read-only"));
        }
        if self.send_broken.load(Ordering::Relaxed) {
            return Err(Error::Encode(
                "connection lost its framing: an earlier value stopped midway through \
                 its message"
                    .into(),
            ));
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

    /// Refuses, before anything is written, a message this end cannot send.
    fn check_send(&self, len: u64, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.check_writable()?;
        let limit = self.max_message_size();
        if len > limit as u64 {
            return Err(Error::MessageTooLarge { len, limit });
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
        Ok(())
    }

    /// Before the first large message, widens the socket's send buffer: 64 MiB went
    /// through a socketpair 25 % faster with 4 MiB of buffer than with the default
    /// 208 KiB, as the two sides wake each other less often. Unix sockets only; the memory
    /// is used only while a message is in flight.
    fn widen_for(&self, len: usize) {
        if len >= LARGE_MESSAGE_THRESHOLD && !self.widened.swap(true, Ordering::Relaxed) {
            sysnet::widen_unix_send_buffer(self.fd.as_fd(), LARGE_SEND_BUFFER);
        }
    }

    /// Where a body of `len` bytes from this end goes out of band.
    fn out_of_band(&self, len: usize) -> bool {
        self.known_peer && len >= LARGE_MESSAGE_THRESHOLD
    }

    /// Sends one message in the stream, whatever its size.
    pub(crate) fn send_raw(&self, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_parts(&[body], fds, false)
    }

    /// Sends one message whose body is the concatenation of `parts` (at most three); a
    /// large one out of band when `may_map` and the peer is known.
    pub(crate) fn send_parts(
        &self,
        parts: &[&[u8]],
        fds: &[BorrowedFd<'_>],
        may_map: bool,
    ) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.check_send(len as u64, fds)?;
        if may_map && self.out_of_band(len) {
            match memfd_body::sealed_copy(parts) {
                Ok((file, len)) => return self.send_sealed(file, len, fds),
                // The kernel would not seal the file yet (its pages still counted as in
                // use): the same message goes through the socket instead.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.widen_for(len);
        let mut h = [0u8; 12];
        let header = frame::encode_header(len, &mut h);
        let mut all = [header, &[], &[], &[]];
        for (slot, p) in all[1..].iter_mut().zip(parts) {
            *slot = p;
        }
        let _g = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        Self::sent(sysfd::send_all(
            self.fd.as_fd(),
            &all[..1 + parts.len().min(3)],
            fds,
        ))
    }

    /// Sends a message whose body is the sealed `file` of `len` bytes: only the header
    /// goes through the socket, with the message's descriptors and then the file's.
    fn send_sealed(&self, file: OwnedFd, len: u64, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let header = frame::encode_out_of_band_header(len);
        let mut all: Vec<BorrowedFd<'_>> = Vec::with_capacity(fds.len() + 1);
        all.extend_from_slice(fds);
        all.push(file.as_fd());
        let _g = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        Self::sent(sysfd::send_all(self.fd.as_fd(), &[&header], &all))
    }

    fn sent(r: std::io::Result<()>) -> Result<()> {
        r.map_err(Self::send_failed)
    }

    /// A failed write: the peer gone is [`Error::Closed`].
    fn send_failed(e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET) => Error::Closed,
            _ => e.into(),
        }
    }

    /// Receives one frame; `deadline` bounds the wait. A timeout keeps what was read:
    /// the next receive continues the same frame.
    pub(crate) fn recv_raw(&self, deadline: Option<Instant>) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        let (body, fds) = self.recv_frame(deadline, Want::Owned)?;
        Ok((body.into_vec(), fds))
    }

    /// Like [`recv_raw`](Self::recv_raw), with a large body mapped rather than copied.
    pub(crate) fn recv_mapped(
        &self,
        deadline: Option<Instant>,
    ) -> Result<(MappedBytes, Vec<OwnedFd>)> {
        let (body, fds) = self.recv_frame(deadline, Want::Mapped)?;
        Ok((MappedBytes(body), fds))
    }

    fn recv_frame(&self, deadline: Option<Instant>, want: Want) -> Result<(Body, Vec<OwnedFd>)> {
        match self.recv_split(deadline, want, None)? {
            (Got::Body(b), fds) => Ok((b, fds)),
            // Split by a receive of a value that gave up (timed out) inside it.
            (Got::Split(head, run), fds) => {
                Ok((Body::Owned([&head[..], run.bytes()].concat()), fds))
            }
        }
    }

    /// Like [`recv_frame`](Self::recv_frame); a large body read into memory may come
    /// in two parts where `split` says (see [`FrameReader::read_split`]).
    fn recv_split(
        &self,
        deadline: Option<Instant>,
        want: Want,
        split: Option<frame::Split<'_>>,
    ) -> Result<(Got, Vec<OwnedFd>)> {
        self.check_readable()?;
        let mut guard = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let mut src = SocketSource {
            fd: self.fd.as_fd(),
            fds: &mut state.fds,
            lost: &mut state.lost,
            deadline,
        };
        let read = state
            .frame
            .read_split(&mut src, self.max_message_size(), split);
        if !matches!(read, Err(Error::Timeout)) && !state.frame.in_progress() {
            // The frame is over (read whole, or refused by its header alone): what came
            // with it is this frame's, whatever happens next.
            let fds = std::mem::take(&mut state.fds);
            let lost = state.lost.take();
            drop(guard);
            if let (Ok(_), Some(why)) = (&read, lost) {
                // Without all its descriptors a message is refused alone; the stream
                // keeps its place.
                return Err(Error::Io(why));
            }
            return match read {
                Ok(Frame::Inline(body)) => Ok((Got::Body(Body::Owned(body)), fds)),
                Ok(Frame::Split(head, run)) => Ok((Got::Split(head, run), fds)),
                Ok(Frame::OutOfBand(len)) => {
                    let (b, fds) = Self::take_out_of_band(len, fds, want)?;
                    Ok((Got::Body(b), fds))
                }
                Err(Error::Closed) => Err(Error::Closed),
                Err(e @ Error::MessageTooLarge { .. }) => Err(e),
                Err(e) => Err(self.lose_framing(e)),
            };
        }
        match read {
            Err(Error::Timeout) => Err(Error::Timeout),
            Err(e) => Err(self.lose_framing(e)),
            // A finished frame leaves the reader idle (handled above).
            Ok(_) => Err(self.lose_framing(Error::Decode("frame reader out of step".into()))),
        }
    }

    /// The body of an out-of-band frame of `len` bytes (already checked against the
    /// limit): the last of `fds` is the sealed file holding it. Checked before anything
    /// is mapped or copied; the file is closed on every path.
    fn take_out_of_band(
        len: u64,
        mut fds: Vec<OwnedFd>,
        want: Want,
    ) -> Result<(Body, Vec<OwnedFd>)> {
        let Some(file) = fds.pop() else {
            return Err(Error::Decode(
                "a large message came without the file holding its body".into(),
            ));
        };
        let refused = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::Decode(e.to_string()),
            _ => Error::Io(e),
        };
        if matches!(want, Want::OwnedBytes | Want::MappedBytes) && !fds.is_empty() {
            return Err(Error::Decode(format!(
                "a byte message came with {} descriptors besides the file of its body",
                fds.len()
            )));
        }
        memfd_body::check_received(file.as_fd(), len).map_err(refused)?;
        let body = match want {
            Want::Owned | Want::OwnedBytes => {
                Body::Owned(memfd_body::read_received(file.as_fd(), len).map_err(refused)?)
            }
            Want::Mapped | Want::MappedBytes => {
                Body::Mapped(MappedBody::map(file.as_fd(), len).map_err(refused)?)
            }
        };
        Ok((body, fds))
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
    ///
    /// A value of [`LARGE_MESSAGE_THRESHOLD`] bytes or more is encoded twice, the second
    /// time straight into the socket, and this call returns once the peer has read most
    /// of it; a `Serialize` that writes other bytes the second time makes it fail with
    /// [`Error::Encode`] and leaves this end unable to send (see
    /// [large messages](Connection#large-messages)).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let limit = self.max_message_size();
        let (measured, owned) = codec::measure(value, LARGE_MESSAGE_THRESHOLD, limit)?;
        let fds: Vec<BorrowedFd<'_>> = owned.iter().map(|f| f.as_fd()).collect();
        let len = match measured {
            Measured::Inline(bytes) => return self.send_raw(&bytes, &fds),
            Measured::Long(len) => len,
        };
        self.check_send(len, &fds)?;
        let len_usize = usize::try_from(len).map_err(|_| Error::MessageTooLarge { len, limit })?;
        self.widen_for(len_usize);
        let mut h = [0u8; 12];
        let header = frame::encode_header(len_usize, &mut h);
        let _g = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // The header (with the descriptors), then the value encoded a second time
        // straight into the socket, under one hold of the write lock.
        Self::sent(sysfd::send_all(self.fd.as_fd(), &[header], &fds))?;
        // From here until the body is whole, part of it may be in the stream: should the
        // encoding fail, or the value's `Serialize` panic, no later message could be framed.
        let mut in_flight = BodyInFlight {
            broken: &self.send_broken,
            whole: false,
        };
        let sent = codec::stream(value, self.fd.as_fd(), len);
        in_flight.whole = sent.is_ok();
        sent.map_err(|e| match e {
            Error::Io(io) => Self::send_failed(io),
            e => e,
        })
    }

    /// Receives a value sent with [`send`](Self::send), waiting as long as it takes.
    ///
    /// [`Error::Closed`] when the peer closed its end (or died) and everything it sent
    /// has been read. A message whose handles this process has no free descriptors for
    /// is consumed and refused alone ([`Error::Io`], `EMFILE`); the next one is read as
    /// usual.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_value(None)
    }

    /// Like [`recv`](Self::recv), giving up with [`Error::Timeout`] after `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_value(deadline::after(timeout))
    }

    /// Receives and decodes a value: from the mapping of a body that came in a file,
    /// or from the buffer it was read into, which a long run of bytes ending the value
    /// takes over (see `codec::decode_owned`).
    pub(crate) fn recv_value<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T> {
        // A large body whose value ends with a long run of bytes is read in two parts,
        // the run straight into the buffer the value's vector keeps.
        let split = |first: &[u8], len: usize| codec::run_start::<T>(first, len);
        match self.recv_split(deadline, Want::Mapped, Some(&split))? {
            (Got::Split(head, run), fds) => codec::decode_split(head, run, fds),
            (Got::Body(Body::Owned(bytes)), fds) => codec::decode_owned(bytes, 0, fds),
            (Got::Body(Body::Mapped(m)), fds) => codec::decode(&m, fds),
        }
    }

    /// Sends raw bytes as one message (Python's `send_bytes`); readable by CPython's
    /// `Connection.recv_bytes` on a socket that speaks the same framing.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.send_raw(bytes, &[])
    }

    /// Sends raw bytes as one message that the receiver can map instead of copying
    /// ([`recv_bytes_mapped`](Self::recv_bytes_mapped)): from
    /// [`LARGE_MESSAGE_THRESHOLD`] bytes up, on a connection with multiproc at both ends
    /// (see [large messages](Connection#large-messages)), the bytes go into a sealed file whose
    /// descriptor is sent. Otherwise, and for a receiver using
    /// [`recv_bytes`](Self::recv_bytes), it is the same message as
    /// [`send_bytes`](Self::send_bytes) sends.
    ///
    /// Use it when the receiver maps: a receiver that copies into a `Vec` gets the
    /// bytes faster through the socket ([`send_bytes`](Self::send_bytes)), where the
    /// copies on both sides run at the same time. Should the kernel refuse to seal the
    /// file (its pages still counted as in use, which a retry outlasts in practice), the
    /// bytes go through the socket instead: the send does not fail for it.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes_mapped(&vec![9u8; 1 << 20])?;
    /// let msg = b.recv_bytes_mapped()?;
    /// assert!(msg.is_mapped());
    /// assert_eq!(msg.len(), 1 << 20);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send_bytes_mapped(&self, bytes: &[u8]) -> Result<()> {
        self.send_parts(&[bytes], &[], true)
    }

    /// Receives one message's bytes (Python's `recv_bytes`).
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.recv_frame(None, Want::OwnedBytes)?.0.into_vec())
    }

    /// Like [`recv_bytes`](Self::recv_bytes), giving up with [`Error::Timeout`].
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        Ok(self
            .recv_frame(deadline::after(timeout), Want::OwnedBytes)?
            .0
            .into_vec())
    }

    /// Receives one message's bytes without copying a large one: a message that came out
    /// of band (see [large messages](Connection#large-messages)) is handed over as the read-only
    /// mapping of its sealed file; a small one as the buffer it was read into.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes_mapped(&vec![1u8; 1 << 20])?;
    /// let msg = b.recv_bytes_mapped()?;
    /// assert_eq!(msg.len(), 1 << 20);
    /// assert!(msg.iter().all(|&x| x == 1));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_mapped(&self) -> Result<MappedBytes> {
        Ok(MappedBytes(self.recv_frame(None, Want::MappedBytes)?.0))
    }

    /// Like [`recv_bytes_mapped`](Self::recv_bytes_mapped), giving up with
    /// [`Error::Timeout`] after `timeout`.
    pub fn recv_bytes_mapped_timeout(&self, timeout: Duration) -> Result<MappedBytes> {
        Ok(MappedBytes(
            self.recv_frame(deadline::after(timeout), Want::MappedBytes)?
                .0,
        ))
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`). A message longer than `buf` is still consumed and comes back
    /// whole inside [`Error::BufferTooShort`].
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let message = self.recv_bytes()?;
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
            self.known_peer,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Connection, D::Error> {
        let (fd, readable, writable, limit, known_peer) =
            <(FdOwned, bool, bool, u64, bool)>::deserialize(d)?;
        let c = Connection::with_peer(fd.0, readable, writable, known_peer);
        c.set_max_message_size(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::bulk::TAKE_OVER_COUNT;

    fn taken() -> usize {
        TAKE_OVER_COUNT.with(|c| c.get())
    }

    fn send_buffer(c: &Connection) -> usize {
        rustix::net::sockopt::socket_send_buffer_size(c.as_fd()).unwrap()
    }

    #[test]
    fn a_first_large_message_widens_the_send_buffer_and_a_small_one_does_not() {
        let wmem_max: Option<usize> = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let (a, b) = pipe(true).unwrap();
        let before = send_buffer(&a);
        a.send_bytes(b"small").unwrap();
        assert_eq!(b.recv_bytes().unwrap(), b"small");
        assert_eq!(
            send_buffer(&a),
            before,
            "a small message leaves the buffer alone"
        );
        let reader = std::thread::spawn(move || b.recv_bytes().unwrap().len());
        a.send_bytes(&vec![7u8; LARGE_MESSAGE_THRESHOLD]).unwrap();
        assert_eq!(reader.join().unwrap(), LARGE_MESSAGE_THRESHOLD);
        if let Some(cap) = wmem_max {
            let want = LARGE_SEND_BUFFER.min(cap);
            assert!(
                send_buffer(&a) >= want,
                "send buffer {} after a large message, {want} asked for",
                send_buffer(&a)
            );
        }
    }

    #[test]
    fn a_large_received_byte_vector_is_read_into_the_buffer_it_keeps() {
        let (a, b) = pipe(true).unwrap();
        let bytes: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i % 251) as u8).collect();
        let outcome: std::result::Result<Vec<u8>, String> = Ok(bytes.clone());
        let sender = {
            let (bytes, outcome) = (bytes.clone(), outcome.clone());
            std::thread::spawn(move || {
                a.send(&bytes).unwrap();
                a.send(&outcome).unwrap();
                a.send(&(7u32, bytes)).unwrap();
                let floats: Vec<f64> = (0..(1 << 18) + 1).map(|i| i as f64 / 3.0).collect();
                a.send(&floats).unwrap();
                a.send(&("tail", floats.iter().map(|&x| x as f32).collect::<Vec<_>>()))
                    .unwrap();
            })
        };
        let before = taken();
        assert!(b.recv::<Vec<u8>>().unwrap() == bytes);
        assert_eq!(taken(), before + 1);
        assert!(b.recv::<std::result::Result<Vec<u8>, String>>().unwrap() == outcome);
        assert_eq!(taken(), before + 2);
        // Decoded as something that does not end with the bytes: copied, and exact.
        let (n, back): (u32, serde_bytes::ByteBuf) = b.recv().unwrap();
        assert!(n == 7 && back.into_vec() == bytes);
        assert_eq!(taken(), before + 2);
        // Numbers are read straight into the vector they become.
        let floats: Vec<f64> = (0..(1 << 18) + 1).map(|i| i as f64 / 3.0).collect();
        let back: Vec<f64> = b.recv().unwrap();
        assert!(
            back.iter()
                .map(|x| x.to_bits())
                .eq(floats.iter().map(|x| x.to_bits()))
        );
        assert_eq!(taken(), before + 3);
        let (s, back): (String, Vec<f32>) = b.recv().unwrap();
        assert!(s == "tail" && back.iter().copied().eq(floats.iter().map(|&x| x as f32)));
        assert_eq!(taken(), before + 4);
        sender.join().unwrap();
    }
}

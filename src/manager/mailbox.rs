//! The local fast path of a call connection: a mailbox in shared memory.
//!
//! A round trip through a Unix socket costs two system calls and two wake-ups on each
//! side, several microseconds; most manager calls do well under one microsecond of
//! work. So a client on the same machine, right after the handshake, gives each call
//! connection a mailbox: an anonymous segment, sealed at its size, whose descriptor
//! travels over the socket (the server refuses one of another size or without the
//! seals). It holds a state word, the sleep flags of both sides, a length and one data
//! area ([`DATA`] bytes): the protocol is strictly request then reply, so one area
//! serves both ways. A request or a reply that does not fit goes through the socket,
//! announced by the state word.
//!
//! A waiting side spins for a while that adapts to how long its waits took (doubling
//! while they end within it, halving when they do not), then sleeps on the state word
//! with its flag raised, in bounded slices: after each one it looks at the socket, which
//! is readable only once the peer has closed it (nothing else is sent there while a
//! side waits), so a dead peer is noticed within a slice.
//!
//! The peer may write anything into the segment at any time. Every read copies out
//! with atomic loads ([`Region::read_at`]) after checking the length against the area
//! once, so the bytes parsed are the ones checked; garbage there fails the request or
//! the reply, never the reader.

use std::cell::Cell;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Duration;

use crate::sync::spin_for;
use crate::sys::fd as sysfd;
use crate::sys::futex;
use crate::sys::shm::{Region, SharedWords};

/// The data area: requests and replies up to this many bytes go through the mailbox.
pub(crate) const DATA: usize = 64 << 10;

/// Where the data area starts: the header words have a cache line of their own.
const HEADER: usize = 64;

/// The size of every mailbox segment.
pub(crate) const SEGMENT: usize = HEADER + DATA;

/// Header words.
const STATE: usize = 0;
const SERVER_SLEEPS: usize = 1;
const CLIENT_SLEEPS: usize = 2;
const LENGTH: usize = 3;

/// States (a new segment holds 0, none of them): a request of `LENGTH` bytes is in the data area.
pub(crate) const REQUEST: u32 = 1;
/// A request comes through the socket.
pub(crate) const REQUEST_ON_SOCKET: u32 = 2;
/// A reply of `LENGTH` bytes is in the data area.
pub(crate) const REPLY: u32 = 3;
/// The reply comes through the socket.
pub(crate) const REPLY_ON_SOCKET: u32 = 4;

/// The spin of a wait adapts between these.
const SPIN_MIN: Duration = Duration::from_micros(2);
const SPIN_MAX: Duration = Duration::from_micros(100);

/// The first sleep slice; each next one doubles, up to the waiting side's cap.
const FIRST_SLICE: Duration = Duration::from_millis(5);

/// Which end of the mailbox this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Posts requests, waits for replies.
    Client,
    /// Waits for requests, posts replies.
    Server,
}

impl Side {
    fn my_flag(self) -> usize {
        match self {
            Side::Client => CLIENT_SLEEPS,
            Side::Server => SERVER_SLEEPS,
        }
    }
    fn peer_flag(self) -> usize {
        match self {
            Side::Client => SERVER_SLEEPS,
            Side::Server => CLIENT_SLEEPS,
        }
    }
    /// The longest sleep between two looks at the socket: a client notices a dead
    /// manager well within a second; an idle server thread wakes a few times a second.
    fn slice_cap(self) -> Duration {
        match self {
            Side::Client => Duration::from_millis(50),
            Side::Server => Duration::from_millis(250),
        }
    }
}

/// One end of a connection's mailbox.
pub(crate) struct Mailbox {
    words: SharedWords<4>,
    side: Side,
    spin: Cell<Duration>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("side", &self.side)
            .field("state", &self.state())
            .finish()
    }
}

impl Mailbox {
    /// A new mailbox, the client's end.
    pub(crate) fn create() -> std::io::Result<Mailbox> {
        Ok(Mailbox::over(
            Arc::new(Region::anonymous(SEGMENT)?),
            Side::Client,
        ))
    }

    /// The server's end, from the descriptor a client sent: refused unless it is a
    /// sealed anonymous segment of exactly [`SEGMENT`] bytes.
    pub(crate) fn attach(fd: OwnedFd) -> std::io::Result<Mailbox> {
        let region = Region::from_fd(fd)?;
        if region.len() != SEGMENT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a mailbox of {} bytes (a mailbox has {SEGMENT})",
                    region.len()
                ),
            ));
        }
        Ok(Mailbox::over(Arc::new(region), Side::Server))
    }

    fn over(region: Arc<Region>, side: Side) -> Mailbox {
        Mailbox {
            // The segment has SEGMENT bytes and the words are at its start.
            words: SharedWords::at(region, 0).expect("the header fits the segment"),
            side,
            spin: Cell::new(SPIN_MIN),
        }
    }

    /// The segment's descriptor, to send to the server.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.words.region().fd()
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        &self.words.get()[i]
    }

    /// The state word as it is now.
    pub(crate) fn state(&self) -> u32 {
        self.word(STATE).load(Ordering::Acquire)
    }

    /// Writes `parts` (at most [`DATA`] bytes in all, checked by the caller with
    /// [`fits`]) into the data area and posts `state`.
    pub(crate) fn post_data(&self, parts: &[&[u8]], state: u32) {
        let region = self.words.region();
        let mut at = HEADER;
        for p in parts {
            region.write_at(at, p);
            at += p.len();
        }
        self.word(LENGTH)
            .store((at - HEADER) as u32, Ordering::Relaxed);
        self.post(state);
    }

    /// Sets the state word (after the data it announces) and wakes the peer if it
    /// sleeps.
    pub(crate) fn post(&self, state: u32) {
        self.word(STATE).store(state, Ordering::Release);
        // Pairs with the fence of a sleeper: either it sees the new state, or this side
        // sees its flag.
        fence(Ordering::SeqCst);
        if self.word(self.side.peer_flag()).load(Ordering::Relaxed) != 0 {
            futex::wake_all(self.word(STATE));
        }
    }

    /// Copies the data area's bytes into `out`: `false` (and `out` untouched) when
    /// the length the peer wrote is past the area or past `limit`.
    pub(crate) fn read_data(&self, out: &mut Vec<u8>, limit: usize) -> bool {
        // Read once: the copy below uses the length that was checked.
        let len = self.word(LENGTH).load(Ordering::Relaxed) as usize;
        if len > DATA || len > limit {
            return false;
        }
        out.clear();
        out.resize(len, 0);
        self.words.region().read_at(HEADER, out);
        true
    }

    /// Waits until the state is one `wanted` accepts, and returns it; `None` when the
    /// socket `sock` turned readable (or failed) first: the peer closed it, or sent a
    /// message there.
    pub(crate) fn wait(&self, sock: BorrowedFd<'_>, wanted: impl Fn(u32) -> bool) -> Option<u32> {
        let state = self.word(STATE);
        let s = state.load(Ordering::Acquire);
        if wanted(s) {
            return Some(s);
        }
        let budget = self.spin.get();
        let mut got = None;
        if spin_for(budget, || {
            let s = state.load(Ordering::Acquire);
            got = Some(s);
            wanted(s)
        }) {
            // Answered within the spin: spin longer next time, up to the cap.
            self.spin.set((budget * 2).min(SPIN_MAX));
            return got;
        }
        self.spin.set((budget / 2).max(SPIN_MIN));
        let flag = self.word(self.side.my_flag());
        let mut slice = FIRST_SLICE;
        loop {
            flag.store(1, Ordering::Relaxed);
            // Pairs with the fence in `post`.
            fence(Ordering::SeqCst);
            let s = state.load(Ordering::Acquire);
            if wanted(s) {
                flag.store(0, Ordering::Relaxed);
                return Some(s);
            }
            futex::wait(state, s, Some(slice));
            flag.store(0, Ordering::Relaxed);
            let s = state.load(Ordering::Acquire);
            if wanted(s) {
                return Some(s);
            }
            if !matches!(sysfd::wait_readable(sock, Some(Duration::ZERO)), Ok(false)) {
                // The peer may have posted just before it closed.
                let s = state.load(Ordering::Acquire);
                return wanted(s).then_some(s);
            }
            slice = (slice * 2).min(self.side.slice_cap());
        }
    }

    /// Writes raw header words, as a misbehaving peer could.
    #[cfg(test)]
    pub(crate) fn scribble(&self, state: u32, len: u32) {
        self.word(LENGTH).store(len, Ordering::Relaxed);
        self.post(state);
    }
}

/// Whether `len` bytes fit in the data area.
pub(crate) fn fits(len: usize) -> bool {
    len <= DATA
}

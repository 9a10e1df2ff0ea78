//! The local fast path of a call connection: a mailbox in shared memory.
//!
//! A round trip through a Unix socket costs two system calls and two wake-ups on each
//! side, several microseconds; most manager calls do well under one microsecond of
//! work. So a client on the same machine, right after the handshake, gives each call
//! connection a mailbox: an anonymous segment, sealed at its size, whose descriptor
//! travels over the socket (the server refuses one of another size or without the
//! seals). It holds a state word, a length and one data area ([`DATA`] bytes): the
//! protocol is strictly request then reply, so one area serves both ways.
//!
//! A side that waits spins on the state word for a while that adapts to how long its
//! waits took, and stops spinning when spinning does not pay (a busy machine, a call
//! that blocks). Then it marks the state word as sleeping (a compare-and-swap, which
//! the other side's post races with: exactly one of them wins) and sleeps in the
//! socket's receive. The other side, finding its peer asleep, sends the message through
//! the socket instead of the mailbox, and the kernel wakes the sleeper as it does for
//! any message (on this machine's virtual CPUs, a socket's wake-up of a sleeping peer
//! costs less than a futex's). So the mailbox carries what is quick, the socket what
//! is slow or long, and a sleeping side learns that its peer died from the socket
//! itself, at once.
//!
//! The peer may write anything into the segment at any time. Every read copies out
//! with atomic loads ([`Region::read_at`]) after checking the length against the area
//! once, so the bytes parsed are the ones checked; garbage there fails the request or
//! the reply, never the reader, and a state word that keeps changing under a side
//! only sends it to the socket.

use std::cell::Cell;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sync::spin_for;
use crate::sys::shm::{Region, SharedWords};

/// The data area: requests and replies up to this many bytes go through the mailbox.
pub(crate) const DATA: usize = 64 << 10;

/// Where the data area starts: the header words have a cache line of their own.
const HEADER: usize = 64;

/// The size of every mailbox segment.
pub(crate) const SEGMENT: usize = HEADER + DATA;

/// Header words.
const STATE: usize = 0;
const LENGTH: usize = 1;

/// States (a new segment holds 0, none of them): a request of `LENGTH` bytes is in the
/// data area.
pub(crate) const REQUEST: u32 = 1;
/// A request comes through the socket.
pub(crate) const REQUEST_ON_SOCKET: u32 = 2;
/// A reply of `LENGTH` bytes is in the data area.
pub(crate) const REPLY: u32 = 3;
/// The reply comes through the socket.
pub(crate) const REPLY_ON_SOCKET: u32 = 4;
/// The server sleeps in the socket's receive: the next request goes there.
pub(crate) const SERVER_SLEEPS: u32 = 5;
/// The client sleeps in the socket's receive: the reply goes there.
pub(crate) const CLIENT_SLEEPS: u32 = 6;
/// A reply is in the data area, not yet seen by the client, and the server sleeps.
pub(crate) const REPLY_SERVER_SLEEPS: u32 = 7;
/// A request is in the data area, not yet seen by the server, and the client sleeps.
pub(crate) const REQUEST_CLIENT_SLEEPS: u32 = 8;
/// A request comes through the socket, not yet seen by the server, and the client
/// sleeps.
pub(crate) const REQUEST_ON_SOCKET_CLIENT_SLEEPS: u32 = 9;
/// The reply comes through the socket, not yet seen by the client, and the server
/// sleeps.
pub(crate) const REPLY_ON_SOCKET_SERVER_SLEEPS: u32 = 10;

/// A request waits in the data area.
pub(crate) fn request_in_area(s: u32) -> bool {
    s == REQUEST || s == REQUEST_CLIENT_SLEEPS
}

/// A request waits, in the data area or on the socket.
pub(crate) fn request_posted(s: u32) -> bool {
    request_in_area(s) || s == REQUEST_ON_SOCKET || s == REQUEST_ON_SOCKET_CLIENT_SLEEPS
}

/// A reply waits in the data area.
pub(crate) fn reply_in_area(s: u32) -> bool {
    s == REPLY || s == REPLY_SERVER_SLEEPS
}

/// A reply waits, in the data area or on the socket.
pub(crate) fn reply_posted(s: u32) -> bool {
    reply_in_area(s) || s == REPLY_ON_SOCKET || s == REPLY_ON_SOCKET_SERVER_SLEEPS
}

/// The spin of a wait adapts between these, from the first; below the least, it stops.
const SPIN_MIN: Duration = Duration::from_micros(5);
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(100);
const SPIN_FIRST: Duration = Duration::from_micros(20);

/// When spinning stopped paying, one wait in this many spins again.
const PROBE_EVERY: u32 = 64;

/// How often a side asleep in the socket's receive also looks at the mailbox: a
/// message the protocol sent to the socket is never left there, so this only bounds
/// what a peer that misbehaves could cost.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// How many times a side tries to change a state word that keeps changing under it
/// (only a misbehaving peer does that) before it takes the socket.
const CAS_TRIES: u32 = 64;

/// Which end of the mailbox this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Posts requests, waits for replies.
    Client,
    /// Waits for requests, posts replies.
    Server,
}

impl Side {
    /// The state that says this side sleeps, replacing `seen`: a message this side
    /// posted and the peer has not seen yet stays announced, in the area or on the
    /// socket. (Were an unseen "on the socket" lost, the peer would take it from the
    /// socket, then find this side's sleep replaced by its own, post its answer to the
    /// area while this side sleeps on the socket, and both would sleep until one
    /// looked at the mailbox again.)
    fn sleeps(self, seen: u32) -> u32 {
        match (self, seen) {
            (Side::Client, REQUEST) => REQUEST_CLIENT_SLEEPS,
            (Side::Client, REQUEST_ON_SOCKET) => REQUEST_ON_SOCKET_CLIENT_SLEEPS,
            (Side::Client, _) => CLIENT_SLEEPS,
            (Side::Server, REPLY) => REPLY_SERVER_SLEEPS,
            (Side::Server, REPLY_ON_SOCKET) => REPLY_ON_SOCKET_SERVER_SLEEPS,
            (Side::Server, _) => SERVER_SLEEPS,
        }
    }
    /// The state that says the peer sleeps, with nothing of its own waiting.
    fn peer_sleeps_plain(self) -> u32 {
        match self {
            Side::Client => SERVER_SLEEPS,
            Side::Server => CLIENT_SLEEPS,
        }
    }
    /// Whether `seen` says the peer sleeps.
    fn peer_sleeps(self, seen: u32) -> bool {
        match self {
            Side::Client => matches!(
                seen,
                SERVER_SLEEPS | REPLY_SERVER_SLEEPS | REPLY_ON_SOCKET_SERVER_SLEEPS
            ),
            Side::Server => matches!(
                seen,
                CLIENT_SLEEPS | REQUEST_CLIENT_SLEEPS | REQUEST_ON_SOCKET_CLIENT_SLEEPS
            ),
        }
    }
}

/// One end of a connection's mailbox.
pub(crate) struct Mailbox {
    words: SharedWords<2>,
    side: Side,
    /// How long the next wait spins before it sleeps.
    spin: Cell<Duration>,
    /// Waits that did not spin, since spinning stopped.
    unspun: Cell<u32>,
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
            spin: Cell::new(SPIN_FIRST),
            unspun: Cell::new(0),
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
    /// [`fits`]) into the data area and posts `state`: `false` if the peer sleeps,
    /// and so the message must go through the socket.
    pub(crate) fn post_data(&self, parts: &[&[u8]], state: u32) -> bool {
        let region = self.words.region();
        let mut at = HEADER;
        for p in parts {
            region.write_at(at, p);
            at += p.len();
        }
        self.word(LENGTH)
            .store((at - HEADER) as u32, Ordering::Relaxed);
        self.post(state)
    }

    /// Sets the state word (after the data it announces, if any) unless the peer
    /// sleeps: `false` then, and the message goes through the socket.
    pub(crate) fn post(&self, state: u32) -> bool {
        let word = self.word(STATE);
        let mut seen = word.load(Ordering::Relaxed);
        for _ in 0..CAS_TRIES {
            // The peer's last message was taken (this side posts only after it): a
            // state that still announces it must not be read again.
            let (to, posted) = if self.side.peer_sleeps(seen) {
                let plain = self.side.peer_sleeps_plain();
                if seen == plain {
                    return false;
                }
                (plain, false)
            } else {
                (state, true)
            };
            match word.compare_exchange(seen, to, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return posted,
                Err(now) => seen = now,
            }
        }
        false
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

    /// Waits until the state is one `wanted` accepts, and returns it; `None` once this
    /// side is marked asleep: the caller then receives from the socket, where the peer
    /// sends what comes next. Without `spin`, gives up at once (a wait known to be
    /// long).
    pub(crate) fn wait(&self, spin: bool, wanted: impl Fn(u32) -> bool) -> Option<u32> {
        let state = self.word(STATE);
        let s = state.load(Ordering::Acquire);
        if wanted(s) {
            return Some(s);
        }
        let budget = if spin { self.budget() } else { Duration::ZERO };
        let mut got = None;
        if !budget.is_zero()
            && spin_for(budget, || {
                let s = state.load(Ordering::Acquire);
                got = Some(s);
                wanted(s)
            })
        {
            // Answered within the spin: spin longer next time, up to the cap.
            self.spin.set((budget * 2).clamp(SPIN_FIRST, SPIN_MAX));
            return got;
        }
        if spin {
            // Spinning in vain takes the CPU the peer needs (on a busy machine, most
            // of all): spin less, and not at all below the least useful spin.
            let less = budget / 2;
            self.spin.set(if less < SPIN_MIN {
                Duration::ZERO
            } else {
                less
            });
        }
        let mut seen = state.load(Ordering::Acquire);
        for _ in 0..CAS_TRIES {
            if wanted(seen) {
                return Some(seen);
            }
            match state.compare_exchange(
                seen,
                self.side.sleeps(seen),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return None,
                Err(now) => seen = now,
            }
        }
        None
    }

    /// How long this wait spins: the current budget, or, when spinning stopped
    /// paying, now and then a first spin again, to find out whether it pays now.
    fn budget(&self) -> Duration {
        let spin = self.spin.get();
        if !spin.is_zero() {
            return spin;
        }
        let n = self.unspun.get().wrapping_add(1);
        self.unspun.set(n);
        if n % PROBE_EVERY == 0 {
            SPIN_FIRST
        } else {
            Duration::ZERO
        }
    }

    /// Writes the length word, as a misbehaving peer could.
    #[cfg(test)]
    pub(crate) fn scribble_length(&self, len: u32) {
        self.word(LENGTH).store(len, Ordering::Relaxed);
    }

    /// Writes the state word, as a misbehaving peer could.
    #[cfg(test)]
    pub(crate) fn scribble_state(&self, state: u32) {
        self.word(STATE).store(state, Ordering::Release);
    }
}

/// Whether `len` bytes fit in the data area.
pub(crate) fn fits(len: usize) -> bool {
    len <= DATA
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_past_the_area_or_the_limit_is_refused_by_the_reader() {
        let client = Mailbox::create().unwrap();
        let fd = client.fd().try_clone_to_owned().unwrap();
        let server = Mailbox::attach(fd).unwrap();
        assert!(client.post_data(&[b"hello"], REQUEST));
        let mut out = vec![1, 2, 3];
        assert!(server.read_data(&mut out, 100));
        assert_eq!(out, b"hello");
        for len in [u32::MAX, DATA as u32 + 1] {
            client.scribble_length(len);
            assert!(!server.read_data(&mut out, usize::MAX), "length {len}");
            assert_eq!(out, b"hello", "left untouched");
        }
        client.scribble_length(50);
        assert!(!server.read_data(&mut out, 49), "past the limit");
    }

    #[test]
    fn a_segment_of_another_size_is_no_mailbox() {
        let other = Region::anonymous(SEGMENT + 4096).unwrap();
        let fd = other.fd().try_clone_to_owned().unwrap();
        assert!(Mailbox::attach(fd).is_err());
    }

    #[test]
    fn a_side_that_sleeps_keeps_its_unseen_message_announced() {
        let client = Mailbox::create().unwrap();
        let fd = client.fd().try_clone_to_owned().unwrap();
        let server = Mailbox::attach(fd).unwrap();
        assert!(client.post_data(&[b"q"], REQUEST));
        // The client gives up waiting before the server looked: the request stays.
        assert_eq!(client.wait(false, reply_posted), None);
        assert_eq!(client.state(), REQUEST_CLIENT_SLEEPS);
        assert_eq!(
            server.wait(false, request_posted),
            Some(REQUEST_CLIENT_SLEEPS)
        );
        // The reply must then go through the socket, and the request is not seen again.
        assert!(!server.post_data(&[b"r"], REPLY));
        assert_eq!(server.state(), CLIENT_SLEEPS);
        assert_eq!(server.wait(false, request_posted), None);
        assert_eq!(server.state(), SERVER_SLEEPS);
        // The client's next request goes through the socket too.
        assert!(!client.post_data(&[b"q2"], REQUEST));
        // A reply the client has not seen when the server sleeps stays announced.
        assert!(server.post_data(&[b"r2"], REPLY));
        assert_eq!(server.wait(false, request_posted), None);
        assert_eq!(client.wait(false, reply_posted), Some(REPLY_SERVER_SLEEPS));
        assert!(!client.post_data(&[b"q3"], REQUEST));
        assert_eq!(client.state(), SERVER_SLEEPS);
    }

    #[test]
    fn a_client_asleep_after_a_request_on_the_socket_gets_its_reply_on_the_socket() {
        let client = Mailbox::create().unwrap();
        let fd = client.fd().try_clone_to_owned().unwrap();
        let server = Mailbox::attach(fd).unwrap();
        // A long request goes through the socket; the client sleeps before the server
        // has looked at the state word.
        assert!(client.post(REQUEST_ON_SOCKET));
        assert_eq!(client.wait(false, reply_posted), None);
        // The server learns that the request is on the socket, and that the client
        // sleeps: its reply must not go to the area, which nobody watches.
        assert_eq!(
            server.wait(false, request_posted),
            Some(REQUEST_ON_SOCKET_CLIENT_SLEEPS)
        );
        assert!(!server.post_data(&[b"r"], REPLY));
        assert_eq!(server.state(), CLIENT_SLEEPS);
    }

    #[test]
    fn a_server_asleep_after_a_reply_on_the_socket_gets_the_next_request_on_the_socket() {
        let client = Mailbox::create().unwrap();
        let fd = client.fd().try_clone_to_owned().unwrap();
        let server = Mailbox::attach(fd).unwrap();
        assert!(client.post_data(&[b"q"], REQUEST));
        assert_eq!(server.wait(false, request_posted), Some(REQUEST));
        // A long reply goes through the socket; the server sleeps before the client has
        // looked at the state word.
        assert!(server.post(REPLY_ON_SOCKET));
        assert_eq!(server.wait(false, request_posted), None);
        assert_eq!(
            client.wait(false, reply_posted),
            Some(REPLY_ON_SOCKET_SERVER_SLEEPS)
        );
        // The next request must go through the socket, where the server sleeps.
        assert!(!client.post_data(&[b"q2"], REQUEST));
        assert_eq!(client.state(), SERVER_SLEEPS);
    }
}

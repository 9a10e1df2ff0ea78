//! Where postcard writes a value on its way out: into memory while it is small; past a
//! size, nowhere (the value is only measured), so that it can then be encoded a second
//! time straight into a socket, after a header giving that length.
//!
//! It lives here, not with the codec, because the codec's bulk path for numbers writes
//! into it directly (see `same_type::reborrow`), which needs it to be [`LifetimeFree`]:
//! it owns everything it holds (the socket is a duplicated descriptor).
//!
//! [`LifetimeFree`]: super::same_type::LifetimeFree

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use postcard::ser_flavors::Flavor;

/// Small pieces of a streamed value are gathered up to this size per `send`.
const GATHER: usize = 256 << 10;

/// A piece at least this long is sent from where it lies (with what is gathered before
/// it, in one `sendmsg`), not copied into the gathering buffer first.
const DIRECT: usize = 32 << 10;

/// Why the output refused bytes (postcard's own error cannot say).
#[derive(Debug)]
pub(crate) enum Stop {
    /// More than the limit: the length reached so far.
    TooLarge(u64),
    /// The socket failed.
    Io(io::Error),
    /// The value's bytes this time are not as many as measured.
    Mismatch {
        /// Measured before.
        expected: u64,
        /// Written now (at least, where it stopped).
        got: u64,
    },
}

/// What a measuring pass found.
#[derive(Debug)]
pub(crate) enum Measured {
    /// Below the size that streams: the whole encoding.
    Inline(Vec<u8>),
    /// At or past that size: only its length.
    Long(u64),
}

#[derive(Debug)]
enum Mode {
    Measure {
        stream_at: usize,
        limit: u64,
        long: bool,
    },
    Stream {
        socket: OwnedFd,
        expected: u64,
    },
}

/// The postcard output. Every byte goes to `bytes` while it has `room` (the one branch
/// on the hot path); past that, the slow path counts, sends or refuses.
#[derive(Debug)]
pub(crate) struct Outflow {
    bytes: Vec<u8>,
    room: usize,
    /// Bytes before those in `bytes`: counted (measuring) or sent (streaming).
    done: u64,
    mode: Mode,
    /// Set when a call was refused.
    pub(crate) stop: Option<Stop>,
}

impl Outflow {
    /// Gathers the encoding in memory until it reaches `stream_at` bytes, and from there
    /// only counts; more than `limit` bytes are refused with [`Stop::TooLarge`].
    pub(crate) fn measure(stream_at: usize, limit: usize) -> Outflow {
        Outflow {
            bytes: Vec::new(),
            room: stream_at.saturating_sub(1).min(limit),
            done: 0,
            mode: Mode::Measure {
                stream_at,
                limit: limit as u64,
                long: false,
            },
            stop: None,
        }
    }

    /// [`measure`](Self::measure), gathering into `buf` (emptied first): memory kept
    /// from an earlier encoding serves again, without growing from nothing.
    pub(crate) fn measure_into(mut buf: Vec<u8>, stream_at: usize, limit: usize) -> Outflow {
        buf.clear();
        Outflow {
            bytes: buf,
            ..Outflow::measure(stream_at, limit)
        }
    }

    /// Sends the encoding into `socket` (a blocking write of a connected stream socket,
    /// duplicated here), refusing with [`Stop::Mismatch`] any byte past `expected`.
    pub(crate) fn stream(socket: BorrowedFd<'_>, expected: u64) -> io::Result<Outflow> {
        Ok(Outflow {
            bytes: Vec::with_capacity(GATHER),
            room: GATHER,
            done: 0,
            mode: Mode::Stream {
                socket: socket.try_clone_to_owned()?,
                expected,
            },
            stop: None,
        })
    }

    fn refuse(&mut self, stop: Stop) -> postcard::Error {
        self.stop = Some(stop);
        postcard::Error::SerializeBufferFull
    }

    #[cold]
    #[inline(never)]
    fn slow_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let len = self.done + (self.bytes.len() + data.len()) as u64;
        match &mut self.mode {
            Mode::Measure {
                stream_at,
                limit,
                long,
            } => {
                if len > *limit {
                    return Err(self.refuse(Stop::TooLarge(len)));
                }
                if !*long && len < *stream_at as u64 {
                    // Only the limit bounded `room`, and it holds: keep gathering.
                    self.bytes.extend_from_slice(data);
                    return Ok(());
                }
                // From here on only the length matters: the buffer is reused for the
                // small pieces (so the hot path stays the same) and emptied when full.
                *long = true;
                self.done = len;
                self.bytes.clear();
                if self.bytes.capacity() < GATHER {
                    self.bytes = Vec::with_capacity(GATHER);
                }
                self.room = GATHER;
                Ok(())
            }
            Mode::Stream { socket, expected } => {
                if len > *expected {
                    let expected = *expected;
                    return Err(self.refuse(Stop::Mismatch { expected, got: len }));
                }
                let sent = if data.len() >= DIRECT {
                    super::fd::send_all(socket.as_fd(), &[&self.bytes, data], &[])
                        .map(|()| self.done = len)
                } else {
                    let r = super::fd::send_all(socket.as_fd(), &[&self.bytes], &[]);
                    r.map(|()| {
                        self.done += self.bytes.len() as u64;
                        self.bytes.clear();
                        self.bytes.extend_from_slice(data);
                    })
                };
                match sent {
                    Ok(()) => {
                        if self.done == len {
                            self.bytes.clear();
                        }
                        Ok(())
                    }
                    Err(e) => Err(self.refuse(Stop::Io(e))),
                }
            }
        }
    }

    /// Ends the pass: what was measured, or (streaming) `Long` of the bytes sent once
    /// all of them are.
    pub(crate) fn finish(&mut self) -> Result<Measured, Stop> {
        let len = self.done + self.bytes.len() as u64;
        match &self.mode {
            Mode::Measure { long: false, .. } => {
                Ok(Measured::Inline(std::mem::take(&mut self.bytes)))
            }
            Mode::Measure { long: true, .. } => Ok(Measured::Long(len)),
            Mode::Stream { socket, expected } => {
                if len != *expected {
                    return Err(Stop::Mismatch {
                        expected: *expected,
                        got: len,
                    });
                }
                super::fd::send_all(socket.as_fd(), &[&self.bytes], &[]).map_err(Stop::Io)?;
                self.done = len;
                self.bytes.clear();
                Ok(Measured::Long(len))
            }
        }
    }
}

impl Flavor for Outflow {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.bytes.len() < self.room {
            self.bytes.push(byte);
            return Ok(());
        }
        self.slow_extend(&[byte])
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= self.room - self.bytes.len() {
            self.bytes.extend_from_slice(data);
            return Ok(());
        }
        self.slow_extend(data)
    }

    /// Nothing: the caller ends the pass with [`Outflow::finish`], which can say why
    /// it failed.
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

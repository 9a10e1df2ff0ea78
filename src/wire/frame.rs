//! Message framing, byte-compatible with CPython's `multiprocessing.connection`:
//! a 4-byte big-endian signed length, or `-1` followed by an 8-byte big-endian length
//! for messages above 2 GiB - 1.
//!
//! One header of our own, which CPython never writes: `-2` followed by an 8-byte
//! big-endian length says that the body is not in the stream at all but in a sealed
//! memfd passed with the header (the last descriptor of that `sendmsg`). Only
//! connections known to have multiproc at both ends send it; see
//! `Connection`'s docs and docs/architecture.md.
//!
//! A length is never trusted: anything above the reader's limit is refused before any
//! allocation, and a large body's buffer takes memory only as its bytes really arrive
//! (see `sys::pages::receive_buffer`).

use crate::error::{Error, Result};
use crate::wire::bulk::{Kind, Run};

/// Default largest message a connection accepts (CPython has no limit; hostile peers
/// make one necessary). Change it per connection with `set_max_message_size`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;

/// Writes the header for a body of `len` bytes; returns the header's bytes.
pub(crate) fn encode_header(len: usize, out: &mut [u8; 12]) -> &[u8] {
    if len <= i32::MAX as usize {
        out[..4].copy_from_slice(&(len as i32).to_be_bytes());
        &out[..4]
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..12].copy_from_slice(&(len as u64).to_be_bytes());
        &out[..12]
    }
}

/// The header value of a frame whose body travels in a sealed memfd.
const OUT_OF_BAND: i32 = -2;

/// Writes the header of a frame whose `len`-byte body travels in a memfd.
pub(crate) fn encode_out_of_band_header(len: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&OUT_OF_BAND.to_be_bytes());
    out[4..].copy_from_slice(&len.to_be_bytes());
    out
}

/// A frame as read from the stream.
#[derive(Debug)]
pub(crate) enum Frame {
    /// The body followed the header in the stream.
    Inline(Vec<u8>),
    /// The body, of this many bytes (at most the reader's limit), is in a memfd that
    /// came with the header.
    OutOfBand(u64),
    /// The body in two parts: its first bytes, then the long run that ends it (where
    /// the caller's [`Split`] said it starts), in memory of its element type.
    Split(Vec<u8>, Run),
}

/// Where a body's final run starts and what it holds, found from its first bytes and
/// its whole length; `None` when it has no such run (or its first bytes do not tell).
pub(crate) type Split<'a> = &'a dyn Fn(&[u8], usize) -> Option<(usize, Kind)>;

/// Bodies from this size on may be split ([`Frame::Split`]).
pub(crate) const SPLIT_FROM: usize = 1 << 20;

/// How many first bytes of a body a [`Split`] is shown.
const SPLIT_PEEK: usize = 4 << 10;

/// Somewhere stream bytes come from: a socket, or a byte slice in tests.
pub(crate) trait ByteSource {
    /// Reads at least one byte into `buf`, or returns 0 at end of stream.
    /// `frame_start` is true when the read begins a new frame.
    fn read_some(&mut self, buf: &mut [u8], frame_start: bool) -> Result<usize>;
}

impl ByteSource for &[u8] {
    fn read_some(&mut self, buf: &mut [u8], _frame_start: bool) -> Result<usize> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

fn truncated() -> Error {
    Error::Decode("truncated message: the stream ended inside a frame".into())
}

/// Reads frames, resumably: a source that gives up with [`Error::Timeout`] leaves the
/// reader where it was, and the next call continues the same frame. Any other error
/// leaves the stream out of step for good.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    header: [u8; 12],
    /// Header bytes read so far.
    have: usize,
    /// The body being filled, once the header is complete.
    body: Option<Vec<u8>>,
    filled: usize,
    len: usize,
    /// While only a body's first bytes are read, for a [`Split`] to look at.
    peeking: bool,
    /// The body's first bytes, once split: `run` holds the rest.
    head: Option<Vec<u8>>,
    run: Option<Run>,
}

impl FrameReader {
    /// Whether a frame has been started and not finished.
    pub(crate) fn in_progress(&self) -> bool {
        self.have > 0
    }

    fn header_len(&self) -> usize {
        if self.have >= 4
            && matches!(
                i32::from_be_bytes([
                    self.header[0],
                    self.header[1],
                    self.header[2],
                    self.header[3],
                ]),
                -1 | OUT_OF_BAND
            )
        {
            12
        } else {
            4
        }
    }

    fn is_out_of_band(&self) -> bool {
        self.have >= 4
            && i32::from_be_bytes([
                self.header[0],
                self.header[1],
                self.header[2],
                self.header[3],
            ]) == OUT_OF_BAND
    }

    /// The body's length, and whether it is out of band.
    fn parse_header(&self, limit: usize) -> Result<(usize, bool)> {
        let short = i32::from_be_bytes([
            self.header[0],
            self.header[1],
            self.header[2],
            self.header[3],
        ]);
        let len: u64 = match short {
            -1 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.header[4..12]);
                let long = u64::from_be_bytes(l);
                if long <= i32::MAX as u64 {
                    return Err(Error::Decode(format!("non-canonical long length {long}")));
                }
                long
            }
            OUT_OF_BAND => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.header[4..12]);
                let len = u64::from_be_bytes(l);
                if len > limit as u64 {
                    return Err(Error::MessageTooLarge { len, limit });
                }
                return Ok((len as usize, true));
            }
            n if n < 0 => return Err(Error::Decode(format!("negative message length {n}"))),
            n => n as u64,
        };
        if len > limit as u64 {
            return Err(Error::MessageTooLarge { len, limit });
        }
        Ok((len as usize, false))
    }

    /// Reads until the current frame is complete and returns it.
    /// End of stream before a frame starts is [`Error::Closed`].
    ///
    /// An out-of-band frame is consumed whole by its header, so an error about it
    /// (its length above `limit`, [`Error::MessageTooLarge`]) leaves the reader ready
    /// for the next frame, as an `Ok` does.
    #[cfg(test)]
    pub(crate) fn read<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        limit: usize,
    ) -> Result<Frame> {
        self.read_split(src, limit, None)
    }

    /// Like [`read`](Self::read); a body of at least [`SPLIT_FROM`] bytes is read in
    /// two buffers where `split` says ([`Frame::Split`]), so its final run lands at the
    /// start of a buffer of its own.
    pub(crate) fn read_split<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        limit: usize,
        split: Option<Split<'_>>,
    ) -> Result<Frame> {
        loop {
            let Some(body) = self.body.as_mut() else {
                let want = self.header_len();
                if self.have < want {
                    let n = src.read_some(&mut self.header[self.have..want], self.have == 0)?;
                    if n == 0 {
                        return Err(if self.have == 0 {
                            Error::Closed
                        } else {
                            truncated()
                        });
                    }
                    self.have += n;
                    continue;
                }
                let (len, out_of_band) = match self.parse_header(limit) {
                    Ok(p) => p,
                    Err(e) => {
                        if self.is_out_of_band() {
                            // Nothing of it is left in the stream.
                            *self = FrameReader::default();
                        }
                        return Err(e);
                    }
                };
                if out_of_band {
                    *self = FrameReader::default();
                    return Ok(Frame::OutOfBand(len as u64));
                }
                self.len = len;
                self.filled = 0;
                if len >= SPLIT_FROM && split.is_some() {
                    self.peeking = true;
                    self.body = Some(vec![0; SPLIT_PEEK]);
                } else {
                    self.body = Some(crate::sys::pages::receive_buffer(len)?);
                }
                continue;
            };
            if self.peeking && self.filled == body.len() {
                self.peeking = false;
                let run = split
                    .and_then(|f| f(body, self.len))
                    .filter(|&(at, _)| at <= self.filled)
                    .and_then(|(at, kind)| Some((at, Run::zeroed(kind, self.len - at)?)));
                let first = std::mem::take(body);
                match run {
                    Some((at, mut run)) => {
                        run.bytes_mut()[..self.filled - at].copy_from_slice(&first[at..]);
                        self.head = Some(first[..at].to_vec());
                        self.run = Some(run);
                        self.len -= at;
                        self.filled -= at;
                    }
                    None => {
                        let mut whole = crate::sys::pages::receive_buffer(self.len)?;
                        whole[..self.filled].copy_from_slice(&first);
                        *body = whole;
                    }
                }
                continue;
            }
            if self.filled == self.len {
                let done = self.body.take().unwrap_or_default();
                let split = self.head.take().zip(self.run.take());
                *self = FrameReader::default();
                return Ok(match split {
                    Some((head, run)) => Frame::Split(head, run),
                    None => Frame::Inline(done),
                });
            }
            let dst = match self.run.as_mut() {
                Some(run) => run.bytes_mut(),
                None => &mut body[..],
            };
            let n = src.read_some(&mut dst[self.filled..], false)?;
            if n == 0 {
                return Err(truncated());
            }
            self.filled += n;
        }
    }
}

/// Reads one whole frame.
#[cfg(test)]
pub(crate) fn read_frame<S: ByteSource + ?Sized>(src: &mut S, limit: usize) -> Result<Vec<u8>> {
    match FrameReader::default().read(src, limit)? {
        Frame::Inline(body) => Ok(body),
        Frame::OutOfBand(len) => Err(Error::Decode(format!("out-of-band frame of {len} bytes"))),
        Frame::Split(head, run) => Ok([&head[..], run.bytes()].concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 12];
        let mut v = encode_header(body.len(), &mut h).to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn round_trip() {
        let bytes = frame(b"hello");
        assert_eq!(&bytes[..4], &[0, 0, 0, 5]);
        let mut src: &[u8] = &bytes;
        assert_eq!(read_frame(&mut src, 100).unwrap(), b"hello");
        assert!(matches!(read_frame(&mut src, 100), Err(Error::Closed)));
    }

    #[test]
    fn a_large_body_is_split_where_asked_and_a_small_one_is_not() {
        let body: Vec<u8> = (0..SPLIT_FROM + 10).map(|i| (i % 249) as u8).collect();
        let bytes = frame(&body);
        let split = |first: &[u8], len: usize| {
            assert!(len == body.len() && first == &body[..first.len()]);
            Some((100, Kind::U8))
        };
        let mut src: &[u8] = &bytes;
        match FrameReader::default().read_split(&mut src, usize::MAX, Some(&split)) {
            Ok(Frame::Split(head, run)) => {
                assert!(head == body[..100] && run.bytes() == &body[100..]);
            }
            other => panic!("{other:?}"),
        }
        // No split: one body, exact.
        let none = |_: &[u8], _: usize| None;
        let mut src: &[u8] = &bytes;
        match FrameReader::default().read_split(&mut src, usize::MAX, Some(&none)) {
            Ok(Frame::Inline(b)) => assert!(b == body),
            other => panic!("{other:?}"),
        }
        let small = frame(b"small");
        let mut src: &[u8] = &small;
        match FrameReader::default().read_split(&mut src, usize::MAX, Some(&split)) {
            Ok(Frame::Inline(b)) => assert_eq!(b, b"small"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_header_matches_cpython() {
        let mut h = [0u8; 12];
        let got = encode_header(1 << 31, &mut h);
        assert_eq!(got, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let bytes = [0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut src: &[u8] = &bytes;
        match read_frame(&mut src, 1024) {
            Err(Error::MessageTooLarge { len, limit }) => {
                assert_eq!(len, 0x7fff_ffff);
                assert_eq!(limit, 1024);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_and_negative() {
        let mut src: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(read_frame(&mut src, 100), Err(Error::Decode(_))));
        let mut src: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut src, 100), Err(Error::Decode(_))));
        let mut src: &[u8] = &[0xff, 0xff, 0xff, 0xfd];
        assert!(matches!(read_frame(&mut src, 100), Err(Error::Decode(_))));
    }

    #[test]
    fn out_of_band_header_is_consumed_whole_even_when_too_large() {
        let mut bytes = encode_out_of_band_header(5000).to_vec();
        bytes.extend_from_slice(&encode_out_of_band_header(50));
        bytes.extend_from_slice(&frame(b"next"));
        let mut src: &[u8] = &bytes;
        let mut r = FrameReader::default();
        assert!(matches!(
            r.read(&mut src, 100),
            Err(Error::MessageTooLarge {
                len: 5000,
                limit: 100
            })
        ));
        assert!(!r.in_progress());
        assert!(matches!(r.read(&mut src, 100), Ok(Frame::OutOfBand(50))));
        assert!(matches!(r.read(&mut src, 100), Ok(Frame::Inline(b)) if b == b"next"));
    }
}

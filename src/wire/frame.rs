//! Message framing, byte-compatible with CPython's `multiprocessing.connection`:
//! a 4-byte big-endian signed length, or `-1` followed by an 8-byte big-endian length
//! for messages above 2 GiB - 1.
//!
//! A length is never trusted: anything above the reader's limit is refused before any
//! allocation, and large bodies grow their buffer only as bytes really arrive.

use crate::error::{Error, Result};

/// Default largest message a connection accepts (CPython has no limit; hostile peers
/// make one necessary). Change it per connection with `set_max_message_size`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;

/// Bodies up to this size are allocated at once; larger ones grow as data arrives.
const EAGER_ALLOCATION: usize = 1 << 20;

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

/// Fills `buf` completely; end of stream is a truncation error.
pub(crate) fn read_exact<S: ByteSource + ?Sized>(src: &mut S, buf: &mut [u8]) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = src.read_some(&mut buf[got..], false)?;
        if n == 0 {
            return Err(truncated());
        }
        got += n;
    }
    Ok(())
}

/// Reads a frame header and returns the body length, checked against `limit`.
/// End of stream before the first byte is [`Error::Closed`].
pub(crate) fn read_header<S: ByteSource + ?Sized>(src: &mut S, limit: usize) -> Result<usize> {
    let mut h = [0u8; 4];
    let n = src.read_some(&mut h, true)?;
    if n == 0 {
        return Err(Error::Closed);
    }
    read_exact(src, &mut h[n..])?;
    let short = i32::from_be_bytes(h);
    let len: u64 = match short {
        -1 => {
            let mut l = [0u8; 8];
            read_exact(src, &mut l)?;
            let long = u64::from_be_bytes(l);
            if long <= i32::MAX as u64 {
                return Err(Error::Decode(format!("non-canonical long length {long}")));
            }
            long
        }
        n if n < 0 => return Err(Error::Decode(format!("negative message length {n}"))),
        n => n as u64,
    };
    if len > limit as u64 {
        return Err(Error::MessageTooLarge { len, limit });
    }
    Ok(len as usize)
}

/// Reads a body of `len` bytes (already checked against the limit).
pub(crate) fn read_body<S: ByteSource + ?Sized>(src: &mut S, len: usize) -> Result<Vec<u8>> {
    if len <= EAGER_ALLOCATION {
        let mut body = vec![0u8; len];
        read_exact(src, &mut body)?;
        return Ok(body);
    }
    let mut body = Vec::with_capacity(EAGER_ALLOCATION);
    while body.len() < len {
        let have = body.len();
        let step = (len - have).min(have.max(EAGER_ALLOCATION));
        body.resize(have + step, 0);
        read_exact(src, &mut body[have..])?;
    }
    Ok(body)
}

/// Reads one whole frame.
#[cfg(test)]
pub(crate) fn read_frame<S: ByteSource + ?Sized>(src: &mut S, limit: usize) -> Result<Vec<u8>> {
    let len = read_header(src, limit)?;
    read_body(src, len)
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
        let mut src: &[u8] = &[0xff, 0xff, 0xff, 0xfe];
        assert!(matches!(read_frame(&mut src, 100), Err(Error::Decode(_))));
    }
}

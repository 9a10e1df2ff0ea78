//! Values to bytes and back, with the handles (descriptors) they carry.
//!
//! The format is postcard: compact, fast, and decoding reads only from the bounded
//! message, so a hostile length inside it cannot make a large allocation. Values meet
//! postcard through [`verbatim`]'s wrappers, so the text of their own errors (and of the
//! crate's, such as a message naming a handle it did not carry) reaches the caller.

use std::os::fd::OwnedFd;

use postcard::ser_flavors::Flavor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::sys::memfd_body::BodyWriter;
use crate::wire::bulk::Source;
use crate::wire::handles;
use crate::wire::verbatim::{self, Encode};

/// A value in wire form: its bytes and the descriptors of the handles inside it.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Encodes `value`; handles inside it contribute duplicated descriptors.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    let (bytes, fds) = handles::collecting(|| postcard::to_allocvec(&Encode(value)));
    let bytes = bytes.map_err(|e| Error::Encode(verbatim::encode_text(e)))?;
    Ok(Encoded { bytes, fds })
}

/// A value's bytes ready to send: in memory, or spilled into a sealed memfd.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Below the spill size: the bytes themselves.
    Inline(Vec<u8>),
    /// The bytes are in this sealed memfd, of this length.
    Sealed(OwnedFd, u64),
}

/// Encodes `value` for sending. Once its bytes reach `spill_at`, they move into a sealed
/// memfd and the rest is written there as it is produced (large byte runs straight from
/// the value's memory): a large value is copied once, not encoded into a buffer and then
/// copied again. More than `limit` bytes stop the encoding with
/// [`Error::MessageTooLarge`].
pub(crate) fn encode_for_sending<T: Serialize + ?Sized>(
    value: &T,
    spill_at: Option<usize>,
    limit: usize,
) -> Result<(Payload, Vec<OwnedFd>)> {
    let mut failure = None;
    let spill_at = spill_at.unwrap_or(usize::MAX);
    let flavor = Spill {
        bytes: Vec::new(),
        room: spill_at.saturating_sub(1).min(limit),
        written: 0,
        spill_at,
        limit,
        file: None,
        failure: &mut failure,
    };
    let (payload, fds) =
        handles::collecting(|| postcard::serialize_with_flavor(&Encode(value), flavor));
    match (payload, failure) {
        (Ok(p), _) => Ok((p, fds)),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(Error::Encode(verbatim::encode_text(e))),
    }
}

/// Bytes gathered in memory, once spilled, before they are written into the file.
const SPILL_CHUNK: usize = 256 << 10;

/// The postcard output of [`encode_for_sending`]. Every byte goes to `bytes` while it
/// has `room` (the one branch on the hot path); past that, the slow path checks the
/// limit, spills, or writes what is gathered into the file.
struct Spill<'a> {
    /// The whole encoding while inline; once spilled, what is not yet in the file.
    bytes: Vec<u8>,
    /// How long `bytes` may grow before the slow path must run.
    room: usize,
    /// Bytes already in the file.
    written: u64,
    spill_at: usize,
    limit: usize,
    file: Option<BodyWriter>,
    /// Why the output refused bytes (postcard's own error cannot say).
    failure: &'a mut Option<Error>,
}

impl Spill<'_> {
    fn fail(&mut self, e: Error) -> postcard::Error {
        *self.failure = Some(e);
        postcard::Error::SerializeBufferFull
    }

    #[cold]
    fn slow_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let len = self.written + (self.bytes.len() + data.len()) as u64;
        if len > self.limit as u64 {
            let limit = self.limit;
            return Err(self.fail(Error::MessageTooLarge { len, limit }));
        }
        if self.file.is_none() && len < self.spill_at as u64 {
            // Only the limit bounded `room`, and it holds: keep gathering.
            self.bytes.extend_from_slice(data);
            return Ok(());
        }
        let file = match self.file.take() {
            Some(f) => Ok(f),
            None => BodyWriter::new(),
        };
        let written = file.and_then(|mut w| {
            w.write(&self.bytes)?;
            w.write(data)?;
            Ok(w)
        });
        match written {
            Ok(w) => {
                self.file = Some(w);
                self.written = len;
                self.bytes.clear();
                self.bytes.reserve(SPILL_CHUNK);
                self.room = SPILL_CHUNK.min(self.limit - len as usize);
                Ok(())
            }
            Err(e) => Err(self.fail(e.into())),
        }
    }
}

impl Flavor for Spill<'_> {
    type Output = Payload;

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

    fn finalize(self) -> postcard::Result<Payload> {
        let Some(mut w) = self.file else {
            return Ok(Payload::Inline(self.bytes));
        };
        match w.write(&self.bytes).and_then(|()| w.seal()) {
            Ok((fd, len)) => Ok(Payload::Sealed(fd, len)),
            Err(e) => {
                *self.failure = Some(e.into());
                Err(postcard::Error::SerializeBufferFull)
            }
        }
    }
}

/// Decodes a `T` from exactly `bytes`; `fds` are the descriptors that came with them.
/// Descriptors the value does not claim are closed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    handles::providing(fds, || {
        // postcard reads through a source the bulk path can also read from, so a long
        // sequence of numbers is copied out as one block.
        let source = Source::new(bytes);
        let value = verbatim::decode_from::<T>(&source).map_err(Error::Decode)?;
        match source.remaining() {
            0 => Ok(value),
            rest => Err(Error::Decode(format!(
                "{rest} trailing bytes after the value"
            ))),
        }
    })
}

/// Encodes a value that holds no handles.
pub(crate) fn encode_plain<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let e = encode(value)?;
    if !e.fds.is_empty() {
        return Err(Error::Encode("this channel cannot carry handles".into()));
    }
    Ok(e.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A value with small fields around one long run of bytes.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Mixed {
        id: u32,
        bytes: Vec<u8>,
        name: String,
    }

    fn mixed(n: usize) -> Mixed {
        Mixed {
            id: 7,
            bytes: (0..n).map(|i| i as u8).collect(),
            name: "tail".into(),
        }
    }

    #[test]
    fn a_value_past_the_spill_size_is_sealed_and_decodes_to_the_same_value() {
        let v = mixed(5000);
        let (payload, fds) = encode_for_sending(&v, Some(1000), usize::MAX).unwrap();
        assert!(fds.is_empty());
        let Payload::Sealed(fd, len) = payload else {
            panic!("not spilled")
        };
        crate::sys::memfd_body::check_received(fd.as_fd(), len).unwrap();
        let bytes = crate::sys::memfd_body::read_received(fd.as_fd(), len).unwrap();
        assert_eq!(bytes, encode(&v).unwrap().bytes);
        assert_eq!(decode::<Mixed>(&bytes, Vec::new()).unwrap(), v);
    }

    #[test]
    fn a_value_below_the_spill_size_stays_inline() {
        let v = mixed(10);
        let (payload, _) = encode_for_sending(&v, Some(1000), usize::MAX).unwrap();
        let Payload::Inline(bytes) = payload else {
            panic!("spilled")
        };
        assert_eq!(bytes, encode(&v).unwrap().bytes);
    }

    #[test]
    fn a_value_past_the_limit_stops_encoding_with_message_too_large() {
        for spill in [None, Some(100)] {
            match encode_for_sending(&mixed(5000), spill, 2000) {
                Err(Error::MessageTooLarge { len, limit: 2000 }) => assert!(len > 2000),
                other => panic!("spill {spill:?}: {other:?}"),
            }
        }
    }
}

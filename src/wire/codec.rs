//! Values to bytes and back, with the handles (descriptors) they carry.
//!
//! The format is postcard: compact, fast, and decoding reads only from the bounded
//! message, so a hostile length inside it cannot make a large allocation. Values meet
//! postcard through [`verbatim`]'s wrappers, so the text of their own errors (and of the
//! crate's, such as a message naming a handle it did not carry) reaches the caller.

use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
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

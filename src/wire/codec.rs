//! Values to bytes and back, with the handles (descriptors) they carry.
//!
//! The format is postcard: compact, fast, and decoding reads only from the bounded
//! message, so a hostile length inside it cannot make a large allocation. Values meet
//! postcard through [`verbatim`]'s wrappers, so the text of their own errors (and of the
//! crate's, such as a message naming a handle it did not carry) reaches the caller.

use std::os::fd::{BorrowedFd, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::sys::outflow::{Outflow, Stop};
use crate::wire::bulk::{self, Kind, Run, Source, TAKE_OVER_FROM};
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

/// A value's bytes ready to send: in memory, or only measured (see [`measure`]).
pub(crate) use crate::sys::outflow::Measured;

fn stopped(stop: Stop, limit: usize) -> Error {
    match stop {
        Stop::TooLarge(len) => Error::MessageTooLarge { len, limit },
        Stop::Io(e) => e.into(),
        Stop::Mismatch { expected, got } => Error::Encode(format!(
            "the value encoded to {got} bytes the second time, not the {expected} it \
             encoded to the first (its Serialize is not deterministic)"
        )),
    }
}

/// Runs `value`'s encoding into `out`; the error says why it stopped.
fn run<T: Serialize + ?Sized>(value: &T, out: Outflow, limit: usize) -> Result<Measured> {
    let mut ser = postcard::Serializer { output: out };
    let r = Encode(value).serialize(&mut ser);
    let out = &mut ser.output;
    match (r, out.stop.take()) {
        (Ok(()), _) => out.finish().map_err(|s| stopped(s, limit)),
        (Err(_), Some(s)) => Err(stopped(s, limit)),
        (Err(e), None) => Err(Error::Encode(verbatim::encode_text(e))),
    }
}

/// Encodes `value` for sending: below `stream_at` bytes, into memory; from there on it
/// is only measured, to be encoded again by [`stream`] after a header giving its length
/// (a large value is never held in memory a second time). More than `limit` bytes stop
/// the encoding with [`Error::MessageTooLarge`]. The descriptors are those to send.
pub(crate) fn measure<T: Serialize + ?Sized>(
    value: &T,
    stream_at: usize,
    limit: usize,
) -> Result<(Measured, Vec<OwnedFd>)> {
    let (m, fds) = handles::collecting(|| run(value, Outflow::measure(stream_at, limit), limit));
    Ok((m?, fds))
}

/// Encodes `value` again, straight into `socket`, which [`measure`] found to take
/// `expected` bytes: small pieces are gathered, long runs of bytes or numbers sent from
/// the value's own memory. The handles' descriptors are duplicated again and dropped
/// (those of the measuring pass are the ones sent). An encoding of another length is
/// [`Error::Encode`], and a failure midway leaves part of the body sent: either way the
/// caller's stream is out of step.
pub(crate) fn stream<T: Serialize + ?Sized>(
    value: &T,
    socket: BorrowedFd<'_>,
    expected: u64,
) -> Result<()> {
    let out = Outflow::stream(socket, expected)?;
    let (r, _again) = handles::collecting(|| handles::repeating(|| run(value, out, usize::MAX)));
    r.map(|_| ())
}

/// Decodes a `T` from exactly `bytes`; `fds` are the descriptors that came with them.
/// Descriptors the value does not claim are closed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    handles::providing(fds, || {
        // postcard reads through a source the bulk path can also read from, so a long
        // sequence of numbers is copied out as one block.
        whole(&Source::new(bytes))
    })
}

/// Like [`decode`], from a buffer the decoded value may keep: a message that ends with a
/// long run of bytes decoded as a `Vec<u8>` (a large `Vec<u8>` alone, or a struct's last
/// field) gives that vector the buffer itself, the run moved to its front, instead of a
/// copy into new memory. `skip` bytes at the front of `bytes` are not the message's.
pub(crate) fn decode_owned<T: DeserializeOwned>(
    bytes: Vec<u8>,
    skip: usize,
    fds: Vec<OwnedFd>,
) -> Result<T> {
    decode_owned_or_back(bytes, skip, fds).0
}

/// [`decode_owned`], and the buffer back when the value did not keep it, for its memory
/// to take the next message.
pub(crate) fn decode_owned_or_back<T: DeserializeOwned>(
    mut bytes: Vec<u8>,
    skip: usize,
    fds: Vec<OwnedFd>,
) -> (Result<T>, Option<Vec<u8>>) {
    let message = bytes.get(skip..).unwrap_or_default();
    // With handles, a first pass would take their descriptors: decode once.
    if !fds.is_empty() || message.len() < TAKE_OVER_FROM {
        let r = decode(message, fds);
        return (r, Some(bytes));
    }
    // First pass: the value, unless it ends with a long run of bytes, which it only
    // finds (the run decodes as an empty vector in it).
    let found = {
        let source = Source::scanning(message, message.len());
        let first = handles::providing(Vec::new(), || whole(&source));
        match (first, source.found()) {
            (Ok(_), Some((start, Kind::U8))) => Ok(skip + start),
            (r, None) => Err(r),
            // Numbers cannot keep a buffer of bytes: decode them as usual; and a value
            // that is not the same with the run in place, for the error.
            (_, Some(_)) => Err(decode(message, Vec::new())),
        }
    };
    let start = match found {
        Ok(start) => start,
        Err(r) => return (r, Some(bytes)),
    };
    // Second pass: from the bytes before the run, the run moved to the buffer's front.
    let before = bytes[skip..start].to_vec();
    let run = bytes.len() - start;
    bytes.copy_within(start.., 0);
    bytes.truncate(run);
    let source = Source::taking(&before, Run::U8(bytes));
    (handles::providing(Vec::new(), || whole(&source)), None)
}

/// Where the long run of bytes that ends a message of `len` bytes starts, when `first`
/// (its first bytes) shows it decodes as a `T` that ends with one (see
/// [`decode_owned`]); the caller can then read the run into a buffer of its own.
pub(crate) fn run_start<T: DeserializeOwned>(first: &[u8], len: usize) -> Option<(usize, Kind)> {
    let source = Source::scanning(first, len);
    let found = handles::providing(Vec::new(), || whole::<T>(&source));
    found.ok().and(source.found())
}

/// Decodes a message read in two parts split where [`run_start`] said: the run, the
/// second part, becomes the value's vector. Should the value not take it there, the
/// parts are joined and decoded as usual.
pub(crate) fn decode_split<T: DeserializeOwned>(
    head: Vec<u8>,
    run: Run,
    fds: Vec<OwnedFd>,
) -> Result<T> {
    if fds.is_empty() {
        let source = Source::taking(&head, run);
        let r = handles::providing(Vec::new(), || whole(&source));
        match (r, source.untaken()) {
            (r, None) => return r,
            (_, Some(run)) => return decode(&[&head[..], run.bytes()].concat(), Vec::new()),
        }
    }
    decode(&[&head[..], run.bytes()].concat(), fds)
}

/// Decodes a message that is a sequence of `T` (postcard's `Vec<T>`; of exactly
/// `expect` elements when given), appending them to `out`, which may already hold
/// others: the values go straight to where the caller keeps them, without a vector of
/// their own. On an error, `out` is as it was.
pub(crate) fn decode_seq_append<T: DeserializeOwned>(
    message: &[u8],
    expect: Option<usize>,
    out: &mut Vec<T>,
) -> Result<()> {
    let before = out.len();
    let source = Source::new(message);
    let r = handles::providing(Vec::new(), || {
        let n = bulk::take_len(&source)
            .ok_or_else(|| Error::Decode("a sequence without a valid length".into()))?;
        if let Some(expect) = expect.filter(|e| *e != n) {
            return Err(Error::Decode(format!(
                "a sequence of {n} values where {expect} were expected"
            )));
        }
        if !bulk::take_seq_into(&source, n, out) {
            verbatim::decode_each_into(&source, n, out).map_err(Error::Decode)?;
        }
        match source.remaining() {
            0 => Ok(()),
            rest => Err(Error::Decode(format!(
                "{rest} trailing bytes after the value"
            ))),
        }
    });
    if r.is_err() {
        out.truncate(before);
    }
    r
}

/// Decodes a `T` from all of `source`.
fn whole<T: DeserializeOwned>(source: &Source<'_>) -> Result<T> {
    let value = verbatim::decode_from::<T>(source).map_err(Error::Decode)?;
    match source.remaining() {
        0 => Ok(value),
        rest => Err(Error::Decode(format!(
            "{rest} trailing bytes after the value"
        ))),
    }
}

/// Why a value holding handles cannot go where only bytes go (a queue's shared memory, a
/// pool's tasks).
fn handles_refused() -> Error {
    Error::Encode(
        "this channel cannot carry handles (connections, locks, queues, shared memory): \
         send those through a Connection or in process arguments"
            .into(),
    )
}

/// Encodes a value that holds no handles into `buf` if it fits there: its length;
/// `Ok(None)` if it does not fit (then [`encode_plain`] it), with nothing allocated.
pub(crate) fn encode_plain_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> Result<Option<usize>> {
    let (r, fds) = handles::collecting(|| postcard::to_slice(&Encode(value), buf).map(|b| b.len()));
    if !fds.is_empty() {
        return Err(handles_refused());
    }
    match r {
        Ok(len) => Ok(Some(len)),
        Err(e) => {
            // The value's serializer sees the slice's error as any other, and hands it
            // back as text. A value's own error with these words is met again when
            // the caller encodes it into memory.
            let text = verbatim::encode_text(e);
            if text == postcard::Error::SerializeBufferFull.to_string() {
                Ok(None)
            } else {
                Err(Error::Encode(text))
            }
        }
    }
}

/// Encodes a value that holds no handles into `buf`, in place of what it held: its
/// memory serves again, so a value about the size of the last one allocates nothing.
pub(crate) fn encode_plain_reusing<T: Serialize + ?Sized>(
    value: &T,
    buf: Vec<u8>,
) -> Result<Vec<u8>> {
    let out = Outflow::measure_into(buf, usize::MAX, usize::MAX);
    let (m, fds) = handles::collecting(|| run(value, out, usize::MAX));
    if !fds.is_empty() {
        return Err(handles_refused());
    }
    match m? {
        Measured::Inline(bytes) => Ok(bytes),
        // Only past `stream_at`, which no length reaches.
        Measured::Long(len) => Err(Error::MessageTooLarge {
            len,
            limit: usize::MAX,
        }),
    }
}

/// Decodes a `T` from the front of `bytes`: the value, and where the bytes after it
/// start (a message whose header is followed by a body of the caller's).
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize)> {
    let source = Source::new(bytes);
    let value = handles::providing(Vec::new(), || {
        verbatim::decode_from::<T>(&source).map_err(Error::Decode)
    })?;
    Ok((value, bytes.len() - source.remaining()))
}

/// Encodes a value that holds no handles.
pub(crate) fn encode_plain<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let e = encode(value)?;
    if !e.fds.is_empty() {
        return Err(handles_refused());
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
    fn a_value_past_the_stream_size_is_measured_and_streams_its_exact_bytes() {
        let v = mixed(5000);
        let (m, fds) = measure(&v, 1000, usize::MAX).unwrap();
        assert!(fds.is_empty());
        let expect = encode(&v).unwrap().bytes;
        let Measured::Long(len) = m else {
            panic!("not measured")
        };
        assert_eq!(len, expect.len() as u64);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        stream(&v, a.as_fd(), len).unwrap();
        drop(a);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &b, &mut got).unwrap();
        assert_eq!(got, expect);
        assert_eq!(decode::<Mixed>(&got, Vec::new()).unwrap(), v);
        // Another length than measured: refused.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        match stream(&v, a.as_fd(), len + 1) {
            Err(Error::Encode(m)) => assert!(m.contains("not deterministic"), "{m}"),
            other => panic!("{other:?}"),
        }
        match stream(&v, a.as_fd(), len - 1) {
            Err(Error::Encode(m)) => assert!(m.contains("not deterministic"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    fn taken_over<T: Serialize + DeserializeOwned>(v: &T, skip: usize) -> (T, usize) {
        let mut bytes = vec![9u8; skip];
        bytes.extend_from_slice(&encode(v).unwrap().bytes);
        let before = crate::wire::bulk::TAKE_OVER_COUNT.with(|c| c.get());
        let back = decode_owned::<T>(bytes, skip, Vec::new()).unwrap();
        let after = crate::wire::bulk::TAKE_OVER_COUNT.with(|c| c.get());
        (back, after - before)
    }

    #[test]
    fn a_long_run_of_bytes_ending_a_message_takes_over_its_buffer_and_nothing_else_does() {
        let n = TAKE_OVER_FROM + 3;
        let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 253) as u8).collect();
        // The vector alone, after a prefix that is not the message's.
        for skip in [0, 4] {
            let (back, taken) = taken_over(&bytes, skip);
            assert!(back == bytes && back.len() == n);
            assert_eq!(taken, 1, "skip {skip}");
        }
        // A struct whose last field is the bytes; an enum variant holding them.
        let pair = (String::from("name"), vec![1.5f64; 1000], bytes.clone());
        assert!(taken_over(&pair, 0) == (pair.clone(), 1));
        let some = Some(bytes.clone());
        assert!(taken_over(&some, 0) == (some.clone(), 1));
        // Bytes not at the end, too short, or a handle in the message: copied.
        let m = Mixed {
            id: 1,
            bytes: bytes.clone(),
            name: "x".into(),
        };
        assert!(taken_over(&m, 0) == (m, 0));
        let short = vec![3u8; TAKE_OVER_FROM - 10];
        assert!(taken_over(&short, 0) == (short.clone(), 0));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let with_fd = Encoded {
            bytes: encode(&bytes).unwrap().bytes,
            fds: vec![OwnedFd::from(a)],
        };
        let before = crate::wire::bulk::TAKE_OVER_COUNT.with(|c| c.get());
        let back: Vec<u8> = decode_owned(with_fd.bytes, 0, with_fd.fds).unwrap();
        assert!(back == bytes);
        assert_eq!(crate::wire::bulk::TAKE_OVER_COUNT.with(|c| c.get()), before);
        // Cut short or with bytes after it: the same errors as a copying decode.
        let full = encode(&bytes).unwrap().bytes;
        for bad in [full[..full.len() - 1].to_vec(), [&full[..], &[0]].concat()] {
            let copied = decode::<Vec<u8>>(&bad, Vec::new()).unwrap_err().to_string();
            let owned = decode_owned::<Vec<u8>>(bad, 0, Vec::new())
                .unwrap_err()
                .to_string();
            assert_eq!(owned, copied);
        }
    }

    #[test]
    fn a_sequence_appends_to_the_values_already_there_and_an_error_leaves_them_alone() {
        // Numbers in bulk, other values one by one.
        let mut out = vec![7u64];
        let more: Vec<u64> = (0..1000).map(|i| i * 977).collect();
        let bytes = encode(&more).unwrap().bytes;
        let before = crate::wire::bulk::BULK_COUNT.with(|c| c.get());
        decode_seq_append(&bytes, Some(1000), &mut out).unwrap();
        assert_eq!(crate::wire::bulk::BULK_COUNT.with(|c| c.get()), before + 1);
        assert_eq!(out[0], 7);
        assert!(out[1..] == more[..]);
        let mut floats = vec![0.5f64];
        decode_seq_append(
            &encode(&vec![1.5f64, -2.0]).unwrap().bytes,
            Some(2),
            &mut floats,
        )
        .unwrap();
        assert_eq!(floats, [0.5, 1.5, -2.0]);
        let mut names = vec!["a".to_string()];
        let b = encode(&vec!["b".to_string(), "c".into()]).unwrap().bytes;
        decode_seq_append(&b, Some(2), &mut names).unwrap();
        assert_eq!(names, ["a", "b", "c"]);
        // Another count than expected, cut short, bytes after it: errors, nothing added.
        for (bad, expect) in [
            (bytes.clone(), 999),
            (bytes[..bytes.len() - 1].to_vec(), 1000),
            ([&bytes[..], &[0]].concat(), 1000),
            (Vec::new(), 0),
        ] {
            let mut out = vec![1u64, 2];
            assert!(matches!(
                decode_seq_append(&bad, Some(expect), &mut out),
                Err(Error::Decode(_))
            ));
            assert_eq!(out, [1, 2]);
        }
        let mut names = vec!["a".to_string()];
        assert!(decode_seq_append::<String>(&b[..b.len() - 1], Some(2), &mut names).is_err());
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn a_value_below_the_stream_size_stays_inline() {
        let v = mixed(10);
        let (m, _) = measure(&v, 1000, usize::MAX).unwrap();
        let Measured::Inline(bytes) = m else {
            panic!("measured")
        };
        assert_eq!(bytes, encode(&v).unwrap().bytes);
    }

    #[test]
    fn a_value_past_the_limit_stops_encoding_with_message_too_large() {
        for at in [usize::MAX, 100] {
            match measure(&mixed(5000), at, 2000) {
                Err(Error::MessageTooLarge { len, limit: 2000 }) => assert!(len > 2000),
                other => panic!("stream at {at}: {other:?}"),
            }
        }
    }
}

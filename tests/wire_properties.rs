//! Property tests: whatever bytes arrive on a socket, a `Connection` returns well-formed
//! messages or errors: no panic, no hang, no message longer than its limit, and every
//! valid frame before the damage comes back exactly.

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use common::LONG;
use multiproc::{Connection, Error, pipe};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Writes `bytes` into a fresh socket, closes the writer (so every read ends), and returns
/// the reading end with the given message limit.
fn fed(bytes: &[u8], limit: usize) -> Connection {
    let (mut raw, ours) = UnixStream::pair().unwrap();
    raw.write_all(bytes).unwrap();
    drop(raw);
    let conn = Connection::from_socket(OwnedFd::from(ours));
    conn.set_max_message_size(limit);
    conn
}

/// CPython's framing: a 4-byte big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// What a reader of `rest` must see next, by the framing rules.
#[derive(Debug)]
enum Expect {
    /// A whole frame with this body.
    Message(Vec<u8>),
    /// End of stream exactly at a frame boundary.
    Closed,
    /// A header announcing more than the limit.
    TooLarge(u64),
    /// A frame that cannot be read: cut short, or a negative length.
    Broken,
    /// A long-form header (-1, then 8 bytes) with a length that fits the short form:
    /// CPython would read it; refusing it is also fine.
    MessageOrBroken(Vec<u8>),
}

/// The model: the next expectation and how many bytes it consumes.
fn expect_next(rest: &[u8], limit: usize) -> (Expect, usize) {
    if rest.is_empty() {
        return (Expect::Closed, 0);
    }
    if rest.len() < 4 {
        return (Expect::Broken, rest.len());
    }
    let short = i32::from_be_bytes(rest[..4].try_into().unwrap());
    let (len, header, lenient) = match short {
        -1 => {
            if rest.len() < 12 {
                return (Expect::Broken, rest.len());
            }
            let long = u64::from_be_bytes(rest[4..12].try_into().unwrap());
            (long, 12, long <= i32::MAX as u64)
        }
        n if n < 0 => return (Expect::Broken, rest.len()),
        n => (n as u64, 4, false),
    };
    if len > limit as u64 {
        if lenient {
            // Either refusal is right for a non-canonical header.
            return (Expect::Broken, rest.len());
        }
        return (Expect::TooLarge(len), rest.len());
    }
    let len = len as usize;
    if rest.len() - header < len {
        return (Expect::Broken, rest.len());
    }
    let body = rest[header..header + len].to_vec();
    if lenient {
        return (Expect::MessageOrBroken(body), header + len);
    }
    (Expect::Message(body), header + len)
}

/// A piece of a stream: a valid frame, or raw garbage.
#[derive(Debug, Clone)]
enum Piece {
    Frame(Vec<u8>),
    Garbage(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..80).prop_map(Piece::Frame),
        1 => vec(any::<u8>(), 0..16).prop_map(Piece::Garbage),
        // Headers that are interesting on their own: negative, long form, huge.
        1 => prop_oneof![
            Just(vec![0xff, 0xff, 0xff, 0xff]),
            Just(vec![0xff, 0xff, 0xff, 0xfe]),
            Just(vec![0x80, 0, 0, 0]),
            Just(vec![0x7f, 0xff, 0xff, 0xff]),
            (any::<u64>()).prop_map(|l| {
                let mut v = vec![0xff, 0xff, 0xff, 0xff];
                v.extend_from_slice(&l.to_be_bytes());
                v
            }),
            (0u64..100).prop_map(|l| {
                let mut v = vec![0xff, 0xff, 0xff, 0xff];
                v.extend_from_slice(&l.to_be_bytes());
                v
            }),
        ]
        .prop_map(Piece::Garbage),
    ]
}

/// A stream of pieces, cut at some point (possibly inside a frame).
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(piece(), 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(pieces, cut, truncate)| {
            let mut bytes = Vec::new();
            for p in pieces {
                match p {
                    Piece::Frame(body) => bytes.extend_from_slice(&frame(&body)),
                    Piece::Garbage(g) => bytes.extend_from_slice(&g),
                }
            }
            if truncate && !bytes.is_empty() {
                let at = cut.index(bytes.len() + 1);
                bytes.truncate(at);
            }
            bytes
        })
}

/// A typed message with a bit of everything the codec handles.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Empty,
    Point(i32, i32),
    Named { name: String, sides: u8 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Message {
    id: u32,
    text: String,
    values: Vec<u16>,
    maybe: Option<i64>,
    shape: Shape,
    flag: bool,
}

fn message() -> impl Strategy<Value = Message> {
    let shape = prop_oneof![
        Just(Shape::Empty),
        (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Shape::Point(x, y)),
        (".{0,12}", any::<u8>()).prop_map(|(name, sides)| Shape::Named { name, sides }),
    ];
    (
        any::<u32>(),
        ".{0,24}",
        vec(any::<u16>(), 0..12),
        proptest::option::of(any::<i64>()),
        shape,
        any::<bool>(),
    )
        .prop_map(|(id, text, values, maybe, shape, flag)| Message {
            id,
            text,
            values,
            maybe,
            shape,
            flag,
        })
}

/// The bytes `send` produces for `value` (read back raw through a pipe).
fn encoding_of<T: Serialize>(value: &T) -> Vec<u8> {
    let (a, b) = pipe(true).unwrap();
    a.send(value).unwrap();
    b.recv_bytes_timeout(LONG).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `recv_bytes` over any byte stream follows the framing rules exactly: every frame
    /// up to the damage, then one error (or end of stream), never a panic or a hang.
    #[test]
    fn recv_bytes_over_any_stream_follows_the_framing(bytes in stream(), limit in 0usize..96) {
        let conn = fed(&bytes, limit);
        let mut at = 0;
        // Every success consumes at least four bytes: the loop is bounded.
        for _ in 0..=bytes.len() / 4 + 1 {
            let (expect, used) = expect_next(&bytes[at..], limit);
            let got = conn.recv_bytes_timeout(LONG);
            match (&expect, got) {
                (Expect::Message(body), Ok(msg)) => {
                    prop_assert!(msg.len() <= limit);
                    prop_assert_eq!(&msg, body);
                    at += used;
                }
                (Expect::MessageOrBroken(body), Ok(msg)) => {
                    prop_assert_eq!(&msg, body);
                    at += used;
                }
                (Expect::MessageOrBroken(_), Err(Error::Decode(_))) => break,
                (Expect::Closed, Err(Error::Closed)) => break,
                (Expect::TooLarge(len), Err(Error::MessageTooLarge { len: l, limit: m })) => {
                    prop_assert_eq!(l, *len);
                    prop_assert_eq!(m, limit);
                    break;
                }
                (Expect::Broken, Err(Error::Decode(_) | Error::MessageTooLarge { .. })) => break,
                (expect, got) => {
                    prop_assert!(false, "at byte {}: expected {:?}, got {:?}", at, expect, got);
                }
            }
        }
    }

    /// `recv_bytes_into` with any buffer: a fitting frame lands in the buffer, a longer
    /// one comes back whole in `BufferTooShort`, and damage is an error.
    #[test]
    fn recv_bytes_into_over_any_stream(bytes in stream(), limit in 0usize..96, size in 0usize..64) {
        let conn = fed(&bytes, limit);
        let mut at = 0;
        let mut buf = vec![0u8; size];
        for _ in 0..=bytes.len() / 4 + 1 {
            let (expect, used) = expect_next(&bytes[at..], limit);
            let got = conn.recv_bytes_into(&mut buf);
            match (&expect, got) {
                (Expect::Message(body) | Expect::MessageOrBroken(body), Ok(n)) => {
                    prop_assert!(body.len() <= size);
                    prop_assert_eq!(&buf[..n], &body[..]);
                    at += used;
                }
                (
                    Expect::Message(body) | Expect::MessageOrBroken(body),
                    Err(Error::BufferTooShort { message }),
                ) => {
                    prop_assert!(body.len() > size);
                    prop_assert_eq!(&message, body);
                    at += used;
                }
                (Expect::MessageOrBroken(_), Err(Error::Decode(_))) => break,
                (Expect::Closed, Err(Error::Closed)) => break,
                (Expect::TooLarge(_), Err(Error::MessageTooLarge { .. })) => break,
                (Expect::Broken, Err(Error::Decode(_) | Error::MessageTooLarge { .. })) => break,
                (expect, got) => {
                    prop_assert!(false, "at byte {}: expected {:?}, got {:?}", at, expect, got);
                }
            }
        }
    }

    /// Typed receives over any stream: values or errors, never a panic or a hang; a
    /// value comes from a frame within the limit (its shortest encoding fits).
    #[test]
    fn typed_recv_over_any_stream_gives_values_or_errors(bytes in stream(), limit in 0usize..96) {
        let conn = fed(&bytes, limit);
        for _ in 0..=bytes.len() / 4 + 1 {
            match conn.recv_timeout::<Message>(LONG) {
                Ok(m) => prop_assert!(encoding_of(&m).len() <= limit, "{:?}", m),
                Err(Error::Closed) => break,
                Err(Error::Decode(_) | Error::MessageTooLarge { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {:?}", e),
            }
        }
    }

    /// Random bodies in well-formed frames decode as typed values or fail with `Decode`.
    #[test]
    fn random_bodies_decode_as_values_or_errors(body in vec(any::<u8>(), 0..128)) {
        let conn = fed(&frame(&body), 1024);
        match conn.recv_timeout::<Message>(LONG) {
            Ok(_) | Err(Error::Decode(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
        // Handles named by a message that carries no descriptors: never a value.
        let conn = fed(&frame(&body), 1024);
        match conn.recv_timeout::<(u8, Connection)>(LONG) {
            Err(Error::Decode(_)) => {}
            other => prop_assert!(false, "expected Decode, got {:?}", other),
        }
        let conn = fed(&frame(&body), 1024);
        match conn.recv_timeout::<Vec<Connection>>(LONG) {
            Ok(v) => prop_assert!(v.is_empty()),
            Err(Error::Decode(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }

    /// Typed values survive a round trip through a pipe.
    #[test]
    fn typed_values_round_trip(m in message()) {
        let (a, b) = pipe(true).unwrap();
        a.send(&m).unwrap();
        prop_assert_eq!(b.recv_timeout::<Message>(LONG).unwrap(), m);
    }

    /// A valid encoding cut short, or followed by extra bytes, inside a well-formed frame,
    /// is a decode error (the encoding is self-delimiting: no prefix is a whole value).
    #[test]
    fn truncated_or_padded_encodings_are_decode_errors(
        m in message(),
        cut in any::<prop::sample::Index>(),
        extra in vec(any::<u8>(), 1..8),
    ) {
        let enc = encoding_of(&m);
        let short = &enc[..cut.index(enc.len())];
        let conn = fed(&frame(short), 1024);
        let r = conn.recv_timeout::<Message>(LONG);
        prop_assert!(matches!(r, Err(Error::Decode(_))), "prefix of {} bytes gave {:?}", short.len(), r);

        let mut long = enc.clone();
        long.extend_from_slice(&extra);
        let conn = fed(&frame(&long), 1024);
        let r = conn.recv_timeout::<Message>(LONG);
        prop_assert!(matches!(r, Err(Error::Decode(_))), "padded encoding gave {:?}", r);
    }

    /// Whole typed frames cut at any byte: the whole ones come back equal, then an error.
    #[test]
    fn truncated_streams_of_typed_frames(
        ms in vec(message(), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for m in &ms {
            bytes.extend_from_slice(&frame(&encoding_of(m)));
            ends.push(bytes.len());
        }
        let at = cut.index(bytes.len() + 1);
        bytes.truncate(at);
        let conn = fed(&bytes, 4096);
        let whole = ends.iter().filter(|&&e| e <= at).count();
        for m in &ms[..whole] {
            prop_assert_eq!(&conn.recv_timeout::<Message>(LONG).unwrap(), m);
        }
        let r = conn.recv_timeout::<Message>(LONG);
        if ends.contains(&at) || at == 0 {
            prop_assert!(matches!(r, Err(Error::Closed)), "gave {:?}", r);
        } else {
            prop_assert!(matches!(r, Err(Error::Decode(_))), "gave {:?}", r);
        }
    }
}

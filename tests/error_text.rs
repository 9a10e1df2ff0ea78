//! The words of an error raised inside a value's own `Serialize` or `Deserialize` (the
//! user's, or the crate's for handles) reach whoever sent, received or joined: at any
//! depth of the value, through a connection and through a child's arguments.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use common::{LONG, METHODS};
use multiproc::{Connection, Error, Event, get_context, pipe};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MY_WORDS: &str = "my words: this value refuses to be decoded";
const MY_ENCODE_WORDS: &str = "my words: this value refuses to be encoded";

/// Encodes as one byte; decoding it always fails with [`MY_WORDS`].
#[derive(Debug)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d)?;
        Err(serde::de::Error::custom(MY_WORDS))
    }
}

/// Encoding it always fails with [`MY_ENCODE_WORDS`].
#[derive(Debug, Deserialize)]
struct WontEncode;

impl Serialize for WontEncode {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(MY_ENCODE_WORDS))
    }
}

/// The refusing value deep inside containers of every kind.
#[derive(Debug, Serialize, Deserialize)]
enum Nested {
    Plain(u32),
    Deep {
        name: String,
        items: Vec<Option<(u8, Refuses)>>,
    },
}

fn decode_error_of<T: for<'de> Deserialize<'de> + std::fmt::Debug>(
    send: impl FnOnce(&Connection),
) -> String {
    let (a, b) = pipe(true).unwrap();
    send(&a);
    match b.recv_timeout::<T>(LONG) {
        Err(Error::Decode(m)) => m,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn a_custom_deserialize_error_reaches_the_caller_of_recv_with_its_words() {
    let m = decode_error_of::<Refuses>(|a| a.send(&Refuses).unwrap());
    assert!(m.contains(MY_WORDS), "{m:?}");
    let m = decode_error_of::<Nested>(|a| {
        let v = Nested::Deep {
            name: "n".into(),
            items: vec![None, Some((3, Refuses))],
        };
        a.send(&v).unwrap();
    });
    assert!(m.contains(MY_WORDS), "nested: {m:?}");
    let m = decode_error_of::<BTreeMap<String, Refuses>>(|a| {
        let mut map = BTreeMap::new();
        map.insert("k".to_string(), Refuses);
        a.send(&map).unwrap();
    });
    assert!(m.contains(MY_WORDS), "map value: {m:?}");
    // The connection still works, and a later, unrelated error says what it is.
    let (a, b) = pipe(true).unwrap();
    a.send(&Refuses).unwrap();
    assert!(b.recv_timeout::<Refuses>(LONG).is_err());
    a.send_bytes(&[]).unwrap();
    match b.recv_timeout::<u64>(LONG) {
        Err(Error::Decode(m)) => assert!(!m.contains(MY_WORDS), "a stale message: {m:?}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    a.send(&Nested::Plain(5)).unwrap();
    assert!(matches!(
        b.recv_timeout::<Nested>(LONG),
        Ok(Nested::Plain(5))
    ));
}

#[test]
fn a_custom_serialize_error_reaches_the_caller_of_send_with_its_words() {
    let (a, b) = pipe(true).unwrap();
    match a.send(&vec![Some(WontEncode)]) {
        Err(Error::Encode(m)) => assert!(m.contains(MY_ENCODE_WORDS), "{m:?}"),
        other => panic!("expected an encode error, got {other:?}"),
    }
    // Nothing was sent.
    a.send(&7u8).unwrap();
    assert_eq!(b.recv_timeout::<u8>(LONG).unwrap(), 7);
}

/// A connection fed `body` as one frame from a raw socket.
fn fed(body: &[u8]) -> Connection {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs
        .write_all(&(body.len() as u32).to_be_bytes())
        .unwrap();
    theirs.write_all(body).unwrap();
    Connection::from_socket(OwnedFd::from(ours))
}

#[test]
fn the_crates_own_decode_messages_reach_the_caller() {
    // A connection's encoding starts with the index of its descriptor; this frame
    // carries none.
    let conn = fed(&[0u8, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x01]);
    match conn.recv_timeout::<Connection>(LONG) {
        Err(Error::Decode(m)) => assert!(m.contains("did not carry"), "{m:?}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // A real descriptor, of the wrong kind for an event.
    let (a, b) = pipe(true).unwrap();
    let (x, _y) = pipe(true).unwrap();
    a.send(&x).unwrap();
    match b.recv_timeout::<Event>(LONG) {
        Err(Error::Decode(m)) => {
            assert!(!m.contains("Serde Deserialization Error"), "{m:?}");
            assert!(m.contains("event"), "{m:?}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

fn never_runs(_: Refuses) -> u32 {
    panic!("the target ran although its argument could not be decoded");
}

#[test]
fn a_custom_deserialize_error_in_a_childs_arguments_reaches_join_with_its_words() {
    for method in METHODS {
        let mut h = get_context(method).spawn(never_runs, Refuses).unwrap();
        match h.join_timeout(LONG) {
            Err(Error::Bootstrap(m)) => assert!(m.contains(MY_WORDS), "{method}: {m:?}"),
            other => {
                let _ = h.process().kill();
                panic!("{method}: expected a bootstrap error, got {other:?}");
            }
        }
    }
}

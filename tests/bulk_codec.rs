//! Byte and number sequences through connections and processes: `Vec<u8>`, `Box<[u8]>`,
//! `Vec<i8>`, `Vec<f32>`, `Vec<f64>`, `bytes::Bytes`, `serde_bytes` fields and `PodVec`
//! round-trip exactly from empty to 64 MiB; their bytes on the wire are postcard's
//! element-wise bytes (so peers with and without the bulk path agree both ways); cut
//! or damaged messages are `Error::Decode`, never a panic, and leave the connection
//! usable. No timing bounds.

use std::collections::HashMap;
use std::fmt::Debug;
use std::thread;

use multiproc::{Connection, Error, PodVec, bytemuck, pipe};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const MIB_64: usize = 64 << 20;

/// Sizes every type is tried at: empty, one element, odd lengths, and 64 MiB of data.
fn sizes(elem: usize) -> [usize; 6] {
    [0, 1, 7, 4099, 65_537, MIB_64 / elem]
}

fn connected() -> (Connection, Connection) {
    let (a, b) = pipe(true).unwrap();
    b.set_max_message_size(MIB_64 * 2);
    (a, b)
}

/// Sends `v` from another thread (a large message does not fit the socket's buffer)
/// and returns what arrives.
fn through<T: Serialize + DeserializeOwned + Sync>(v: &T) -> T {
    let (a, b) = connected();
    thread::scope(|s| {
        let sender = s.spawn(|| a.send(v));
        let got = b.recv::<T>().unwrap();
        sender.join().unwrap().unwrap();
        got
    })
}

/// `v` round-trips.
fn round_trips<T>(v: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Sync,
{
    assert!(through(v) == *v, "the value changed on the way");
}

/// `v`'s bytes on the wire are postcard's for the plain value (what a peer without the
/// bulk path writes and expects), and postcard's bytes decode to `v`.
fn wire_is_postcards<T>(v: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Sync,
{
    let plain = postcard::to_allocvec(v).unwrap();
    let (a, b) = connected();
    thread::scope(|s| {
        let sender = s.spawn(|| a.send(v));
        assert!(
            b.recv_bytes().unwrap() == plain,
            "bytes differ from postcard's"
        );
        sender.join().unwrap().unwrap();
        // And the other way: postcard's bytes decode to the value.
        let sender = s.spawn(|| a.send_bytes(&plain));
        assert!(b.recv::<T>().unwrap() == *v);
        sender.join().unwrap().unwrap();
    });
}

fn bytes_of_len(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ 0x5a).collect()
}

fn floats_of_len(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 * 0.75 - 1e6).collect()
}

#[test]
fn byte_vectors_of_every_size_round_trip_exactly() {
    for n in sizes(1) {
        let v = bytes_of_len(n);
        round_trips(&v);
        round_trips(&v.clone().into_boxed_slice());
        let signed: Vec<i8> = v.iter().map(|&b| b as i8).collect();
        round_trips(&signed);
    }
}

#[test]
fn float_vectors_of_every_size_round_trip_exactly() {
    for n in sizes(8) {
        round_trips(&floats_of_len(n));
    }
    for n in sizes(4) {
        let v: Vec<f32> = (0..n).map(|i| i as f32 / 3.0).collect();
        round_trips(&v);
    }
}

#[test]
fn a_borrowed_byte_slice_is_received_as_a_vector() {
    let v = bytes_of_len(1001);
    let (a, b) = connected();
    a.send(&v[3..]).unwrap();
    assert_eq!(b.recv::<Vec<u8>>().unwrap(), v[3..]);
    a.send(&v[..0]).unwrap();
    assert_eq!(b.recv::<Box<[u8]>>().unwrap().len(), 0);
}

#[test]
fn bulk_vectors_on_the_wire_are_postcards_element_wise_bytes_both_ways() {
    for n in [0, 1, 127, 128, 16_384, 100_003] {
        wire_is_postcards(&bytes_of_len(n));
        wire_is_postcards(&bytes_of_len(n).into_boxed_slice());
        wire_is_postcards(&bytes_of_len(n).iter().map(|&b| b as i8).collect::<Vec<_>>());
        wire_is_postcards(&floats_of_len(n));
        wire_is_postcards(&(0..n).map(|i| i as f32).collect::<Vec<f32>>());
    }
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
enum Payload {
    Nothing,
    Raw(Vec<u8>),
    Samples { rate: u32, data: Vec<f64> },
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Image {
    name: String,
    pixels: Vec<u8>,
    thumbnail: Option<Vec<u8>>,
    parts: Vec<Payload>,
    layers: HashMap<String, Vec<u8>>,
    #[serde(with = "serde_bytes")]
    icc: Vec<u8>,
}

fn image(n: usize) -> Image {
    Image {
        name: "frame".into(),
        pixels: bytes_of_len(n),
        thumbnail: Some(bytes_of_len(n / 3)),
        parts: vec![
            Payload::Nothing,
            Payload::Raw(bytes_of_len(5)),
            Payload::Samples {
                rate: 48_000,
                data: floats_of_len(n / 8),
            },
        ],
        layers: [("alpha".to_string(), bytes_of_len(n / 2))].into(),
        icc: bytes_of_len(99),
    }
}

#[test]
fn byte_vectors_inside_structs_enums_options_and_maps_round_trip_with_postcards_bytes() {
    for n in [0, 1, 1000, 77_777] {
        wire_is_postcards(&image(n));
    }
    round_trips(&image(MIB_64 / 4));
}

#[test]
fn a_serde_bytes_field_has_the_same_bytes_as_a_plain_vec_field() {
    #[derive(Serialize)]
    struct Plain {
        data: Vec<u8>,
    }
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Tagged {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }
    let data = bytes_of_len(300);
    let (a, b) = connected();
    a.send(&Plain { data: data.clone() }).unwrap();
    let plain = b.recv_bytes().unwrap();
    a.send(&Tagged { data: data.clone() }).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), plain);
    a.send_bytes(&plain).unwrap();
    assert_eq!(b.recv::<Tagged>().unwrap(), Tagged { data });
}

#[test]
fn bytes_bytes_round_trips_through_a_connection() {
    for n in [0, 1, 4099, MIB_64] {
        let v = bytes::Bytes::from(bytes_of_len(n));
        round_trips(&v);
    }
    wire_is_postcards(&bytes::Bytes::from_static(b"postcard"));
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[bytemuck(crate = "multiproc::bytemuck")]
#[repr(C)]
struct Particle {
    pos: [f32; 3],
    id: u32,
}

#[test]
fn pod_vectors_of_every_size_round_trip_exactly() {
    for n in sizes(4) {
        round_trips(&PodVec::from((0..n as u32).collect::<Vec<_>>()));
    }
    for n in sizes(8) {
        round_trips(&PodVec::from(
            (0..n as u64).map(|i| i << 20).collect::<Vec<_>>(),
        ));
    }
    for n in sizes(16) {
        let v: PodVec<Particle> = (0..n as u32)
            .map(|id| Particle {
                pos: [id as f32, 0.5, -1.0],
                id,
            })
            .collect();
        round_trips(&v);
    }
}

#[test]
fn a_pod_vector_of_a_partial_element_is_a_decode_error_and_the_connection_goes_on() {
    let (a, b) = connected();
    // postcard bytes: 6 bytes, then the 6 bytes; u32 elements need a multiple of 4.
    a.send_bytes(&[6, 1, 2, 3, 4, 5, 6]).unwrap();
    match b.recv::<PodVec<u32>>() {
        Err(Error::Decode(m)) => assert!(m.contains("not a whole number"), "{m}"),
        other => panic!("{other:?}"),
    }
    a.send(&PodVec::from(vec![9u32])).unwrap();
    assert_eq!(*b.recv::<PodVec<u32>>().unwrap(), [9]);
}

/// Every cut of a message, and a length claiming more than the message holds, is a
/// decode error; the next message still arrives.
fn cuts_are_decode_errors<T: Serialize + DeserializeOwned + Debug>(v: &T) {
    let full = postcard::to_allocvec(v).unwrap();
    let (a, b) = connected();
    for cut in 0..full.len() {
        a.send_bytes(&full[..cut]).unwrap();
        match b.recv::<T>() {
            Err(Error::Decode(_)) => {}
            other => panic!("cut at {cut} of {}: {other:?}", full.len()),
        }
    }
    // The length says 2^40 elements; a few bytes follow.
    a.send_bytes(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    assert!(matches!(b.recv::<T>(), Err(Error::Decode(_))));
    a.send_bytes(&full).unwrap();
    b.recv::<T>().unwrap();
}

#[test]
fn cut_or_overlong_bulk_messages_are_decode_errors_and_the_connection_goes_on() {
    cuts_are_decode_errors(&bytes_of_len(300));
    cuts_are_decode_errors(
        &bytes_of_len(300)
            .iter()
            .map(|&b| b as i8)
            .collect::<Vec<_>>(),
    );
    cuts_are_decode_errors(&floats_of_len(40));
    cuts_are_decode_errors(&vec![1.5f32; 40]);
    cuts_are_decode_errors(&PodVec::from(vec![7u64; 40]));
    cuts_are_decode_errors(&image(64));
}

#[test]
fn a_child_takes_and_returns_large_byte_and_float_vectors() {
    fn reverse((bytes, floats): (Vec<u8>, Vec<f64>)) -> (Vec<f64>, Vec<u8>) {
        (
            floats.into_iter().rev().collect(),
            bytes.into_iter().rev().collect(),
        )
    }
    let bytes = bytes_of_len(3 << 20);
    let floats = floats_of_len(1 << 19);
    let h = multiproc::spawn(reverse, (bytes.clone(), floats.clone())).unwrap();
    let (f, b) = h.join().unwrap();
    assert!(f.iter().rev().eq(floats.iter()));
    assert!(b.iter().rev().eq(bytes.iter()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_byte_vectors_round_trip_with_postcards_bytes(v in proptest::collection::vec(any::<u8>(), 0..5000)) {
        wire_is_postcards(&v);
    }

    #[test]
    fn random_float_bit_patterns_round_trip_bit_for_bit(bits in proptest::collection::vec(any::<u64>(), 0..2000)) {
        // Any bit pattern, NaN payloads and signalling NaNs included: compared as bits.
        let v: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
        let plain = postcard::to_allocvec(&v).unwrap();
        let (a, b) = connected();
        a.send(&v).unwrap();
        prop_assert_eq!(b.recv_bytes().unwrap(), plain.clone());
        a.send_bytes(&plain).unwrap();
        let back: Vec<u64> = b.recv::<Vec<f64>>().unwrap().iter().map(|x| x.to_bits()).collect();
        prop_assert_eq!(back, bits);
    }

    #[test]
    fn random_damage_to_a_bulk_message_never_panics(
        v in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut body = postcard::to_allocvec(&image(v.len())).unwrap();
        for (at, x) in flips {
            let i = at.index(body.len());
            body[i] ^= x | 1;
        }
        let (a, b) = connected();
        a.send_bytes(&body).unwrap();
        match b.recv::<Image>() {
            Ok(_) | Err(Error::Decode(_)) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
        a.send(&v).unwrap();
        prop_assert_eq!(b.recv::<Vec<u8>>().unwrap(), v);
    }
}

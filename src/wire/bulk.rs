//! Sequences of bytes and numbers as one block.
//!
//! serde hands a `Vec<u8>` to a format one element at a time, and so decodes it: at a
//! quarter of a gigabyte a second. postcard's bytes for a sequence of `u8` (its length as
//! a varint, then one byte each) are exactly its bytes for a byte string, and a sequence
//! of `f32`/`f64` is its length and then each value's little-endian bytes. So the codec
//! takes these sequences as one block without changing a byte on the wire: a peer built
//! without this code reads and writes the same messages.
//!
//! - Encoding: [`encode_seq`] recognises the `&Vec<E>`/`&[E]` serde passes to
//!   `collect_seq` for `E` in `u8`, `i8`, `f32`, `f64`, and the wider integers, whose
//!   varints it writes into one block (so also `Box<[E]>`, `&[E]`,
//!   `Cow<[E]>`, `Arc<[E]>`, slices of arrays), at any depth in a value. Bytes go out
//!   with `serialize_bytes`; floats, on a little-endian host writing into postcard's
//!   `Vec` output or the codec's output for values being sent (`sys::outflow`), as the
//!   slice's own bytes after the length; elsewhere one by one, without the
//!   error-keeping wrappers in between.
//! - A long run of bytes ending a message, decoded as a `Vec<u8>`, can keep the buffer
//!   it was received into ([`Source::scanning`], [`Source::taking`]).
//! - Decoding: [`Kind::of_vec_visitor`] recognises serde's own visitor for `Vec<E>`
//!   (found once by asking serde, so a hand-written visitor that happens to return a
//!   `Vec<u8>` from some other layout is left alone). Bytes come in through
//!   `deserialize_byte_buf`; floats are copied straight from the message through the
//!   [`Source`] that the codec's postcard reader shares with this module.
//! - Other plain-old-data vectors opt in with [`PodVec`].
//!
//! Nothing here trusts a length: a block is taken only when the message holds all of
//! it, else decoding goes on element by element and ends with postcard's own error
//! where the bytes run out.

use std::any::TypeId;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use bytemuck::Pod;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::sys::pages;
use crate::sys::same_type as sys;

// ---- the message being decoded ----

/// A message being decoded: postcard reads it through a [`Cursor`], and the bulk path
/// takes blocks of numbers from it directly. Both move the one position.
///
/// A message that ends with a long run of bytes decoded as a `Vec<u8>` can give the
/// buffer it came in to that vector instead of a copy (see `codec::decode_owned`): a
/// first pass only finds the run ([`Source::scanning`]), a second one, from the bytes
/// before the run, takes the run already moved to the front of the buffer
/// ([`Source::taking`]).
pub(crate) struct Source<'s> {
    data: &'s [u8],
    pos: Cell<usize>,
    tail: Tail,
}

/// What a [`Source`] does with a long run of bytes at the end of its message.
enum Tail {
    /// Decodes it as any other.
    Copy,
    /// Notes where it starts and what it holds (the run decodes as an empty vector
    /// meanwhile), in a message of this length, of which `data` may be only the first
    /// bytes.
    Find(Cell<Option<(usize, Kind)>>, usize),
    /// Hands this vector over: the run, which follows `data`.
    Take(Cell<Option<Run>>, usize),
}

/// The long run of bytes or numbers that ends a message, in memory of its own element
/// type, so that it becomes the decoded vector as it is.
#[derive(Debug)]
pub(crate) enum Run {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Run {
    /// A zeroed run of `kind` filling `bytes` bytes (memory taken only where written,
    /// huge pages asked for); `None` for a kind without runs, a partial element, or more
    /// memory than the allocator gives.
    pub(crate) fn zeroed(kind: Kind, bytes: usize) -> Option<Run> {
        fn numbers<E: Elem>(bytes: usize) -> Option<Vec<E>> {
            if bytes % size_of::<E>() != 0 {
                return None;
            }
            let mut v: Vec<E> =
                bytemuck::allocation::try_zeroed_vec(bytes / size_of::<E>()).ok()?;
            pages::prefer_huge_pages_if_large(&mut v);
            Some(v)
        }
        Some(match kind {
            Kind::U8 => Run::U8(pages::receive_buffer(bytes).ok()?),
            Kind::F32 => Run::F32(numbers(bytes)?),
            Kind::F64 => Run::F64(numbers(bytes)?),
            Kind::I8 | Kind::U64 => return None,
        })
    }

    fn empty(kind: Kind) -> Run {
        match kind {
            Kind::F32 => Run::F32(Vec::new()),
            Kind::F64 => Run::F64(Vec::new()),
            Kind::U8 | Kind::I8 | Kind::U64 => Run::U8(Vec::new()),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Run::U8(_) => Kind::U8,
            Run::F32(_) => Kind::F32,
            Run::F64(_) => Kind::F64,
        }
    }

    /// The run's memory as bytes (little-endian numbers once filled from a message).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Run::U8(v) => v,
            Run::F32(v) => bytemuck::cast_slice(v),
            Run::F64(v) => bytemuck::cast_slice(v),
        }
    }

    /// As [`bytes`](Self::bytes), to fill.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Run::U8(v) => v,
            Run::F32(v) => bytemuck::cast_slice_mut(v),
            Run::F64(v) => bytemuck::cast_slice_mut(v),
        }
    }

    /// The decoded vector, as a `T` (the vector [`Kind::of_vec_visitor`] found).
    fn into_t<E: de::Error, T>(self) -> Result<T, E> {
        fn host<X: Elem>(mut v: Vec<X>) -> Vec<X> {
            if cfg!(target_endian = "big") {
                v.iter_mut().for_each(|x| *x = x.le_to_host());
            }
            v
        }
        match self {
            Run::U8(v) => as_t(v),
            Run::F32(v) => as_t(host(v)),
            Run::F64(v) => as_t(host(v)),
        }
    }
}

/// A run of bytes from this size on, ending a message, takes over the message's buffer.
pub(crate) const TAKE_OVER_FROM: usize = 1 << 20;

impl<'s> Source<'s> {
    pub(crate) fn new(data: &'s [u8]) -> Self {
        Source {
            data,
            pos: Cell::new(0),
            tail: Tail::Copy,
        }
    }

    /// Like [`new`](Self::new), noting where a long run of bytes ending the message
    /// starts, if it has one ([`found`](Self::found)). The message is `whole` bytes
    /// long, `data` its first ones: decoding succeeds only if the run starts within
    /// `data`.
    pub(crate) fn scanning(data: &'s [u8], whole: usize) -> Self {
        Source {
            data,
            pos: Cell::new(0),
            tail: Tail::Find(Cell::new(None), whole),
        }
    }

    /// Where the run found by a scanning source starts, and what it holds.
    pub(crate) fn found(&self) -> Option<(usize, Kind)> {
        match &self.tail {
            Tail::Find(at, _) => at.get(),
            _ => None,
        }
    }

    /// The bytes before a run ([`found`](Self::found)), and the run itself, to be
    /// handed over whole.
    pub(crate) fn taking(data: &'s [u8], run: Run) -> Self {
        let len = run.bytes().len();
        Source {
            data,
            pos: Cell::new(0),
            tail: Tail::Take(Cell::new(Some(run)), len),
        }
    }

    /// The run a taking source was given, if decoding did not take it.
    pub(crate) fn untaken(self) -> Option<Run> {
        match self.tail {
            Tail::Take(run, _) => run.into_inner(),
            _ => None,
        }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos.get()
    }

    /// `n` varints from the position, read as postcard reads a `u64`, appended to `out`;
    /// `false` (and the position and `out` as they were) unless the message holds all
    /// of them, well formed.
    fn take_varints_into(&self, n: usize, out: &mut Vec<u64>) -> bool {
        let data = self.data;
        let start = self.pos.get();
        // Each takes a byte at least: a count the message cannot hold reserves nothing.
        if n > data.len().saturating_sub(start) {
            return false;
        }
        let before = out.len();
        // Written by index into room made first: the loop keeps its place in a
        // register, where pushing would update the vector's length in memory each time.
        out.resize(before + n, 0);
        match read_varints(&data[start..], &mut out[before..]) {
            Some(read) => {
                self.pos.set(start + read);
                true
            }
            None => {
                out.truncate(before);
                false
            }
        }
    }

    /// The next `n` bytes, or `None` (and nothing taken) when fewer are left.
    #[inline]
    fn take(&self, n: usize) -> Option<&'s [u8]> {
        let pos = self.pos.get();
        let out = self.data.get(pos..pos.checked_add(n)?)?;
        self.pos.set(pos + n);
        Some(out)
    }

    /// The run of `kind` (postcard's count, then the elements) at the position, when
    /// it is long and ends the message: the vector read for it (taking), or an empty one
    /// standing for it (scanning).
    fn tail_run(&self, kind: Kind) -> Option<Run> {
        let whole = match &self.tail {
            Tail::Copy => return None,
            Tail::Find(_, whole) => *whole,
            Tail::Take(_, len) => self.data.len() + len,
        };
        let size = match kind {
            Kind::U8 => 1,
            Kind::F32 => 4,
            Kind::F64 => 8,
            // Varints: no fixed size to find the run's end by.
            Kind::I8 | Kind::U64 => return None,
        };
        let pos = self.pos.get();
        let (n, len_bytes) = varint(self.data.get(pos..)?)?;
        let start = pos + len_bytes;
        let bytes = n.checked_mul(size)?;
        if bytes < TAKE_OVER_FROM || start.checked_add(bytes)? != whole {
            return None;
        }
        match &self.tail {
            Tail::Find(at, _) => {
                at.set(Some((start, kind)));
                self.pos.set(self.data.len());
                Some(Run::empty(kind))
            }
            Tail::Take(cell, _) => {
                let run = cell.take()?;
                if run.kind() != kind || run.bytes().len() != bytes {
                    cell.set(Some(run));
                    return None;
                }
                self.pos.set(start);
                count_take_over();
                Some(run)
            }
            Tail::Copy => None,
        }
    }
}

/// Fills `out` with the varints at the start of `data`, read as postcard reads a `u64`:
/// how many bytes they took, or `None` when the bytes run out or a value overflows.
///
/// Several values at a time where a word of eight bytes holds a run of values of one
/// length (eight of one byte, four of two, two of three), else one: a branch per step,
/// which the processor predicts for runs of values of one length and so works on several
/// steps at once (a branch-free decoder chains every value's position on the one before,
/// and measured slower).
fn read_varints(data: &[u8], out: &mut [u64]) -> Option<usize> {
    let two = |x: u64| (x & 0x7f) | ((x >> 1) & 0x3f80);
    let three = |x: u64| two(x) | ((x >> 2) & 0x1f_c000);
    // The marks of a word that starts with two values of three bytes.
    const THREES: (u64, u64) = (0x0000_8080_8080_8080, 0x0000_0080_8000_8080);
    let n = out.len();
    let (mut pos, mut k) = (0, 0);
    while k < n {
        // Four values of three bytes from two overlapping words.
        if k + 4 <= n
            && let Some(bytes) = data.get(pos..pos + 14)
        {
            let mut w = [0; 8];
            w.copy_from_slice(&bytes[..8]);
            let w = u64::from_le_bytes(w);
            let mut v = [0; 8];
            v.copy_from_slice(&bytes[6..]);
            let v = u64::from_le_bytes(v);
            if w & THREES.0 == THREES.1 && v & THREES.0 == THREES.1 {
                out[k] = three(w);
                out[k + 1] = three(w >> 24);
                out[k + 2] = three(v);
                out[k + 3] = three(v >> 24);
                (pos, k) = (pos + 12, k + 4);
                continue;
            }
        }
        if let Some(bytes) = data.get(pos..pos + 8) {
            let mut w = [0; 8];
            w.copy_from_slice(bytes);
            let w = u64::from_le_bytes(w);
            let more = w & 0x8080_8080_8080_8080;
            if k + 2 <= n && more & THREES.0 == THREES.1 {
                out[k] = three(w);
                out[k + 1] = three(w >> 24);
                (pos, k) = (pos + 6, k + 2);
                continue;
            }
            if k + 8 <= n && more == 0 {
                for (o, &b) in out[k..k + 8].iter_mut().zip(bytes) {
                    *o = u64::from(b);
                }
                (pos, k) = (pos + 8, k + 8);
                continue;
            }
            if k + 4 <= n && more == 0x0080_0080_0080_0080 {
                for (j, o) in out[k..k + 4].iter_mut().enumerate() {
                    *o = two(w >> (16 * j));
                }
                (pos, k) = (pos + 8, k + 4);
                continue;
            }
        }
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *data.get(pos)?;
            pos += 1;
            // The tenth byte may hold one bit only; more would overflow.
            if shift == 63 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        out[k] = value;
        k += 1;
    }
    Some(pos)
}

/// postcard's length of a sequence (a LEB128 `usize`) at the start of `b`, and how many
/// bytes it takes.
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut n: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None; // past 64 bits: postcard refuses it too
        }
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(n).ok()?, i + 1));
        }
    }
    None
}

/// postcard's view of a [`Source`].
pub(crate) struct Cursor<'s>(pub(crate) &'s Source<'s>);

impl<'s> postcard::de_flavors::Flavor<'s> for Cursor<'s> {
    type Remainder = usize;
    type Source = &'s Source<'s>;

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        let pos = self.0.pos.get();
        let b = *self
            .0
            .data
            .get(pos)
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.0.pos.set(pos + 1);
        Ok(b)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.remaining())
    }

    #[inline]
    fn try_take_n(&mut self, n: usize) -> postcard::Result<&'s [u8]> {
        self.0
            .take(n)
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0.remaining())
    }
}

/// The source a deserializer reads from, when it is the codec's own.
pub(crate) type Src<'s> = Option<&'s Source<'s>>;

// ---- element types ----

/// An element type with a bulk path (sealed: only these four).
pub(crate) trait Elem:
    Pod + sys::LifetimeFree + for<'de> Deserialize<'de> + Serialize
{
    /// From little-endian to this host's order (nothing to do on little-endian hosts).
    fn le_to_host(self) -> Self;
}

impl Elem for u8 {
    fn le_to_host(self) -> Self {
        self
    }
}

impl Elem for i8 {
    fn le_to_host(self) -> Self {
        self
    }
}

impl Elem for f32 {
    fn le_to_host(self) -> Self {
        f32::from_bits(u32::from_le(self.to_bits()))
    }
}

impl Elem for u64 {
    fn le_to_host(self) -> Self {
        u64::from_le(self)
    }
}

impl Elem for f64 {
    fn le_to_host(self) -> Self {
        f64::from_bits(u64::from_le(self.to_bits()))
    }
}

/// The element type of a vector that has a bulk path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    U8,
    I8,
    F32,
    F64,
    U64,
}

impl Kind {
    /// The kind of vector `V` builds, when `V` is serde's own visitor for `Vec<E>` (the
    /// one `Vec<E>` and `Box<[E]>` use) and `E` has a bulk path.
    #[inline]
    pub(crate) fn of_vec_visitor<'de, V: Visitor<'de>>() -> Option<Kind> {
        let kind = if sys::is::<V::Value, Vec<u8>>() {
            Kind::U8
        } else if sys::is::<V::Value, Vec<i8>>() {
            Kind::I8
        } else if sys::is::<V::Value, Vec<f32>>() {
            Kind::F32
        } else if sys::is::<V::Value, Vec<f64>>() {
            Kind::F64
        } else if sys::is::<V::Value, Vec<u64>>() {
            Kind::U64
        } else {
            return None;
        };
        (serde_vec_visitors()[kind as usize] == Some(typeid::of::<V>())).then_some(kind)
    }
}

/// The type of the visitor serde's `Vec<E>: Deserialize` passes to `deserialize_seq`,
/// for each [`Kind`]. The type is private to serde, so it is learnt by asking: a
/// deserializer that only notes the visitor's type and fails.
fn serde_vec_visitors() -> &'static [Option<TypeId>; 5] {
    static IDS: OnceLock<[Option<TypeId>; 5]> = OnceLock::new();
    IDS.get_or_init(|| {
        [
            probe::<u8>(),
            probe::<i8>(),
            probe::<f32>(),
            probe::<f64>(),
            probe::<u64>(),
        ]
    })
}

fn probe<E: Elem>() -> Option<TypeId> {
    let seen = Cell::new(None);
    let _ = Vec::<E>::deserialize(Probe(&seen));
    seen.get()
}

struct Probe<'a>(&'a Cell<Option<TypeId>>);

#[derive(Debug)]
struct Probed;

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        self.0.set(Some(typeid::of::<V>()));
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

// ---- encoding ----

/// Encodes `items` as one block when `I` is `&Vec<E>` or `&[E]` for an [`Elem`] `E`;
/// else hands the serializer back.
#[inline]
pub(crate) fn encode_seq<S: Serializer, I>(s: S, items: &I) -> Result<Result<S::Ok, S::Error>, S> {
    if let Some(b) = sys::as_slice::<I, u8>(items) {
        count_bulk();
        return Ok(s.serialize_bytes(b));
    }
    if let Some(b) = sys::as_slice::<I, i8>(items) {
        count_bulk();
        return Ok(s.serialize_bytes(bytemuck::cast_slice(b)));
    }
    if let Some(f) = sys::as_slice::<I, f64>(items) {
        return Ok(encode_floats(s, f));
    }
    if let Some(f) = sys::as_slice::<I, f32>(items) {
        return Ok(encode_floats(s, f));
    }
    if let Some(v) = sys::as_slice::<I, u64>(items) {
        return Ok(encode_varints(s, v, |x| *x));
    }
    if let Some(v) = sys::as_slice::<I, u32>(items) {
        return Ok(encode_varints(s, v, |x| u64::from(*x)));
    }
    if let Some(v) = sys::as_slice::<I, u16>(items) {
        return Ok(encode_varints(s, v, |x| u64::from(*x)));
    }
    if let Some(v) = sys::as_slice::<I, usize>(items) {
        return Ok(encode_varints(s, v, |x| *x as u64));
    }
    if let Some(v) = sys::as_slice::<I, i64>(items) {
        return Ok(encode_varints(s, v, |x| zigzag(*x)));
    }
    if let Some(v) = sys::as_slice::<I, i32>(items) {
        return Ok(encode_varints(s, v, |x| zigzag(i64::from(*x))));
    }
    if let Some(v) = sys::as_slice::<I, i16>(items) {
        return Ok(encode_varints(s, v, |x| zigzag(i64::from(*x))));
    }
    Err(s)
}

/// postcard's mapping of a signed integer to the unsigned one it writes as a varint (the
/// same number for every width the value fits in).
#[inline]
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// The serializers the codec drives: postcard writing into a `Vec` (`codec::encode`),
/// or measuring and streaming a value being sent (`codec::measure`, `codec::stream`).
type PostcardVec = postcard::Serializer<postcard::ser_flavors::AllocVec>;
type PostcardOutflow = postcard::Serializer<crate::sys::outflow::Outflow>;

/// The bytes of a sequence's elements, handed piece by piece to `extend`.
type Body<'a> = dyn Fn(&mut dyn FnMut(&[u8]) -> postcard::Result<()>) -> postcard::Result<()> + 'a;

/// Writes `items` as postcard's sequence, its length then the bytes `body` gives, when
/// `s` is one of the codec's own outputs (postcard writing into a `Vec`, or a value being
/// sent); element by element otherwise.
fn encode_block<S: Serializer, E: Serialize>(
    mut s: S,
    items: &[E],
    body: &Body<'_>,
) -> Result<S::Ok, S::Error> {
    fn write<F: postcard::ser_flavors::Flavor>(
        out: &mut postcard::Serializer<F>,
        len: usize,
        body: &Body<'_>,
    ) -> postcard::Result<()> {
        let seq = out.serialize_seq(Some(len))?;
        body(&mut |bytes| postcard::ser_flavors::Flavor::try_extend(&mut seq.output, bytes))
    }
    let written = if let Some(out) = sys::reborrow::<S, PostcardVec>(&mut s) {
        Some(write(out, items.len(), body))
    } else {
        sys::reborrow::<S, PostcardOutflow>(&mut s).map(|out| write(out, items.len(), body))
    };
    if let Some(r) = written {
        count_bulk();
        use serde::ser::Error as _;
        r.map_err(S::Error::custom)?;
        // The `S::Ok` to return, from a call that writes nothing: postcard gives an
        // empty tuple no bytes.
        return serde::ser::SerializeTuple::end(s.serialize_tuple(0)?);
    }
    element_by_element(s, items)
}

fn element_by_element<S: Serializer, E: Serialize>(s: S, items: &[E]) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(items.len()))?;
    for x in items {
        seq.serialize_element(x)?;
    }
    seq.end()
}

/// postcard writes the length, then each value's little-endian bytes: on a
/// little-endian host, the slice's own bytes.
fn encode_floats<S: Serializer, E: Elem>(s: S, items: &[E]) -> Result<S::Ok, S::Error> {
    if cfg!(target_endian = "little") {
        encode_block(s, items, &|extend| extend(bytemuck::cast_slice(items)))
    } else {
        element_by_element(s, items)
    }
}

/// Integers wider than a byte: postcard writes each as a varint (seven bits a byte, low
/// bits first, the top bit set on every byte but the last), through a call that copies a
/// few bytes each time. Written here into blocks first, then added a block at once: the
/// same bytes, several times faster.
fn encode_varints<S, E>(s: S, items: &[E], as_u64: impl Fn(&E) -> u64) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    E: Serialize,
{
    encode_block(s, items, &|extend| {
        // Blocks of a bounded size: a huge vector never needs a second copy of itself.
        const BLOCK: usize = 4096;
        let mut block = vec![0u8; BLOCK * 10];
        for chunk in items.chunks(BLOCK) {
            // At most ten bytes per value, and eight written for two that take fewer:
            // indexing stays inside the block. Two values of two or three bytes each are
            // written with one store, one of up to three bytes without a loop: a branch
            // per step, which the processor predicts for runs of values of one length (a
            // branch-free writer of eight bytes per value measured twice as slow).
            let two = |v: u64| (v & 0x7f) | ((v << 1) & 0x7f00) | 0x80;
            let three = |v: u64| (v & 0x7f) | ((v << 1) & 0x7f00) | ((v << 2) & 0x7f_0000) | 0x8080;
            let mut n = 0;
            let mut i = 0;
            while let Some(x) = chunk.get(i) {
                let v = as_u64(x);
                if let Some(y) = chunk.get(i + 1) {
                    let w = as_u64(y);
                    let pair = if v.min(w) >= 0x4000 && (v | w) < 0x20_0000 {
                        Some((three(v) | (three(w) << 24), 6))
                    } else if v.min(w) >= 0x80 && (v | w) < 0x4000 {
                        Some((two(v) | (two(w) << 16), 4))
                    } else {
                        None
                    };
                    if let Some((word, len)) = pair {
                        block[n..n + 8].copy_from_slice(&word.to_le_bytes());
                        n += len;
                        i += 2;
                        continue;
                    }
                }
                i += 1;
                if v < 0x80 {
                    block[n] = v as u8;
                    n += 1;
                    continue;
                }
                if v < 0x4000 {
                    block[n] = v as u8 | 0x80;
                    block[n + 1] = (v >> 7) as u8;
                    n += 2;
                    continue;
                }
                if v < 0x20_0000 {
                    block[n] = v as u8 | 0x80;
                    block[n + 1] = (v >> 7) as u8 | 0x80;
                    block[n + 2] = (v >> 14) as u8;
                    n += 3;
                    continue;
                }
                let mut v = v;
                while v >= 0x80 {
                    block[n] = v as u8 | 0x80;
                    n += 1;
                    v >>= 7;
                }
                block[n] = v as u8;
                n += 1;
            }
            extend(&block[..n])?;
        }
        Ok(())
    })
}

// ---- decoding ----

/// Decodes the `Vec<E>` of `kind` from `d` in bulk, as a `T` (which
/// [`Kind::of_vec_visitor`] found to be that vector).
pub(crate) fn decode_vec<'de, D: Deserializer<'de>, T>(
    d: D,
    kind: Kind,
    src: Src<'_>,
) -> Result<T, D::Error> {
    // A long run ending the message: the memory it was read into, when `d` is
    // postcard reading that message.
    let run = src
        .filter(|_| {
            typeid::of::<D>() == typeid::of::<&mut postcard::Deserializer<'_, Cursor<'_>>>()
        })
        .and_then(|s| s.tail_run(kind));
    if let Some(run) = run {
        return run.into_t();
    }
    match kind {
        Kind::U8 => as_t(d.deserialize_byte_buf(Bytes::<u8>(PhantomData))?),
        Kind::I8 => as_t(d.deserialize_byte_buf(Bytes::<i8>(PhantomData))?),
        Kind::F32 => as_t(floats::<D, f32>(d, src)?),
        Kind::F64 => as_t(floats::<D, f64>(d, src)?),
        Kind::U64 => {
            let src = src.filter(|_| {
                typeid::of::<D>() == typeid::of::<&mut postcard::Deserializer<'_, Cursor<'_>>>()
            });
            as_t(d.deserialize_seq(Varints { src })?)
        }
    }
}

/// A postcard sequence of `u64` varints, read in one loop when all of it is there.
struct Varints<'s> {
    src: Src<'s>,
}

impl<'de> Visitor<'de> for Varints<'_> {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u64>, A::Error> {
        let hint = a.size_hint();
        if let (Some(src), Some(n)) = (self.src, hint) {
            let mut v = Vec::new();
            if src.take_varints_into(n, &mut v) {
                count_bulk();
                return Ok(v);
            }
        }
        // Malformed or cut short: one by one, which ends with postcard's own error.
        let left = self.src.map_or(0, |s| s.remaining());
        let mut v = Vec::with_capacity(hint.unwrap_or(0).min(left));
        while let Some(x) = a.next_element::<u64>()? {
            v.push(x);
        }
        Ok(v)
    }
}

/// Appends the `n` elements of a sequence at `src`'s position (postcard's count already
/// read) to `out` as one block, when `T` has a bulk path both ways (`u64`, `u8`, `i8`,
/// `f32`, `f64`): whether it did. `false` leaves the position and `out` as they were:
/// the caller decodes element by element then.
pub(crate) fn take_seq_into<T>(src: &Source<'_>, n: usize, mut out: &mut Vec<T>) -> bool {
    fn extend_le<E: Elem>(src: &Source<'_>, n: usize, out: &mut Vec<E>) -> bool {
        let Some(bytes) = n.checked_mul(size_of::<E>()).and_then(|len| src.take(len)) else {
            return false;
        };
        out.extend(
            bytes
                .chunks_exact(size_of::<E>())
                .map(|c| bytemuck::pod_read_unaligned::<E>(c).le_to_host()),
        );
        true
    }
    let done = if let Some(v) = sys::reborrow::<_, Vec<u64>>(&mut out) {
        src.take_varints_into(n, v)
    } else if let Some(v) = sys::reborrow::<_, Vec<u8>>(&mut out) {
        extend_le(src, n, v)
    } else if let Some(v) = sys::reborrow::<_, Vec<i8>>(&mut out) {
        extend_le(src, n, v)
    } else if let Some(v) = sys::reborrow::<_, Vec<f64>>(&mut out) {
        extend_le(src, n, v)
    } else if let Some(v) = sys::reborrow::<_, Vec<f32>>(&mut out) {
        extend_le(src, n, v)
    } else {
        false
    };
    if done {
        count_bulk();
    }
    done
}

/// postcard's length of a sequence at `src`'s position, taken.
pub(crate) fn take_len(src: &Source<'_>) -> Option<usize> {
    let pos = src.pos.get();
    let (n, len) = varint(src.data.get(pos..)?)?;
    src.pos.set(pos + len);
    Some(n)
}

fn as_t<E: de::Error, V: sys::LifetimeFree, T>(v: V) -> Result<T, E> {
    sys::same(v).map_err(|_| E::custom("a bulk-decoded vector is not the type asked for"))
}

fn floats<'de, D: Deserializer<'de>, E: Elem>(d: D, src: Src<'_>) -> Result<Vec<E>, D::Error> {
    // Read straight from the message only when `d` is postcard reading that message.
    let src = src.filter(|_| {
        typeid::of::<D>() == typeid::of::<&mut postcard::Deserializer<'_, Cursor<'_>>>()
    });
    d.deserialize_seq(Floats::<E> {
        src,
        elem: PhantomData,
    })
}

/// Bytes into a `Vec<E>` of one-byte elements.
struct Bytes<E>(PhantomData<E>);

impl<'de, E: Elem> Visitor<'de> for Bytes<E> {
    type Value = Vec<E>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of bytes")
    }

    fn visit_bytes<Er: de::Error>(self, v: &[u8]) -> Result<Vec<E>, Er> {
        count_bulk();
        pod_vec_from_bytes(v).ok_or_else(|| Er::custom("bytes of a partial element"))
    }

    fn visit_byte_buf<Er: de::Error>(self, v: Vec<u8>) -> Result<Vec<E>, Er> {
        match sys::same::<Vec<u8>, Vec<E>>(v) {
            Ok(v) => {
                count_bulk();
                Ok(v)
            }
            Err(v) => self.visit_bytes(&v),
        }
    }
}

/// A postcard sequence of floats, taken from the message as one block when all of it
/// is there.
struct Floats<'s, E> {
    src: Src<'s>,
    elem: PhantomData<E>,
}

impl<'de, E: Elem> Visitor<'de> for Floats<'_, E> {
    type Value = Vec<E>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<E>, A::Error> {
        // postcard's hint is the exact count when the message has at least that many
        // bytes left (none, else).
        let hint = a.size_hint();
        if let (Some(src), Some(n)) = (self.src, hint) {
            let block = n
                .checked_mul(size_of::<E>())
                .and_then(|len| src.take(len))
                .and_then(pod_vec_from_bytes::<E>);
            if let Some(mut v) = block {
                count_bulk();
                if cfg!(target_endian = "big") {
                    v.iter_mut().for_each(|x| *x = x.le_to_host());
                }
                return Ok(v);
            }
        }
        // Cut short (or not postcard's message): one by one, which ends with postcard's
        // own error where the bytes run out. Reserve no more than the bytes can fill.
        let left = self.src.map_or(0, |s| s.remaining() / size_of::<E>());
        let mut v = Vec::with_capacity(hint.unwrap_or(0).min(left));
        while let Some(x) = a.next_element::<E>()? {
            v.push(x);
        }
        Ok(v)
    }
}

/// `bytes` as a vector of `T` in this host's layout (one copy, into memory aligned for
/// `T`), or `None` when they are not a whole number of `T`.
fn pod_vec_from_bytes<T: Pod>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = size_of::<T>();
    if size == 0 || bytes.len() % size != 0 {
        return None;
    }
    // Zeroed through the allocator: a large block comes as untouched zero pages, so the
    // only pass over the memory is the copy.
    let mut v: Vec<T> = bytemuck::zeroed_vec(bytes.len() / size);
    pages::prefer_huge_pages_if_large(&mut v);
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    Some(v)
}

#[cfg(test)]
thread_local! {
    /// How many sequences took a bulk path on this thread: tests check that a value
    /// did not quietly go element by element.
    pub(crate) static BULK_COUNT: Cell<usize> = const { Cell::new(0) };
}

#[inline]
fn count_bulk() {
    #[cfg(test)]
    BULK_COUNT.with(|c| c.set(c.get() + 1));
}

#[cfg(test)]
thread_local! {
    /// How many vectors took over the buffer of the message they came in, on this
    /// thread.
    pub(crate) static TAKE_OVER_COUNT: Cell<usize> = const { Cell::new(0) };
}

fn count_take_over() {
    #[cfg(test)]
    TAKE_OVER_COUNT.with(|c| c.set(c.get() + 1));
}

// ---- the opt-in wrapper ----

/// A vector of plain-old-data values (`u32`, `u64`, `#[repr(C)]` structs deriving
/// [`bytemuck::Pod`]) that travels as one block of bytes, copied once each way.
///
/// `Vec<u8>`, `Vec<i8>`, `Vec<f32>` and `Vec<f64>` need no wrapper: they travel in
/// bulk as they are. Other element types go one by one unless wrapped in a `PodVec`.
///
/// The bytes are the elements' memory **in this host's layout** (byte order, padding,
/// `repr`): right between processes of one machine, which is what multiproc connects,
/// but not a portable format. A message whose length is not a whole number of elements
/// is refused with [`Error::Decode`](crate::Error::Decode). Zero-sized element types are
/// refused at compile time.
///
/// It dereferences to the `Vec<T>` it holds, and converts from and into one.
///
/// ```
/// use multiproc::{PodVec, pipe};
///
/// let (here, there) = pipe(true)?;
/// here.send(&PodVec::from(vec![1u32, 2, 3]))?;
/// let got: PodVec<u32> = there.recv()?;
/// assert_eq!(got[..], [1, 2, 3]);
/// let plain: Vec<u32> = got.into();
/// # let _ = plain;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// With a struct of your own (`multiproc::bytemuck` is re-exported, so no direct
/// dependency is needed):
///
/// ```
/// use multiproc::{PodVec, bytemuck, pipe};
///
/// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
/// #[bytemuck(crate = "multiproc::bytemuck")]
/// #[repr(C)]
/// struct Point {
///     x: f32,
///     y: f32,
/// }
///
/// let (here, there) = pipe(true)?;
/// here.send(&PodVec::from(vec![Point { x: 1.0, y: 2.0 }]))?;
/// let got: PodVec<Point> = there.recv()?;
/// assert_eq!(got[0], Point { x: 1.0, y: 2.0 });
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A zero-sized element type does not build:
///
/// ```compile_fail
/// let (here, _there) = multiproc::pipe(true)?;
/// here.send(&multiproc::PodVec::from(vec![(); 3]))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodVec<T>(pub Vec<T>);

impl<T> PodVec<T> {
    /// An empty vector.
    ///
    /// ```
    /// let v = multiproc::PodVec::<u64>::new();
    /// assert!(v.is_empty());
    /// ```
    pub fn new() -> Self {
        PodVec(Vec::new())
    }

    /// The vector inside.
    ///
    /// ```
    /// let v = multiproc::PodVec::from(vec![7u64]);
    /// assert_eq!(v.into_inner(), vec![7]);
    /// ```
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T> Deref for PodVec<T> {
    type Target = Vec<T>;

    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> DerefMut for PodVec<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T> From<Vec<T>> for PodVec<T> {
    fn from(v: Vec<T>) -> Self {
        PodVec(v)
    }
}

impl<T> From<PodVec<T>> for Vec<T> {
    fn from(v: PodVec<T>) -> Self {
        v.0
    }
}

impl<T> FromIterator<T> for PodVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        PodVec(iter.into_iter().collect())
    }
}

impl<T> AsRef<[T]> for PodVec<T> {
    fn as_ref(&self) -> &[T] {
        &self.0
    }
}

impl<T> AsMut<[T]> for PodVec<T> {
    fn as_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// Refuses, at build time, a zero-sized element: its bytes could not say how many
/// elements there were.
const fn assert_sized<T>() {
    assert!(
        size_of::<T>() != 0,
        "PodVec cannot carry a zero-sized element type: its bytes would not say how many there were"
    )
}

impl<T: Pod> Serialize for PodVec<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const { assert_sized::<T>() };
        s.serialize_bytes(bytemuck::cast_slice(&self.0))
    }
}

impl<'de, T: Pod> Deserialize<'de> for PodVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const { assert_sized::<T>() };
        d.deserialize_byte_buf(PodVisitor(PhantomData)).map(PodVec)
    }
}

struct PodVisitor<T>(PhantomData<T>);

impl<T: Pod> PodVisitor<T> {
    fn whole<E: de::Error>(bytes: &[u8]) -> Result<Vec<T>, E> {
        pod_vec_from_bytes(bytes).ok_or_else(|| {
            E::custom(format_args!(
                "{} bytes are not a whole number of {}-byte elements",
                bytes.len(),
                size_of::<T>()
            ))
        })
    }
}

impl<'de, T: Pod> Visitor<'de> for PodVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the bytes of {}-byte elements", size_of::<T>())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<T>, E> {
        Self::whole(v)
    }

    /// Formats that write bytes as a sequence of numbers (JSON, for one).
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<T>, A::Error> {
        let mut bytes = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = a.next_element::<u8>()? {
            bytes.push(b);
        }
        Self::whole(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::wire::codec;

    /// Encodes and decodes `v` through the codec, checks the value and that the bytes are
    /// postcard's own, and returns how many sequences took a bulk path on the way.
    fn round_trip<T>(v: &T) -> usize
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        let before = BULK_COUNT.with(Cell::get);
        let bytes = codec::encode_plain(v).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec(v).unwrap(),
            "not postcard's bytes"
        );
        let back: T = codec::decode(&bytes, Vec::new()).unwrap();
        assert_eq!(&back, v);
        BULK_COUNT.with(Cell::get) - before
    }

    #[test]
    fn integer_vectors_are_written_as_postcard_writes_them() {
        // `u64`s both ways; the others encoded in bulk, decoded element by element.
        assert_eq!(round_trip(&vec![0u64, 1, 127, 128, 300, u64::MAX]), 2);
        assert_eq!(
            round_trip(&(0..10_000u64).map(|i| i * 977).collect::<Vec<_>>()),
            2
        );
        assert_eq!(round_trip(&vec![0u32, 127, 128, u32::MAX]), 1);
        assert_eq!(round_trip(&vec![0u16, 127, 128, u16::MAX]), 1);
        assert_eq!(round_trip(&vec![0usize, 5, usize::MAX]), 1);
        assert_eq!(
            round_trip(&vec![0i64, -1, 1, -64, 64, i64::MIN, i64::MAX]),
            1
        );
        assert_eq!(round_trip(&vec![0i32, -1, 1, i32::MIN, i32::MAX]), 1);
        assert_eq!(round_trip(&vec![0i16, -1, i16::MIN, i16::MAX]), 1);
        assert_eq!(round_trip(&Vec::<u64>::new()), 2);
        // Inside a value, and as sent.
        assert_eq!(round_trip(&(7u8, vec![1u32, 200_000], "x".to_string())), 1);
        assert_eq!(sent(&vec![u64::MAX; 100_000]), (1, 2));
    }

    #[test]
    fn varints_of_every_length_are_postcards_bytes_both_ways() {
        // Each side of every length's bounds, and a spread of values between them, in
        // messages long enough for the word-at-a-time paths and at their ends.
        let mut values = vec![0u64, 1, u64::MAX, u64::MAX - 1];
        for k in 1..10 {
            let edge = 1u64 << (7 * k);
            values.extend([edge - 1, edge, edge + 1, edge | (edge >> 1)]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for n in [1, 2, 3, 7, 8, 9, values.len()] {
            for start in [0, values.len() - n] {
                let v = values[start..start + n].to_vec();
                assert_eq!(round_trip(&v), 2, "{v:?}");
            }
        }
        let signed: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        round_trip(&signed);
        // Runs of values of one length, read several at a time, cut at every count.
        let runs: Vec<u64> = (0..20)
            .chain(200..220)
            .chain(20_000..20_020)
            .chain([3, 300, 30_000, 3_000_000, 7, 700])
            .collect();
        for n in 0..=runs.len() {
            for start in [0, runs.len() - n] {
                assert_eq!(round_trip(&runs[start..start + n].to_vec()), 2);
            }
        }
    }

    #[test]
    fn malformed_integer_vectors_fail_as_postcard_fails_them() {
        let good = postcard::to_allocvec(&vec![5u64, u64::MAX, 7]).unwrap();
        // Cut short, anywhere.
        for cut in 0..good.len() {
            let ours = codec::decode::<Vec<u64>>(&good[..cut], Vec::new());
            let theirs = postcard::from_bytes::<Vec<u64>>(&good[..cut]);
            assert_eq!(ours.is_ok(), theirs.is_ok(), "cut at {cut}");
        }
        // An eleven-byte varint, a tenth byte that overflows, a count past the end.
        for bad in [
            vec![
                1u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            vec![
                1u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            vec![0xff, 0xff, 0xff, 0xff, 0x0f, 1],
        ] {
            assert!(codec::decode::<Vec<u64>>(&bad, Vec::new()).is_err());
            assert!(postcard::from_bytes::<Vec<u64>>(&bad).is_err());
        }
    }

    #[test]
    fn byte_and_float_vectors_take_the_bulk_path_both_ways() {
        assert_eq!(round_trip(&vec![1u8, 2, 255]), 2);
        assert_eq!(round_trip(&vec![-1i8, 0, 127]), 2);
        assert_eq!(round_trip(&Vec::<u8>::new()), 2);
        assert_eq!(round_trip(&vec![1u8; 1]), 2);
        assert_eq!(round_trip(&vec![7u8].into_boxed_slice()), 2);
        let decode_only = if cfg!(target_endian = "little") { 2 } else { 1 };
        assert_eq!(round_trip(&vec![1.5f64, -0.0, f64::INFINITY]), decode_only);
        assert_eq!(round_trip(&vec![1.5f32, f32::MIN]), decode_only);
        assert_eq!(round_trip(&Vec::<f64>::new()), decode_only);
        // The output of a value being sent: measured in memory, or streamed.
        let encode_only = if cfg!(target_endian = "little") { 1 } else { 0 };
        assert_eq!(sent(&vec![1u8, 2, 255]), (1, 2));
        assert_eq!(
            sent(&vec![1.5f64, -0.0, f64::INFINITY]),
            (encode_only, 2 * encode_only)
        );
        assert_eq!(sent(&vec![1.5f32; 100_000]), (encode_only, 2 * encode_only));
    }

    /// Encodes `v` as a connection sends it, below and past the size that streams, and
    /// checks the bytes are postcard's; returns how many sequences took a bulk path in
    /// the one pass of a small value and the two of a large one.
    fn sent<T: Serialize + ?Sized>(v: &T) -> (usize, usize) {
        use std::os::fd::AsFd;
        let expect = postcard::to_allocvec(v).unwrap();
        let before = BULK_COUNT.with(Cell::get);
        let (m, _) = codec::measure(v, usize::MAX, usize::MAX).unwrap();
        assert!(matches!(m, codec::Measured::Inline(b) if b == expect));
        let small = BULK_COUNT.with(Cell::get) - before;
        let before = BULK_COUNT.with(Cell::get);
        let (m, _) = codec::measure(v, 1, usize::MAX).unwrap();
        let codec::Measured::Long(len) = m else {
            panic!("not measured")
        };
        assert_eq!(len, expect.len() as u64);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut &b, &mut got).unwrap();
            got
        });
        codec::stream(v, a.as_fd(), len).unwrap();
        drop(a);
        assert!(reader.join().unwrap() == expect, "streamed bytes differ");
        (small, BULK_COUNT.with(Cell::get) - before)
    }

    #[test]
    fn vectors_nested_in_structs_enums_options_and_maps_take_the_bulk_path() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum Shape {
            Unit,
            Blob(Vec<u8>),
            Named { samples: Vec<f64>, tag: u16 },
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Frame {
            id: u32,
            pixels: Vec<u8>,
            maybe: Option<Vec<u8>>,
            shapes: Vec<Shape>,
            by_name: BTreeMap<String, Vec<f32>>,
        }
        let f = Frame {
            id: 9,
            pixels: (0..=255).collect(),
            maybe: Some(vec![3; 5]),
            shapes: vec![
                Shape::Unit,
                Shape::Blob(vec![1, 2, 3]),
                Shape::Named {
                    samples: vec![0.25; 3],
                    tag: 4,
                },
            ],
            by_name: [("a".to_string(), vec![1.0f32]), ("b".into(), vec![])].into(),
        };
        // Bytes: pixels, maybe, blob (each way); floats: samples, two maps' values.
        let floats = 3 * if cfg!(target_endian = "little") { 2 } else { 1 };
        assert_eq!(round_trip(&f), 6 + floats);
    }

    #[test]
    fn other_element_types_and_hand_written_visitors_stay_element_by_element() {
        assert_eq!(round_trip(&vec![true, false]), 0);
        assert_eq!(round_trip(&vec![vec!['x'], vec![]]), 0);
        assert_eq!(round_trip(&vec![1u128 << 100]), 0);
        assert_eq!(round_trip(&[1u8, 2, 3]), 0); // an array is a tuple, no length
        // A visitor of its own that returns a Vec<u8> from a sequence of u16.
        #[derive(PartialEq, Debug)]
        struct Low(Vec<u8>);
        impl<'de> Deserialize<'de> for Low {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Vec<u8>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("u16s")
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                        let mut v = Vec::new();
                        while let Some(x) = a.next_element::<u16>()? {
                            v.push(x as u8);
                        }
                        Ok(v)
                    }
                }
                d.deserialize_seq(V).map(Low)
            }
        }
        let bytes = codec::encode_plain(&vec![300u16, 2]).unwrap();
        let low: Low = codec::decode(&bytes, Vec::new()).unwrap();
        assert_eq!(low, Low(vec![44, 2]));
    }

    #[test]
    fn float_bits_survive_including_nan_payloads() {
        let v = vec![
            f64::from_bits(0x7ff8_0000_0000_0001),
            f64::from_bits(0xfff0_0000_dead_beef),
            -0.0,
            f64::MIN_POSITIVE / 2.0,
        ];
        let bytes = codec::encode_plain(&v).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&v).unwrap());
        let back: Vec<f64> = codec::decode(&bytes, Vec::new()).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&v));
    }

    #[test]
    fn a_truncated_float_vector_is_a_decode_error_with_postcards_words() {
        let bytes = codec::encode_plain(&vec![1.0f64; 100]).unwrap();
        for cut in [1, 2, 9, 400, bytes.len() - 1] {
            match codec::decode::<Vec<f64>>(&bytes[..cut], Vec::new()) {
                Err(crate::Error::Decode(m)) => assert!(m.contains("end of buffer"), "{m}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // A length far above what the message holds reserves nothing for it.
        let mut huge = Vec::new();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // 2^32 - 1 elements
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(
            codec::decode::<Vec<f64>>(&huge, Vec::new()),
            Err(crate::Error::Decode(_))
        ));
    }

    #[test]
    fn a_pod_vec_is_one_block_in_host_layout() {
        let v = PodVec::from(vec![1u32, 0xdead_beef]);
        let bytes = codec::encode_plain(&v).unwrap();
        let mut expect = vec![8u8];
        expect.extend_from_slice(bytemuck::cast_slice(&v[..]));
        assert_eq!(bytes, expect);
        let back: PodVec<u32> = codec::decode(&bytes, Vec::new()).unwrap();
        assert_eq!(back, v);
        match codec::decode::<PodVec<u32>>(&[7, 1, 2, 3, 4, 5, 6, 7], Vec::new()) {
            Err(crate::Error::Decode(m)) => {
                assert_eq!(m, "7 bytes are not a whole number of 4-byte elements")
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Error text that survives the codec.
//!
//! postcard's error type has no room for text: `de::Error::custom("handle is not an
//! event")` comes back as "Serde Deserialization Error", and the same for encoding. So
//! the value's own `Serialize`/`Deserialize` never meet postcard directly: they see
//! wrappers whose error type, [`Text`], keeps the message. Where a [`Text`] has to pass
//! through postcard (which calls the wrapped code and must return its own error), the
//! text waits in a thread-local slot and is taken back on the way out.
//!
//! The wrappers only forward: postcard still reads every length from the bounded
//! message, so decoding allocates no more than before.
//!
//! They are also where sequences of bytes and floats leave serde's element-by-element
//! path, since every value's serializer and deserializer is one of them: `collect_seq`
//! on a `&Vec<u8>` or `&[f64]` and `deserialize_seq` with serde's visitor for `Vec<u8>`
//! or `Vec<f64>` go to [`bulk`], at any depth inside a value, with the same bytes on
//! the wire. The deserializers carry the [`Source`] that postcard reads (`Src`), so
//! the bulk path can copy a block of floats straight out of the message.

use std::cell::RefCell;
use std::fmt::{self, Display};

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, Serializer};

use crate::wire::bulk::{self, Cursor, Source, Src};

thread_local! {
    /// The text of the innermost error on its way through the format's error type.
    static CARRIED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// An error that keeps its message (boxed, so that every `Result` on the decoding path
/// stays as small as with postcard's own error).
#[derive(Debug)]
#[allow(
    clippy::box_collection,
    reason = "a thin pointer: decoding measured twice as slow with an unboxed String"
)]
pub(crate) struct Text(Box<String>);

impl Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Text {}

impl de::Error for Text {
    fn custom<T: Display>(msg: T) -> Self {
        Text(Box::new(msg.to_string()))
    }
}

impl ser::Error for Text {
    fn custom<T: Display>(msg: T) -> Self {
        Text(Box::new(msg.to_string()))
    }
}

/// Into the format's error: the text waits in the slot.
fn down_de<E: de::Error>(t: Text) -> E {
    let e = E::custom(&t.0);
    CARRIED.with(|c| *c.borrow_mut() = Some(*t.0));
    e
}

fn down_ser<E: ser::Error>(t: Text) -> E {
    let e = E::custom(&t.0);
    CARRIED.with(|c| *c.borrow_mut() = Some(*t.0));
    e
}

/// Out of the format's error: the waiting text when `e` is the error made for it (a
/// message swallowed by some `Deserialize` must not name a later, unrelated error),
/// else `e`'s own text.
fn up<E: Display>(e: E, made_for: impl FnOnce(&str) -> E) -> Text {
    let shown = e.to_string();
    match CARRIED.with(|c| c.borrow_mut().take()) {
        Some(m) if made_for(&m).to_string() == shown => Text(Box::new(m)),
        _ => Text(Box::new(shown)),
    }
}

fn up_de<E: de::Error>(e: E) -> Text {
    up(e, |m| E::custom(m))
}

fn up_ser<E: ser::Error>(e: E) -> Text {
    up(e, |m| E::custom(m))
}

/// The text of an encoding error from the format, the value's own words when it has them.
pub(crate) fn encode_text<E: ser::Error>(e: E) -> String {
    *up_ser(e).0
}

// ---- decoding ----

/// Decodes a `T` from `source` with postcard, handing `T` a deserializer whose errors
/// keep their text and whose sequences of bytes and numbers go in bulk.
pub(crate) fn decode_from<'s, T: de::Deserialize<'s>>(source: &'s Source<'s>) -> Result<T, String> {
    let mut d = postcard::Deserializer::from_flavor(Cursor(source));
    T::deserialize(De(&mut d, Some(source))).map_err(|t| *t.0)
}

/// Decodes `n` values of `T` one after another from `source`'s position, pushing each
/// onto `out` (the elements of a sequence whose count was read already).
pub(crate) fn decode_each_into<'s, T: de::Deserialize<'s>>(
    source: &'s Source<'s>,
    n: usize,
    out: &mut Vec<T>,
) -> Result<(), String> {
    let mut d = postcard::Deserializer::from_flavor(Cursor(source));
    // Each element takes a byte at least: reserve no more than the message can fill.
    out.reserve(n.min(source.remaining()));
    for _ in 0..n {
        out.push(T::deserialize(De(&mut d, Some(source))).map_err(|t| *t.0)?);
    }
    Ok(())
}

/// A deserializer whose error is [`Text`]; the second field is the message it reads,
/// for the bulk path.
struct De<'s, D>(D, Src<'s>);

macro_rules! forward_de {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* v: V) -> Result<V::Value, Text> {
            self.0.$method($($arg,)* Wrap(v, self.1)).map_err(up_de)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<'_, D> {
    type Error = Text;

    forward_de! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    /// `Vec<u8>`, `Vec<i8>`, `Vec<f32>`, `Vec<f64>` (and `Box<[_]>` of them) in bulk.
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Text> {
        match bulk::Kind::of_vec_visitor::<V>() {
            Some(kind) => bulk::decode_vec(self.0, kind, self.1).map_err(up_de),
            None => self.0.deserialize_seq(Wrap(v, self.1)).map_err(up_de),
        }
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor called by the format: its results go back in the format's error type.
struct Wrap<'s, V>(V, Src<'s>);

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.0.$method::<Text>(v).map_err(down_de)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none::<Text>().map_err(down_de)
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit::<Text>().map_err(down_de)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(De(d, self.1)).map_err(down_de)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(De(d, self.1)).map_err(down_de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Access(a, self.1)).map_err(down_de)
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Access(a, self.1)).map_err(down_de)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Access(a, self.1)).map_err(down_de)
    }
}

/// A seed called by the format.
struct Seed<'s, T>(T, Src<'s>);

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(De(d, self.1)).map_err(down_de)
    }
}

/// The format's sequence, map, enum or variant access, with [`Text`] errors.
struct Access<'s, A>(A, Src<'s>);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, A> {
    type Error = Text;

    // Left to itself the compiler made this a call per element: a small struct
    // decoded 10% slower.
    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Text> {
        self.0.next_element_seed(Seed(seed, self.1)).map_err(up_de)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, A> {
    type Error = Text;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Text> {
        self.0.next_key_seed(Seed(seed, self.1)).map_err(up_de)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Text> {
        self.0.next_value_seed(Seed(seed, self.1)).map_err(up_de)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, 's, A: EnumAccess<'de>> EnumAccess<'de> for Access<'s, A> {
    type Error = Text;
    type Variant = Variant<'s, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Text> {
        self.0
            .variant_seed(Seed(seed, self.1))
            .map(|(v, a)| (v, Variant(a, self.1)))
            .map_err(up_de)
    }
}

struct Variant<'s, A>(A, Src<'s>);

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Variant<'_, A> {
    type Error = Text;

    fn unit_variant(self) -> Result<(), Text> {
        self.0.unit_variant().map_err(up_de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Text> {
        self.0
            .newtype_variant_seed(Seed(seed, self.1))
            .map_err(up_de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Text> {
        self.0.tuple_variant(len, Wrap(v, self.1)).map_err(up_de)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Text> {
        self.0
            .struct_variant(fields, Wrap(v, self.1))
            .map_err(up_de)
    }
}

// ---- encoding ----

/// A value encoded through [`Ser`]: `postcard::to_allocvec(&Encode(value))` hands the
/// value a serializer whose errors keep their text.
pub(crate) struct Encode<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for Encode<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Ser(s)).map_err(down_ser)
    }
}

/// A serializer whose error is [`Text`].
struct Ser<S>(S);

macro_rules! forward_ser {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<S::Ok, Text> {
            self.0.$method($($arg),*).map_err(up_ser)
        }
    )*};
}

macro_rules! forward_compound {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<$out, Text> {
            self.0.$method($($arg),*).map(Compound).map_err(up_ser)
        }
    )*};
}

impl<S: Serializer> Serializer for Ser<S> {
    type Ok = S::Ok;
    type Error = Text;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward_ser! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    forward_compound! {
        serialize_seq(len: Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(len: usize) -> Self::SerializeTuple;
        serialize_tuple_struct(name: &'static str, len: usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize
        ) -> Self::SerializeTupleVariant;
        serialize_map(len: Option<usize>) -> Self::SerializeMap;
        serialize_struct(name: &'static str, len: usize) -> Self::SerializeStruct;
        serialize_struct_variant(
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize
        ) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, Text> {
        self.0.serialize_some(&Encode(v)).map_err(up_ser)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, Text> {
        self.0
            .serialize_newtype_struct(name, &Encode(v))
            .map_err(up_ser)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, Text> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Encode(v))
            .map_err(up_ser)
    }

    /// `&Vec<E>` and `&[E]` of bytes and floats in bulk; anything else element by
    /// element, as serde's default does.
    fn collect_seq<I>(self, items: I) -> Result<S::Ok, Text>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let s = match bulk::encode_seq(self.0, &items) {
            Ok(done) => return done.map_err(up_ser),
            Err(s) => s,
        };
        let items = items.into_iter();
        let len = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let mut seq = Ser(s).serialize_seq(len)?;
        for item in items {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }

    fn collect_str<T: Display + ?Sized>(self, v: &T) -> Result<S::Ok, Text> {
        self.0.collect_str(v).map_err(up_ser)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The format's compound serializers, with [`Text`] errors.
struct Compound<C>(C);

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Text> {
        self.0.serialize_element(&Encode(v)).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Text> {
        self.0.serialize_element(&Encode(v)).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Text> {
        self.0.serialize_field(&Encode(v)).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Text> {
        self.0.serialize_field(&Encode(v)).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Text> {
        self.0.serialize_key(&Encode(k)).map_err(up_ser)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Text> {
        self.0.serialize_value(&Encode(v)).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Text> {
        self.0.serialize_field(key, &Encode(v)).map_err(up_ser)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Text> {
        self.0.skip_field(key).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = Text;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Text> {
        self.0.serialize_field(key, &Encode(v)).map_err(up_ser)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Text> {
        self.0.skip_field(key).map_err(up_ser)
    }

    fn end(self) -> Result<C::Ok, Text> {
        self.0.end().map_err(up_ser)
    }
}

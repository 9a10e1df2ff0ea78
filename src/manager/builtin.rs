//! The builtin managed types: `dict`, `list`, `Namespace`, `Value` and `Array`, with
//! the proxies Python's `SyncManager` hands out for them.
//!
//! The server never knows the element types: it keeps every key and value as the bytes
//! of its encoding, compares keys (and the values `remove`, `index` and `count` look
//! for) by those bytes, and answers a read with the stored bytes laid out as the
//! encoding of the reply (postcard writes a sequence as its length and then its
//! elements, an option as a tag and then its value), so a read copies bytes once and
//! decodes nothing. Arguments travel in a small layout of their own: each byte string
//! with a 4-byte length, integers as 8 bytes.
//!
//! Equal values encode to equal bytes for every serde type whose encoding is canonical
//! (integers, strings, enums, structs of those). A float key compares by its bits:
//! `0.0` and `-0.0` are two keys, a NaN finds itself. `1` and `1.0` are two keys of a
//! [`Key`] dict (Python would merge them).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Manager;
use super::proxy::{Proxy, ProxyCore, encode_args, encode_args_for};
use super::served::{CallCx, CallError, RemoteFault, Served, encode_reply};
use crate::error::Result;
use crate::wire::codec;

/// A builtin server object of `typeid` made from `args`, or `None` when the type id is
/// not a builtin one.
pub(crate) fn builtin(typeid: &str, args: &[u8]) -> Option<Result<Arc<dyn Served>, CallError>> {
    let made: Result<Arc<dyn Served>, CallError> = match typeid {
        DICT => DictObj::new(args).map(|o| Arc::new(o) as Arc<dyn Served>),
        LIST => ListObj::new(args, false).map(|o| Arc::new(o) as Arc<dyn Served>),
        ARRAY => ListObj::new(args, true).map(|o| Arc::new(o) as Arc<dyn Served>),
        NAMESPACE => Ok(Arc::new(NamespaceObj::default())),
        VALUE => Ok(Arc::new(ValueObj(Mutex::new((0, args.to_vec()))))),
        _ => return super::sync_objects::construct(typeid, args),
    };
    Some(made)
}

const DICT: &str = "dict";
const LIST: &str = "list";
const ARRAY: &str = "Array";
const NAMESPACE: &str = "Namespace";
const VALUE: &str = "Value";

// ---------------------------------------------------------------------------------
// The argument layout.

/// Builds the arguments of a builtin method; values are encoded for the object that
/// will keep them, if it is known (see [`encode_args_for`]).
#[derive(Default)]
struct Args<'a>(Vec<u8>, Option<&'a ProxyCore>);

impl<'a> Args<'a> {
    /// Arguments of a call of `core`'s object.
    fn to(core: &'a ProxyCore) -> Self {
        Args(Vec::new(), Some(core))
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        // Encodings are bounded by the request limit, far below 4 GiB.
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn value<T: Serialize + ?Sized>(self, v: &T) -> Result<Self> {
        let b = match self.1 {
            Some(core) => encode_args_for(v, core)?,
            None => encode_args(v)?,
        };
        Ok(self.bytes(&b))
    }
    fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn values<'v, T: Serialize + 'v>(
        mut self,
        items: impl IntoIterator<Item = &'v T>,
    ) -> Result<Self> {
        for v in items {
            self = self.value(v)?;
        }
        Ok(self)
    }
}

/// Reads the arguments of a builtin method.
struct Reader<'a>(&'a [u8]);

fn bad() -> CallError {
    CallError::BadArguments("malformed arguments".into())
}

impl<'a> Reader<'a> {
    fn bytes(&mut self) -> Result<&'a [u8], CallError> {
        let (len, rest) = self.0.split_at_checked(4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
        let (b, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        self.0 = rest;
        Ok(b)
    }
    fn u64(&mut self) -> Result<u64, CallError> {
        let (n, rest) = self.0.split_at_checked(8).ok_or_else(bad)?;
        self.0 = rest;
        Ok(u64::from_le_bytes(n.try_into().map_err(|_| bad())?))
    }
    fn end(&self) -> Result<(), CallError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    }
    /// Every remaining byte string.
    fn all(&mut self) -> Result<Vec<&'a [u8]>, CallError> {
        let mut v = Vec::new();
        while !self.0.is_empty() {
            v.push(self.bytes()?);
        }
        Ok(v)
    }
}

/// Appends `n` as postcard's varint.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The encoding of a sequence whose elements are encoded already.
fn seq<'a>(items: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 9 + 10);
    varint(&mut out, items.len() as u64);
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

/// [`seq`] of `len` items from an iterator that does not know its length.
fn seq_counted<'a>(len: usize, items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, len as u64);
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

/// The encoding of an option whose value is encoded already.
fn option(v: Option<&[u8]>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(b) => {
            let mut out = Vec::with_capacity(b.len() + 1);
            out.push(1);
            out.extend_from_slice(b);
            out
        }
    }
}

fn no_method(typeid: &str, method: &str) -> CallError {
    CallError::NoSuchMethod {
        typeid: typeid.to_string(),
        method: method.to_string(),
    }
}

fn index_error(what: &str) -> CallError {
    CallError::Failed(RemoteFault::InvalidArgument(what.to_string()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unit() -> Result<Vec<u8>, CallError> {
    Ok(Vec::new())
}

// ---------------------------------------------------------------------------------
// dict

/// Entries in insertion order (as Python's dict keeps them), found by key through an
/// index; removal leaves a hole, compacted once holes outnumber entries.
#[derive(Default)]
struct Ordered {
    entries: Vec<Option<(Vec<u8>, Vec<u8>)>>,
    index: HashMap<Vec<u8>, usize>,
}

impl Ordered {
    fn get(&self, k: &[u8]) -> Option<&[u8]> {
        let i = *self.index.get(k)?;
        self.entries[i].as_ref().map(|(_, v)| v.as_slice())
    }
    fn set(&mut self, k: &[u8], v: &[u8]) -> Option<Vec<u8>> {
        if let Some(&i) = self.index.get(k) {
            if let Some((_, old)) = self.entries[i].as_mut() {
                return Some(std::mem::replace(old, v.to_vec()));
            }
        }
        self.index.insert(k.to_vec(), self.entries.len());
        self.entries.push(Some((k.to_vec(), v.to_vec())));
        None
    }
    fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let i = self.index.remove(k)?;
        let old = self.entries[i].take().map(|(_, v)| v);
        self.compact();
        old
    }
    fn compact(&mut self) {
        if self.entries.len() > 2 * self.index.len() + 8 {
            self.entries.retain(Option::is_some);
            for (i, e) in self.entries.iter().enumerate() {
                if let Some((k, _)) = e {
                    if let Some(slot) = self.index.get_mut(k) {
                        *slot = i;
                    }
                }
            }
        }
    }
    fn iter(&self) -> impl Iterator<Item = &(Vec<u8>, Vec<u8>)> {
        self.entries.iter().flatten()
    }
    fn len(&self) -> usize {
        self.index.len()
    }
}

struct DictObj(Mutex<Ordered>);

impl DictObj {
    fn new(args: &[u8]) -> Result<DictObj, CallError> {
        let mut map = Ordered::default();
        let mut r = Reader(args);
        while !r.0.is_empty() {
            let k = r.bytes()?;
            let v = r.bytes()?;
            map.set(k, v);
        }
        Ok(DictObj(Mutex::new(map)))
    }
}

impl Served for DictObj {
    fn call(&self, method: &str, args: &[u8], _cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        let mut r = Reader(args);
        let mut map = lock(&self.0);
        match method {
            "get" => {
                let k = r.bytes()?;
                r.end()?;
                Ok(option(map.get(k)))
            }
            "set" => {
                let (k, v) = (r.bytes()?, r.bytes()?);
                r.end()?;
                map.set(k, v);
                unit()
            }
            "insert" => {
                let (k, v) = (r.bytes()?, r.bytes()?);
                r.end()?;
                Ok(option(map.set(k, v).as_deref()))
            }
            "pop" => {
                let k = r.bytes()?;
                r.end()?;
                Ok(option(map.remove(k).as_deref()))
            }
            "contains" => {
                let k = r.bytes()?;
                r.end()?;
                encode_reply(&map.index.contains_key(k))
            }
            "setdefault" => {
                let (k, v) = (r.bytes()?, r.bytes()?);
                r.end()?;
                if let Some(old) = map.get(k) {
                    return Ok(old.to_vec());
                }
                map.set(k, v);
                Ok(v.to_vec())
            }
            "popitem" => {
                r.end()?;
                let last = map
                    .entries
                    .iter()
                    .rev()
                    .flatten()
                    .next()
                    .map(|(k, _)| k.clone());
                match last {
                    None => Ok(vec![0]),
                    Some(k) => {
                        let v = map.remove(&k).unwrap_or_default();
                        let mut out = vec![1];
                        out.extend_from_slice(&k);
                        out.extend_from_slice(&v);
                        Ok(out)
                    }
                }
            }
            "update" => {
                let parts = r.all()?;
                if parts.len() % 2 != 0 {
                    return Err(bad());
                }
                for kv in parts.chunks_exact(2) {
                    map.set(kv[0], kv[1]);
                }
                unit()
            }
            "clear" => {
                r.end()?;
                *map = Ordered::default();
                unit()
            }
            "len" => encode_reply(&(map.len() as u64)),
            "keys" => Ok(seq_counted(
                map.len(),
                map.iter().map(|(k, _)| k.as_slice()),
            )),
            "values" => Ok(seq_counted(
                map.len(),
                map.iter().map(|(_, v)| v.as_slice()),
            )),
            "items" => {
                let mut out = Vec::new();
                varint(&mut out, map.len() as u64);
                for (k, v) in map.iter() {
                    out.extend_from_slice(k);
                    out.extend_from_slice(v);
                }
                Ok(out)
            }
            _ => Err(no_method(DICT, method)),
        }
    }
}

// ---------------------------------------------------------------------------------
// list and Array

struct ListState {
    items: Vec<Vec<u8>>,
    /// Bumped by every change, for the compare-and-replace of `sort` and `update`.
    version: u64,
}

struct ListObj {
    state: Mutex<ListState>,
    /// An `Array`: its length never changes.
    fixed: bool,
}

impl ListObj {
    fn new(args: &[u8], fixed: bool) -> Result<ListObj, CallError> {
        let items = Reader(args)
            .all()?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        Ok(ListObj {
            state: Mutex::new(ListState { items, version: 0 }),
            fixed,
        })
    }

    fn typeid(&self) -> &'static str {
        if self.fixed { ARRAY } else { LIST }
    }
}

fn at(len: usize, i: u64, what: &str) -> Result<usize, CallError> {
    usize::try_from(i)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| index_error(&format!("{what} index {i} out of range (length {len})")))
}

impl Served for ListObj {
    fn call(&self, method: &str, args: &[u8], _cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        let mut r = Reader(args);
        let mut s = lock(&self.state);
        let what = if self.fixed { "array" } else { "list" };
        // Methods that change the length are not an Array's.
        let resizing = matches!(
            method,
            "append" | "extend" | "insert" | "pop" | "remove" | "clear" | "replace_if"
        );
        if self.fixed && resizing {
            return Err(no_method(ARRAY, method));
        }
        let out = match method {
            "len" => return encode_reply(&(s.items.len() as u64)),
            "get" => {
                let i = at(s.items.len(), r.u64()?, what)?;
                r.end()?;
                return Ok(s.items[i].clone());
            }
            "to_vec" => {
                r.end()?;
                return Ok(seq(s.items.iter().map(Vec::as_slice)));
            }
            "slice" => {
                let (a, b) = (r.u64()?, r.u64()?);
                r.end()?;
                let len = s.items.len() as u64;
                let (a, b) = (a.min(len) as usize, b.min(len) as usize);
                let part = if a < b { &s.items[a..b] } else { &[][..] };
                return Ok(seq(part.iter().map(Vec::as_slice)));
            }
            "snapshot" => {
                r.end()?;
                let mut out = Vec::new();
                varint(&mut out, s.version);
                out.extend_from_slice(&seq(s.items.iter().map(Vec::as_slice)));
                return Ok(out);
            }
            "index" => {
                let v = r.bytes()?;
                r.end()?;
                return match s.items.iter().position(|x| x == v) {
                    Some(i) => encode_reply(&(i as u64)),
                    None => Err(index_error(&format!("value is not in the {what}"))),
                };
            }
            "count" => {
                let v = r.bytes()?;
                r.end()?;
                return encode_reply(&(s.items.iter().filter(|x| *x == v).count() as u64));
            }
            "set" => {
                let i = at(s.items.len(), r.u64()?, what)?;
                let v = r.bytes()?;
                r.end()?;
                s.items[i] = v.to_vec();
                Vec::new()
            }
            "set_slice" => {
                let start = r.u64()?;
                let vals = r.all()?;
                let len = s.items.len();
                let fits = usize::try_from(start)
                    .ok()
                    .and_then(|a| a.checked_add(vals.len()))
                    .is_some_and(|end| end <= len);
                if !fits {
                    return Err(index_error(&format!(
                        "{} values from index {start} do not fit a {what} of length {len}",
                        vals.len()
                    )));
                }
                for (slot, v) in s.items[start as usize..].iter_mut().zip(vals) {
                    *slot = v.to_vec();
                }
                Vec::new()
            }
            "append" => {
                let v = r.bytes()?;
                r.end()?;
                s.items.push(v.to_vec());
                Vec::new()
            }
            "extend" => {
                let vals = r.all()?;
                s.items.extend(vals.into_iter().map(<[u8]>::to_vec));
                Vec::new()
            }
            "insert" => {
                // Python's insert clamps the index to the list.
                let i = (r.u64()?).min(s.items.len() as u64) as usize;
                let v = r.bytes()?;
                r.end()?;
                s.items.insert(i, v.to_vec());
                Vec::new()
            }
            "pop" => {
                let i = match r.u64()? {
                    u64::MAX => s
                        .items
                        .len()
                        .checked_sub(1)
                        .ok_or_else(|| index_error("pop from an empty list"))?,
                    i => at(s.items.len(), i, what)?,
                };
                r.end()?;
                let v = s.items.remove(i);
                s.version += 1;
                return Ok(v);
            }
            "remove" => {
                let v = r.bytes()?;
                r.end()?;
                match s.items.iter().position(|x| x == v) {
                    Some(i) => {
                        s.items.remove(i);
                    }
                    None => return Err(index_error("list.remove: value not in the list")),
                }
                Vec::new()
            }
            "reverse" => {
                r.end()?;
                s.items.reverse();
                Vec::new()
            }
            "clear" => {
                r.end()?;
                s.items.clear();
                Vec::new()
            }
            "replace_if" => {
                let version = r.u64()?;
                let vals = r.all()?;
                if version != s.version {
                    return encode_reply(&false);
                }
                s.items = vals.into_iter().map(<[u8]>::to_vec).collect();
                s.version += 1;
                return encode_reply(&true);
            }
            _ => return Err(no_method(self.typeid(), method)),
        };
        s.version += 1;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// Namespace and Value

#[derive(Default)]
struct NamespaceObj(Mutex<BTreeMap<String, Vec<u8>>>);

fn name_of(b: &[u8]) -> Result<&str, CallError> {
    std::str::from_utf8(b).map_err(|_| bad())
}

impl Served for NamespaceObj {
    fn call(&self, method: &str, args: &[u8], _cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        let mut r = Reader(args);
        let mut m = lock(&self.0);
        match method {
            "get" => {
                let name = name_of(r.bytes()?)?;
                r.end()?;
                Ok(option(m.get(name).map(Vec::as_slice)))
            }
            "set" => {
                let name = name_of(r.bytes()?)?;
                let v = r.bytes()?;
                r.end()?;
                m.insert(name.to_string(), v.to_vec());
                unit()
            }
            "del" => {
                let name = name_of(r.bytes()?)?;
                r.end()?;
                encode_reply(&m.remove(name).is_some())
            }
            "names" => {
                r.end()?;
                encode_reply(&m.keys().collect::<Vec<_>>())
            }
            _ => Err(no_method(NAMESPACE, method)),
        }
    }
}

/// A value and its version (bumped by every change, for `update`).
struct ValueObj(Mutex<(u64, Vec<u8>)>);

impl Served for ValueObj {
    fn call(&self, method: &str, args: &[u8], _cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        let mut r = Reader(args);
        let mut s = lock(&self.0);
        match method {
            "get" => {
                r.end()?;
                Ok(s.1.clone())
            }
            "set" => {
                let v = r.bytes()?;
                r.end()?;
                s.1 = v.to_vec();
                s.0 += 1;
                unit()
            }
            "snapshot" => {
                r.end()?;
                let mut out = Vec::with_capacity(s.1.len() + 10);
                varint(&mut out, s.0);
                out.extend_from_slice(&s.1);
                Ok(out)
            }
            "replace_if" => {
                let version = r.u64()?;
                let v = r.bytes()?;
                r.end()?;
                if version != s.0 {
                    return encode_reply(&false);
                }
                s.1 = v.to_vec();
                s.0 += 1;
                encode_reply(&true)
            }
            _ => Err(no_method(VALUE, method)),
        }
    }
}

// ---------------------------------------------------------------------------------
// Client side.

fn decode<R: DeserializeOwned>(bytes: Vec<u8>) -> Result<R> {
    codec::decode_owned(bytes, 0, Vec::new())
}

/// The calls a list and an array answer alike: indexed reads and writes, the length,
/// copies.
struct Indexed<'a, T>(&'a ProxyCore, PhantomData<fn() -> T>);

impl<T: Serialize + DeserializeOwned> Indexed<'_, T> {
    fn get(&self, i: usize) -> Result<T> {
        decode(self.0.call_raw("get", &Args::to(self.0).u64(i as u64).0)?)
    }

    fn set(&self, i: usize, v: &T) -> Result<()> {
        let args = Args::to(self.0).u64(i as u64).value(v)?;
        self.0.call_raw("set", &args.0).map(drop)
    }

    fn len(&self) -> Result<usize> {
        decode::<u64>(self.0.call_raw("len", &[])?).map(|n| n as usize)
    }

    fn to_vec(&self) -> Result<Vec<T>> {
        decode(self.0.call_raw("to_vec", &[])?)
    }

    fn slice(&self, start: usize, end: usize) -> Result<Vec<T>> {
        let args = Args::to(self.0).u64(start as u64).u64(end as u64);
        decode(self.0.call_raw("slice", &args.0)?)
    }
}

/// Implements `Clone`, `Debug`, serde (as the core) and [`Proxy`] for a typed proxy.
macro_rules! proxy_basics {
    ($name:ident [$($p:ident),*] $typeid:expr) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { core: self.core.clone(), _types: PhantomData }
            }
        }
        impl<$($p),*> fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.core).finish()
            }
        }
        impl<$($p),*> Serialize for $name<$($p),*> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.core.serialize(s)
            }
        }
        impl<'de, $($p),*> Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let core = ProxyCore::deserialize(d)?;
                if core.typeid() != $typeid {
                    return Err(serde::de::Error::custom(format!(
                        "a proxy of a {} received as a {}",
                        core.typeid(),
                        stringify!($name)
                    )));
                }
                Ok($name { core, _types: PhantomData })
            }
        }
        impl<$($p),*> Proxy for $name<$($p),*> {
            const TYPEID: &'static str = $typeid;
            fn from_core(core: ProxyCore) -> Self {
                $name { core, _types: PhantomData }
            }
            fn core(&self) -> &ProxyCore {
                &self.core
            }
        }
    };
}

/// A proxy of a dict held by a manager (Python's `DictProxy`, from
/// [`Manager::dict`]): keys of type `K`, values of type `V`.
///
/// Keys are compared by their encoding (see the [module](crate::Manager) docs): for a
/// dict with keys of several types, as Python allows, use [`Key`] (or an enum of your
/// own). Entries keep their insertion order, as in Python. Dropping the proxy lets go
/// of its reference.
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let d = m.dict::<String, i32>()?;
/// d.set(&"a".into(), &1)?;
/// assert_eq!(d.get(&"a".into())?, Some(1));
/// assert_eq!(d.get(&"b".into())?, None);
/// assert_eq!(d.pop(&"a".into())?, Some(1));
/// assert!(d.is_empty()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct DictProxy<K, V> {
    core: ProxyCore,
    _types: PhantomData<fn() -> (K, V)>,
}

proxy_basics!(DictProxy [K, V] DICT);

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn key(&self, method: &str, k: &K) -> Result<Vec<u8>> {
        self.core
            .call_raw(method, &Args::to(&self.core).value(k)?.0)
    }
    fn pair(&self, method: &str, k: &K, v: &V) -> Result<Vec<u8>> {
        self.core
            .call_raw(method, &Args::to(&self.core).value(k)?.value(v)?.0)
    }

    /// The value of `k`, or `None` (Python's `d.get(k)`; `d[k]` raising `KeyError` is
    /// `get(k)?.ok_or(..)`).
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        decode(self.key("get", k)?)
    }

    /// Sets `k` to `v` (Python's `d[k] = v`).
    pub fn set(&self, k: &K, v: &V) -> Result<()> {
        self.pair("set", k, v).map(drop)
    }

    /// Sets `k` to `v` and returns the value it replaces, as `HashMap::insert` does.
    pub fn insert(&self, k: &K, v: &V) -> Result<Option<V>> {
        decode(self.pair("insert", k, v)?)
    }

    /// Removes `k` and returns its value (Python's `d.pop(k, None)`; `del d[k]`).
    pub fn pop(&self, k: &K) -> Result<Option<V>> {
        decode(self.key("pop", k)?)
    }

    /// Whether `k` has a value (Python's `k in d`).
    pub fn contains(&self, k: &K) -> Result<bool> {
        decode(self.key("contains", k)?)
    }

    /// The value of `k`, setting it to `default` first if it has none (Python's
    /// `setdefault`).
    pub fn setdefault(&self, k: &K, default: &V) -> Result<V> {
        decode(self.pair("setdefault", k, default)?)
    }

    /// Removes and returns the entry set last (Python's `popitem`), `None` when empty.
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        decode(self.core.call_raw("popitem", &[])?)
    }

    /// Sets every pair of `items` in one request (Python's `update`).
    pub fn update<'a>(&self, items: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        let mut a = Args::to(&self.core);
        for (k, v) in items {
            a = a.value(k)?.value(v)?;
        }
        self.core.call_raw("update", &a.0).map(drop)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.core.call_raw("clear", &[]).map(drop)
    }

    /// The number of entries (Python's `len(d)`).
    pub fn len(&self) -> Result<usize> {
        decode::<u64>(self.core.call_raw("len", &[])?).map(|n| n as usize)
    }

    /// Whether the dict has no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        decode(self.core.call_raw("keys", &[])?)
    }

    /// The values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        decode(self.core.call_raw("values", &[])?)
    }

    /// The entries, in insertion order (Python's `items()`).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        decode(self.core.call_raw("items", &[])?)
    }

    /// A copy of the whole dict in this process (Python's `d.copy()`), into any
    /// collection of pairs: a `HashMap`, a `BTreeMap`, a `Vec`.
    pub fn copy<C: FromIterator<(K, V)>>(&self) -> Result<C> {
        Ok(self.items()?.into_iter().collect())
    }
}

/// A proxy of a list held by a manager (Python's `ListProxy`, from
/// [`Manager::list`]).
///
/// Indices are `usize` from the front; Python's negative indices are written from
/// the length (`l.get(l.len()? - 1)`), or with [`pop`](Self::pop) for the last
/// element. An index out of range is [`Error::InvalidArgument`](crate::Error::InvalidArgument) (Python's
/// `IndexError`), as is [`remove`](Self::remove) or [`index`](Self::index) of a value
/// not there (Python's `ValueError`). Values are compared by their encoding.
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let l = m.list_from(&[3, 1, 2])?;
/// l.append(&0)?;
/// l.sort()?;
/// assert_eq!(l.to_vec()?, vec![0, 1, 2, 3]);
/// assert_eq!(l.pop()?, 3);
/// assert!(l.get(10).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ListProxy<T> {
    core: ProxyCore,
    _types: PhantomData<fn() -> T>,
}

proxy_basics!(ListProxy [T] LIST);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    fn indexed(&self) -> Indexed<'_, T> {
        Indexed(&self.core, PhantomData)
    }

    /// Appends `v`.
    pub fn append(&self, v: &T) -> Result<()> {
        self.core
            .call_raw("append", &Args::to(&self.core).value(v)?.0)
            .map(drop)
    }

    /// Appends every value of `items` in one request.
    pub fn extend<'a>(&self, items: impl IntoIterator<Item = &'a T>) -> Result<()>
    where
        T: 'a,
    {
        self.core
            .call_raw("extend", &Args::to(&self.core).values(items)?.0)
            .map(drop)
    }

    /// The value at index `i` (Python's `l[i]`).
    pub fn get(&self, i: usize) -> Result<T> {
        self.indexed().get(i)
    }

    /// Replaces the value at index `i` (Python's `l[i] = v`).
    pub fn set(&self, i: usize, v: &T) -> Result<()> {
        self.indexed().set(i, v)
    }

    /// Inserts `v` before index `i`; an index past the end appends, as in Python.
    pub fn insert(&self, i: usize, v: &T) -> Result<()> {
        self.core
            .call_raw("insert", &Args::to(&self.core).u64(i as u64).value(v)?.0)
            .map(drop)
    }

    /// Removes and returns the last value; [`Error::InvalidArgument`](crate::Error::InvalidArgument) when empty.
    pub fn pop(&self) -> Result<T> {
        decode(
            self.core
                .call_raw("pop", &Args::to(&self.core).u64(u64::MAX).0)?,
        )
    }

    /// Removes and returns the value at index `i` (Python's `l.pop(i)`).
    pub fn pop_at(&self, i: usize) -> Result<T> {
        decode(
            self.core
                .call_raw("pop", &Args::to(&self.core).u64(i as u64).0)?,
        )
    }

    /// Removes the first value equal to `v`.
    pub fn remove(&self, v: &T) -> Result<()> {
        self.core
            .call_raw("remove", &Args::to(&self.core).value(v)?.0)
            .map(drop)
    }

    /// The index of the first value equal to `v`.
    pub fn index(&self, v: &T) -> Result<usize> {
        decode::<u64>(
            self.core
                .call_raw("index", &Args::to(&self.core).value(v)?.0)?,
        )
        .map(|i| i as usize)
    }

    /// How many values equal `v`.
    pub fn count(&self, v: &T) -> Result<usize> {
        decode::<u64>(
            self.core
                .call_raw("count", &Args::to(&self.core).value(v)?.0)?,
        )
        .map(|i| i as usize)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        self.core.call_raw("reverse", &[]).map(drop)
    }

    /// Sorts the list. The server cannot compare values it keeps only encoded, so this
    /// process sorts a copy and puts it back if nobody changed the list meanwhile,
    /// trying again otherwise: to the others it happens at once, as Python's does.
    pub fn sort(&self) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by(Ord::cmp)
    }

    /// Sorts the list with a comparison, as [`sort`](Self::sort) does.
    pub fn sort_by(&self, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) -> Result<()> {
        loop {
            let (version, mut items): (u64, Vec<T>) = decode(self.core.call_raw("snapshot", &[])?)?;
            items.sort_by(&mut cmp);
            let a = Args::to(&self.core).u64(version).values(&items)?;
            if decode::<bool>(self.core.call_raw("replace_if", &a.0)?)? {
                return Ok(());
            }
        }
    }

    /// The number of values.
    pub fn len(&self) -> Result<usize> {
        self.indexed().len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of the whole list in this process (Python's `l[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.indexed().to_vec()
    }

    /// A copy of the values from index `start` up to `end` (clamped to the list, as
    /// Python's `l[start:end]`).
    pub fn slice(&self, start: usize, end: usize) -> Result<Vec<T>> {
        self.indexed().slice(start, end)
    }

    /// Removes every value.
    pub fn clear(&self) -> Result<()> {
        self.core.call_raw("clear", &[]).map(drop)
    }
}

/// A proxy of a fixed-length array held by a manager (Python's
/// `SyncManager.Array`, from [`Manager::array`]): a list whose length never changes.
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let a = m.array(&[0.0f64; 4])?;
/// a.set(1, &2.5)?;
/// a.set_slice(2, &[1.0, 1.5])?;
/// assert_eq!(a.to_vec()?, vec![0.0, 2.5, 1.0, 1.5]);
/// assert_eq!(a.slice(1, 3)?, vec![2.5, 1.0]);
/// assert!(a.set(4, &0.0).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ArrayProxy<T> {
    core: ProxyCore,
    _types: PhantomData<fn() -> T>,
}

proxy_basics!(ArrayProxy [T] ARRAY);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    fn indexed(&self) -> Indexed<'_, T> {
        Indexed(&self.core, PhantomData)
    }

    /// The value at index `i`.
    pub fn get(&self, i: usize) -> Result<T> {
        self.indexed().get(i)
    }

    /// Replaces the value at index `i`.
    pub fn set(&self, i: usize, v: &T) -> Result<()> {
        self.indexed().set(i, v)
    }

    /// The length.
    pub fn len(&self) -> Result<usize> {
        self.indexed().len()
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of the whole array.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.indexed().to_vec()
    }

    /// A copy of the values from `start` up to `end` (clamped to the array).
    pub fn slice(&self, start: usize, end: usize) -> Result<Vec<T>> {
        self.indexed().slice(start, end)
    }

    /// Replaces the values from index `start` on with `values` (Python's
    /// `a[start:start + len(values)] = values`); an error if they do not fit.
    pub fn set_slice(&self, start: usize, values: &[T]) -> Result<()> {
        self.core
            .call_raw(
                "set_slice",
                &Args::to(&self.core).u64(start as u64).values(values)?.0,
            )
            .map(drop)
    }
}

/// A proxy of a namespace held by a manager (Python's `Namespace`, from
/// [`Manager::namespace`]): named fields, each holding any serde value.
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let ns = m.namespace()?;
/// ns.set("x", &10)?;
/// ns.set("name", &"job".to_string())?;
/// assert_eq!(ns.get::<i32>("x")?, Some(10));
/// assert_eq!(ns.get::<i32>("y")?, None);
/// assert_eq!(ns.names()?, vec!["name".to_string(), "x".to_string()]);
/// assert!(ns.del("x")?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamespaceProxy {
    core: ProxyCore,
}

impl Proxy for NamespaceProxy {
    const TYPEID: &'static str = NAMESPACE;
    fn from_core(core: ProxyCore) -> Self {
        NamespaceProxy { core }
    }
    fn core(&self) -> &ProxyCore {
        &self.core
    }
}

impl NamespaceProxy {
    /// The field `name` (Python's `ns.name`), `None` if it is not set;
    /// [`Error::Decode`](crate::Error::Decode) if it holds a value of another type.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        decode(
            self.core
                .call_raw("get", &Args::to(&self.core).bytes(name.as_bytes()).0)?,
        )
    }

    /// Sets the field `name` (Python's `ns.name = v`).
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, v: &T) -> Result<()> {
        self.core
            .call_raw(
                "set",
                &Args::to(&self.core).bytes(name.as_bytes()).value(v)?.0,
            )
            .map(drop)
    }

    /// Removes the field `name` (Python's `del ns.name`): whether it was set.
    pub fn del(&self, name: &str) -> Result<bool> {
        decode(
            self.core
                .call_raw("del", &Args::to(&self.core).bytes(name.as_bytes()).0)?,
        )
    }

    /// The names of the fields set, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        decode(self.core.call_raw("names", &[])?)
    }
}

/// A proxy of one value held by a manager (Python's `SyncManager.Value`, from
/// [`Manager::value`]).
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let v = m.value(&1u64)?;
/// v.set(&5)?;
/// assert_eq!(v.update(|x| x * 2)?, 10);
/// assert_eq!(v.get()?, 10);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ValueProxy<T> {
    core: ProxyCore,
    _types: PhantomData<fn() -> T>,
}

proxy_basics!(ValueProxy [T] VALUE);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value (Python's `v.value`).
    pub fn get(&self) -> Result<T> {
        decode(self.core.call_raw("get", &[])?)
    }

    /// Replaces the value (Python's `v.value = x`).
    pub fn set(&self, v: &T) -> Result<()> {
        self.core
            .call_raw("set", &Args::to(&self.core).value(v)?.0)
            .map(drop)
    }

    /// Replaces the value with `f(value)` as one step: no other change comes between
    /// the read and the write (the value is put back only if unchanged, else `f` runs
    /// again on the newer one); returns the new value. Python's
    /// `with v.get_lock(): v.value += 1` for a managed value.
    pub fn update(&self, mut f: impl FnMut(T) -> T) -> Result<T> {
        loop {
            let (version, v): (u64, T) = decode(self.core.call_raw("snapshot", &[])?)?;
            let new = f(v);
            let a = Args::to(&self.core).u64(version).value(&new)?;
            if decode::<bool>(self.core.call_raw("replace_if", &a.0)?)? {
                return Ok(new);
            }
        }
    }
}

/// A dict key of one of Python's common key types, for a [`DictProxy`] whose keys
/// mix types as Python's dicts may: `d[1]`, `d['a']`, `d[2.5]`.
///
/// Keys are equal when they have the same variant and value; a float compares by its
/// bits (so `Key::Float(f64::NAN)` finds itself, and `0.0` and `-0.0` differ), and
/// `Key::Int(1)` differs from `Key::Float(1.0)`, where Python would merge them. It
/// orders integers, then strings, then floats (by `total_cmp`), and prints as Python's
/// `repr` does.
///
/// ```
/// use multiproc::Key;
/// let m = multiproc::Manager::start()?;
/// let d = m.dict::<Key, String>()?;
/// d.set(&1.into(), &"int".into())?;
/// d.set(&"one".into(), &"str".into())?;
/// d.set(&1.5.into(), &"float".into())?;
/// assert_eq!(d.get(&Key::Int(1))?, Some("int".into()));
/// assert_eq!(d.get(&Key::Float(1.5))?.as_deref(), Some("float"));
/// assert_eq!(Key::from("one").to_string(), "'one'");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A string key.
    Str(String),
    /// A float key, compared by its bits.
    Float(f64),
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Key::Int(i) => (0u8, *i).hash(h),
            Key::Str(s) => (1u8, s).hash(h),
            Key::Float(f) => (2u8, f.to_bits()).hash(h),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            (Key::Float(a), Key::Float(b)) => {
                // Equal bits are equal keys; otherwise the total order.
                if a.to_bits() == b.to_bits() {
                    Ordering::Equal
                } else {
                    a.total_cmp(b)
                }
            }
            (Key::Int(_), _) | (Key::Str(_), Key::Float(_)) => Ordering::Less,
            _ => Ordering::Greater,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => write!(f, "'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Key::Float(x) if x.is_nan() => write!(f, "nan"),
            Key::Float(x) if x.is_infinite() => write!(f, "{}inf", if *x < 0.0 { "-" } else { "" }),
            Key::Float(x) if x.fract() == 0.0 => write!(f, "{x:.1}"),
            Key::Float(x) => write!(f, "{x}"),
        }
    }
}

impl From<i64> for Key {
    fn from(i: i64) -> Key {
        Key::Int(i)
    }
}

impl From<i32> for Key {
    fn from(i: i32) -> Key {
        Key::Int(i.into())
    }
}

impl From<f64> for Key {
    fn from(x: f64) -> Key {
        Key::Float(x)
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Str(s.to_string())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Str(s)
    }
}

// ---------------------------------------------------------------------------------
// Manager methods.

impl Manager {
    fn make<P: Proxy>(&self, args: &[u8]) -> Result<P> {
        ProxyCore::create_raw(self, P::TYPEID, "", args).map(P::from_core)
    }

    /// A new empty dict in the manager (Python's `manager.dict()`).
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<u32, String>()?;
    /// assert_eq!(d.len()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>> {
        self.make(&[])
    }

    /// A new dict holding `items` (Python's `manager.dict(mapping)`).
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict_from([(1, "a".to_string()), (2, "b".to_string())])?;
    /// assert_eq!(d.keys()?, vec![1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dict_from<K: Serialize, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>> {
        let mut a = Args::default();
        for (k, v) in items {
            a = a.value(&k)?.value(&v)?;
        }
        self.make(&a.0)
    }

    /// A new empty list (Python's `manager.list()`).
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<String>()?;
    /// l.append(&"x".into())?;
    /// assert_eq!(l.len()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn list<T>(&self) -> Result<ListProxy<T>> {
        self.make(&[])
    }

    /// A new list holding `items` (Python's `manager.list(sequence)`).
    pub fn list_from<T: Serialize>(&self, items: &[T]) -> Result<ListProxy<T>> {
        self.make(&Args::default().values(items)?.0)
    }

    /// A new namespace (Python's `manager.Namespace()`).
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        self.make(&[])
    }

    /// A new value (Python's `manager.Value(typecode, value)`; the type is `T`'s).
    pub fn value<T: Serialize>(&self, v: &T) -> Result<ValueProxy<T>> {
        self.make(&encode_args(v)?)
    }

    /// A new array holding `items` (Python's `manager.Array(typecode, sequence)`); its
    /// length never changes.
    pub fn array<T: Serialize>(&self, items: &[T]) -> Result<ArrayProxy<T>> {
        self.make(&Args::default().values(items)?.0)
    }
}

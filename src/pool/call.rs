//! What a worker runs for a task: the calls of one target on a chunk of arguments,
//! reached through the offset of an entry record of this binary (as a new process's
//! entry is), so that a task message can name only functions the binary has.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::process::{Target, panic_parts};
use crate::sys::image::{self, EntryContext, EntryRecord};
use crate::wire::bulk::TAKE_OVER_FROM;
use crate::wire::codec;

/// Where a call entry finds its arguments and leaves its encoded outcome. A worker keeps
/// one for all its chunks, so that the memory of one outcome serves the next.
#[derive(Default)]
pub(crate) struct CallCtx {
    /// Bytes at the front of the arguments' buffer that are not theirs (the header of
    /// the order they came in).
    skip: Cell<usize>,
    /// The encoded outcome of the last call.
    pub(crate) out: RefCell<Vec<u8>>,
    /// Vectors of arguments and values of earlier chunks, emptied, whose memory serves
    /// the next chunks of their types (fresh memory costs a page fault per 4 KiB).
    spare: RefCell<Vec<Box<dyn Any>>>,
    /// Whether the buffer a chunk's message came in is kept once its arguments are
    /// decoded (an MPI rank receives the next message into it).
    keep_messages: bool,
    /// That buffer, emptied, while no one has taken it.
    message: RefCell<Option<Vec<u8>>>,
}

/// The most memory a spare vector keeps.
const SPARE_BYTES: usize = 16 << 20;

impl CallCtx {
    /// A context that keeps the buffers of chunks' messages (see
    /// [`take_message`](Self::take_message)).
    #[cfg(feature = "mpi")]
    pub(crate) fn keeping_messages() -> CallCtx {
        CallCtx {
            keep_messages: true,
            ..CallCtx::default()
        }
    }

    /// The buffer the last chunk's message came in, emptied, when its arguments did not
    /// keep it (a long run of bytes at the end of a message becomes a `Vec<u8>`
    /// argument in that buffer).
    #[cfg(feature = "mpi")]
    pub(crate) fn take_message(&self) -> Option<Vec<u8>> {
        self.message.borrow_mut().take()
    }

    fn keep_message(&self, mut m: Vec<u8>) {
        if self.keep_messages {
            m.clear();
            *self.message.borrow_mut() = Some(m);
        }
    }

    /// An empty vector, with the memory of an earlier one of its type if there is one.
    fn take_spare<T: 'static>(&self) -> Vec<T> {
        let mut spare = self.spare.borrow_mut();
        match spare.iter().position(|v| v.is::<Vec<T>>()) {
            Some(i) => spare
                .swap_remove(i)
                .downcast::<Vec<T>>()
                .map(|v| *v)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Keeps `v`'s memory for the next chunk (not a large one's).
    fn keep_spare<T: 'static>(&self, mut v: Vec<T>) {
        v.clear();
        if v.capacity().saturating_mul(size_of::<T>().max(1)) <= SPARE_BYTES {
            self.spare.borrow_mut().push(Box::new(v));
        }
    }
}

impl EntryContext for CallCtx {
    const KIND: u64 = u64::from_le_bytes(*b"poolcall");
}

/// An entry that runs calls in a worker.
pub(crate) type CallEntry = &'static EntryRecord<CallCtx>;

/// Why one call (or a whole chunk) produced no value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    /// The target panicked.
    Panicked {
        message: String,
        location: Option<String>,
    },
    /// Its arguments did not decode, or its result did not encode.
    Codec(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Panicked { message, location } => Error::Panicked { message, location },
            Failure::Codec(m) => Error::Decode(m),
        }
    }
}

/// What a chunk gives back.
#[derive(Serialize, Deserialize)]
pub(crate) enum ChunkOutcome<R> {
    /// Every call returned: the values, in order (the common case, without a tag per
    /// value).
    All(Vec<R>),
    /// Some call failed: a result per call.
    Each(Vec<Result<R, Failure>>),
    /// The chunk as a whole failed (its arguments did not decode).
    Failed(Failure),
}

/// The encoded vector of a chunk's outcome when every call returned
/// ([`ChunkOutcome::All`]): postcard writes an enum's variant index as a varint before
/// its content, and `All`'s is 0, one byte.
pub(crate) fn all_values(outcome: &[u8]) -> Option<&[u8]> {
    match outcome.split_first() {
        Some((0, values)) => Some(values),
        _ => None,
    }
}

/// [`ChunkOutcome`] as a worker writes it, from what it holds.
#[derive(Serialize)]
enum OutcomeRef<'a, R> {
    All(&'a [R]),
    Each(Vec<Result<&'a R, Failure>>),
    Failed(Failure),
}

/// The entry running `F` on a chunk of `A`s.
pub(crate) fn chunk_entry<F, A, R>() -> CallEntry
where
    F: Target<A, R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    const { &EntryRecord::new(run_chunk::<F, A, R>) }
}

/// The entry running an initializer `F` on its argument.
pub(crate) fn init_entry<F, A>() -> CallEntry
where
    F: Target<A, ()>,
    A: DeserializeOwned + 'static,
{
    const { &EntryRecord::new(run_init::<F, A>) }
}

fn call<A, R>(f: impl Fn(A) -> R, a: A) -> Result<R, Failure> {
    catch_unwind(AssertUnwindSafe(|| f(a))).map_err(|p| {
        let (message, location) = panic_parts(p);
        Failure::Panicked { message, location }
    })
}

fn encode_into<T: Serialize>(ctx: &CallCtx, value: &T) -> Result<(), Error> {
    let mut out = ctx.out.borrow_mut();
    *out = codec::encode_plain_reusing(value, std::mem::take(&mut *out))?;
    Ok(())
}

fn run_chunk<F, A, R>(args: Vec<u8>, _fds: Vec<OwnedFd>, ctx: &CallCtx) -> i32
where
    F: Target<A, R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let skip = ctx.skip.get();
    let message = args.get(skip..).unwrap_or_default();
    // Into the memory of the last chunk's arguments, unless the message is long enough
    // for a vector of bytes at its end to take over its buffer.
    let decoded = if message.len() < TAKE_OVER_FROM {
        let mut items = ctx.take_spare::<A>();
        let decoded = codec::decode_seq_append(message, None, &mut items).map(|()| items);
        ctx.keep_message(args);
        decoded
    } else {
        let (decoded, back) = codec::decode_owned_or_back(args, skip, Vec::new());
        if let Some(m) = back {
            ctx.keep_message(m);
        }
        decoded
    };
    let mut items: Vec<A> = match decoded {
        Ok(items) => items,
        Err(e) => {
            let failure = Failure::Codec(format!("cannot decode the arguments: {e}"));
            let _ = encode_into(ctx, &OutcomeRef::<R>::Failed(failure));
            return 1;
        }
    };
    let f = image::summon::<F>();
    // The values in a vector of their own while every call returns (so that a vector
    // of numbers is written as one block), a result per call from the first failure on.
    let mut values: Vec<R> = ctx.take_spare();
    values.reserve(items.len());
    let mut each: Option<Vec<Result<R, Failure>>> = None;
    let mut rest = items.drain(..);
    // One guard against panics for all the calls, not one per call: a call that panics
    // is the one after the last value.
    let all = catch_unwind(AssertUnwindSafe(|| {
        for a in rest.by_ref() {
            values.push(f(a));
        }
    }));
    if let Err(p) = all {
        let (message, location) = panic_parts(p);
        let mut e: Vec<Result<R, Failure>> = values.drain(..).map(Ok).collect();
        e.push(Err(Failure::Panicked { message, location }));
        e.extend(rest.map(|a| call(f, a)));
        each = Some(e);
    } else {
        drop(rest);
    }
    ctx.keep_spare(items);
    let results: Vec<Result<R, Failure>> = match each {
        None => {
            if encode_into(ctx, &OutcomeRef::All(&values)).is_ok() {
                ctx.keep_spare(values);
                return 0;
            }
            values.into_iter().map(Ok).collect()
        }
        Some(e) => {
            let refs = e
                .iter()
                .map(|r| r.as_ref().map_err(Failure::clone))
                .collect();
            if encode_into(ctx, &OutcomeRef::Each(refs)).is_ok() {
                return 0;
            }
            e
        }
    };
    // Some result does not encode: that call alone fails.
    let results: Vec<Result<&R, Failure>> = results
        .iter()
        .map(|r| match r {
            Ok(v) => match codec::encode_plain(v) {
                Ok(_) => Ok(v),
                Err(e) => Err(Failure::Codec(format!("cannot encode the result: {e}"))),
            },
            Err(f) => Err(f.clone()),
        })
        .collect();
    match encode_into(ctx, &OutcomeRef::Each(results)) {
        Ok(()) => 0,
        Err(e) => {
            let failure = Failure::Codec(format!("cannot encode the results: {e}"));
            let _ = encode_into(ctx, &OutcomeRef::<R>::Failed(failure));
            1
        }
    }
}

fn run_init<F, A>(args: Vec<u8>, fds: Vec<OwnedFd>, ctx: &CallCtx) -> i32
where
    F: Target<A, ()>,
    A: DeserializeOwned,
{
    let outcome: Result<(), Failure> = match codec::decode_owned::<A>(args, ctx.skip.get(), fds) {
        Ok(a) => call(image::summon::<F>(), a),
        Err(e) => Err(Failure::Codec(format!(
            "cannot decode the initializer's arguments: {e}"
        ))),
    };
    let code = i32::from(outcome.is_err());
    let _ = encode_into(ctx, &outcome);
    code
}

/// Runs the entry at `offset` on `args` (from byte `skip` on; with the descriptors of
/// its handles), leaving its encoded outcome in `ctx.out`; or why it could not run.
pub(crate) fn run(
    offset: u64,
    args: Vec<u8>,
    skip: usize,
    fds: Vec<OwnedFd>,
    ctx: &CallCtx,
) -> Result<(), Failure> {
    let entry = image::entry_at::<CallCtx>(offset)
        .ok_or_else(|| Failure::Codec("a task names no function of this program".into()))?;
    ctx.skip.set(skip);
    entry(args, fds, ctx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_of_an_outcome_where_every_call_returned_follow_its_first_byte() {
        let values = vec![1u64, 300, u64::MAX];
        let outcome = codec::encode_plain(&OutcomeRef::All(&values)).unwrap();
        assert_eq!(
            all_values(&outcome),
            Some(&codec::encode_plain(&values).unwrap()[..])
        );
        let back: ChunkOutcome<u64> = codec::decode(&outcome, Vec::new()).unwrap();
        assert!(matches!(back, ChunkOutcome::All(v) if v == values));
        let each = codec::encode_plain(&OutcomeRef::Each(vec![Ok(&1u64)])).unwrap();
        assert_eq!(all_values(&each), None);
        let failed =
            codec::encode_plain(&OutcomeRef::<u64>::Failed(Failure::Codec("x".into()))).unwrap();
        assert_eq!(all_values(&failed), None);
    }
}

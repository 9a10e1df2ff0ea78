//! The ring in shared memory under every queue: its layout, how an item goes in and
//! comes out, how waiters sleep, and how the ring mends itself after a process died in
//! the middle of a `put` or a `get`.
//!
//! Producers take the put lock, write a record past the published end (`tail`), then
//! publish it with one atomic store of `tail`; consumers take the get lock, read the
//! record at `head`, and release its space with one store of `head`. A record that is
//! not published does not exist for anybody, so a producer killed before its store
//! leaves nothing behind, and a consumer killed before its store leaves the item for
//! the next one. Both locks record their owner ([`OwnerLock`]): a waiter takes over a
//! lock whose holder died.
//!
//! `tail` and `head` are 64-bit words: a byte position in the low half (the futex word
//! that waiters sleep on) and a count of whole items in the high half, so that an
//! item's bytes and its count are published by the same store.
//!
//! A record is an 8-byte header (length, kind, a check mark) and its payload, padded to
//! 8 bytes; it may wrap around the end of the ring. An item whose record takes at most a
//! quarter of the ring is one record (`WHOLE`); a longer one is streamed as a `FIRST`
//! record (which also gives the total length), `MORE` records and a `LAST` one, written
//! as room frees up while the consumer reads. A stream always leaves room for one more
//! header, so that a producer taking over the put lock from one that died mid-stream can
//! close the item with an `ABORT` record, which makes the consumer drop what it got of
//! it.
//!
//! Waiters spin briefly, then sleep on the futex with a flag raised; the other side
//! makes the wake-up call only when it finds the flag raised, so a queue that keeps
//! moving costs no system call per item.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::deadline;
use crate::error::Error;
use crate::sync::owner_lock::{LOCK_SIZE, OwnerLock, Taken};
use crate::sync::{spin_for, spin_until};
use crate::sys::futex;
use crate::sys::pages;
use crate::sys::shm::Region;

const MAGIC: u32 = u32::from_le_bytes(*b"mpQu");
const VERSION: u32 = 1;

// The layout. Each group sits on cache lines of its own, so that producers and
// consumers write to different lines.
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 4;
const CAPACITY_AT: usize = 8;
const MAXSIZE_AT: usize = 12;
/// Set by a process that cannot issue heavy fences: every waker then uses full ones.
const STRICT_AT: usize = 16;
const PUT_LOCK_AT: usize = 128;
/// 1 while a producer has published part of a streamed item.
const STREAMING_AT: usize = PUT_LOCK_AT + LOCK_SIZE;
/// The last `head` a producer read: on the producers' line, so that a put reads the
/// consumers' line only when the ring looks full.
const HEAD_SEEN_AT: usize = STREAMING_AT + 8;
pub(super) const TAIL_AT: usize = 256;
const GET_LOCK_AT: usize = 384;
/// The last `tail` a consumer read, likewise.
const TAIL_SEEN_AT: usize = GET_LOCK_AT + LOCK_SIZE;
/// When a consumer last found the ring empty (monotonic nanoseconds), and the pause
/// that sets its pace of looking (see `Ring::pace`).
const EMPTY_SEEN_AT: usize = TAIL_SEEN_AT + 8;
const PACE_AT: usize = EMPTY_SEEN_AT + 8;
pub(super) const HEAD_AT: usize = 512;
/// Items for which `task_done` was called (JoinableQueue).
const DONE_AT: usize = 640;
/// The sleep flags: set by a waiter about to sleep, cleared by whoever wakes it.
const GET_WAITING_AT: usize = 768;
const PUT_WAITING_AT: usize = 832;
const JOIN_WAITING_AT: usize = 896;
/// The table of processes that hold handles (see `putters.rs`).
pub(super) const PUTTERS_AT: usize = 1024;
/// Where the ring's bytes start.
pub(super) const DATA_AT: usize = 16 << 10;

/// The smallest and largest ring (bytes, powers of two).
pub(crate) const MIN_RING_BYTES: usize = 16 << 10;
pub(crate) const MAX_RING_BYTES: usize = 1 << 30;
/// The largest `maxsize`: counts are compared modulo 2^32.
pub(crate) const MAX_MAXSIZE: usize = 1 << 30;

/// The largest item a queue carries, in encoded bytes.
pub const MAX_ITEM_BYTES: usize = 1 << 30;

// Record kinds.
const WHOLE: u8 = 1;
const FIRST: u8 = 2;
const MORE: u8 = 3;
const LAST: u8 = 4;
const ABORT: u8 = 5;

/// The top 24 bits of every record header: a record header is recognised as one.
const HEADER_MARK: u64 = 0x51_70_6d << 40;
const HEADER: usize = 8;
/// Room a stream always leaves free: one header, for the `ABORT` that may end it.
const RESERVE: u32 = HEADER as u32;

/// How often a waiting consumer looks for producers that are gone.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long a waiter spins before it sleeps: briefly, as the other primitives do...
const SPIN: Duration = Duration::from_micros(10);
/// ...but longer in the middle of a streamed item, where the other side is known to be
/// copying a part (a quarter of the ring takes tens of microseconds): a sleep there
/// costs both sides more than the spin.
const STREAM_SPIN: Duration = Duration::from_micros(200);

/// The most pauses between two looks of a spinning waiter.
const BACKOFF_MAX: u32 = 256;
/// Pauses before a consumer's first look when items stream in: long enough for the
/// producer to put several items into lines the consumer then reads once, instead of
/// taking each item the moment it lands (one transfer of two lines per item, which
/// holds both sides to half their speed).
const BACKOFF_STREAM: u32 = 128;
/// A consumer that finds the ring empty twice within this time sees items streaming in
/// one by one...
const STREAM_GAP_NS: u64 = 700;
/// ...and one that waited longer than this, a conversation (a reply to each item),
/// where every look should come at once.
const CONVERSATION_GAP_NS: u64 = 5_000;

/// The longest sleep of a waiter whose heavy fence failed (a wake-up may be missed).
const STRICT_SLEEP: Duration = Duration::from_millis(10);

/// Items up to this many encoded bytes are encoded and decoded in a buffer on the
/// stack, with nothing allocated.
pub(crate) const INLINE: usize = 256;

/// An item's bytes, as [`Ring::get`] took them.
pub(crate) enum Got {
    /// A small item: the first `len` bytes of the caller's buffer.
    Inline(usize),
    /// A larger one.
    Heap(Vec<u8>),
}

/// An item's bytes in two parts: the first, then the second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts<'a>(pub(crate) &'a [u8], pub(crate) &'a [u8]);

impl<'a> Parts<'a> {
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }

    /// The bytes `off..off + n` of the item, as the parts of the two that hold them.
    fn range(&self, off: usize, n: usize) -> (&'a [u8], &'a [u8]) {
        let first = self.0.len();
        let a = &self.0[off.min(first)..(off + n).min(first)];
        let b = &self.1[off.saturating_sub(first)..(off + n).saturating_sub(first)];
        (a, b)
    }
}

/// Why a ring operation did not complete.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The deadline passed (`Full` for a put, `Empty` for a get).
    Timeout,
    /// The ring is empty and no producer is left.
    NoProducers,
    /// Anything else.
    Failed(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Failed(e)
    }
}

#[inline]
fn pos(word: u64) -> u32 {
    word as u32
}

#[inline]
fn count(word: u64) -> u32 {
    (word >> 32) as u32
}

#[inline]
fn word(count: u32, pos: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(pos)
}

/// Bytes a record with `len` payload bytes occupies.
#[inline]
fn record_len(len: usize) -> u32 {
    (HEADER + len.next_multiple_of(8)) as u32
}

/// The ring of one queue, in a shared segment.
#[derive(Clone)]
pub(crate) struct Ring {
    region: Arc<Region>,
    /// Read once when the ring was made or received: a peer rewriting the segment's copy
    /// cannot make this process index outside its mapping.
    capacity: u32,
    maxsize: u32,
    put_lock: OwnerLock,
    get_lock: OwnerLock,
    /// Whether this process's wakers may use light fences (see `futex::light_fence`).
    /// A forked child inherits the registration that allowed it.
    light_fences: bool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("maxsize", &self.maxsize)
            .finish()
    }
}

/// Releases a lock of the ring when the operation ends, however it ends.
struct Held<'a>(&'a OwnerLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.release_guarded();
    }
}

impl Ring {
    /// A new, empty ring of `capacity` bytes (a power of two within the limits) for at
    /// most `maxsize` items (0: no limit).
    pub(crate) fn create(capacity: usize, maxsize: usize) -> Result<Ring, Error> {
        if !capacity.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&capacity) {
            return Err(Error::InvalidArgument(format!(
                "a queue's ring must be a power of two from {MIN_RING_BYTES} to \
                 {MAX_RING_BYTES} bytes, not {capacity}"
            )));
        }
        if maxsize > MAX_MAXSIZE {
            return Err(Error::InvalidArgument(format!(
                "maxsize {maxsize} is above the limit of {MAX_MAXSIZE}"
            )));
        }
        let region = Region::anonymous(DATA_AT + capacity)?;
        let at = |offset| &region.atomics::<1>(offset)[0];
        at(VERSION_AT).store(VERSION, Ordering::Relaxed);
        at(CAPACITY_AT).store(capacity as u32, Ordering::Relaxed);
        at(MAXSIZE_AT).store(maxsize as u32, Ordering::Relaxed);
        at(MAGIC_AT).store(MAGIC, Ordering::Release);
        Ring::attach(region).map_err(Error::state)
    }

    /// The ring in a segment received from another process, checked.
    pub(crate) fn attach(region: Region) -> Result<Ring, String> {
        if region.len() < DATA_AT + MIN_RING_BYTES {
            return Err("a queue handle whose memory is too small".into());
        }
        let at = |offset| region.atomics::<1>(offset)[0].load(Ordering::Acquire);
        if at(MAGIC_AT) != MAGIC {
            return Err("handle is not a queue".into());
        }
        if at(VERSION_AT) != VERSION {
            return Err(format!(
                "a queue of layout version {} (this program knows {VERSION})",
                at(VERSION_AT)
            ));
        }
        let capacity = at(CAPACITY_AT);
        let maxsize = at(MAXSIZE_AT);
        let fits = (capacity as usize)
            .checked_add(DATA_AT)
            .is_some_and(|end| end <= region.len());
        if !capacity.is_power_of_two()
            || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&(capacity as usize))
            || !fits
            || maxsize as usize > MAX_MAXSIZE
        {
            return Err(format!(
                "a queue handle with a corrupt header (ring of {capacity} bytes in a \
                 segment of {}, maxsize {maxsize})",
                region.len()
            ));
        }
        let region = Arc::new(region);
        let lock = |offset| {
            OwnerLock::at(region.clone(), offset).ok_or("a queue handle outside its memory")
        };
        let light_fences = futex::light_fences_allowed();
        if !light_fences {
            region.atomics::<1>(STRICT_AT)[0].store(1, Ordering::Release);
            fence(Ordering::SeqCst);
        }
        Ok(Ring {
            put_lock: lock(PUT_LOCK_AT)?,
            get_lock: lock(GET_LOCK_AT)?,
            region,
            capacity,
            maxsize,
            light_fences,
        })
    }

    /// The segment (to send the ring to another process).
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The item limit (0: none).
    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize as usize
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        &self.region.atomics::<1>(offset)[0]
    }

    fn tail(&self) -> &AtomicU64 {
        self.region.atomic_u64(TAIL_AT)
    }

    fn head(&self) -> &AtomicU64 {
        self.region.atomic_u64(HEAD_AT)
    }

    /// Items published and not yet taken (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Acquire);
        let n = count(tail).wrapping_sub(count(head));
        // A count that went backwards is a moment's view of a concurrent get, or a
        // scribbled word: neither is a number of items.
        if n > u32::MAX / 2 { 0 } else { n as usize }
    }

    // ---- waiting ----

    /// Waits until `check` answers, sleeping on the low half of `word` with `flag` raised.
    /// `check(true)` is called after every sleep that ended with `word` unchanged (a
    /// timeout of the periodic check, a wake-up without news, a signal), and at least
    /// every [`CHECK_INTERVAL`]; `check(false)` otherwise.
    fn wait_on<R>(
        &self,
        word: &AtomicU64,
        flag: &AtomicU32,
        spin: Duration,
        first_look: u32,
        deadline: Option<Instant>,
        mut check: impl FnMut(bool) -> Result<Option<R>, Fail>,
    ) -> Result<R, Fail> {
        if let Some(r) = check(false)? {
            return Ok(r);
        }
        // A `try_` form: no spinning past its deadline.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Fail::Timeout);
        }
        let mut answer = None;
        let (mut skipped, mut every) = (0u32, first_look.max(1));
        spin_for(spin, || {
            // Look less and less often: each look pulls the line the other side is
            // writing, and a waiter that looks after every pause slows a producer
            // down to its own pace, one item per transfer of that line.
            skipped += 1;
            if skipped < every {
                return false;
            }
            skipped = 0;
            every = (every * 2).min(BACKOFF_MAX);
            match check(false) {
                Ok(None) => false,
                Ok(Some(r)) => {
                    answer = Some(Ok(r));
                    true
                }
                Err(e) => {
                    answer = Some(Err(e));
                    true
                }
            }
        });
        if let Some(a) = answer {
            return a;
        }
        let mut next_check = deadline::after(CHECK_INTERVAL);
        let mut periodic = false;
        loop {
            let seen = word.load(Ordering::Acquire);
            if let Some(r) = check(periodic)? {
                return Ok(r);
            }
            let now = Instant::now();
            if next_check.is_some_and(|t| now >= t) {
                next_check = deadline::after(CHECK_INTERVAL);
                if !periodic && let Some(r) = check(true)? {
                    return Ok(r);
                }
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(Fail::Timeout);
            }
            flag.store(1, Ordering::Relaxed);
            // Pairs with the fence in `wake`: either the waker sees the flag, or this
            // thread sees the word it changed (a wake-up lost in between otherwise).
            // Without the heavy fence, wakers that use light ones may miss the flag:
            // sleep in short steps then.
            let mut until = match (deadline, next_check) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            };
            if !futex::heavy_fence() {
                until = match (until, deadline::after(STRICT_SLEEP)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if word.load(Ordering::Relaxed) != seen {
                periodic = false;
                continue;
            }
            futex::wait_low(word, pos(seen), deadline::remaining(until));
            periodic = pos(word.load(Ordering::Acquire)) == pos(seen);
        }
    }

    /// Wakes the waiters of `word` if any sleeps (its flag raised), after `word` changed.
    #[inline]
    fn wake(&self, word: &AtomicU64, flag: &AtomicU32) {
        if self.light_fences && self.word32(STRICT_AT).load(Ordering::Relaxed) == 0 {
            futex::light_fence();
        } else {
            fence(Ordering::SeqCst);
        }
        if flag.load(Ordering::Relaxed) != 0 {
            flag.store(0, Ordering::Relaxed);
            futex::wake_low(word, i32::MAX as u32);
        }
    }

    /// Wakes every consumer that sleeps, so that it looks again for producers (a handle
    /// was closed or dropped).
    pub(crate) fn wake_consumers(&self) {
        self.wake(self.tail(), self.word32(GET_WAITING_AT));
    }

    fn lock<'a>(
        &self,
        lock: &'a OwnerLock,
        deadline: Option<Instant>,
        repair: impl FnOnce(),
    ) -> Result<Held<'a>, Fail> {
        match lock.acquire(deadline, false) {
            Ok(Some(Taken::Clean)) => {}
            Ok(Some(Taken::OwnerDied)) => {
                let held = Held(lock);
                repair();
                lock.mark_consistent();
                return Ok(held);
            }
            Ok(None) => return Err(Fail::Timeout),
            Ok(Some(Taken::Again)) | Err(()) => {
                return Err(Fail::Failed(Error::state(
                    "a queue operation was started from inside another on the same thread",
                )));
            }
        }
        Ok(Held(lock))
    }

    fn corrupt_counters(&self) -> Fail {
        Fail::Failed(Error::Decode(
            "the queue's shared counters are corrupt (its memory was overwritten)".into(),
        ))
    }

    // ---- the bytes ----

    fn write(&self, at: u32, bytes: &[u8]) {
        let cap = self.capacity as usize;
        let i = at as usize & (cap - 1);
        let first = bytes.len().min(cap - i);
        self.region.write_at(DATA_AT + i, &bytes[..first]);
        self.region.write_at(DATA_AT, &bytes[first..]);
    }

    fn read(&self, at: u32, out: &mut [u8]) {
        let cap = self.capacity as usize;
        let i = at as usize & (cap - 1);
        let first = out.len().min(cap - i);
        let (a, b) = out.split_at_mut(first);
        self.region.read_at(DATA_AT + i, a);
        self.region.read_at(DATA_AT, b);
    }

    /// The 8-byte word at ring position `at` (8-aligned, so it never wraps).
    fn header_at(&self, at: u32) -> &AtomicU64 {
        self.region
            .atomic_u64(DATA_AT + (at & (self.capacity - 1)) as usize)
    }

    /// Writes a record at `at`: header, the optional total (a `FIRST` record's), bytes
    /// (in two parts, one after the other).
    fn write_record(&self, at: u32, kind: u8, total: Option<u64>, (a, b): (&[u8], &[u8])) {
        let extra = if total.is_some() { 8 } else { 0 };
        let len = (a.len() + b.len() + extra) as u64;
        self.header_at(at)
            .store(HEADER_MARK | u64::from(kind) << 32 | len, Ordering::Relaxed);
        let mut p = at.wrapping_add(HEADER as u32);
        if let Some(t) = total {
            self.header_at(p).store(t, Ordering::Relaxed);
            p = p.wrapping_add(8);
        }
        self.write(p, a);
        self.write(p.wrapping_add(a.len() as u32), b);
    }

    // ---- put ----

    /// Appends one item's bytes, waiting for room until `deadline`, and for other
    /// producers until `lock_deadline`.
    #[cfg(test)]
    pub(crate) fn put(
        &self,
        item: &[u8],
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
    ) -> Result<(), Fail> {
        self.put_parts(Parts(&[], item), deadline, lock_deadline)
    }

    /// Appends one item given in two parts, its bytes being the first then the second
    /// (a header made apart from a body, which is then not copied to join them);
    /// otherwise as [`put`](Self::put).
    pub(crate) fn put_parts(
        &self,
        item: Parts<'_>,
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
    ) -> Result<(), Fail> {
        if item.len() > MAX_ITEM_BYTES {
            return Err(Fail::Failed(Error::MessageTooLarge {
                len: item.len() as u64,
                limit: MAX_ITEM_BYTES,
            }));
        }
        let _held = self.lock(&self.put_lock, lock_deadline, || self.repair_put())?;
        let rec = record_len(item.len());
        if rec <= self.capacity / 4 {
            let tail = self.wait_room(rec, true, deadline)?;
            self.write_record(pos(tail), WHOLE, None, (item.0, item.1));
            self.publish(tail, rec, 1);
            return Ok(());
        }
        self.stream(item, deadline)
    }

    /// Publishes `rec` more bytes and `items` more whole items after `tail`.
    #[inline]
    fn publish(&self, tail: u64, rec: u32, items: u32) -> u64 {
        let next = word(count(tail).wrapping_add(items), pos(tail).wrapping_add(rec));
        self.tail().store(next, Ordering::Release);
        self.wake(self.tail(), self.word32(GET_WAITING_AT));
        next
    }

    /// Waits (put lock held) until `need` bytes are free and, for a new item, the item
    /// limit allows one more; returns `tail`.
    fn wait_room(&self, need: u32, new_item: bool, deadline: Option<Instant>) -> Result<u64, Fail> {
        let tail = self.tail().load(Ordering::Relaxed);
        if pos(tail) % 8 != 0 {
            return Err(self.corrupt_counters());
        }
        let cap = self.capacity;
        let maxsize = if new_item { self.maxsize } else { 0 };
        let room = |h: u64| {
            let used = pos(tail).wrapping_sub(pos(h));
            let items = count(tail).wrapping_sub(count(h));
            used <= cap && cap - used >= need && (maxsize == 0 || items < maxsize)
        };
        // An earlier reading of `head` (under this lock, acquired then) is still a safe
        // bound: the consumers only ever free more.
        let seen = self.region.atomic_u64(HEAD_SEEN_AT);
        if room(seen.load(Ordering::Relaxed)) {
            return Ok(tail);
        }
        let head = self.head();
        let spin = if new_item { SPIN } else { STREAM_SPIN };
        self.wait_on(head, self.word32(PUT_WAITING_AT), spin, 1, deadline, |_| {
            let h = head.load(Ordering::Acquire);
            seen.store(h, Ordering::Relaxed);
            if pos(tail).wrapping_sub(pos(h)) > cap {
                return Err(self.corrupt_counters());
            }
            Ok(room(h).then_some(tail))
        })
    }

    /// Streams an item longer than a quarter of the ring (put lock held).
    fn stream(&self, item: Parts<'_>, deadline: Option<Instant>) -> Result<(), Fail> {
        let streaming = self.word32(STREAMING_AT);
        // Below the length that streams (a record of more than a quarter of the ring):
        // the first chunk never holds the whole item.
        let chunk_max = (self.capacity / 4) as usize - HEADER;
        let chunk_min = (self.capacity as usize / 8).min(4 << 10);
        let mut off = 0;
        let mut tail = self.wait_room(record_len(8 + chunk_min) + RESERVE, true, deadline)?;
        streaming.store(1, Ordering::Release);
        loop {
            let rest = item.len() - off;
            let used = pos(tail).wrapping_sub(pos(self.head().load(Ordering::Acquire)));
            let free = self.capacity.saturating_sub(used) as usize;
            let extra = if off == 0 { 8 } else { 0 };
            // Whole multiples of 8 keep every record 8-aligned.
            let fit = (free.saturating_sub(HEADER + RESERVE as usize + extra) & !7).min(chunk_max);
            let n = rest.min(fit);
            let kind = match (off == 0, n == rest) {
                (true, _) => FIRST,
                (false, false) => MORE,
                (false, true) => LAST,
            };
            let total = (kind == FIRST).then_some(item.len() as u64);
            self.write_record(pos(tail), kind, total, item.range(off, n));
            let whole_item = u32::from(kind == LAST);
            self.publish(tail, record_len(n + extra), whole_item);
            off += n;
            if off == item.len() {
                break;
            }
            let need = record_len((item.len() - off).min(chunk_min)) + RESERVE;
            match self.wait_room(need, false, deadline) {
                Ok(t) => tail = t,
                Err(e) => {
                    self.abort_stream();
                    return Err(e);
                }
            }
        }
        streaming.store(0, Ordering::Release);
        Ok(())
    }

    /// Ends a stream cut short: an `ABORT` record makes the consumer drop the item's
    /// parts (put lock held; the stream left room for it).
    fn abort_stream(&self) {
        let tail = self.tail().load(Ordering::Relaxed);
        let used = pos(tail).wrapping_sub(pos(self.head().load(Ordering::Acquire)));
        let room = self
            .capacity
            .checked_sub(used)
            .is_some_and(|free| free >= RESERVE);
        if room && pos(tail) % 8 == 0 {
            self.write_record(pos(tail), ABORT, None, (&[], &[]));
            self.publish(tail, RESERVE, 0);
        }
        self.word32(STREAMING_AT).store(0, Ordering::Release);
    }

    /// Mends the put side after its lock's holder died: a stream it left unfinished is
    /// aborted. Anything it wrote and did not publish is simply overwritten later.
    fn repair_put(&self) {
        if self.word32(STREAMING_AT).load(Ordering::Acquire) != 0 {
            self.abort_stream();
        }
    }

    // ---- get ----

    /// Takes one item's bytes, waiting until `deadline` for an item (not applied once
    /// part of a streamed item has been taken: the rest follows unless its producer
    /// dies), and for other consumers until `lock_deadline`.
    /// `producers_left` is asked, while the ring is empty, whether anything could still
    /// put.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
        producers_left: &dyn Fn() -> bool,
        small: &mut [u8; INLINE],
    ) -> Result<Got, Fail> {
        let _held = self.lock(&self.get_lock, lock_deadline, || {})?;
        // The item being assembled from a stream, and how much of it has arrived.
        let mut partial: Option<(Vec<u8>, usize)> = None;
        loop {
            let head = self.head().load(Ordering::Relaxed);
            let tail = self.wait_data(head, partial.is_some(), deadline, producers_left)?;
            let Some(tail) = tail else {
                // The stream under way can never be finished.
                partial = None;
                continue;
            };
            let used = pos(tail).wrapping_sub(pos(head));
            if used > self.capacity || (pos(head) | pos(tail)) % 8 != 0 {
                return Err(self.skip_all(head, tail, "its shared counters are corrupt"));
            }
            let header = self.header_at(pos(head)).load(Ordering::Relaxed);
            let len = header as u32 as usize;
            let kind = (header >> 32) as u8;
            // A length past the ring is checked before it is used in any sum.
            let rec = record_len(len.min(self.capacity as usize));
            let valid = header & (0xff_ffff << 40) == HEADER_MARK
                && len < self.capacity as usize
                && (WHOLE..=ABORT).contains(&kind)
                && rec <= used
                && (kind != ABORT || len == 0)
                && (kind != FIRST || len >= 8);
            if !valid {
                return Err(self.skip_all(head, tail, "a record header is corrupt"));
            }
            let body = pos(head).wrapping_add(HEADER as u32);
            match kind {
                WHOLE if len <= INLINE => {
                    self.read(body, &mut small[..len]);
                    self.advance(head, rec, 1);
                    return Ok(Got::Inline(len));
                }
                WHOLE => {
                    let mut item = item_buffer(len)?;
                    self.read(body, &mut item);
                    self.advance(head, rec, 1);
                    return Ok(Got::Heap(item));
                }
                FIRST => {
                    let total = self.header_at(body).load(Ordering::Relaxed);
                    let n = len - 8;
                    if total > MAX_ITEM_BYTES as u64 || (total as usize) <= n {
                        return Err(self.skip_all(head, tail, "a record header is corrupt"));
                    }
                    let mut item = pages::receive_buffer(total as usize).map_err(Error::from)?;
                    self.read(body.wrapping_add(8), &mut item[..n]);
                    partial = Some((item, n));
                    self.advance(head, rec, 0);
                }
                MORE | LAST => {
                    if let Some((item, filled)) = &mut partial {
                        let end = *filled + len;
                        let fits = if kind == LAST {
                            end == item.len()
                        } else {
                            end < item.len()
                        };
                        if !fits {
                            return Err(self.skip_all(head, tail, "a streamed item is corrupt"));
                        }
                        self.read(body, &mut item[*filled..end]);
                        *filled = end;
                    }
                    // Without `partial`, these are the rest of an item whose consumer
                    // died while taking it: the item went with it.
                    self.advance(head, rec, u32::from(kind == LAST));
                    if kind == LAST
                        && let Some((item, _)) = partial.take()
                    {
                        return Ok(Got::Heap(item));
                    }
                }
                _ => {
                    // ABORT: the producer of the stream under way died or gave up.
                    partial = None;
                    self.advance(head, rec, 0);
                }
            }
        }
    }

    /// How long a consumer (get lock held) that found the ring empty waits before its
    /// first look, from how long ago the last one did (kept on the consumers' line).
    fn pace(&self) -> u32 {
        let now = monotonic_ns();
        let last = self.region.atomic_u64(EMPTY_SEEN_AT);
        let mode = self.word32(PACE_AT);
        let gap = now.wrapping_sub(last.swap(now, Ordering::Relaxed));
        if gap < STREAM_GAP_NS {
            mode.store(BACKOFF_STREAM, Ordering::Relaxed);
        } else if gap > CONVERSATION_GAP_NS {
            mode.store(1, Ordering::Relaxed);
        }
        // Read back, whatever a peer wrote: a number of pauses, bounded.
        mode.load(Ordering::Relaxed).clamp(1, BACKOFF_STREAM)
    }

    /// Waits (get lock held) until a record follows `head`: `Some(tail)`. `None` when
    /// `streaming` (part of an item taken) and the stream can never be finished.
    fn wait_data(
        &self,
        head: u64,
        streaming: bool,
        deadline: Option<Instant>,
        producers_left: &dyn Fn() -> bool,
    ) -> Result<Option<u64>, Fail> {
        let tail = self.tail();
        // As for `HEAD_SEEN_AT`: records up to an earlier reading of `tail` are there.
        let seen = self.region.atomic_u64(TAIL_SEEN_AT);
        let cached = seen.load(Ordering::Relaxed);
        if pos(cached).wrapping_sub(pos(head)).wrapping_sub(1) < self.capacity {
            return Ok(Some(cached));
        }
        let more = || {
            let t = tail.load(Ordering::Acquire);
            seen.store(t, Ordering::Relaxed);
            (pos(t) != pos(head)).then_some(t)
        };
        let deadline = if streaming { None } else { deadline };
        let spin = if streaming { STREAM_SPIN } else { SPIN };
        let first_look = if streaming { 1 } else { self.pace() };
        self.wait_on(
            tail,
            self.word32(GET_WAITING_AT),
            spin,
            first_look,
            deadline,
            |periodic| {
                if let Some(t) = more() {
                    return Ok(Some(Some(t)));
                }
                if !periodic {
                    return Ok(None);
                }
                if streaming {
                    if self.put_lock.take_over_if_holder_dead() {
                        // Its producer died mid-stream: end the stream for it.
                        let _held = Held(&self.put_lock);
                        self.repair_put();
                        self.put_lock.mark_consistent();
                    } else if self.word32(STREAMING_AT).load(Ordering::Acquire) == 0 {
                        // No stream is under way, and nothing more came: a corrupt record
                        // began this one.
                        return Ok(Some(more()));
                    }
                    return Ok(more().map(Some));
                }
                if !producers_left() {
                    // Read after the scan: a producer publishes before it lets go of its
                    // handle, so an item put just before is seen here.
                    return match more() {
                        Some(t) => Ok(Some(Some(t))),
                        None => Err(Fail::NoProducers),
                    };
                }
                Ok(None)
            },
        )
    }

    /// Releases a record's bytes; `items` is 1 when it ends an item.
    #[inline]
    fn advance(&self, head: u64, rec: u32, items: u32) {
        let next = word(count(head).wrapping_add(items), pos(head).wrapping_add(rec));
        self.head().store(next, Ordering::Release);
        self.wake(self.head(), self.word32(PUT_WAITING_AT));
    }

    /// Drops everything published (where the next record starts is unknown), counts
    /// those items as done, and describes the damage.
    fn skip_all(&self, head: u64, tail: u64, what: &str) -> Fail {
        let skipped = count(tail).wrapping_sub(count(head));
        self.head().store(tail, Ordering::Release);
        self.wake(self.head(), self.word32(PUT_WAITING_AT));
        if skipped <= u32::MAX / 2 {
            self.mark_done(skipped);
        }
        Fail::Failed(Error::Decode(format!(
            "queue memory overwritten: {what}; the {skipped} item(s) in the queue at that \
             moment were dropped"
        )))
    }

    // ---- task accounting (JoinableQueue) ----

    fn done(&self) -> &AtomicU32 {
        self.word32(DONE_AT)
    }

    /// Counts `n` items as done without a `task_done` (items that could not be
    /// delivered).
    pub(crate) fn mark_done(&self, n: u32) {
        if n > 0 {
            self.done().fetch_add(n, Ordering::AcqRel);
            self.wake_joiners();
        }
    }

    fn wake_joiners(&self) {
        fence(Ordering::SeqCst);
        let flag = self.word32(JOIN_WAITING_AT);
        if flag.load(Ordering::Relaxed) != 0 {
            flag.store(0, Ordering::Relaxed);
            futex::wake_all(self.done());
        }
    }

    /// Items put and not yet marked done.
    fn unfinished(&self, done: u32) -> u32 {
        count(self.tail().load(Ordering::Acquire)).wrapping_sub(done)
    }

    /// Marks one item done; `false` if every item put is done already.
    pub(crate) fn task_done(&self) -> bool {
        let done = self.done();
        let mut d = done.load(Ordering::Acquire);
        loop {
            let left = self.unfinished(d);
            if left == 0 || left > u32::MAX / 2 {
                return false;
            }
            match done.compare_exchange_weak(
                d,
                d.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => d = now,
            }
        }
        if self.unfinished(d.wrapping_add(1)) == 0 {
            self.wake_joiners();
        }
        true
    }

    /// Waits until every item put is done; false if `deadline` passed first.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let done = self.done();
        let flag = self.word32(JOIN_WAITING_AT);
        let finished = || self.unfinished(done.load(Ordering::Acquire)) == 0;
        if finished() || spin_until(finished) {
            return true;
        }
        loop {
            let d = done.load(Ordering::Acquire);
            if self.unfinished(d) == 0 {
                return true;
            }
            let left = deadline::remaining(deadline);
            if left == Some(Duration::ZERO) {
                return false;
            }
            flag.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if done.load(Ordering::Relaxed) != d {
                continue;
            }
            // Bounded sleeps: items put meanwhile do not wake a joiner, and the count it
            // waits for may have moved with them.
            futex::wait(
                done,
                d,
                Some(left.unwrap_or(CHECK_INTERVAL).min(CHECK_INTERVAL)),
            );
        }
    }
}

/// A buffer of `len` zero bytes for an item about to be copied out of the ring. From 64
/// KiB to a mebibyte its pages are mapped in one call before they are zeroed, not at a
/// fault per page (a smaller one spans too few pages to be worth the call); larger ones
/// are fresh memory that takes huge pages ([`pages::receive_buffer`]).
fn item_buffer(len: usize) -> Result<Vec<u8>, Error> {
    if !(64 << 10..1 << 20).contains(&len) {
        return pages::receive_buffer(len).map_err(Error::from);
    }
    let mut item = Vec::new();
    item.try_reserve_exact(len).map_err(|_| {
        Error::from(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("cannot allocate {len} bytes for a message"),
        ))
    })?;
    pages::populate_uninit(item.spare_capacity_mut());
    item.resize(len, 0);
    Ok(item)
}

/// The monotonic clock in nanoseconds (the same clock in every process).
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_in_two_parts_comes_out_as_one_whole_or_streamed() {
        let ring = Ring::create(MIN_RING_BYTES, 0).unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // Whole records (split anywhere, parts empty or not), then streamed ones (longer
        // than a quarter of the ring), the split inside the first, a later, the last part.
        let cases = [(0, 5), (3, 0), (3, 9), (0, 0), (100, 3000)]
            .into_iter()
            .chain([(0, 50_000), (10, 50_000), (5000, 40_000), (49_999, 50_000)]);
        let reader = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..9 {
                    let mut small = [0; INLINE];
                    got.push(match ring.get(None, None, &|| true, &mut small).unwrap() {
                        Got::Inline(len) => small[..len].to_vec(),
                        Got::Heap(v) => v,
                    });
                }
                got
            })
        };
        let mut want = Vec::new();
        for (split, len) in cases {
            let item = &bytes[..len.max(split)];
            ring.put_parts(Parts(&item[..split], &item[split..]), None, None)
                .unwrap();
            want.push(item.to_vec());
        }
        assert!(reader.join().unwrap() == want);
    }

    #[test]
    fn whole_items_of_every_size_class_come_out_as_put_across_the_wrap() {
        let ring = Ring::create(1 << 20, 0).unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        // Inline, small, mapped ahead (from 64 KiB): 25 rounds go round the ring
        // several times, so items wrap at its end.
        for round in 0..25 {
            for len in [3, 300, 5000, 65_536, 100_003, 250_000] {
                let item = &bytes[round..round + len];
                ring.put_parts(Parts(&item[..len / 3], &item[len / 3..]), None, None)
                    .unwrap();
                let mut small = [0; INLINE];
                let got = match ring.get(None, None, &|| true, &mut small).unwrap() {
                    Got::Inline(n) => small[..n].to_vec(),
                    Got::Heap(v) => v,
                };
                assert!(got == item, "round {round}, {len} bytes");
            }
        }
    }

    #[test]
    fn an_item_above_the_limit_is_refused_before_anything_is_written() {
        let ring = Ring::create(MIN_RING_BYTES, 0).unwrap();
        // Zeroed memory the allocator maps lazily: never touched here.
        let huge = vec![0u8; MAX_ITEM_BYTES + 1];
        match ring.put(&huge, None, None) {
            Err(Fail::Failed(Error::MessageTooLarge { len, limit })) => {
                assert_eq!((len, limit), (MAX_ITEM_BYTES as u64 + 1, MAX_ITEM_BYTES));
            }
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        assert_eq!(ring.len(), 0);
    }
}

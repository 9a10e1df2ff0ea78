//! Synchronisation across processes (Python's `multiprocessing.synchronize`): locks,
//! semaphores, events, conditions and barriers living in shared memory.
//!
//! Every primitive is a few words in an anonymous shared segment: it travels to other
//! processes in arguments or messages (its descriptor is passed), and the kernel frees it
//! when the last process using it is gone, crash or not. Every copy (a `clone`, or the
//! value a child receives) is the same primitive.
//!
//! Blocking calls sleep in the kernel (a futex on a word of the segment) after a brief
//! bounded spin, and every one of them has a timeout form.
//!
//! ## Timeouts
//!
//! Any `Duration` is accepted; one too large for a deadline means no deadline. A timed
//! call that hands something back (a guard) reports running out of time as an error:
//! [`AcquireError::Timeout`] from the locks ([`Lock::acquire_timeout`],
//! [`RLock::acquire_timeout`], [`Condition::acquire_timeout`], `Value`/`Array`
//! `get_lock_timeout`), [`Error::Timeout`](crate::Error::Timeout) from
//! [`Semaphore::acquire_guard_timeout`]; a `try_` form is a timeout of zero and answers
//! the same way. A timed call that only waits for a state returns `bool`, as Python's
//! `acquire(timeout=t)` and `wait(t)` return `True`/`False`:
//! [`Semaphore::acquire_timeout`], [`Event::wait`]; wrapped in `Result` when the wait can
//! also fail otherwise ([`ConditionGuard::wait`] reports a dead lock holder).
//! [`Barrier::wait_timeout`] hands back an arrival index and fails, as in Python, with
//! [`Error::BrokenBarrier`](crate::Error::BrokenBarrier): a timeout breaks the barrier
//! for every party.
//!
//! ## When a process dies
//!
//! - [`Lock`] and [`RLock`] (and the locks of `Value`, `Array` and [`Condition`]) record
//!   their owner: thread id, pid, the process's start time and its PID namespace. A
//!   waiter checks whether the owner still lives every 100 ms of wall-clock time,
//!   however its sleeps end (signals included), and takes the lock over once the owner
//!   is *known* to be dead: the next acquirer gets the lock with
//!   [`AcquireError::OwnerDied`] instead of waiting forever. "Known" means a positive
//!   answer from the kernel (no such process or thread, a process that exited, a pid
//!   that now names a process started at another time); a failure to find out (`/proc`
//!   unreadable for lack of descriptors or by `hidepid`, an owner in another PID
//!   namespace) is not death, and the waiter keeps waiting up to its timeout.
//! - As with a robust mutex, a lock taken over stays marked *inconsistent*: every
//!   acquirer after the first is told [`AcquireError::OwnerDied`] too, until a holder
//!   repairs the protected data and calls `mark_consistent()` on its guard
//!   ([`LockGuard::mark_consistent`], [`RLockGuard::mark_consistent`],
//!   [`ConditionGuard::mark_consistent`], and on the guards of `Value` and `Array`).
//!   Dropping the guard (as `?` does) releases the lock still marked.
//! - A [`Semaphore`] has no owner: a process that acquired it is not its holder in any
//!   sense the semaphore could know (another process may release it). If a process dies
//!   before releasing what it acquired, that unit is gone; nobody is told. Protect
//!   semaphore-counted resources with a timeout ([`Semaphore::acquire_timeout`]) if a
//!   worker may die.
//! - A [`Condition`] uses an [`RLock`], so a process dying while holding it is reported
//!   to the next acquirer (and to a waiter re-acquiring it, as
//!   [`Error::OwnerDied`](crate::Error::OwnerDied)). A process that dies while waiting
//!   does not absorb notifications: `notify` skips waiters whose process is gone (once
//!   it has been reaped; a waiter of another PID namespace is never skipped).
//! - An [`Event`] has no owner; a dead waiter leaves nothing behind.
//! - A [`Barrier`] counts arrivals, not processes: a party that dies while waiting still
//!   counts as arrived, and one that never arrives blocks the round. Give the barrier a
//!   timeout ([`Barrier::with_timeout`]) to turn a lost party into
//!   [`Error::BrokenBarrier`](crate::Error::BrokenBarrier) for everyone. A party that
//!   dies inside the barrier's own short critical section breaks the round.

mod barrier;
mod condition;
mod event;
mod lock;
pub(crate) mod owner_lock;
mod semaphore;

pub use self::barrier::Barrier;
pub use self::condition::{Condition, ConditionGuard};
pub use self::event::Event;
pub(crate) use self::lock::take as take_lock;
pub use self::lock::{AcquireError, AcquireResult, Lock, LockGuard, RLock, RLockGuard};
pub use self::semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::sys::shm::{Region, SharedWords};
use crate::wire::handles::{FdOwned, FdRef};

/// A new zeroed segment holding `N` words, the first one set to `magic` (the kind of
/// primitive, checked when a handle is received).
fn new_words<const N: usize>(magic: u32) -> Result<SharedWords<N>> {
    let region = Arc::new(Region::anonymous(4 * N)?);
    let words =
        SharedWords::at(region, 0).ok_or_else(|| Error::state("shared segment too small"))?;
    words.get()[0].store(magic, Ordering::Release);
    Ok(words)
}

/// Writes a primitive as a handle: its segment's descriptor and its offset there.
fn serialize_words<const N: usize, S: Serializer>(
    words: &SharedWords<N>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    (FdRef(words.region().fd()), 0u64).serialize(s)
}

/// Reads a handle written by [`serialize_words`]; the words must fit in the segment and
/// carry `magic` (a handle of another kind, or corrupt input, is an error).
fn deserialize_words<'de, const N: usize, D: Deserializer<'de>>(
    d: D,
    magic: u32,
    what: &str,
) -> std::result::Result<SharedWords<N>, D::Error> {
    use serde::de::Error as _;
    let (fd, offset) = <(FdOwned, u64)>::deserialize(d)?;
    words_from_parts(fd, offset, magic, what).map_err(D::Error::custom)
}

/// The words a received handle (descriptor and offset) names, checked as in
/// [`deserialize_words`].
fn words_from_parts<const N: usize>(
    fd: FdOwned,
    offset: u64,
    magic: u32,
    what: &str,
) -> std::result::Result<SharedWords<N>, String> {
    let region = Region::from_fd(fd.0).map_err(|e| format!("{what} handle: {e}"))?;
    let offset = usize::try_from(offset).map_err(|e| format!("{what} handle: {e}"))?;
    if offset % 8 != 0 {
        return Err(format!("misaligned {what} handle"));
    }
    let words = SharedWords::<N>::at(Arc::new(region), offset)
        .ok_or_else(|| format!("{what} handle outside its memory"))?;
    if words.get()[0].load(Ordering::Acquire) != magic {
        return Err(format!("handle is not {}", with_article(what)));
    }
    Ok(words)
}

/// `what` after its indefinite article ("a barrier", "an event").
fn with_article(what: &str) -> String {
    let article = match what.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    };
    format!("{article} {what}")
}

/// How long a waiter spins before it sleeps: long enough to catch a peer that answers
/// at once (a ping-pong), short enough to cost nothing next to a sleep.
const SPIN: Duration = Duration::from_micros(10);

/// Checks of the condition between two readings of the clock in [`spin_until`].
const CHECKS_PER_CLOCK: u32 = 32;

/// Spins briefly until `done()`; returns whether it became true. No spinning at all on
/// a machine with a single CPU (the peer could not run meanwhile).
///
/// The spin never yields: a peer waiting to run on this same CPU answers once this
/// waiter sleeps, and that sleep's wake-up is the scheduler's chance to move one of the
/// two to a free CPU. A waiter yielding between checks would answer such a peer faster
/// (a switch, about 3 µs a round trip) but keep the two on one CPU for as long as they
/// talk, ten times slower than a round trip between two CPUs.
pub(crate) fn spin_until(done: impl FnMut() -> bool) -> bool {
    spin_for(SPIN, done)
}

/// [`spin_until`] for at most `limit`: longer where the peer is known to be at work
/// (the queue's streams).
pub(crate) fn spin_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    static MULTI_CPU: OnceLock<bool> = OnceLock::new();
    if done() {
        return true;
    }
    if !*MULTI_CPU.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)) {
        return false;
    }
    let started = Instant::now();
    loop {
        // Check after every pause: checking every 32 of them would make a waiter notice an
        // answer a third of a microsecond late (a pause takes about 10 ns here, and
        // ~140 cycles on some x86 CPUs), as long as the whole round trip between two
        // CPUs. The clock, dearer than a load, is read once per batch.
        for _ in 0..CHECKS_PER_CLOCK {
            std::hint::spin_loop();
            if done() {
                return true;
            }
        }
        if started.elapsed() >= limit {
            return false;
        }
    }
}

use crate::deadline::{after as deadline_after, remaining};

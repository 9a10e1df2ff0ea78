//! The lock word behind `Lock`, `RLock`, the locks of `Value` and `Array` and the
//! internal lock of `Barrier`: a futex in shared memory that names its owner, so that a
//! waiter can tell when the owner died and take the lock over.
//!
//! Why not a robust pthread mutex: glibc's robust, error-checking, process-shared mutex
//! costs about twice a bare futex lock on the uncontended path (it maintains the
//! kernel's robust list on every lock and unlock). Here the uncontended path is one
//! compare-and-swap plus four stores recording the owner; the cost of owner-death
//! detection moves to the waiter, which checks whether the owner still lives whenever
//! [`LIVENESS_INTERVAL`] has passed since its last check, however its sleeps ended.
//!
//! Layout (32 bytes): the 64-bit `state`, then the record: `published`, `pid`, `start`
//! (two words), `count` (recursion depth, RLock), one reserved word.
//!
//! `state` is 0 when the lock is free and consistent. Its low half is the futex word:
//! the owner's thread id (22 bits, Linux's largest pid), a takeover generation (8 bits),
//! `INCONSISTENT` and `WAITERS`; its high half is the owner's PID namespace. So the
//! compare-and-swap that takes the lock already names the owner well enough to check
//! it (a thread id is unique in its namespace): an owner killed before it wrote its
//! record is still found dead. The record adds the pid and the process's start time
//! (which tell a reused id), and is valid only while `published` equals the state's id
//! bits (thread id and generation): a waiter never reads a previous owner's record as
//! the current one's. A takeover bumps the generation, so a waiter that concluded
//! "dead" from a stale look cannot take the lock from the thread that took it over.
//!
//! A guard's release compares the state's namespace and thread id only (see
//! [`release_guarded`](OwnerLock::release_guarded)); an explicit release compares the
//! whole record.
//!
//! Robust-mutex model: a takeover sets `INCONSISTENT`, which survives releases (the
//! next acquirers are told the owner died too) until a holder calls
//! [`mark_consistent`](OwnerLock::mark_consistent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::deadline;
use crate::sys::futex::{self, LOCK_WORDS, LockWords};
use crate::sys::liveness::{self, Identity, Owner, Watch};
use crate::sys::shm::Region;

const TID_MASK: u32 = (1 << 22) - 1;
const GEN_SHIFT: u32 = 22;
const GEN_MASK: u32 = 0xff << GEN_SHIFT;
/// The thread id and generation: what `published` must equal.
const ID_MASK: u32 = TID_MASK | GEN_MASK;
const INCONSISTENT: u32 = 1 << 30;
const WAITERS: u32 = 1 << 31;
/// The bits of `state` that name the holder: namespace and thread id.
const KEY_MASK: u64 = 0xffff_ffff_0000_0000 | TID_MASK as u64;

// Words of the record (after the state).
const PUBLISHED: usize = 0;
const PID: usize = 1;
const START_LO: usize = 2;
const START_HI: usize = 3;
const COUNT: usize = 4;

/// Bytes one lock occupies in a region.
pub(crate) const LOCK_SIZE: usize = 4 * LOCK_WORDS;

/// How often a waiter checks that the owner is still alive.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);

/// The state a thread puts in the lock word: its namespace and thread id.
#[inline]
fn key_of(id: Identity) -> u64 {
    debug_assert!(id.tid <= TID_MASK, "Linux thread ids are below 2^22");
    (u64::from(id.ns) << 32) | u64::from(id.tid)
}

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The lock was free and consistent.
    Clean,
    /// A previous owner died holding it, and nobody has marked it consistent since;
    /// it is ours now.
    OwnerDied,
    /// The caller already holds it (recursive use).
    Again,
}

/// A lock word inside a shared region.
#[derive(Clone)]
pub(crate) struct OwnerLock {
    words: LockWords,
}

impl std::fmt::Debug for OwnerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let low = self.state().load(Ordering::Relaxed) as u32;
        f.debug_struct("OwnerLock")
            .field("owner_tid", &(low & TID_MASK))
            .field("consistent", &(low & INCONSISTENT == 0))
            .finish()
    }
}

impl OwnerLock {
    /// The lock at `offset` of `region` (zeroed memory is an unlocked lock); `None` if
    /// it does not fit there (a corrupt handle).
    pub(crate) fn at(region: Arc<Region>, offset: usize) -> Option<OwnerLock> {
        if offset % 8 != 0 {
            return None;
        }
        Some(OwnerLock {
            words: LockWords::at(region, offset)?,
        })
    }

    #[inline]
    fn state(&self) -> &AtomicU64 {
        self.words.state()
    }

    #[inline]
    fn rec(&self) -> &[AtomicU32] {
        self.words.rest()
    }

    /// Writes the owner's record; `published` is the state's id bits it belongs to.
    #[inline]
    fn record(&self, id: Identity, published: u32) {
        let r = self.rec();
        // Release on each store, so that a waiter that reads any of them also sees
        // that the previous record was withdrawn (see `owner_of`).
        r[PID].store(id.pid, Ordering::Release);
        r[START_LO].store(id.start as u32, Ordering::Release);
        r[START_HI].store((id.start >> 32) as u32, Ordering::Release);
        r[PUBLISHED].store(published, Ordering::Release);
    }

    /// Whether state `cur` and the record name thread `id`: namespace, thread id, and
    /// a record published for this acquisition with its pid and start time.
    #[inline]
    fn is_mine(&self, cur: u64, id: Identity) -> bool {
        let r = self.rec();
        cur & KEY_MASK == key_of(id)
            && r[PUBLISHED].load(Ordering::Relaxed) == cur as u32 & ID_MASK
            && r[PID].load(Ordering::Relaxed) == id.pid
            && r[START_LO].load(Ordering::Relaxed) == id.start as u32
            && r[START_HI].load(Ordering::Relaxed) == (id.start >> 32) as u32
    }

    /// The holder named by state `cur`, with its record if it is published; `None` if
    /// the lock changed hands while the record was read.
    fn owner_of(&self, cur: u64) -> Option<Owner> {
        let low = cur as u32;
        let r = self.rec();
        let published = r[PUBLISHED].load(Ordering::Acquire);
        let pid = r[PID].load(Ordering::Acquire);
        let start = u64::from(r[START_LO].load(Ordering::Acquire))
            | (u64::from(r[START_HI].load(Ordering::Acquire)) << 32);
        // A new holder writes its record only after the previous one withdrew
        // `published`: if the reads above saw any of its writes, these see the change.
        let still = |s: u64| s & !u64::from(WAITERS) == cur & !u64::from(WAITERS);
        if r[PUBLISHED].load(Ordering::Acquire) != published
            || !still(self.state().load(Ordering::Acquire))
        {
            return None;
        }
        let (tid, ns) = (low & TID_MASK, (cur >> 32) as u32);
        Some(if published == low & ID_MASK {
            Owner::Recorded(Identity {
                tid,
                pid,
                start,
                ns,
            })
        } else {
            Owner::Unrecorded { tid, ns }
        })
    }

    /// Recursion depth (meaningful to the owner only).
    pub(crate) fn count(&self) -> &AtomicU32 {
        &self.rec()[COUNT]
    }

    /// Whether the calling thread holds the lock.
    pub(crate) fn held_by_me(&self) -> bool {
        self.is_mine(self.state().load(Ordering::Relaxed), liveness::me().id)
    }

    /// Whether anyone holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.state().load(Ordering::Relaxed) as u32 & TID_MASK != 0
    }

    /// Clears the mark left by an owner that died, so that later acquirers get the lock
    /// clean. Only the holder calls this (through its guard).
    pub(crate) fn mark_consistent(&self) {
        self.state()
            .fetch_and(!u64::from(INCONSISTENT), Ordering::Relaxed);
    }

    /// Takes the lock, waiting until `deadline` (`None`: no limit). `None` on timeout.
    /// With `recursive`, a holder taking it again gets [`Taken::Again`]; without, it
    /// gets `Err` (it would wait for itself forever).
    #[inline]
    pub(crate) fn acquire(
        &self,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Option<Taken>, ()> {
        let me = liveness::me().id;
        if self
            .state()
            .compare_exchange(0, key_of(me), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.record(me, me.tid);
            return Ok(Some(Taken::Clean));
        }
        self.acquire_slow(me, deadline, recursive)
    }

    #[cold]
    fn acquire_slow(
        &self,
        me: Identity,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Option<Taken>, ()> {
        let state = self.state();
        let mut spins = 0u32;
        // Once we have slept, others may sleep too: keep the waiters mark when taking it.
        let mut waiters = 0u32;
        // Wall-clock time, not time slept: signals that cut every sleep short must not
        // postpone the check.
        let mut next_check = deadline::after(LIVENESS_INTERVAL);
        let mut watch: Option<Watch> = None;
        loop {
            let cur = state.load(Ordering::Relaxed);
            let low = cur as u32;
            if low & TID_MASK == 0 {
                // Free; a mark left by a dead owner stays until a holder clears it.
                let new = key_of(me) | u64::from(low & INCONSISTENT | waiters);
                if state
                    .compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.record(me, me.tid);
                    return Ok(Some(if low & INCONSISTENT != 0 {
                        Taken::OwnerDied
                    } else {
                        Taken::Clean
                    }));
                }
                continue;
            }
            if self.is_mine(cur, me) {
                return if recursive {
                    Ok(Some(Taken::Again))
                } else {
                    Err(())
                };
            }
            let now = Instant::now();
            if next_check.is_some_and(|t| now >= t) {
                next_check = deadline::after(LIVENESS_INTERVAL);
                if self.take_over_if_dead(cur, me, &mut watch) {
                    return Ok(Some(Taken::OwnerDied));
                }
                continue;
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            // A holder usually lets go within a few microseconds: watch the word (reading
            // only, so the holder keeps its cache line) before sleeping.
            if spins < 100 {
                spins += 1;
                while spins < 100 && state.load(Ordering::Relaxed) == cur {
                    spins += 1;
                    std::hint::spin_loop();
                }
                continue;
            }
            if low & WAITERS == 0
                && state
                    .compare_exchange(
                        cur,
                        cur | u64::from(WAITERS),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            let until = match (deadline, next_check) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            };
            futex::wait_low(state, low | WAITERS, deadline::remaining(until));
            waiters = WAITERS;
        }
    }

    /// Takes the lock over if it is held by a thread known to be dead, without waiting:
    /// true means the caller now holds it, marked inconsistent (as after
    /// [`Taken::OwnerDied`]). False: free, held by a live or unknown holder, or taken
    /// over by someone else first.
    pub(crate) fn take_over_if_holder_dead(&self) -> bool {
        let cur = self.state().load(Ordering::Relaxed);
        if cur as u32 & TID_MASK == 0 {
            return false;
        }
        self.take_over_if_dead(cur, liveness::me().id, &mut None)
    }

    /// If the holder named by `cur` is known to be dead, takes the lock over (marked
    /// inconsistent) and returns true. False: alive, unknown, or the lock moved on.
    fn take_over_if_dead(&self, cur: u64, me: Identity, watch: &mut Option<Watch>) -> bool {
        let Some(owner) = self.owner_of(cur) else {
            return false;
        };
        let w = match watch {
            Some(w) if w.owner() == owner => w,
            _ => watch.insert(Watch::new(owner)),
        };
        if !w.owner_dead() {
            return false;
        }
        let state = self.state();
        // Unchanged but for the waiters mark: the dead holder still has it.
        let seen = state.load(Ordering::Relaxed);
        if seen & !u64::from(WAITERS) != cur & !u64::from(WAITERS) {
            return false;
        }
        let generation = (cur as u32 & GEN_MASK).wrapping_add(1 << GEN_SHIFT) & GEN_MASK;
        // Keep the waiters mark: others may sleep, and will be woken at release.
        let new = key_of(me) | u64::from(generation | INCONSISTENT | WAITERS);
        if state
            .compare_exchange(seen, new, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.count().store(0, Ordering::Relaxed);
        self.record(me, me.tid | generation);
        *watch = None;
        true
    }

    /// Releases the lock; `Err` if the calling thread does not hold it.
    #[inline]
    pub(crate) fn release(&self) -> Result<(), ()> {
        let cur = self.state().load(Ordering::Relaxed);
        if !self.is_mine(cur, liveness::me().id) {
            return Err(());
        }
        self.unlock(cur);
        Ok(())
    }

    /// Releases the lock for a guard that the calling thread got from
    /// [`acquire`](Self::acquire); `Err` if the calling thread does not hold it.
    ///
    /// The guard proves that this thread took the lock (guards never leave their thread,
    /// and no waiter takes a lock from a live holder), so only a copy of the guard in a
    /// forked child is to be told apart, and the lock word already names another thread
    /// there: the namespace and thread id suffice. Reading the record too, in the middle
    /// of a handover, costs a contended lock about a fifth of its speed.
    #[inline]
    pub(crate) fn release_guarded(&self) -> Result<(), ()> {
        let cur = self.state().load(Ordering::Relaxed);
        if cur & KEY_MASK != key_of(liveness::me().id) {
            return Err(());
        }
        self.unlock(cur);
        Ok(())
    }

    /// Lets go of the lock, held in state `cur` by the calling thread.
    #[inline]
    fn unlock(&self, cur: u64) {
        let state = self.state();
        self.rec()[PUBLISHED].store(0, Ordering::Relaxed);
        // Only the holder changes the inconsistent mark: it is the one read above.
        let prev = state.swap(u64::from(cur as u32 & INCONSISTENT), Ordering::Release);
        if prev as u32 & WAITERS != 0 {
            futex::wake_low(state, 1);
        }
    }

    /// The region holding the lock (to send it to another process).
    pub(crate) fn region(&self) -> &Arc<Region> {
        self.words.region()
    }

    /// Offset of the lock in its region.
    pub(crate) fn offset(&self) -> usize {
        self.words.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    fn new_lock() -> OwnerLock {
        OwnerLock::at(Arc::new(Region::anonymous(LOCK_SIZE).unwrap()), 0).unwrap()
    }

    /// A process that sleeps until killed (reaped when dropped).
    struct Sleeper(Child);

    impl Sleeper {
        fn start() -> Sleeper {
            Sleeper(Command::new("sleep").arg("600").spawn().unwrap())
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Stands for a holder that was killed right after its compare-and-swap: the state
    /// names thread `tid` of our namespace, and no record was written.
    fn taken_without_record(lock: &OwnerLock, tid: u32) {
        let ns = liveness::me().id.ns;
        lock.state().store(
            key_of(Identity {
                tid,
                pid: 0,
                start: 0,
                ns,
            }),
            Ordering::SeqCst,
        );
    }

    fn within(d: Duration) -> Option<Instant> {
        deadline::after(d)
    }

    #[test]
    fn a_holder_killed_between_its_swap_and_its_record_is_found_dead() {
        let lock = new_lock();
        let mut holder = Sleeper::start();
        taken_without_record(&lock, holder.pid());
        // Alive: a waiter keeps waiting, unrecorded or not.
        assert_eq!(
            lock.acquire(within(Duration::from_millis(300)), false),
            Ok(None)
        );
        // Killed, a zombie not yet reaped, then reaped: found dead either way.
        holder.0.kill().unwrap();
        let t = Instant::now();
        assert_eq!(
            lock.acquire(within(Duration::from_secs(30)), false),
            Ok(Some(Taken::OwnerDied))
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        lock.release().unwrap();

        holder.0.wait().unwrap();
        let reaped = Sleeper::start();
        let pid = reaped.pid();
        drop(reaped);
        let lock = new_lock();
        taken_without_record(&lock, pid);
        assert_eq!(
            lock.acquire(within(Duration::from_secs(30)), false),
            Ok(Some(Taken::OwnerDied))
        );
    }

    #[test]
    fn my_thread_id_in_another_namespace_is_another_holder() {
        let me = liveness::me().id;
        let lock = new_lock();
        let foreign = Identity {
            ns: me.ns ^ 1,
            ..me
        };
        lock.state().store(key_of(foreign), Ordering::SeqCst);
        lock.record(foreign, foreign.tid);
        assert!(!lock.held_by_me());
        // Not "already held", not re-entered: a holder like any other, kept waiting for
        // (its namespace says nothing about it here).
        assert_eq!(lock.acquire(within(Duration::ZERO), false), Ok(None));
        assert_eq!(lock.acquire(within(Duration::ZERO), true), Ok(None));
        assert_eq!(
            lock.acquire(within(Duration::from_millis(250)), true),
            Ok(None)
        );
        assert_eq!(lock.release(), Err(()));
        assert!(lock.is_locked());
    }

    #[test]
    fn my_thread_id_in_a_dead_process_record_is_taken_over_not_reentered() {
        let me = liveness::me().id;
        let gone = Sleeper::start();
        let pid = gone.pid();
        drop(gone);
        // Our namespace and thread id, but the record of another (dead) process: a
        // previous holder whose thread id this thread now has.
        let lock = new_lock();
        let previous = Identity { pid, ..me };
        lock.state().store(key_of(previous), Ordering::SeqCst);
        lock.record(previous, previous.tid);
        assert!(!lock.held_by_me());
        assert_eq!(lock.release(), Err(()));
        assert_eq!(
            lock.acquire(within(Duration::from_secs(30)), true),
            Ok(Some(Taken::OwnerDied))
        );
        assert!(lock.held_by_me());
        lock.release().unwrap();
    }

    #[test]
    fn the_dead_owner_mark_stays_until_marked_consistent() {
        let lock = new_lock();
        let gone = Sleeper::start();
        let pid = gone.pid();
        drop(gone);
        taken_without_record(&lock, pid);
        assert_eq!(lock.acquire(None, false), Ok(Some(Taken::OwnerDied)));
        lock.release().unwrap();
        assert!(!lock.is_locked());
        assert_eq!(lock.acquire(None, false), Ok(Some(Taken::OwnerDied)));
        lock.mark_consistent();
        lock.release().unwrap();
        assert_eq!(lock.acquire(None, false), Ok(Some(Taken::Clean)));
        lock.release().unwrap();
        assert_eq!(lock.state().load(Ordering::SeqCst), 0);
    }
}

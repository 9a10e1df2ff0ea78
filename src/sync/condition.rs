//! `Condition` across processes (Python's `multiprocessing.Condition`).
//!
//! Besides its [`RLock`], a condition owns a table of waiter records in shared memory.
//! A waiter (holding the lock) takes a free record, marks it waiting with the next
//! ticket and its pid, releases the lock and sleeps on the record's own futex word.
//! `notify(n)` (under the lock) marks the `n` oldest waiting records notified and wakes
//! exactly those: nobody else wakes up, and a waiter that arrives after the notify
//! cannot take a notification meant for an earlier one. A waiter whose timeout passes
//! re-takes the lock and drops its record; if a notify marked it in the meantime, the
//! wait counts as notified (the notification is not lost).
//!
//! The table is only ever changed under the lock, and each record is self-describing
//! (state, ticket, pid), with no links between records: if a process dies holding the
//! lock halfway through a change, the table is still valid for the next holder.
//! `notify` skips (and frees) records of processes that no longer exist, so a waiter
//! that died does not absorb a notification.
//!
//! Layout: a header of eight words (kind tag, next ticket, high-water mark of used
//! records, reserved) followed by [`CAPACITY`] records of four words (state, ticket,
//! pid, PID namespace). A record is taken for dead only when its process is known to be
//! gone: same namespace, and no such process (a waiter of another namespace is never
//! skipped, since its pid means nothing here).

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deadline_after, new_words, remaining, spin_until, words_from_parts};
use crate::error::{Error, Result};
use crate::sync::lock::{AcquireError, AcquireResult, RLock, RLockGuard};
use crate::sys::futex;
use crate::sys::liveness;
use crate::sys::shm::SharedWords;
use crate::wire::handles::{FdOwned, FdRef};

const MAGIC: u32 = u32::from_le_bytes(*b"mpCo");

const HEADER: usize = 8;
const NEXT_TICKET: usize = 1;
const HIGH_WATER: usize = 2;
const RECORD: usize = 4;
/// How many threads (in all processes) may wait on one condition at the same time.
const CAPACITY: usize = 1022;
const WORDS: usize = HEADER + RECORD * CAPACITY;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

/// A condition variable shared by processes (Python's `multiprocessing.Condition`).
///
/// It is an [`RLock`] (its own, or one given to [`with_lock`](Condition::with_lock))
/// plus a set of waiters. [`acquire`](Condition::acquire) takes the lock and returns a
/// [`ConditionGuard`]: waiting and notifying are done through the guard, so they can
/// only happen while the lock is held, as Python requires.
///
/// If a process dies holding the lock, the next acquirer (or a waiter re-taking the
/// lock at the end of its wait) is told, as for an [`RLock`]. A process that dies while
/// waiting is skipped by later notifications.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Condition, Process};
///
/// fn child(cond: Condition) {
///     let held = cond.acquire().unwrap();
///     held.notify_all();
/// }
///
/// let cond = Condition::new()?;
/// let mut held = cond.acquire()?;
/// let mut p = Process::new(child, cond.clone());
/// p.start()?;
/// // The child can only take the lock (and notify) once `wait` has released it.
/// assert!(held.wait(Some(Duration::from_secs(60)))?);
/// drop(held);
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: RLock,
    words: SharedWords<WORDS>,
}

/// The lock of a [`Condition`], held; waits and notifications go through it. Released
/// (one level of the [`RLock`]) when dropped.
///
/// ```
/// let cond = multiproc::Condition::new()?;
/// let held = cond.acquire()?;
/// held.notify(1); // nobody waits: nothing happens
/// drop(held);
/// assert!(!cond.lock().is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    held: RLockGuard<'a>,
    /// The lock belongs to this thread: the guard must be dropped here.
    _not_send: PhantomData<*const ()>,
}

impl Condition {
    /// A condition with a new [`RLock`] of its own (Python's `Condition()`).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let _held = cond.acquire()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::with_lock(RLock::new()?)
    }

    /// A condition on `lock` (Python's `Condition(lock)`): holding the condition is
    /// holding that lock.
    ///
    /// ```
    /// let lock = multiproc::RLock::new()?;
    /// let cond = multiproc::Condition::with_lock(lock.clone())?;
    /// let _held = cond.acquire()?;
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(lock: RLock) -> Result<Condition> {
        Ok(Condition {
            lock,
            words: new_words::<WORDS>(MAGIC)?,
        })
    }

    /// The condition's lock.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let held = cond.acquire()?;
    /// assert_eq!(cond.lock().recursion_depth(), 1);
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> &RLock {
        &self.lock
    }

    fn guard<'a>(&'a self, r: AcquireResult<RLockGuard<'a>>) -> AcquireResult<ConditionGuard<'a>> {
        let wrap = |held| ConditionGuard {
            cond: self,
            held,
            _not_send: PhantomData,
        };
        match r {
            Ok(held) => Ok(wrap(held)),
            Err(AcquireError::OwnerDied(held)) => Err(AcquireError::OwnerDied(wrap(held))),
            Err(AcquireError::Timeout) => Err(AcquireError::Timeout),
            Err(AcquireError::AlreadyHeld) => Err(AcquireError::AlreadyHeld),
        }
    }

    /// Takes the lock, waiting as long as it takes (Python's `with cond:`). As for an
    /// [`RLock`], the thread holding it may take it again, and
    /// [`AcquireError::OwnerDied`] says the previous holder died holding it.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let outer = cond.acquire()?;
    /// let inner = cond.acquire()?; // re-entrant
    /// # drop(inner); drop(outer);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> AcquireResult<ConditionGuard<'_>> {
        self.guard(self.lock.acquire())
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let _held = cond.acquire_timeout(Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> AcquireResult<ConditionGuard<'_>> {
        self.guard(self.lock.acquire_timeout(timeout))
    }

    /// Takes the lock only if it is free or already this thread's.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// assert!(cond.try_acquire().is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> AcquireResult<ConditionGuard<'_>> {
        self.guard(self.lock.try_acquire())
    }

    /// Record `i`'s words: state (the futex word), ticket, pid.
    fn record(&self, i: usize) -> &[AtomicU32] {
        &self.words.get()[HEADER + RECORD * i..HEADER + RECORD * (i + 1)]
    }

    fn state(&self, i: usize) -> &AtomicU32 {
        &self.record(i)[0]
    }

    fn high_water(&self) -> usize {
        (self.words.get()[HIGH_WATER].load(Ordering::Relaxed) as usize).min(CAPACITY)
    }

    /// Takes a record for the calling thread, marked waiting. Under the lock.
    fn enqueue(&self) -> Result<usize> {
        let w = self.words.get();
        let high = self.high_water();
        let mut found = (0..high).find(|&i| self.state(i).load(Ordering::Relaxed) == FREE);
        if found.is_none() && high < CAPACITY {
            w[HIGH_WATER].store(high as u32 + 1, Ordering::Relaxed);
            found = Some(high);
        }
        if found.is_none() {
            self.reclaim_dead();
            found = (0..high).find(|&i| self.state(i).load(Ordering::Relaxed) == FREE);
        }
        let i = found.ok_or_else(|| {
            Error::state(format!(
                "more than {CAPACITY} threads waiting on one condition"
            ))
        })?;
        let ticket = w[NEXT_TICKET].load(Ordering::Relaxed);
        w[NEXT_TICKET].store(ticket.wrapping_add(1), Ordering::Relaxed);
        let r = self.record(i);
        r[1].store(ticket, Ordering::Relaxed);
        let me = liveness::me().id;
        r[2].store(me.pid, Ordering::Relaxed);
        r[3].store(me.ns, Ordering::Relaxed);
        r[0].store(WAITING, Ordering::Release);
        Ok(i)
    }

    /// Frees record `i`. Under the lock.
    fn free(&self, i: usize) {
        self.state(i).store(FREE, Ordering::Release);
        let mut high = self.high_water();
        while high > 0 && self.state(high - 1).load(Ordering::Relaxed) == FREE {
            high -= 1;
        }
        self.words.get()[HIGH_WATER].store(high as u32, Ordering::Relaxed);
    }

    /// Whether the process that wrote record `i` may still exist (only a known death
    /// says no).
    fn owner_alive(&self, i: usize) -> bool {
        let pid = self.record(i)[2].load(Ordering::Relaxed);
        let ns = self.record(i)[3].load(Ordering::Relaxed);
        !liveness::same_namespace(ns)
            || pid == liveness::me().id.pid
            || liveness::process_exists(pid)
    }

    /// Frees the records of processes that are gone. Under the lock.
    fn reclaim_dead(&self) {
        for i in 0..self.high_water() {
            if self.state(i).load(Ordering::Relaxed) != FREE && !self.owner_alive(i) {
                self.free(i);
            }
        }
    }

    /// Marks the `n` oldest waiters notified and wakes them. Under the lock.
    fn notify(&self, n: usize) {
        if n == 0 {
            return;
        }
        let next = self.words.get()[NEXT_TICKET].load(Ordering::Relaxed);
        let age = |i: usize| next.wrapping_sub(self.record(i)[1].load(Ordering::Relaxed));
        let waiting = |i: &usize| self.state(*i).load(Ordering::Relaxed) == WAITING;
        let mut woken = 0;
        if n == 1 {
            // The common case, without sorting: the oldest live waiter.
            while let Some(i) = (0..self.high_water())
                .filter(waiting)
                .max_by_key(|&i| age(i))
            {
                if self.owner_alive(i) {
                    self.wake(i);
                    return;
                }
                self.free(i);
            }
            return;
        }
        let mut queue: Vec<(u32, usize)> = (0..self.high_water())
            .filter(waiting)
            .map(|i| (age(i), i))
            .collect();
        queue.sort_unstable_by_key(|&(age, _)| std::cmp::Reverse(age));
        for (_, i) in queue {
            if woken == n {
                break;
            }
            if self.owner_alive(i) {
                self.wake(i);
                woken += 1;
            } else {
                self.free(i);
            }
        }
    }

    fn wake(&self, i: usize) {
        let state = self.state(i);
        state.store(NOTIFIED, Ordering::Release);
        futex::wake(state, 1);
    }

    /// How deep this thread holds the lock; an error if it does not hold it (or the
    /// shared count is corrupt).
    fn depth_held(&self) -> Result<u32> {
        self.lock
            .depth_held()?
            .ok_or_else(|| Error::state("wait on a condition whose lock this thread does not hold"))
    }
}

impl ConditionGuard<'_> {
    /// Releases the lock (all levels), waits until notified or until `timeout` passes
    /// (`None`: as long as it takes), then takes the lock back as deep as it was held.
    /// Returns whether it was notified (false: the timeout passed), like Python's
    /// `wait`.
    ///
    /// [`Error::OwnerDied`]: the lock is held again, but a process died holding it
    /// (while this one waited, or earlier without anyone repairing it since): whatever
    /// it protects may need repair, then [`mark_consistent`](Self::mark_consistent).
    /// The guard stays valid in every case.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let mut held = cond.acquire()?;
    /// assert!(!held.wait(Some(Duration::from_millis(10)))?); // nobody notifies
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.wait_until(timeout.and_then(deadline_after))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let cond = self.cond;
        let depth = cond.depth_held()?;
        let i = cond.enqueue()?;
        // All levels at once, and back at once below: the depth is a word of shared
        // memory, which must not become a loop count.
        cond.lock.release_all()?;
        let state = cond.state(i);
        if !spin_until(|| state.load(Ordering::Acquire) != WAITING) {
            loop {
                if state.load(Ordering::Acquire) != WAITING {
                    break;
                }
                let left = remaining(deadline);
                if left == Some(Duration::ZERO) {
                    break;
                }
                futex::wait(state, WAITING, left);
            }
        }
        let owner_died = match cond.lock.acquire_restore(depth) {
            Ok(()) => false,
            Err(AcquireError::OwnerDied(())) => true,
            // Neither can happen for an RLock taken without a deadline.
            Err(AcquireError::Timeout | AcquireError::AlreadyHeld) => {
                return Err(Error::state("condition lock not taken back"));
            }
        };
        // A notify may have come between the timeout and re-taking the lock: it counts.
        let notified = state.load(Ordering::Acquire) == NOTIFIED;
        cond.free(i);
        if owner_died {
            return Err(Error::OwnerDied);
        }
        Ok(notified)
    }

    /// Waits until `predicate()` is true (checked under the lock, first before any
    /// waiting), at most `timeout` in all. Returns the predicate's last value (Python's
    /// `wait_for`). Errors as for [`wait`](Self::wait).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let mut held = cond.acquire()?;
    /// assert!(held.wait_for(|| true, None)?);
    /// assert!(!held.wait_for(|| false, Some(Duration::from_millis(10)))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.and_then(deadline_after);
        loop {
            if predicate() {
                return Ok(true);
            }
            if remaining(deadline) == Some(Duration::ZERO) {
                return Ok(false);
            }
            self.wait_until(deadline)?;
        }
    }

    /// Wakes up to `n` of the threads waiting on this condition, the longest-waiting
    /// first (Python's `notify(n)`). They return from `wait` once they get the lock
    /// back, that is after this guard is dropped.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// cond.acquire()?.notify(2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: usize) {
        self.cond.notify(n);
    }

    /// Wakes every thread waiting on this condition (Python's `notify_all`).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// cond.acquire()?.notify_all();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) {
        self.cond.notify(usize::MAX);
    }

    /// Declares the data the condition's lock protects repaired after
    /// [`AcquireError::OwnerDied`] (or [`Error::OwnerDied`] from [`wait`](Self::wait)):
    /// later acquirers get the lock clean (see
    /// [`LockGuard::mark_consistent`](crate::LockGuard::mark_consistent)).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let held = cond.acquire()?;
    /// held.mark_consistent(); // a consistent lock: nothing to do
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.held.mark_consistent();
    }

    /// The condition this guard holds.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let held = cond.acquire()?;
    /// assert!(held.condition().lock().is_locked());
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn condition(&self) -> &Condition {
        self.cond
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard")
            .field("condition", self.cond)
            .finish()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, FdRef(self.words.region().fd()), 0u64).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Condition, D::Error> {
        use serde::de::Error as _;
        let (lock, fd, offset) = <(RLock, FdOwned, u64)>::deserialize(d)?;
        let words = words_from_parts(fd, offset, MAGIC, "condition").map_err(D::Error::custom)?;
        Ok(Condition { lock, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_corrupt_huge_recursion_count_makes_wait_return_by_its_timeout_not_loop() {
        let cond = Condition::new().unwrap();
        let mut held = cond.acquire().unwrap();
        // Scribbled shared memory: the count claims two billion levels.
        cond.lock.raw().count().store(1 << 31, Ordering::Relaxed);
        let start = Instant::now();
        let r = held.wait(Some(Duration::from_millis(150)));
        let elapsed = start.elapsed();
        assert!(!r.unwrap());
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        assert_eq!(cond.lock.raw().count().load(Ordering::Relaxed), 1 << 31);
        cond.lock.raw().count().store(1, Ordering::Relaxed);
    }

    #[test]
    fn a_recursion_count_of_zero_while_held_is_reported_as_corrupt() {
        let cond = Condition::new().unwrap();
        let mut held = cond.acquire().unwrap();
        cond.lock.raw().count().store(0, Ordering::Relaxed);
        match held.wait(Some(Duration::from_millis(10))) {
            Err(Error::InvalidState(m)) => assert!(m.contains("corrupt"), "{m}"),
            other => panic!("expected a corruption error, got {other:?}"),
        }
        assert!(cond.lock.is_locked(), "the lock stays held after the error");
        cond.lock.raw().count().store(1, Ordering::Relaxed);
    }
}

//! `Lock` and `RLock` across processes (Python's `multiprocessing.Lock` / `RLock`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::deadline;
use crate::error::{Error, Result};
use crate::sync::owner_lock::{LOCK_SIZE, OwnerLock, Taken};
use crate::sys::shm::Region;
use crate::wire::handles::{FdOwned, FdRef};

/// Why an acquisition did not simply succeed.
///
/// [`OwnerDied`](AcquireError::OwnerDied) carries the guard: the lock *is* yours, but a
/// process died while holding it, so the data it protects may be half-updated. As with a
/// robust mutex (`EOWNERDEAD`), the lock stays marked *inconsistent*: every later
/// acquirer is told `OwnerDied` too, until a holder repairs the data and calls the
/// guard's `mark_consistent()` ([`LockGuard::mark_consistent`],
/// [`RLockGuard::mark_consistent`], and the same on the guards of
/// [`Condition`](crate::Condition), [`Value`](crate::Value) and
/// [`Array`](crate::Array)). `?` turns every variant into [`Error`] (releasing the lock,
/// still inconsistent, in the `OwnerDied` case).
///
/// A holder is only ever taken for dead on proof (its process or thread is gone, or
/// its pid now names another process): while that cannot be established (`/proc`
/// unreadable, a holder in another PID namespace) waiters keep waiting, up to their
/// timeout.
pub enum AcquireError<G> {
    /// A previous owner died holding the lock, and nobody has marked it consistent
    /// since; here is the lock.
    OwnerDied(G),
    /// The timeout passed, or (for `try_acquire`) the lock is held.
    Timeout,
    /// This thread already holds this non-recursive lock: waiting would never end.
    AlreadyHeld,
}

impl<G> AcquireError<G> {
    /// The guard in the `OwnerDied` case (acknowledging that the owner died).
    pub fn into_guard(self) -> Option<G> {
        match self {
            AcquireError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl<G> fmt::Debug for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcquireError::OwnerDied(_) => "OwnerDied(..)",
            AcquireError::Timeout => "Timeout",
            AcquireError::AlreadyHeld => "AlreadyHeld",
        })
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcquireError::OwnerDied(_) => "the previous owner died while holding the lock",
            AcquireError::Timeout => "the lock was not acquired in time",
            AcquireError::AlreadyHeld => "this thread already holds the lock",
        })
    }
}

impl<G> std::error::Error for AcquireError<G> {}

impl<G> From<AcquireError<G>> for Error {
    fn from(e: AcquireError<G>) -> Error {
        match e {
            AcquireError::OwnerDied(_) => Error::OwnerDied,
            AcquireError::Timeout => Error::Timeout,
            AcquireError::AlreadyHeld => Error::state("this thread already holds the lock"),
        }
    }
}

/// Makes a guard `!Send`: a lock is owned by a thread, and must be released there.
#[derive(Debug, Default)]
pub(crate) struct NotSend(std::marker::PhantomData<*const ()>);

/// The result of an acquisition.
pub type AcquireResult<G> = std::result::Result<G, AcquireError<G>>;

pub(crate) fn new_lock_region() -> Result<OwnerLock> {
    let region = Arc::new(Region::anonymous(LOCK_SIZE)?);
    OwnerLock::at(region, 0).ok_or_else(|| Error::state("lock region too small"))
}

/// Takes `raw` and wraps the outcome as an [`AcquireResult`] around `guard`.
#[inline]
pub(crate) fn take<'a, G>(
    raw: &'a OwnerLock,
    deadline: Option<Instant>,
    recursive: bool,
    guard: impl FnOnce(&'a OwnerLock) -> G,
) -> AcquireResult<G> {
    match raw.acquire(deadline, recursive) {
        Ok(Some(Taken::Clean | Taken::Again)) => Ok(guard(raw)),
        Ok(Some(Taken::OwnerDied)) => Err(AcquireError::OwnerDied(guard(raw))),
        Ok(None) => Err(AcquireError::Timeout),
        Err(()) => Err(AcquireError::AlreadyHeld),
    }
}

fn serialize_lock<S: Serializer>(raw: &OwnerLock, s: S) -> std::result::Result<S::Ok, S::Error> {
    (FdRef(raw.region().fd()), raw.offset() as u64).serialize(s)
}

fn deserialize_lock<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<OwnerLock, D::Error> {
    use serde::de::Error as _;
    let (fd, offset) = <(FdOwned, u64)>::deserialize(d)?;
    let region = Region::from_fd(fd.0).map_err(D::Error::custom)?;
    let offset = usize::try_from(offset).map_err(D::Error::custom)?;
    OwnerLock::at(Arc::new(region), offset)
        .ok_or_else(|| D::Error::custom("lock handle outside its memory"))
}

/// A lock shared by processes (Python's `multiprocessing.Lock`).
///
/// It lives in shared memory; send it to a child in its arguments or through a
/// [`Connection`](crate::Connection): every copy is the same lock. Held through a
/// [`LockGuard`] (Python's `with lock:`), or with [`release`](Lock::release) after a guard
/// was forgotten. If its holder dies, the next acquirer gets it with
/// [`AcquireError::OwnerDied`] instead of waiting forever, within about 0.1 s, and so
/// does every acquirer after it until one calls [`LockGuard::mark_consistent`].
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// {
///     let _held = lock.acquire()?;
///     assert!(lock.try_acquire().is_err());
/// }
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lock {
    raw: OwnerLock,
}

/// Holds a [`Lock`]; releases it when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    raw: &'a OwnerLock,
    /// The lock belongs to the thread that took it: the guard stays on that thread.
    _not_send: NotSend,
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.raw.release_guarded();
    }
}

impl LockGuard<'_> {
    /// Declares the data the lock protects repaired after [`AcquireError::OwnerDied`]
    /// (POSIX's `pthread_mutex_consistent`): later acquirers get the lock clean. Without
    /// it, the lock stays marked and every acquirer is told the owner died. Does nothing
    /// on a consistent lock.
    ///
    /// ```
    /// use multiproc::{AcquireError, Lock, Process};
    ///
    /// fn die_holding(lock: Lock) {
    ///     std::mem::forget(lock.acquire().unwrap());
    /// }
    ///
    /// let lock = Lock::new()?;
    /// let mut p = Process::new(die_holding, lock.clone());
    /// p.start()?;
    /// p.join()?;
    /// let Err(AcquireError::OwnerDied(held)) = lock.acquire() else { panic!() };
    /// drop(held); // not repaired: still marked
    /// let Err(AcquireError::OwnerDied(held)) = lock.acquire() else { panic!() };
    /// held.mark_consistent(); // repaired
    /// drop(held);
    /// assert!(lock.acquire().is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.raw.mark_consistent();
    }
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            raw: new_lock_region()?,
        })
    }

    /// Waits as long as it takes for the lock.
    #[inline]
    pub fn acquire(&self) -> AcquireResult<LockGuard<'_>> {
        take(&self.raw, None, false, |raw| LockGuard {
            raw,
            _not_send: NotSend::default(),
        })
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> AcquireResult<LockGuard<'_>> {
        take(&self.raw, deadline::after(timeout), false, |raw| {
            LockGuard {
                raw,
                _not_send: NotSend::default(),
            }
        })
    }

    /// Takes the lock only if it is free (Python's `acquire(block=False)`).
    pub fn try_acquire(&self) -> AcquireResult<LockGuard<'_>> {
        take(&self.raw, Some(Instant::now()), false, |raw| LockGuard {
            raw,
            _not_send: NotSend::default(),
        })
    }

    /// Releases a lock held by this thread whose guard was forgotten
    /// (`std::mem::forget`), as Python's `release()`. Releasing a lock this thread does
    /// not hold is an error.
    pub fn release(&self) -> Result<()> {
        self.raw
            .release()
            .map_err(|()| Error::state("release of a lock this thread does not hold"))
    }

    /// Whether some thread in some process holds the lock.
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_lock(&self.raw, s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Lock, D::Error> {
        deserialize_lock(d).map(|raw| Lock { raw })
    }
}

/// A re-entrant lock shared by processes (Python's `multiprocessing.RLock`): the
/// thread that holds it may take it again; it is free once released as many times.
/// The holder is the thread, named by its thread id, process, process start time and
/// PID namespace: a thread elsewhere with the same thread id is another holder.
/// A holder's death is reported as for [`Lock`].
///
/// ```
/// let lock = multiproc::RLock::new()?;
/// let a = lock.acquire()?;
/// let b = lock.acquire()?;
/// drop(b);
/// drop(a);
/// assert!(!lock.is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RLock {
    raw: OwnerLock,
}

/// Holds one level of an [`RLock`].
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: NotSend,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl RLockGuard<'_> {
    /// Declares the protected data repaired after [`AcquireError::OwnerDied`], as
    /// [`LockGuard::mark_consistent`] does; any level's guard may do it.
    ///
    /// ```
    /// let lock = multiproc::RLock::new()?;
    /// let held = lock.acquire()?;
    /// held.mark_consistent(); // a consistent lock: nothing to do
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.lock.raw.mark_consistent();
    }
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            raw: new_lock_region()?,
        })
    }

    fn take(&self, deadline: Option<Instant>) -> AcquireResult<RLockGuard<'_>> {
        let r = take(&self.raw, deadline, true, |_| ());
        let count = self.raw.count();
        match r {
            Ok(()) => {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(RLockGuard {
                    lock: self,
                    _not_send: NotSend::default(),
                })
            }
            Err(AcquireError::OwnerDied(())) => {
                count.store(1, std::sync::atomic::Ordering::Relaxed);
                Err(AcquireError::OwnerDied(RLockGuard {
                    lock: self,
                    _not_send: NotSend::default(),
                }))
            }
            Err(AcquireError::Timeout) => Err(AcquireError::Timeout),
            Err(AcquireError::AlreadyHeld) => Err(AcquireError::AlreadyHeld),
        }
    }

    /// Waits as long as it takes for the lock.
    pub fn acquire(&self) -> AcquireResult<RLockGuard<'_>> {
        self.take(None)
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> AcquireResult<RLockGuard<'_>> {
        self.take(deadline::after(timeout))
    }

    /// Takes the lock only if it is free or already this thread's.
    pub fn try_acquire(&self) -> AcquireResult<RLockGuard<'_>> {
        self.take(Some(Instant::now()))
    }

    /// Releases one level (for a forgotten guard); an error unless this thread holds it.
    pub fn release(&self) -> Result<()> {
        if !self.raw.held_by_me() {
            return Err(Error::state(
                "release of an RLock this thread does not hold",
            ));
        }
        let count = self.raw.count();
        if count.load(std::sync::atomic::Ordering::Relaxed) > 1 {
            count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        count.store(0, std::sync::atomic::Ordering::Relaxed);
        self.raw
            .release()
            .map_err(|()| Error::state("release of an RLock this thread does not hold"))
    }

    /// The depth at which the calling thread holds the lock (`None`: it does not); an
    /// error if the shared count says it holds it at depth 0 (corrupt memory).
    pub(crate) fn depth_held(&self) -> Result<Option<u32>> {
        if !self.raw.held_by_me() {
            return Ok(None);
        }
        match self.raw.count().load(std::sync::atomic::Ordering::Relaxed) {
            0 => Err(Error::state("corrupt RLock: held at depth 0")),
            depth => Ok(Some(depth)),
        }
    }

    /// Releases every level at once (Python's `_release_save`), whatever the depth: a
    /// count in shared memory, however large, never turns into a loop. The caller
    /// holds the lock (see [`depth_held`](Self::depth_held)).
    pub(crate) fn release_all(&self) -> Result<()> {
        self.raw
            .count()
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.raw
            .release()
            .map_err(|()| Error::state("release of an RLock this thread does not hold"))
    }

    /// Takes the lock back at `depth` levels in one acquisition (Python's
    /// `_acquire_restore`).
    pub(crate) fn acquire_restore(&self, depth: u32) -> AcquireResult<()> {
        let r = take(&self.raw, None, true, |_| ());
        if matches!(r, Ok(()) | Err(AcquireError::OwnerDied(()))) {
            self.raw
                .count()
                .store(depth, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// The lock word (for tests that corrupt it).
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &OwnerLock {
        &self.raw
    }

    /// How many times the holder has taken it (0 when free).
    pub fn recursion_depth(&self) -> u32 {
        if self.raw.is_locked() {
            self.raw.count().load(std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        }
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_lock(&self.raw, s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RLock, D::Error> {
        deserialize_lock(d).map(|raw| RLock { raw })
    }
}

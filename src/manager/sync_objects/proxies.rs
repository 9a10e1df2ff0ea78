//! The client side of the managed locks, semaphores, conditions, events and barriers:
//! typed proxies with the methods of the crate's own primitives.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::locks::{Acquired, CondWaited};
use super::wait::ThreadToken;
use crate::error::{Error, Result};
use crate::manager::{Proxy, ProxyCore};

/// Why an acquisition through a proxy did not simply succeed: the outcomes of
/// [`AcquireError`](crate::AcquireError), plus a failure to reach the manager.
///
/// [`OwnerDied`](ProxyAcquireError::OwnerDied) carries the guard: the lock *is* yours,
/// but the previous holder's connection to the manager ended while it held the lock
/// (its process died, or the thread ended), so the data it protects may be
/// half-updated. The lock stays marked until a holder calls `mark_consistent()` on its
/// guard, as the crate's own [`Lock`](crate::Lock) does. `?` turns every variant into
/// [`Error`] (releasing the lock in the `OwnerDied` case).
///
/// ```
/// use multiproc::{LockProxy, ProxyAcquireError};
///
/// fn die_holding(lock: LockProxy) {
///     std::mem::forget(lock.acquire().unwrap());
///     std::process::exit(0); // its connection to the manager ends here
/// }
///
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.lock()?;
/// let mut p = multiproc::Process::new(die_holding, lock.clone());
/// p.start()?;
/// p.join()?;
/// match lock.acquire() {
///     Err(ProxyAcquireError::OwnerDied(held)) => held.mark_consistent()?, // repaired
///     other => panic!("{other:?}"),
/// }
/// assert!(lock.acquire().is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum ProxyAcquireError<G> {
    /// A previous holder vanished while holding the lock, and nobody has marked it
    /// consistent since; here is the lock.
    OwnerDied(G),
    /// The timeout passed, or (for `try_acquire`) the lock is held.
    Timeout,
    /// This thread already holds this non-recursive lock: waiting would never end.
    AlreadyHeld,
    /// The manager could not be reached, or refused the call.
    Failed(Error),
}

/// The result of an acquisition through a proxy.
pub type ProxyAcquireResult<G> = std::result::Result<G, ProxyAcquireError<G>>;

impl<G> ProxyAcquireError<G> {
    /// The guard in the `OwnerDied` case (acknowledging that the holder vanished).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.lock()?;
    /// let held = lock.acquire()?;
    /// let again = lock.try_acquire().unwrap_err(); // AlreadyHeld
    /// assert!(again.into_guard().is_none());
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_guard(self) -> Option<G> {
        match self {
            ProxyAcquireError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl<G> fmt::Debug for ProxyAcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyAcquireError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            ProxyAcquireError::Timeout => f.write_str("Timeout"),
            ProxyAcquireError::AlreadyHeld => f.write_str("AlreadyHeld"),
            ProxyAcquireError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for ProxyAcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyAcquireError::OwnerDied(_) => {
                f.write_str("the previous holder vanished while holding the lock")
            }
            ProxyAcquireError::Timeout => f.write_str("the lock was not acquired in time"),
            ProxyAcquireError::AlreadyHeld => f.write_str("this thread already holds the lock"),
            ProxyAcquireError::Failed(e) => e.fmt(f),
        }
    }
}

impl<G> std::error::Error for ProxyAcquireError<G> {}

impl<G> From<ProxyAcquireError<G>> for Error {
    fn from(e: ProxyAcquireError<G>) -> Error {
        match e {
            ProxyAcquireError::OwnerDied(_) => Error::OwnerDied,
            ProxyAcquireError::Timeout => Error::Timeout,
            ProxyAcquireError::AlreadyHeld => Error::state("this thread already holds the lock"),
            ProxyAcquireError::Failed(e) => e,
        }
    }
}

/// Makes a guard `!Send`: a lock is held by a thread, and released there.
#[derive(Debug, Default)]
struct NotSend(PhantomData<*const ()>);

/// Asks the lock (or condition) behind `core` for the calling thread, and wraps the
/// outcome around `guard`.
fn take<'a, G>(
    core: &'a ProxyCore,
    timeout: Option<Duration>,
    guard: impl FnOnce(&'a ProxyCore) -> G,
) -> ProxyAcquireResult<G> {
    match core.call("acquire", &(ThreadToken::current(), timeout)) {
        Ok(Acquired::Clean) => Ok(guard(core)),
        Ok(Acquired::OwnerDied) => Err(ProxyAcquireError::OwnerDied(guard(core))),
        Ok(Acquired::Timeout) => Err(ProxyAcquireError::Timeout),
        Ok(Acquired::AlreadyHeld) => Err(ProxyAcquireError::AlreadyHeld),
        Err(e) => Err(ProxyAcquireError::Failed(e)),
    }
}

fn release(core: &ProxyCore) -> Result<()> {
    core.call("release", &(ThreadToken::current(),))
}

fn mark_consistent(core: &ProxyCore) -> Result<()> {
    core.call("mark_consistent", &(ThreadToken::current(),))
}

/// Implements [`Proxy`] for a proxy type wrapping a [`ProxyCore`] in `core`.
macro_rules! proxy_impl {
    ($ty:ident, $typeid:literal) => {
        impl Proxy for $ty {
            const TYPEID: &'static str = $typeid;
            fn from_core(core: ProxyCore) -> Self {
                $ty { core }
            }
            fn core(&self) -> &ProxyCore {
                &self.core
            }
        }
    };
}

/// A lock held by a manager (Python's `manager.Lock()`), usable from every process
/// that has the proxy: send it to children in their arguments, through pipes and
/// queues, or inside other managed objects.
///
/// Held through a [`LockProxyGuard`] (Python's `with lock:`), owned by the thread that
/// took it. If the holder's connection to the manager ends while it holds the lock
/// (its process was killed, or the thread ended), the manager releases the lock and
/// the next acquirer gets it with [`ProxyAcquireError::OwnerDied`], as with the
/// crate's own [`Lock`](crate::Lock). Dropping the proxy lets go of the manager's
/// object only.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.lock()?;
/// {
///     let _held = lock.acquire()?;
///     assert!(lock.try_acquire().is_err());
/// }
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LockProxy {
    core: ProxyCore,
}

proxy_impl!(LockProxy, "Lock");

/// A re-entrant lock held by a manager (Python's `manager.RLock()`): the thread that
/// holds it may take it again, and it is free once released as many times. A holder
/// that vanishes is handled as for [`LockProxy`].
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.rlock()?;
/// let a = lock.acquire()?;
/// let b = lock.acquire()?;
/// assert_eq!(lock.recursion_depth()?, 2);
/// drop((b, a));
/// assert!(!lock.is_locked()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLockProxy {
    core: ProxyCore,
}

proxy_impl!(RLockProxy, "RLock");

/// Holds a managed [`LockProxy`] or one level of an [`RLockProxy`]; releases it when
/// dropped (a release the manager cannot be told of is dropped with it: the manager
/// releases the lock when this thread's connection ends).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.lock()?;
/// {
///     let _held = lock.acquire()?; // Python's `with lock:`
///     assert!(lock.is_locked()?);
/// }
/// assert!(!lock.is_locked()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockProxyGuard<'a> {
    core: &'a ProxyCore,
    _not_send: NotSend,
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = release(self.core);
    }
}

impl LockProxyGuard<'_> {
    /// Declares the protected data repaired after [`ProxyAcquireError::OwnerDied`]:
    /// later acquirers get the lock clean. Does nothing on a consistent lock.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.lock()?;
    /// let held = lock.acquire()?;
    /// held.mark_consistent()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) -> Result<()> {
        mark_consistent(self.core)
    }
}

fn lock_guard(core: &ProxyCore) -> LockProxyGuard<'_> {
    LockProxyGuard {
        core,
        _not_send: NotSend::default(),
    }
}

macro_rules! lock_api {
    ($ty:ident, $make:ident) => {
        impl $ty {
            /// Waits as long as it takes for the lock.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let lock = manager.", stringify!($make), "()?;")]
            /// let held = lock.acquire()?;
            /// assert!(lock.is_locked()?);
            /// drop(held);
            /// assert!(!lock.is_locked()?);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire(&self) -> ProxyAcquireResult<LockProxyGuard<'_>> {
                take(&self.core, None, lock_guard)
            }

            /// Waits at most `timeout` for the lock (Python's `acquire(timeout=t)`):
            /// [`ProxyAcquireError::Timeout`] if it did not come free in time.
            ///
            /// ```
            /// use std::time::Duration;
            /// use multiproc::ProxyAcquireError;
            ///
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let lock = manager.", stringify!($make), "()?;")]
            /// let held = lock.acquire()?;
            /// let other = lock.clone();
            /// let waited = std::thread::spawn(move || {
            ///     let r = other.acquire_timeout(Duration::from_millis(10));
            ///     matches!(r, Err(ProxyAcquireError::Timeout))
            /// });
            /// assert!(waited.join().unwrap());
            /// drop(held);
            /// assert!(lock.acquire_timeout(Duration::from_secs(60)).is_ok());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_timeout(
                &self,
                timeout: Duration,
            ) -> ProxyAcquireResult<LockProxyGuard<'_>> {
                take(&self.core, Some(timeout), lock_guard)
            }

            /// Takes the lock only if it is free (Python's `acquire(False)`):
            /// [`ProxyAcquireError::Timeout`] if some other thread holds it.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let lock = manager.", stringify!($make), "()?;")]
            /// let other = lock.clone();
            /// let held = lock.try_acquire()?;
            /// let refused = std::thread::spawn(move || other.try_acquire().is_err()).join();
            /// assert!(refused.unwrap());
            /// # drop(held);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn try_acquire(&self) -> ProxyAcquireResult<LockProxyGuard<'_>> {
                take(&self.core, Some(Duration::ZERO), lock_guard)
            }

            /// Releases a level held by this thread whose guard was forgotten
            /// (`std::mem::forget`), as Python's `release()`; an error
            /// ([`Error::InvalidState`]) unless this thread holds it.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let lock = manager.", stringify!($make), "()?;")]
            /// assert!(lock.release().is_err()); // not held
            /// std::mem::forget(lock.acquire()?);
            /// lock.release()?;
            /// assert!(!lock.is_locked()?);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn release(&self) -> Result<()> {
                release(&self.core)
            }

            /// Whether some thread of some client holds the lock (Python's `locked()`).
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("assert!(!manager.", stringify!($make), "()?.is_locked()?);")]
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_locked(&self) -> Result<bool> {
                self.core.call("locked", &())
            }
        }
    };
}

lock_api!(LockProxy, lock);
lock_api!(RLockProxy, rlock);

impl RLockProxy {
    /// How many times the holder has taken it (0 when free).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.rlock()?;
    /// assert_eq!(lock.recursion_depth()?, 0);
    /// let _held = lock.acquire()?;
    /// assert_eq!(lock.recursion_depth()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recursion_depth(&self) -> Result<u32> {
        self.core.call("recursion_depth", &())
    }
}

/// A condition variable held by a manager (Python's `manager.Condition()`), on a
/// re-entrant lock of its own or on a managed lock given to
/// [`Manager::condition_with_lock`](crate::Manager::condition_with_lock).
///
/// [`acquire`](ConditionProxy::acquire) takes the lock and returns a
/// [`ConditionProxyGuard`], through which waits and notifications go. A holder that
/// vanishes is handled as for [`LockProxy`]; a waiter that vanishes passes on a
/// notification it was given.
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let cond = manager.condition()?;
/// let mut held = cond.acquire()?;
/// held.notify_all()?; // nobody waits: nothing happens
/// assert!(!held.wait(Some(Duration::from_millis(10)))?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConditionProxy {
    core: ProxyCore,
}

proxy_impl!(ConditionProxy, "Condition");

/// The lock of a [`ConditionProxy`], held; waits and notifications go through it.
/// Released (one level) when dropped.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.rlock()?;
/// let cond = manager.condition_with_lock(&lock)?;
/// {
///     let held = cond.acquire()?;
///     held.notify_all()?;
///     assert!(lock.is_locked()?);
/// }
/// assert!(!lock.is_locked()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ConditionProxyGuard<'a> {
    core: &'a ProxyCore,
    _not_send: NotSend,
}

impl Drop for ConditionProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = release(self.core);
    }
}

fn condition_guard(core: &ProxyCore) -> ConditionProxyGuard<'_> {
    ConditionProxyGuard {
        core,
        _not_send: NotSend::default(),
    }
}

impl ConditionProxy {
    /// Waits as long as it takes for the condition's lock.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// let held = cond.acquire()?;
    /// held.notify(1)?;
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> ProxyAcquireResult<ConditionProxyGuard<'_>> {
        take(&self.core, None, condition_guard)
    }

    /// Waits at most `timeout` for the condition's lock:
    /// [`ProxyAcquireError::Timeout`] if it did not come free in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// let _held = cond.acquire_timeout(Duration::from_secs(60))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> ProxyAcquireResult<ConditionProxyGuard<'_>> {
        take(&self.core, Some(timeout), condition_guard)
    }

    /// Takes the condition's lock only if it is free (or this thread's, for a
    /// re-entrant one).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// let _outer = cond.try_acquire()?;
    /// let _inner = cond.try_acquire()?; // its own lock is re-entrant
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> ProxyAcquireResult<ConditionProxyGuard<'_>> {
        take(&self.core, Some(Duration::ZERO), condition_guard)
    }
}

impl ConditionProxyGuard<'_> {
    /// Releases the lock (all levels), waits until notified or until `timeout` passes
    /// (`None`: as long as it takes), then takes the lock back as deep as it was held.
    /// Returns whether it was notified, like Python's `wait`.
    ///
    /// [`Error::OwnerDied`]: the lock is held again, but a holder vanished holding it
    /// (see [`mark_consistent`](Self::mark_consistent)); the guard stays valid.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{ConditionProxy, EventProxy};
    ///
    /// fn notifier((cond, started): (ConditionProxy, EventProxy)) {
    ///     started.set().unwrap();
    ///     // The lock comes free once the parent waits.
    ///     cond.acquire().unwrap().notify_all().unwrap();
    /// }
    ///
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// let started = manager.event()?;
    /// let mut held = cond.acquire()?;
    /// let child = multiproc::spawn(notifier, (cond.clone(), started.clone()))?;
    /// assert!(started.wait(Some(Duration::from_secs(60)))?);
    /// assert!(held.wait(Some(Duration::from_secs(60)))?);
    /// drop(held);
    /// child.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let r: CondWaited = self.core.call("wait", &(ThreadToken::current(), timeout))?;
        if r.owner_died {
            return Err(Error::OwnerDied);
        }
        Ok(r.notified)
    }

    /// Waits until `predicate()` is true (checked here, under the lock, first before
    /// any waiting), at most `timeout` in all; the predicate's last value (Python's
    /// `wait_for`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
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
        let deadline = timeout.and_then(crate::deadline::after);
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = crate::deadline::remaining(deadline);
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            self.wait(left)?;
        }
    }

    /// Wakes up to `n` of the threads waiting on this condition, the longest-waiting
    /// first (Python's `notify(n)`). They return from `wait` once they get the lock
    /// back, after this guard is dropped.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// cond.acquire()?.notify(2)?; // nobody waits: nothing happens
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: usize) -> Result<()> {
        self.core
            .call("notify", &(ThreadToken::current(), n as u64))
    }

    /// Wakes every thread waiting on this condition (Python's `notify_all`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// cond.acquire()?.notify_all()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.core.call("notify_all", &(ThreadToken::current(),))
    }

    /// Declares the data the lock protects repaired after a holder vanished
    /// ([`ProxyAcquireError::OwnerDied`], or [`Error::OwnerDied`] from
    /// [`wait`](Self::wait)): later acquirers get the lock clean.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// cond.acquire()?.mark_consistent()?; // a consistent lock: nothing to do
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) -> Result<()> {
        mark_consistent(self.core)
    }
}

/// A semaphore held by a manager (Python's `manager.Semaphore(n)`).
///
/// Units held in a [`SemaphoreProxyGuard`] (Python's `with sem:`) belong to the
/// thread that took them: if its connection to the manager ends first (the process
/// was killed), the manager gives them back, so a crashed worker does not shrink the
/// pool of units for good. Units taken with [`acquire`](SemaphoreProxy::acquire) are
/// counted only: any process may release them (a producer and a consumer), and one
/// taken by a process that dies stays taken, as with the crate's own
/// [`Semaphore`](crate::Semaphore).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let sem = manager.semaphore(2)?;
/// let _unit = sem.acquire_guard()?;
/// assert_eq!(sem.get_value()?, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SemaphoreProxy {
    core: ProxyCore,
}

proxy_impl!(SemaphoreProxy, "Semaphore");

/// A bounded semaphore held by a manager (Python's `manager.BoundedSemaphore(n)`):
/// releasing above the initial value is an error ([`Error::InvalidState`], Python's
/// `ValueError`). Otherwise as [`SemaphoreProxy`].
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let sem = manager.bounded_semaphore(1)?;
/// assert!(sem.release().is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphoreProxy {
    core: ProxyCore,
}

proxy_impl!(BoundedSemaphoreProxy, "BoundedSemaphore");

/// Holds one unit of a managed semaphore; releases it when dropped. If this thread's
/// connection to the manager ends first (its process is killed), the manager gives the
/// unit back.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let sem = manager.semaphore(1)?;
/// {
///     let _unit = sem.acquire_guard()?; // Python's `with sem:`
///     assert_eq!(sem.get_value()?, 0);
/// }
/// assert_eq!(sem.get_value()?, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the unit is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SemaphoreProxyGuard<'a> {
    core: &'a ProxyCore,
    _not_send: NotSend,
}

impl Drop for SemaphoreProxyGuard<'_> {
    fn drop(&mut self) {
        let _: Result<()> = self.core.call("release", &(ThreadToken::current(), true));
    }
}

fn sem_acquire(core: &ProxyCore, timeout: Option<Duration>, guarded: bool) -> Result<bool> {
    core.call("acquire", &(ThreadToken::current(), timeout, guarded))
}

macro_rules! semaphore_api {
    ($ty:ident, $make:ident, $unbounded:literal) => {
        impl $ty {
            /// Waits as long as it takes for a unit, then takes it (Python's
            /// `acquire()`). The unit is not this thread's: any process may release
            /// it, and it stays taken if this process dies.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(1)?;")]
            /// sem.acquire()?;
            /// assert_eq!(sem.get_value()?, 0);
            /// sem.release()?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire(&self) -> Result<()> {
                sem_acquire(&self.core, None, false).map(drop)
            }

            /// Waits at most `timeout` for a unit and takes it: true if one came in
            /// time (Python's `acquire(timeout=t)`).
            ///
            /// ```
            /// use std::time::Duration;
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(1)?;")]
            /// assert!(sem.acquire_timeout(Duration::from_secs(60))?);
            /// assert!(!sem.acquire_timeout(Duration::from_millis(10))?);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                sem_acquire(&self.core, Some(timeout), false)
            }

            /// Takes a unit only if one is free (Python's `acquire(False)`).
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(1)?;")]
            /// assert!(sem.try_acquire()?);
            /// assert!(!sem.try_acquire()?);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn try_acquire(&self) -> Result<bool> {
                sem_acquire(&self.core, Some(Duration::ZERO), false)
            }

            /// Waits for a unit and holds it in a guard that releases it when dropped
            /// (Python's `with sem:`); given back by the manager if this thread's
            /// connection ends first.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(2)?;")]
            /// {
            ///     let _a = sem.acquire_guard()?;
            ///     let _b = sem.acquire_guard()?;
            ///     assert_eq!(sem.get_value()?, 0);
            /// }
            /// assert_eq!(sem.get_value()?, 2);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_guard(&self) -> Result<SemaphoreProxyGuard<'_>> {
                self.guard(None)
            }

            /// [`acquire_guard`](Self::acquire_guard) waiting at most `timeout`:
            /// [`Error::Timeout`] if no unit came in time.
            ///
            /// ```
            /// use std::time::Duration;
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(1)?;")]
            /// let _unit = sem.acquire_guard_timeout(Duration::from_secs(60))?;
            /// assert!(matches!(
            ///     sem.acquire_guard_timeout(Duration::from_millis(10)),
            ///     Err(multiproc::Error::Timeout)
            /// ));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_guard_timeout(
                &self,
                timeout: Duration,
            ) -> Result<SemaphoreProxyGuard<'_>> {
                self.guard(Some(timeout))
            }

            /// A unit in a guard only if one is free; [`Error::Timeout`] otherwise.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(1)?;")]
            /// let _unit = sem.try_acquire_guard()?;
            /// assert!(sem.try_acquire_guard().is_err());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn try_acquire_guard(&self) -> Result<SemaphoreProxyGuard<'_>> {
                self.guard(Some(Duration::ZERO))
            }

            fn guard(&self, timeout: Option<Duration>) -> Result<SemaphoreProxyGuard<'_>> {
                if sem_acquire(&self.core, timeout, true)? {
                    Ok(SemaphoreProxyGuard {
                        core: &self.core,
                        _not_send: NotSend::default(),
                    })
                } else {
                    Err(Error::Timeout)
                }
            }

            /// Gives a unit back and wakes one waiter (Python's `release()`); for a
            /// bounded semaphore, [`Error::InvalidState`] (Python's `ValueError`) above
            /// its initial value.
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(1)?;")]
            /// sem.acquire()?;
            /// sem.release()?;
            /// assert_eq!(sem.get_value()?, 1);
            #[doc = concat!("assert_eq!(sem.release().is_ok(), ", stringify!($unbounded), "); // above 1")]
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn release(&self) -> Result<()> {
                self.core.call("release", &(ThreadToken::current(), false))
            }

            /// The number of free units (Python's `get_value()`).
            ///
            /// ```
            /// let manager = multiproc::Manager::start()?;
            #[doc = concat!("let sem = manager.", stringify!($make), "(3)?;")]
            /// assert_eq!(sem.get_value()?, 3);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_value(&self) -> Result<u32> {
                self.core.call("get_value", &())
            }
        }
    };
}

semaphore_api!(SemaphoreProxy, semaphore, true);
semaphore_api!(BoundedSemaphoreProxy, bounded_semaphore, false);

/// An event held by a manager (Python's `manager.Event()`): a flag that processes
/// wait for. It has no owner; a waiter that vanishes leaves nothing behind.
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let ready = manager.event()?;
/// assert!(!ready.wait(Some(Duration::from_millis(10)))?);
/// ready.set()?;
/// assert!(ready.wait(None)?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventProxy {
    core: ProxyCore,
}

proxy_impl!(EventProxy, "Event");

impl EventProxy {
    /// Raises the flag and wakes every waiter.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let event = manager.event()?;
    /// event.set()?;
    /// assert!(event.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) -> Result<()> {
        self.core.call("set", &())
    }

    /// Lowers the flag: later waits block until the next [`set`](Self::set).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let event = manager.event()?;
    /// event.set()?;
    /// event.clear()?;
    /// assert!(!event.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.core.call("clear", &())
    }

    /// Whether the flag is raised.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// assert!(!manager.event()?.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        self.core.call("is_set", &())
    }

    /// Waits until the flag is raised, at most `timeout` (`None`: as long as it
    /// takes): true once it is set, false if the timeout passed first. A `set` during
    /// the wait counts even if the flag was cleared again.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::EventProxy;
    ///
    /// fn child(ready: EventProxy) {
    ///     ready.set().unwrap();
    /// }
    ///
    /// let manager = multiproc::Manager::start()?;
    /// let ready = manager.event()?;
    /// let p = multiproc::spawn(child, ready.clone())?;
    /// assert!(ready.wait(Some(Duration::from_secs(60)))?);
    /// p.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.core.call("wait", &(timeout,))
    }
}

/// A barrier held by a manager (Python's `manager.Barrier(parties)`).
///
/// [`wait`](BarrierProxy::wait) returns once `parties` callers have arrived, each with
/// its arrival index. A waiter's timeout or [`abort`](BarrierProxy::abort) breaks the
/// barrier: every waiter, now and until [`reset`](BarrierProxy::reset), gets
/// [`Error::BrokenBarrier`]. A party whose client vanishes while waiting still counts
/// as arrived, as with the crate's own [`Barrier`](crate::Barrier).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let barrier = manager.barrier(1)?;
/// assert_eq!(barrier.wait()?, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BarrierProxy {
    core: ProxyCore,
}

proxy_impl!(BarrierProxy, "Barrier");

impl BarrierProxy {
    /// Waits for the other parties (up to the barrier's default timeout, if it has
    /// one); this caller's arrival index (`0..parties`, a different one each).
    ///
    /// ```
    /// use multiproc::BarrierProxy;
    ///
    /// fn party(barrier: BarrierProxy) -> u32 {
    ///     barrier.wait().unwrap()
    /// }
    ///
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier(2)?;
    /// let child = multiproc::spawn(party, barrier.clone())?;
    /// let mine = barrier.wait()?;
    /// let theirs = child.join()?;
    /// assert_eq!(mine + theirs, 1); // indexes 0 and 1
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32> {
        self.wait_with(None)
    }

    /// Waits at most `timeout` for the other parties; [`Error::BrokenBarrier`] if they
    /// did not come in time (which breaks the barrier for every party).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier(2)?;
    /// assert!(matches!(
    ///     barrier.wait_timeout(Duration::from_millis(10)),
    ///     Err(multiproc::Error::BrokenBarrier)
    /// ));
    /// assert!(barrier.broken()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_with(Some(timeout))
    }

    fn wait_with(&self, timeout: Option<Duration>) -> Result<u32> {
        let index: Option<u32> = self.core.call("wait", &(timeout,))?;
        index.ok_or(Error::BrokenBarrier)
    }

    /// Breaks the barrier: current and later waiters get [`Error::BrokenBarrier`].
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier(2)?;
    /// barrier.abort()?;
    /// assert!(matches!(barrier.wait(), Err(multiproc::Error::BrokenBarrier)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        self.core.call("abort", &())
    }

    /// Returns the barrier to its empty, unbroken state; current waiters get
    /// [`Error::BrokenBarrier`].
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier(1)?;
    /// barrier.abort()?;
    /// barrier.reset()?;
    /// assert_eq!(barrier.wait()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        self.core.call("reset", &())
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// assert!(!manager.barrier(2)?.broken()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn broken(&self) -> Result<bool> {
        self.core.call("broken", &())
    }

    /// How many parties wait in the current round (0 while it is broken). A party
    /// whose client vanished while waiting still counts.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// assert_eq!(manager.barrier(2)?.n_waiting()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> Result<u32> {
        self.core.call("n_waiting", &())
    }

    /// How many parties make a round.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// assert_eq!(manager.barrier(3)?.parties()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> Result<u32> {
        self.core.call("parties", &())
    }

    /// The default timeout of [`wait`](Self::wait), if any.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier_with_timeout(2, Duration::from_secs(5))?;
    /// assert_eq!(barrier.timeout()?, Some(Duration::from_secs(5)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(&self) -> Result<Option<Duration>> {
        self.core.call("timeout", &())
    }
}

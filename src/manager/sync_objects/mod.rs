//! Locks, semaphores, conditions, events, barriers and queues held by a manager
//! (Python's `SyncManager.Lock()`, `Queue()`, …): [`LockProxy`], [`RLockProxy`],
//! [`SemaphoreProxy`], [`BoundedSemaphoreProxy`], [`ConditionProxy`], [`EventProxy`],
//! [`BarrierProxy`], [`QueueProxy`] and [`JoinableQueueProxy`].
//!
//! The objects live in the manager's process, as plain state under a mutex; every call
//! is a round trip to it. Use them where the crate's own primitives cannot go: between
//! programs that share only a manager's address and key (on other machines too), or
//! inside other managed objects (a dict holding queues). Between processes of one
//! program the crate's shared-memory [`Lock`](crate::Lock), [`Queue`](crate::Queue) and
//! friends are much faster.
//!
//! The proxies have the crate's method names and conventions: `acquire` returns a
//! guard that releases when dropped, every blocking call has a timed and a `try_` form,
//! queues answer [`PutError::Full`](crate::PutError::Full) and
//! [`GetError::Empty`](crate::GetError::Empty). A blocked call waits in the manager, on
//! the thread serving that client's connection; each thread of a client has its own
//! connection, so a blocked thread holds up nobody else.
//!
//! ## When a client dies
//!
//! The manager sees a client go when its connection ends: the process was killed or
//! exited, or the thread that used the connection ended. Then:
//!
//! - A **lock** (`Lock`, `RLock`, the lock of a `Condition`) that the client held is
//!   released, whatever its depth, and marked: the next acquirer gets it at once, with
//!   [`ProxyAcquireError::OwnerDied`] (or [`Error::OwnerDied`](crate::Error::OwnerDied)
//!   from a condition's `wait`) instead of a plain guard, and so does every acquirer
//!   after it until a holder repairs the protected data and calls `mark_consistent()`
//!   on its guard. This is the crate's own robust [`Lock`](crate::Lock) behaviour, with
//!   one difference: the crate's lock learns of a death by checking that the holder's
//!   process still exists (within about 0.1 s), the manager by the end of the
//!   connection (at once). Python's managed lock stays held forever.
//! - **Semaphore** units the client held in a guard (`acquire_guard`, Python's
//!   `with sem:`) are given back, silently: a semaphore counts units, it guards no
//!   data. Units taken with a bare `acquire` are not given back, since any process may
//!   release them (a producer and a consumer): nobody can tell that they are lost.
//! - A call the client was **blocked** in ends within about 50 ms (the manager looks
//!   for the client that often while it waits). A blocked queue `get` does not take an
//!   item for a client that is gone: the item stays for the others. Only a client
//!   killed in the instant between the manager taking an item for it and the client
//!   reading the reply loses that item, as a consumer killed in the middle of the
//!   crate's own queue `get` does. A blocked `put` of a client that is gone puts
//!   nothing. A condition waiter that is gone passes on a notification it was given.
//! - A **barrier** party whose client is gone while it waits still counts as arrived
//!   (the crate's own [`Barrier`](crate::Barrier) does the same); one that never
//!   arrives holds the others until their timeout, which breaks the barrier.
//! - An **event** has no owner, and a queue's unfinished count (`task_done`) is not
//!   touched: an item that a killed consumer took never gets its `task_done`, so give
//!   `join` a timeout where consumers may die.
//!
//! If the manager itself dies, every call of every proxy fails at once, blocked calls
//! included.

mod counters;
mod locks;
mod proxies;
mod queue_object;
mod queue_proxy;
mod wait;

pub use self::proxies::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, ConditionProxyGuard, EventProxy,
    LockProxy, LockProxyGuard, ProxyAcquireError, ProxyAcquireResult, RLockProxy, SemaphoreProxy,
    SemaphoreProxyGuard,
};
pub use self::queue_proxy::{JoinableQueueProxy, QueueProxy};

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::counters::{BarrierObject, EventObject, SemaphoreObject};
use self::locks::{ConditionObject, LockCore, LockObject};

use self::queue_object::QueueObject;
use crate::error::Result;
use crate::manager::{CallError, Manager, Proxy, ProxyCore, Served, decode_args};

/// The server objects of this module, by typeid (Python's names): `None` for a typeid
/// that is not one of them.
pub(super) fn construct(typeid: &str, args: &[u8]) -> Option<Result<Arc<dyn Served>, CallError>> {
    fn served(object: impl Served) -> Result<Arc<dyn Served>, CallError> {
        Ok(Arc::new(object))
    }
    Some(match typeid {
        "Lock" | "RLock" => served(LockObject::new(typeid == "RLock")),
        "Semaphore" | "BoundedSemaphore" => decode_args(args)
            .and_then(|(value,)| served(SemaphoreObject::new(value, typeid == "BoundedSemaphore"))),
        "Condition" => decode_args(args).and_then(|(key,): (Option<u64>,)| {
            let lock = match key {
                Some(key) => locks::lock_by_key(key)?,
                None => Arc::new(LockCore::new(true)),
            };
            served(ConditionObject::new(lock))
        }),
        "Event" => served(EventObject::default()),
        "Barrier" => decode_args(args)
            .and_then(|(parties, timeout)| BarrierObject::new(parties, timeout))
            .and_then(served),
        "Queue" | "JoinableQueue" => decode_args(args).and_then(|(maxsize,): (u64,)| {
            served(QueueObject::new(
                usize::try_from(maxsize).unwrap_or(usize::MAX),
            ))
        }),
        _ => return None,
    })
}

fn create<P: Proxy>(manager: &Manager, args: &(impl Serialize + ?Sized)) -> Result<P> {
    ProxyCore::create(manager, P::TYPEID, "new", args).map(P::from_core)
}

impl Manager {
    /// A new lock held by the manager (Python's `manager.Lock()`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.lock()?;
    /// drop(lock.acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> Result<LockProxy> {
        create(self, &())
    }

    /// A new re-entrant lock held by the manager (Python's `manager.RLock()`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.rlock()?;
    /// let _a = lock.acquire()?;
    /// let _b = lock.acquire()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn rlock(&self) -> Result<RLockProxy> {
        create(self, &())
    }

    /// A new semaphore with `value` free units (Python's `manager.Semaphore(value)`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let sem = manager.semaphore(2)?;
    /// assert_eq!(sem.get_value()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        create(self, &(value,))
    }

    /// A new bounded semaphore with `value` free units, also its maximum (Python's
    /// `manager.BoundedSemaphore(value)`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let sem = manager.bounded_semaphore(1)?;
    /// assert!(sem.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphoreProxy> {
        create(self, &(value,))
    }

    /// A new condition on a re-entrant lock of its own (Python's
    /// `manager.Condition()`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let cond = manager.condition()?;
    /// cond.acquire()?.notify_all()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn condition(&self) -> Result<ConditionProxy> {
        create(self, &(None::<u64>,))
    }

    /// A new condition on `lock`, a [`LockProxy`] or [`RLockProxy`] of this manager
    /// (Python's `manager.Condition(lock)`): holding the condition is holding that
    /// lock, and a holder of the lock that vanishes is reported through the condition
    /// too. [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a proxy of
    /// another type, or a lock this manager does not hold.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.lock()?;
    /// let cond = manager.condition_with_lock(&lock)?;
    /// let held = cond.acquire()?;
    /// assert!(lock.is_locked()?);
    /// drop(held);
    /// assert!(!lock.is_locked()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn condition_with_lock<P: Proxy>(&self, lock: &P) -> Result<ConditionProxy> {
        if !matches!(P::TYPEID, "Lock" | "RLock") {
            return Err(crate::Error::InvalidArgument(format!(
                "a condition needs a Lock or an RLock, not a {}",
                P::TYPEID
            )));
        }
        let key: u64 = lock.core().call("condition_key", &())?;
        create(self, &(Some(key),))
    }

    /// A new event, not set (Python's `manager.Event()`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let event = manager.event()?;
    /// assert!(!event.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn event(&self) -> Result<EventProxy> {
        create(self, &())
    }

    /// A new barrier for `parties` callers (Python's `manager.Barrier(parties)`); an
    /// error ([`Error::InvalidArgument`](crate::Error::InvalidArgument)) for 0.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier(1)?;
    /// assert_eq!(barrier.wait()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn barrier(&self, parties: u32) -> Result<BarrierProxy> {
        create(self, &(parties, None::<Duration>))
    }

    /// A new barrier whose [`wait`](BarrierProxy::wait) gives up (breaking the barrier)
    /// after `timeout` (Python's `manager.Barrier(parties, timeout=t)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let barrier = manager.barrier_with_timeout(2, Duration::from_millis(10))?;
    /// assert!(barrier.wait().is_err()); // nobody else came
    /// assert!(barrier.broken()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn barrier_with_timeout(&self, parties: u32, timeout: Duration) -> Result<BarrierProxy> {
        create(self, &(parties, Some(timeout)))
    }

    /// A new queue without an item limit (Python's `manager.Queue()`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue::<(u32, String)>()?;
    /// q.put(&(1, "one".into()))?;
    /// assert_eq!(q.get()?, (1, "one".into()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<QueueProxy<T>> {
        self.queue_with_maxsize(0)
    }

    /// A new queue holding at most `maxsize` items (Python's `manager.Queue(maxsize)`;
    /// 0: no limit).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue_with_maxsize(1)?;
    /// q.put(&1)?;
    /// assert!(matches!(q.try_put(&2), Err(multiproc::PutError::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<QueueProxy<T>> {
        create(self, &(maxsize as u64,))
    }

    /// A new joinable queue without an item limit (Python's
    /// `manager.JoinableQueue()`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.joinable_queue::<u8>()?;
    /// q.put(&1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(&self) -> Result<JoinableQueueProxy<T>> {
        self.joinable_queue_with_maxsize(0)
    }

    /// A new joinable queue holding at most `maxsize` items (0: no limit).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.joinable_queue_with_maxsize::<u8>(4)?;
    /// assert_eq!(q.maxsize()?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn joinable_queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>> {
        create(self, &(maxsize as u64,))
    }
}

//! The client side of the managed queues: items are encoded here (serde, the crate's
//! codec) and the manager keeps the bytes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wait::{Bytes, BytesRef};
use crate::error::{Error, Result};
use crate::manager::{Proxy, ProxyCore};
use crate::queue::{GetError, PutError};
use crate::wire::codec;

/// A queue held by a manager (Python's `manager.Queue()`): FIFO, unbounded or limited
/// to `maxsize` items, usable from every process that has the proxy, on this machine
/// or (through a manager served on TCP) on others.
///
/// Items are encoded with serde in the process that puts them; an item that holds a
/// handle (a `Connection`, a crate `Lock`) is refused with [`Error::Encode`], while
/// proxies (of this or another manager) travel fine. Errors follow the crate's own
/// [`Queue`](crate::Queue): [`PutError::Full`] and [`GetError::Empty`] for the timed
/// and `try_` forms, [`Error::Decode`] for an item that is not a `T`.
///
/// A `get` blocked in a process that is killed does not take an item: the manager
/// checks that the caller is still connected before it hands over an item it waited
/// for. Only a caller killed in the instant between the manager taking the item and
/// the caller reading the reply loses that one item.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let q = manager.queue::<String>()?;
/// q.put(&"hello".to_string())?;
/// assert_eq!(q.get()?, "hello");
/// assert!(q.empty()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct QueueProxy<T> {
    core: ProxyCore,
    #[serde(skip)]
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for QueueProxy<T> {
    fn clone(&self) -> Self {
        QueueProxy {
            core: self.core.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for QueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueProxy")
            .field("core", &self.core)
            .finish()
    }
}

impl<T> Proxy for QueueProxy<T> {
    const TYPEID: &'static str = "Queue";
    fn from_core(core: ProxyCore) -> Self {
        QueueProxy {
            core,
            _items: PhantomData,
        }
    }
    fn core(&self) -> &ProxyCore {
        &self.core
    }
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_with(&self, item: &T, timeout: Option<Duration>) -> Result<(), PutError> {
        let bytes = codec::encode_plain(item).map_err(PutError::Failed)?;
        let done: bool = self
            .core
            .call("put", &(BytesRef(&bytes), timeout))
            .map_err(PutError::Failed)?;
        if done { Ok(()) } else { Err(PutError::Full) }
    }

    /// Puts an item, waiting as long as the queue is full (Python's `put`). The item
    /// is in the queue when this returns.
    ///
    /// ```
    /// use multiproc::QueueProxy;
    ///
    /// fn produce(q: QueueProxy<String>) {
    ///     q.put(&"from a child".to_string()).unwrap();
    /// }
    ///
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue()?;
    /// let child = multiproc::spawn(produce, q.clone())?;
    /// assert_eq!(q.get()?, "from a child");
    /// child.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_with(item, None).map_err(Error::from)
    }

    /// Puts an item, waiting at most `timeout` for room: [`PutError::Full`] if there
    /// was none in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue_with_maxsize(1)?;
    /// q.put_timeout(&1, Duration::from_secs(60))?;
    /// assert!(matches!(
    ///     q.put_timeout(&2, Duration::from_millis(10)),
    ///     Err(multiproc::PutError::Full)
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), PutError> {
        self.put_with(item, Some(timeout))
    }

    /// Puts an item if there is room now (Python's `put_nowait`): [`PutError::Full`]
    /// otherwise.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue_with_maxsize(1)?;
    /// q.try_put(&'a')?;
    /// assert!(matches!(q.try_put(&'b'), Err(multiproc::PutError::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put(&self, item: &T) -> Result<(), PutError> {
        self.put_with(item, Some(Duration::ZERO))
    }

    /// Takes the next item's bytes: `Ok(None)` if none came in time.
    fn get_bytes(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
        let got: Option<Bytes> = self.core.call("get", &(timeout,))?;
        Ok(got.map(|b| b.0))
    }

    fn get_with(&self, timeout: Option<Duration>) -> Result<T, GetError> {
        let Some(bytes) = self.get_bytes(timeout).map_err(GetError::Failed)? else {
            return Err(GetError::Empty);
        };
        codec::decode(&bytes, Vec::new()).map_err(|e| {
            // Nobody can process an item that does not decode: it needs no task_done
            // (as with the crate's own JoinableQueue).
            if self.core.typeid() == JOINABLE {
                let _: Result<()> = self.core.call("task_done", &());
            }
            GetError::Failed(e)
        })
    }

    /// Takes the next item, waiting as long as it takes (Python's `get`).
    /// [`Error::Decode`] for an item that does not decode as a `T` (it is dropped, and
    /// counts as done for [`JoinableQueueProxy::join`]).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue()?;
    /// q.put(&vec![1u8, 2])?;
    /// assert_eq!(q.get()?, vec![1u8, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_with(None).map_err(Error::from)
    }

    /// Takes the next item, waiting at most `timeout`: [`GetError::Empty`] if none came
    /// in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue::<u32>()?;
    /// assert!(matches!(
    ///     q.get_timeout(Duration::from_millis(10)),
    ///     Err(multiproc::GetError::Empty)
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_with(Some(timeout))
    }

    /// Takes the next item if there is one now (Python's `get_nowait`):
    /// [`GetError::Empty`] otherwise.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue()?;
    /// q.put(&5)?;
    /// assert_eq!(q.try_get()?, 5);
    /// assert!(matches!(q.try_get(), Err(multiproc::GetError::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_with(Some(Duration::ZERO))
    }
}

impl<T> QueueProxy<T> {
    /// The number of items in the queue (Python's `qsize`; approximate, as others put
    /// and get meanwhile).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue()?;
    /// q.put(&1)?;
    /// q.put(&2)?;
    /// assert_eq!(q.qsize()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        let n: u64 = self.core.call("qsize", &())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Whether the queue is empty (approximate, as [`qsize`](Self::qsize)).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// assert!(manager.queue::<u8>()?.empty()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether the queue holds `maxsize` items (approximate); never true without a
    /// `maxsize`.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue_with_maxsize(1)?;
    /// q.put(&'x')?;
    /// assert!(q.full()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn full(&self) -> Result<bool> {
        let max = self.maxsize()?;
        Ok(max != 0 && self.qsize()? >= max)
    }

    /// The item limit given at creation (0: none).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// assert_eq!(manager.queue_with_maxsize::<u8>(3)?.maxsize()?, 3);
    /// assert_eq!(manager.queue::<u8>()?.maxsize()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> Result<usize> {
        let n: u64 = self.core.call("maxsize", &())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A [`QueueProxy`] whose consumers report each item processed
/// ([`task_done`](JoinableQueueProxy::task_done)), so that a producer can wait until
/// all are ([`join`](JoinableQueueProxy::join)); Python's `manager.JoinableQueue()`.
/// Every method of [`QueueProxy`] is available through `Deref`.
///
/// An item taken by a consumer that died never gets its `task_done`: use
/// [`join_timeout`](JoinableQueueProxy::join_timeout) where consumers may die.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let q = manager.joinable_queue::<u32>()?;
/// q.put(&1)?;
/// q.get()?;
/// q.task_done()?;
/// q.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct JoinableQueueProxy<T> {
    queue: QueueProxy<T>,
}

impl<T> Clone for JoinableQueueProxy<T> {
    fn clone(&self) -> Self {
        JoinableQueueProxy {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueueProxy")
            .field("core", &self.queue.core)
            .finish()
    }
}

/// The type id of a joinable queue.
const JOINABLE: &str = "JoinableQueue";

impl<T> Proxy for JoinableQueueProxy<T> {
    const TYPEID: &'static str = JOINABLE;
    fn from_core(core: ProxyCore) -> Self {
        JoinableQueueProxy {
            queue: QueueProxy::from_core(core),
        }
    }
    fn core(&self) -> &ProxyCore {
        &self.queue.core
    }
}

impl<T> Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;
    fn deref(&self) -> &QueueProxy<T> {
        &self.queue
    }
}

impl<T> JoinableQueueProxy<T> {
    /// Reports one item taken from the queue as processed (Python's `task_done`);
    /// [`Error::InvalidState`] if every item put was reported already (Python's
    /// `ValueError`).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.joinable_queue()?;
    /// q.put(&1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.queue.core.call("task_done", &())
    }

    /// Waits until every item put has been reported processed (Python's `join`).
    ///
    /// ```
    /// use multiproc::JoinableQueueProxy;
    ///
    /// fn worker(q: JoinableQueueProxy<u32>) {
    ///     for _ in 0..3 {
    ///         q.get().unwrap();
    ///         q.task_done().unwrap();
    ///     }
    /// }
    ///
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.joinable_queue()?;
    /// let child = multiproc::spawn(worker, q.clone())?;
    /// for job in 0..3 {
    ///     q.put(&job)?;
    /// }
    /// q.join()?; // every job is done
    /// child.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        let _: bool = self.queue.core.call("join", &(None::<Duration>,))?;
        Ok(())
    }

    /// Waits at most `timeout` until every item put has been reported processed; true
    /// if they all were.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.joinable_queue()?;
    /// q.put(&"job".to_string())?;
    /// assert!(!q.join_timeout(Duration::from_millis(10))?);
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(Duration::from_secs(60))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.queue.core.call("join", &(Some(timeout),))
    }
}

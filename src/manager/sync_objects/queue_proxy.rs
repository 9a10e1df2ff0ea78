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

    /// Puts an item, waiting as long as the queue is full (Python's `put`).
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_with(item, None).map_err(Error::from)
    }

    /// Puts an item, waiting at most `timeout` for room: [`PutError::Full`] if there
    /// was none in time.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), PutError> {
        self.put_with(item, Some(timeout))
    }

    /// Puts an item if there is room now (Python's `put_nowait`).
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
    pub fn get(&self) -> Result<T> {
        self.get_with(None).map_err(Error::from)
    }

    /// Takes the next item, waiting at most `timeout`: [`GetError::Empty`] if none came
    /// in time.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_with(Some(timeout))
    }

    /// Takes the next item if there is one now (Python's `get_nowait`).
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_with(Some(Duration::ZERO))
    }
}

impl<T> QueueProxy<T> {
    /// The number of items in the queue (Python's `qsize`; approximate, as others put
    /// and get meanwhile).
    pub fn qsize(&self) -> Result<usize> {
        let n: u64 = self.core.call("qsize", &())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Whether the queue is empty (approximate, as [`qsize`](Self::qsize)).
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether the queue holds `maxsize` items (approximate); never true without a
    /// `maxsize`.
    pub fn full(&self) -> Result<bool> {
        let max = self.maxsize()?;
        Ok(max != 0 && self.qsize()? >= max)
    }

    /// The item limit given at creation (0: none).
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
    pub fn task_done(&self) -> Result<()> {
        self.queue.core.call("task_done", &())
    }

    /// Waits until every item put has been reported processed (Python's `join`).
    pub fn join(&self) -> Result<()> {
        let _: bool = self.queue.core.call("join", &(None::<Duration>,))?;
        Ok(())
    }

    /// Waits at most `timeout` until every item put has been reported processed; true
    /// if they all were.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.queue.core.call("join", &(Some(timeout),))
    }
}

//! `JoinableQueue` (Python's `multiprocessing.JoinableQueue`): a queue that counts the
//! items not yet processed.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Queue;
use crate::deadline;
use crate::error::{Error, Result};

/// A [`Queue`] whose consumers report each item processed
/// ([`task_done`](JoinableQueue::task_done)), so that a producer can wait until all are
/// ([`join`](JoinableQueue::join)). Every method of [`Queue`] is available through
/// `Deref`.
///
/// The count of unfinished items is the number of items put minus the `task_done`
/// calls, kept in the queue's shared memory: an item counts from the moment its `put`
/// completes. An item that a `get` reported as undecodable ([`Error::Decode`]) counts
/// as done by itself. An item taken by a consumer that died never gets its
/// `task_done`: use [`join_timeout`](JoinableQueue::join_timeout) where consumers may
/// die.
///
/// ```
/// use multiproc::{JoinableQueue, spawn};
///
/// fn worker(q: JoinableQueue<u32>) {
///     for _ in 0..3 {
///         let _job = q.get().expect("get");
///         q.task_done().expect("one task_done per item");
///     }
/// }
///
/// let q = JoinableQueue::new()?;
/// let child = spawn(worker, q.clone())?;
/// for job in 0..3 {
///     q.put(&job)?;
/// }
/// q.join(); // every job is done
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new queue without an item limit.
    pub fn new() -> Result<JoinableQueue<T>> {
        Queue::new().map(JoinableQueue::from_queue)
    }

    /// A new queue holding at most `maxsize` items (0: no limit).
    pub fn with_maxsize(maxsize: usize) -> Result<JoinableQueue<T>> {
        Queue::with_maxsize(maxsize).map(JoinableQueue::from_queue)
    }
}

impl<T> JoinableQueue<T> {
    pub(super) fn from_queue(queue: Queue<T>) -> JoinableQueue<T> {
        JoinableQueue { queue }
    }

    /// Reports one item taken from the queue as processed (Python's `task_done`).
    /// [`Error::InvalidState`] if every item put was reported already (Python raises
    /// `ValueError`).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(&1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        if self.queue.ring().task_done() {
            Ok(())
        } else {
            Err(Error::state(
                "task_done() called more times than there were items put",
            ))
        }
    }

    /// Waits until every item put has been reported processed (Python's `join`).
    pub fn join(&self) {
        self.queue.ring().join(None);
    }

    /// Waits at most `timeout` until every item put has been reported processed; true
    /// if they all were.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(&"job".to_string())?;
    /// assert!(!q.join_timeout(Duration::from_millis(10)));
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.ring().join(deadline::after(timeout))
    }

    /// The [`Queue`] underneath.
    pub fn into_queue(self) -> Queue<T> {
        self.queue
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.queue.qsize())
            .field("maxsize", &self.queue.maxsize())
            .finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(JoinableQueue::from_queue)
    }
}

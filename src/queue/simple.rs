//! `SimpleQueue` (Python's `multiprocessing.SimpleQueue`): a queue with the short
//! surface, no item limit.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Queue, QueueIter};
use crate::error::Result;

/// A queue with Python's `SimpleQueue` surface: [`put`](SimpleQueue::put),
/// [`get`](SimpleQueue::get), [`empty`](SimpleQueue::empty) and
/// [`close`](SimpleQueue::close), no item limit. It is a [`Queue`] underneath, with the
/// same guarantees; [`into_queue`](SimpleQueue::into_queue) gives the rest of the
/// surface.
///
/// ```
/// use multiproc::{SimpleQueue, spawn};
///
/// fn square(args: (SimpleQueue<u64>, u64)) {
///     let (q, n) = args;
///     q.put(&(n * n)).expect("put");
/// }
///
/// let q = SimpleQueue::new()?;
/// let child = spawn(square, (q.clone(), 12))?;
/// assert_eq!(q.get()?, 144);
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Puts an item (see [`Queue::put`]).
    pub fn put(&self, item: &T) -> Result<()> {
        self.queue.put(item)
    }

    /// Takes the next item, waiting as long as it takes (see [`Queue::get`]).
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// The items as they come, until no producer is left (see [`Queue::iter`]).
    pub fn iter(&self) -> QueueIter<'_, T> {
        self.queue.iter()
    }
}

impl<T> SimpleQueue<T> {
    /// Whether the queue is empty (approximate: others may put and get meanwhile).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<i32>::new()?;
    /// assert!(q.empty());
    /// q.put(&1)?;
    /// assert!(!q.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// This handle will put no more (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close();
    }

    /// The [`Queue`] underneath.
    pub fn into_queue(self) -> Queue<T> {
        self.queue
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.empty())
            .finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(|queue| SimpleQueue { queue })
    }
}

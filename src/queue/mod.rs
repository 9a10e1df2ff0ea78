//! Queues between processes (Python's `multiprocessing.queues`): [`Queue`],
//! [`SimpleQueue`] and [`JoinableQueue`], all on one ring in shared memory.
//!
//! An item is encoded with serde (the crate's codec, as for
//! [`Connection::send`](crate::Connection::send)) and copied into the ring by the
//! producer itself: [`put`](Queue::put) is complete when it returns. There is no feeder
//! thread, so nothing is lost when a process exits right after a `put`, and Python's
//! `join_thread` and `cancel_join_thread` have nothing to do here. Small items cost no
//! system call: producers and consumers meet in shared memory, spin briefly when they
//! must wait, and sleep on a futex only after that; the other side wakes a sleeper only
//! when one sleeps.
//!
//! Any number of processes and threads may put and get; the items of one producer come
//! out in the order it put them. A queue travels to other processes in
//! [`Process`](crate::Process) arguments or through a [`Connection`](crate::Connection),
//! under every start method, and every copy is the same queue.
//!
//! ## Sizes
//!
//! The ring holds 1 MiB by default ([`QueueBuilder::ring_bytes`]). An item longer than
//! a quarter of the ring is streamed through it in parts while the consumer takes them,
//! so items of any size up to [`MAX_ITEM_BYTES`] (1 GiB encoded) pass; a larger one is
//! refused with [`Error::MessageTooLarge`]. An item holding a handle (a `Connection`, a
//! `Lock`, another queue) is refused with [`Error::Encode`]: send those through a
//! [`Connection`](crate::Connection) or in process arguments.
//!
//! ## When a process dies
//!
//! - A producer killed in the middle of a `put` leaves the queue as it was: an item is
//!   visible only once it is complete. If it dies in the middle of streaming a large
//!   item, the next producer (or the consumer waiting for the rest) closes the item, and
//!   the consumer drops the part it had. The other producers wait at most about 100 ms
//!   for its lock.
//! - A consumer killed in the middle of a `get` loses at most the item it was taking:
//!   an item whose taking had not completed stays in the queue for the next consumer,
//!   one it had taken goes with it. Nothing is delivered twice.
//! - [`get`](Queue::get) on an empty queue returns [`Error::NoProducers`] once no handle
//!   that could put is left: every handle was [`close`](Queue::close)d or dropped, or
//!   its process died (a process in another PID namespace is never taken for dead). A
//!   handle on its way to another process (in arguments or a message) counts as a
//!   producer until it is received; one whose receiver died before taking it counts
//!   until its sender ends.
//! - A handle that a forked child finds in the memory it copied from its parent (a
//!   queue in a `static`, say), rather than receives in its arguments, is its parent's
//!   handle: it counts as a producer while the parent lives and has not closed it.
//! - [`JoinableQueue::join`] waits for a `task_done` per item put: an item that a killed
//!   consumer took never gets one, so give `join` a timeout
//!   ([`JoinableQueue::join_timeout`]) where consumers may die.
//!
//! ## Corrupt memory
//!
//! Any process holding the queue can write its memory. A damaged item is reported by
//! the `get` that takes it ([`Error::Decode`]); a damaged record header or counter makes
//! that `get` drop everything the queue held at that moment (where the next item starts
//! is unknown) and report [`Error::Decode`]. Nothing read from the segment is used
//! unchecked.

mod joinable;
mod putters;
mod ring;
mod simple;

pub use self::joinable::JoinableQueue;
pub use self::ring::MAX_ITEM_BYTES;
pub use self::simple::SimpleQueue;

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use self::putters::{Putters, Registration};
use self::ring::{Fail, Got, INLINE, MAX_MAXSIZE, MAX_RING_BYTES, MIN_RING_BYTES, Parts, Ring};
use crate::deadline;
use crate::error::{Error, Result};
use crate::sys::liveness;
use crate::sys::shm::Region;
use crate::wire::codec;
use crate::wire::handles::{self, FdOwned, FdRef};

/// An item's bytes as a consumer took them: in a buffer on its stack, or on the heap.
enum Taken<'a> {
    Inline(&'a [u8]),
    Heap(Vec<u8>),
}

/// The ring's size when none is given: 1 MiB.
pub const DEFAULT_RING_BYTES: usize = 1 << 20;

/// How long a `try_` form waits for another producer or consumer that is in the middle
/// of its own operation (a few microseconds usually) before it answers `Full` or
/// `Empty`.
const TRY_LOCK_GRACE: Duration = Duration::from_micros(50);

/// Why a `get` with a timeout, or a `try_get`, returned no item.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Nothing to take in time (Python's `queue.Empty`).
    #[error("empty")]
    Empty,
    /// Anything else, such as [`Error::NoProducers`] or [`Error::Decode`].
    #[error(transparent)]
    Failed(Error),
}

impl From<GetError> for Error {
    fn from(e: GetError) -> Error {
        match e {
            GetError::Empty => Error::Empty,
            GetError::Failed(e) => e,
        }
    }
}

/// Why a `put` with a timeout, or a `try_put`, did not put its item.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// No room in time (Python's `queue.Full`).
    #[error("full")]
    Full,
    /// Anything else, such as [`Error::Encode`] or [`Error::MessageTooLarge`].
    #[error(transparent)]
    Failed(Error),
}

impl From<PutError> for Error {
    fn from(e: PutError) -> Error {
        match e {
            PutError::Full => Error::Full,
            PutError::Failed(e) => e,
        }
    }
}

/// One handle: the ring, the table of producers, and this handle's place in it.
struct Handle {
    ring: Ring,
    putters: Putters,
    registration: Registration,
    /// The process that registered the handle (a copy of it in a forked child is not
    /// that process's handle).
    pid: u32,
    closed: AtomicBool,
}

impl Handle {
    fn new(ring: Ring) -> Handle {
        let putters = Putters::new(ring.region().clone());
        let registration = putters.register();
        Handle {
            ring,
            putters,
            registration,
            pid: liveness::me().id.pid,
            closed: AtomicBool::new(false),
        }
    }

    /// Withdraws this handle from the producers (once).
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) && liveness::me().id.pid == self.pid {
            self.putters.unregister(self.registration);
            // Consumers asleep on an empty queue look again for producers.
            self.ring.wake_consumers();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

/// A queue between processes (Python's `multiprocessing.Queue`): FIFO per producer,
/// unbounded or limited to `maxsize` items.
///
/// Every clone, and every copy received by another process, is the same queue; each is
/// a handle of its own that can put until it is [`close`](Queue::close)d or dropped.
///
/// ```
/// use multiproc::{Queue, spawn};
///
/// fn produce(q: Queue<String>) {
///     for i in 0..3 {
///         q.put(&format!("item {i}")).expect("put");
///     }
/// }
///
/// let q = Queue::new()?;
/// let child = spawn(produce, q.clone())?;
/// q.close(); // the parent only consumes
/// let items: Vec<String> = q.iter().collect::<multiproc::Result<_>>()?;
/// assert_eq!(items, ["item 0", "item 1", "item 2"]);
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    handle: Handle,
    _items: PhantomData<fn(T) -> T>,
}

/// Options of a new queue: [`Queue::builder`].
///
/// ```
/// let q = multiproc::Queue::<u64>::builder().maxsize(10).ring_bytes(64 << 10).build()?;
/// assert_eq!(q.maxsize(), 10);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct QueueBuilder<T> {
    maxsize: usize,
    ring_bytes: usize,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("maxsize", &self.maxsize)
            .field("ring_bytes", &self.ring_bytes)
            .finish()
    }
}

impl<T> Default for QueueBuilder<T> {
    fn default() -> Self {
        QueueBuilder {
            maxsize: 0,
            ring_bytes: DEFAULT_RING_BYTES,
            _items: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The most items the queue holds before `put` waits (Python's `maxsize`); 0, the
    /// default, means no limit but the ring's memory. At most 2^30.
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// The bytes of shared memory items pass through, rounded up to a power of two
    /// from 16 KiB to 1 GiB; [`DEFAULT_RING_BYTES`] (1 MiB) by default. Items up to a
    /// quarter of it are written whole; longer ones are streamed through it. Without a
    /// `maxsize`, `put` waits when the ring is full.
    pub fn ring_bytes(mut self, bytes: usize) -> Self {
        self.ring_bytes = bytes;
        self
    }

    /// Makes the queue.
    pub fn build(self) -> Result<Queue<T>> {
        if self.maxsize > MAX_MAXSIZE {
            return Err(Error::InvalidArgument(format!(
                "maxsize {} is above the limit of {MAX_MAXSIZE}",
                self.maxsize
            )));
        }
        let ring_bytes = self
            .ring_bytes
            .clamp(MIN_RING_BYTES, MAX_RING_BYTES)
            .next_power_of_two();
        if self.ring_bytes > MAX_RING_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a ring of {} bytes is above the limit of {MAX_RING_BYTES}",
                self.ring_bytes
            )));
        }
        Ok(Queue::from_ring(Ring::create(ring_bytes, self.maxsize)?))
    }

    /// Makes a [`JoinableQueue`].
    pub fn build_joinable(self) -> Result<JoinableQueue<T>> {
        self.build().map(JoinableQueue::from_queue)
    }
}

impl<T> Queue<T> {
    fn from_ring(ring: Ring) -> Queue<T> {
        Queue {
            handle: Handle::new(ring),
            _items: PhantomData,
        }
    }

    fn ring(&self) -> &Ring {
        &self.handle.ring
    }

    /// The number of items in the queue (Python's `qsize`). Approximate, as in Python:
    /// other processes may put and get meanwhile.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(&1)?;
    /// q.put(&2)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.ring().len()
    }

    /// Whether the queue is empty (approximate, as [`qsize`](Queue::qsize)).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items (approximate, as
    /// [`qsize`](Queue::qsize)); never true for a queue without a `maxsize`.
    ///
    /// ```
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put(&'x')?;
    /// assert!(q.full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn full(&self) -> bool {
        let max = self.ring().maxsize();
        max != 0 && self.qsize() >= max
    }

    /// The item limit given at creation (0: none).
    pub fn maxsize(&self) -> usize {
        self.ring().maxsize()
    }

    /// Declares that this handle will put no more (Python's `close`): it stops counting
    /// as a producer, and a later [`put`](Queue::put) through it is an error. Unlike
    /// Python's, a closed handle can still `get`, which is how a consumer says that it
    /// only consumes. Other handles (clones, copies in other processes) are not
    /// affected. Dropping a handle closes it.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(&7)?;
    /// q.close();
    /// assert!(q.put(&8).is_err());
    /// assert_eq!(q.get()?, 7);
    /// assert!(matches!(q.get(), Err(multiproc::Error::NoProducers)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.handle.close();
    }

    /// Whether this handle was closed.
    pub fn is_closed(&self) -> bool {
        self.handle.closed.load(Ordering::Acquire)
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A new queue without an item limit.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(&(1, "one".to_string()))?;
    /// assert_eq!(q.get()?, (1, "one".to_string()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Queue<T>> {
        Queue::builder().build()
    }

    /// A new queue holding at most `maxsize` items (Python's `Queue(maxsize)`; 0 means
    /// no limit).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put(&1)?;
    /// assert!(matches!(q.try_put(&2), Err(multiproc::PutError::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Queue<T>> {
        Queue::builder().maxsize(maxsize).build()
    }

    /// Options for a new queue.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder::default()
    }

    fn put_until(
        &self,
        item: &T,
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
    ) -> Result<(), PutError> {
        if self.is_closed() {
            return Err(PutError::Failed(Error::state(
                "put on a closed queue handle",
            )));
        }
        let mut small = [0; INLINE];
        let large;
        let bytes = match codec::encode_plain_into(item, &mut small).map_err(PutError::Failed)? {
            Some(len) => &small[..len],
            None => {
                large = codec::encode_plain(item).map_err(PutError::Failed)?;
                &large[..]
            }
        };
        self.ring()
            .put_parts(Parts(&[], bytes), deadline, lock_deadline)
            .map_err(|f| match f {
                Fail::Timeout => PutError::Full,
                Fail::NoProducers => PutError::Failed(Error::NoProducers),
                Fail::Failed(e) => PutError::Failed(e),
            })
    }

    /// Puts an item, waiting as long as the queue is full (Python's `put`). The item is
    /// in the queue when this returns.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(&vec![1u8, 2, 3])?;
    /// assert_eq!(q.get()?, vec![1u8, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_until(item, None, None).map_err(Error::from)
    }

    /// Puts an item, waiting at most `timeout` for room (Python's `put(item,
    /// timeout=t)`): [`PutError::Full`] if there was none in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put_timeout(&1, Duration::from_millis(10))?;
    /// assert!(matches!(
    ///     q.put_timeout(&2, Duration::from_millis(10)),
    ///     Err(multiproc::PutError::Full)
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), PutError> {
        let deadline = deadline::after(timeout);
        self.put_until(item, deadline, grace(deadline))
    }

    /// Puts an item if there is room now (Python's `put_nowait`): [`PutError::Full`]
    /// otherwise.
    ///
    /// ```
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.try_put(&1)?;
    /// assert!(matches!(q.try_put(&2), Err(multiproc::PutError::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put(&self, item: &T) -> Result<(), PutError> {
        let now = Some(Instant::now());
        self.put_until(item, now, grace(now))
    }

    fn get_until(
        &self,
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
    ) -> Result<T, GetError> {
        self.take(deadline, lock_deadline, |item| match item {
            Taken::Inline(bytes) => codec::decode(bytes, Vec::new()),
            Taken::Heap(bytes) => codec::decode_owned(bytes, 0, Vec::new()),
        })?
        .map_err(|e| {
            // Nobody can process an item that does not decode: it needs no task_done.
            self.ring().mark_done(1);
            GetError::Failed(e)
        })
    }

    /// Takes the next item, waiting as long as it takes (Python's `get`).
    /// [`Error::NoProducers`] once the queue is empty and no handle that could put is
    /// left; [`Error::Decode`] for an item that does not decode as a `T` (it is
    /// dropped; the next `get` goes on with the next item).
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(&"hello".to_string())?;
    /// let s: String = q.get()?;
    /// assert_eq!(s, "hello");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None, None).map_err(Error::from)
    }

    /// Takes the next item, waiting at most `timeout` (Python's `get(timeout=t)`):
    /// [`GetError::Empty`] if none came in time. Once part of an item larger than a
    /// quarter of the ring has been taken, the rest is waited for beyond the timeout
    /// (while its producer lives), so that the item is not lost.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u32>::new()?;
    /// assert!(matches!(
    ///     q.get_timeout(Duration::from_millis(10)),
    ///     Err(multiproc::GetError::Empty)
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        let deadline = deadline::after(timeout);
        self.get_until(deadline, grace(deadline))
    }

    /// Takes the next item if there is one now (Python's `get_nowait`):
    /// [`GetError::Empty`] otherwise.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(&5)?;
    /// assert_eq!(q.try_get()?, 5);
    /// assert!(matches!(q.try_get(), Err(multiproc::GetError::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T, GetError> {
        let now = Some(Instant::now());
        self.get_until(now, grace(now))
    }

    /// Puts an item given as its bytes, in two parts: the bytes of a `T` followed by
    /// bytes of the caller's (a body encoded apart from its header, which is then
    /// neither encoded again nor copied to join the two). Waits as long as the queue is
    /// full. Such an item is taken with [`get_bytes`](Queue::get_bytes).
    pub(crate) fn put_bytes(&self, head: &[u8], body: &[u8]) -> Result<()> {
        if self.is_closed() {
            return Err(Error::state("put on a closed queue handle"));
        }
        self.ring()
            .put_parts(Parts(head, body), None, None)
            .map_err(|f| match f {
                Fail::Timeout => Error::Full,
                Fail::NoProducers => Error::NoProducers,
                Fail::Failed(e) => e,
            })
    }

    /// Takes the next item's bytes, undecoded, waiting until `deadline`, and for other
    /// consumers until `lock_deadline`.
    fn get_bytes_until(
        &self,
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
    ) -> Result<Vec<u8>, GetError> {
        self.take(deadline, lock_deadline, |item| match item {
            Taken::Inline(bytes) => bytes.to_vec(),
            Taken::Heap(bytes) => bytes,
        })
    }

    /// Takes the next item, waiting until `deadline` (and for other consumers until
    /// `lock_deadline`), and hands its bytes to `finish`.
    fn take<R>(
        &self,
        deadline: Option<Instant>,
        lock_deadline: Option<Instant>,
        finish: impl FnOnce(Taken<'_>) -> R,
    ) -> Result<R, GetError> {
        let putters = &self.handle.putters;
        let mut small = [0; INLINE];
        let got = self
            .ring()
            .get(deadline, lock_deadline, &|| putters.any_left(), &mut small)
            .map_err(|f| match f {
                Fail::Timeout => GetError::Empty,
                Fail::NoProducers => GetError::Failed(Error::NoProducers),
                Fail::Failed(e) => GetError::Failed(e),
            })?;
        Ok(finish(match got {
            Got::Inline(len) => Taken::Inline(&small[..len]),
            Got::Heap(bytes) => Taken::Heap(bytes),
        }))
    }

    /// The next item's bytes, undecoded, as [`get`](Queue::get) waits for them.
    pub(crate) fn get_bytes(&self) -> Result<Vec<u8>> {
        self.get_bytes_until(None, None).map_err(Error::from)
    }

    /// [`get_bytes`](Queue::get_bytes), waiting at most `timeout`.
    pub(crate) fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetError> {
        let deadline = deadline::after(timeout);
        self.get_bytes_until(deadline, grace(deadline))
    }

    /// [`get_bytes`](Queue::get_bytes) if an item is there now.
    pub(crate) fn try_get_bytes(&self) -> Result<Vec<u8>, GetError> {
        let now = Some(Instant::now());
        self.get_bytes_until(now, grace(now))
    }

    /// [`get_bytes`](Queue::get_bytes) if an item is there now, waiting up to
    /// `lock_wait` for a consumer in the middle of its own `get` (one that died there
    /// holds the queue's consumer side until another takes it over, after about 0.1 s).
    pub(crate) fn try_get_bytes_after(&self, lock_wait: Duration) -> Result<Vec<u8>, GetError> {
        let now = Instant::now();
        self.get_bytes_until(Some(now), deadline::after(lock_wait))
    }

    /// The items as they come, each as [`get`](Queue::get) returns it; the iteration
    /// ends once the queue is empty and no producer is left ([`Error::NoProducers`]).
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// for i in 0..3 {
    ///     q.put(&i)?;
    /// }
    /// q.close();
    /// let all: Vec<i32> = q.iter().collect::<multiproc::Result<_>>()?;
    /// assert_eq!(all, [0, 1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn iter(&self) -> QueueIter<'_, T> {
        QueueIter { queue: self }
    }
}

/// The deadline for waiting on another producer or consumer mid-operation: the
/// caller's, but never less than [`TRY_LOCK_GRACE`] from now.
fn grace(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| d.max(Instant::now() + TRY_LOCK_GRACE))
}

/// The items of a queue as they come: [`Queue::iter`].
#[derive(Debug)]
pub struct QueueIter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for QueueIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match self.queue.get() {
            Err(Error::NoProducers) => None,
            r => Some(r),
        }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = Result<T>;
    type IntoIter = QueueIter<'a, T>;

    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}

impl<T> Clone for Queue<T> {
    /// Another handle to the same queue, counted as a producer until it is closed or
    /// dropped.
    fn clone(&self) -> Self {
        Queue::from_ring(self.ring().clone())
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        // The descriptor first: outside a multiproc transport it fails, before the
        // handle is counted as travelling.
        t.serialize_element(&FdRef(self.ring().region().fd()))?;
        let (slot, owner) = self.handle.putters.send(handles::is_repeat());
        t.serialize_element(&slot)?;
        t.serialize_element(&owner)?;
        t.end()
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Queue<T>, D::Error> {
        use serde::de::Error as _;
        let (fd, slot, owner) = <(FdOwned, u32, u64)>::deserialize(d)?;
        let region =
            Region::from_fd(fd.0).map_err(|e| D::Error::custom(format!("queue handle: {e}")))?;
        let ring = Ring::attach(region).map_err(D::Error::custom)?;
        let queue = Queue::from_ring(ring);
        // Registered first: the handle never stops counting on its way here.
        queue.handle.putters.received(slot, owner);
        Ok(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::ring::{DATA_AT, HEAD_AT, TAIL_AT};
    use super::*;

    /// Writes `bytes` into the queue's segment at `offset`, as a hostile holder could.
    fn scribble<T>(q: &Queue<T>, offset: usize, bytes: &[u8]) {
        q.ring().region().write_at(offset, bytes);
    }

    const SHORT: Duration = Duration::from_millis(20);

    #[test]
    fn a_damaged_item_is_a_decode_error_and_the_next_one_comes_through() {
        let q = Queue::<(u32, String)>::new().unwrap();
        q.put(&(1, "one".into())).unwrap();
        q.put(&(2, "two".into())).unwrap();
        // The first record's payload: a string length far past the item.
        scribble(&q, DATA_AT + 8 + 1, &[0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(q.get(), Err(Error::Decode(_))));
        assert_eq!(q.get().unwrap(), (2, "two".into()));
    }

    #[test]
    fn a_damaged_record_header_drops_what_was_queued_and_the_queue_goes_on() {
        let q = Queue::<u64>::new().unwrap();
        for i in 0..3 {
            q.put(&i).unwrap();
        }
        scribble(&q, DATA_AT, &[0xab; 8]);
        match q.get() {
            Err(Error::Decode(msg)) => assert!(msg.contains("3 item(s)"), "{msg}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert!(q.empty());
        q.put(&7).unwrap();
        assert_eq!(q.get().unwrap(), 7);
    }

    #[test]
    fn a_header_announcing_a_huge_item_is_refused_without_reading_past_the_ring() {
        let q = Queue::<Vec<u8>>::new().unwrap();
        q.put(&vec![1, 2, 3]).unwrap();
        // A well-formed header (mark, kind WHOLE) with a length of 4 GiB - 1.
        let header: u64 = (0x51_70_6d << 40) | (1 << 32) | 0xffff_ffff;
        scribble(&q, DATA_AT, &header.to_ne_bytes());
        assert!(matches!(q.get(), Err(Error::Decode(_))));
    }

    #[test]
    fn corrupt_counters_give_errors_not_panics() {
        let q = Queue::<u64>::builder()
            .ring_bytes(16 << 10)
            .build()
            .unwrap();
        for (offset, value) in [
            (TAIL_AT, u64::MAX),
            (HEAD_AT, u64::MAX),
            (TAIL_AT, 1 << 40),
            (HEAD_AT, 12345),
        ] {
            let _ = q.put_timeout(&1, SHORT);
            scribble(&q, offset, &value.to_ne_bytes());
            let _ = q.get_timeout(SHORT);
            let _ = q.put_timeout(&2, SHORT);
            let _ = q.get_timeout(SHORT);
            let _ = q.qsize();
            // The counters as a fresh queue has them, for the next case.
            scribble(&q, HEAD_AT, &[0; 8]);
            scribble(&q, TAIL_AT, &[0; 8]);
        }
        // Once the counters are sound again, so is the queue (a consumer's stale view
        // of them may cost one more error first).
        q.put(&5).unwrap();
        let got = (0..3).find_map(|_| q.get_timeout(SHORT).ok());
        assert_eq!(got, Some(5));
    }

    /// Random bytes over the records and counters, many times: every call returns.
    #[test]
    fn random_garbage_in_the_ring_never_panics() {
        let q = Queue::<Vec<u16>>::builder()
            .ring_bytes(16 << 10)
            .build()
            .unwrap();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            for i in 0..(round % 5) {
                let len = (next() % 6000) as usize;
                let _ = q.put_timeout(&vec![i as u16; len], SHORT);
            }
            for _ in 0..(next() % 4) {
                let at = if next() % 4 == 0 {
                    [TAIL_AT, HEAD_AT][(next() % 2) as usize]
                } else {
                    DATA_AT + ((next() % (16 << 10)) as usize & !7)
                };
                scribble(&q, at, &next().to_ne_bytes());
            }
            for _ in 0..6 {
                let _ = q.get_timeout(Duration::ZERO);
            }
            if round % 50 == 49 {
                // Counters made consistent again, so that later rounds can put.
                let tail = q
                    .ring()
                    .region()
                    .atomic_u64(TAIL_AT)
                    .load(Ordering::Relaxed);
                scribble(&q, HEAD_AT, &tail.to_ne_bytes());
            }
        }
    }
}

//! # multiproc
//!
//! Python's `multiprocessing` model for Rust: processes that run a function of yours,
//! pipes and queues between them, a pool of workers, the start methods `spawn`, `fork` and `forkserver`, locks,
//! semaphores, events, conditions and barriers across processes, shared values,
//! arrays and memory, and a manager process holding dicts, lists and objects of your own
//! for other processes and other programs (over TCP with a key).
//!
//! ```
//! use multiproc::{Process, pipe};
//!
//! fn child(conn: multiproc::Connection) {
//!     let n: u32 = conn.recv().unwrap();
//!     conn.send(&(n * 2)).unwrap();
//! }
//!
//! let (here, there) = pipe(true)?;
//! let mut p = Process::new(child, there);
//! p.start()?;
//! here.send(&21u32)?;
//! assert_eq!(here.recv::<u32>()?, 42);
//! p.join()?;
//! assert_eq!(p.exitcode(), Some(0));
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! ## No line in `main`
//!
//! A child started with `spawn` (or by the fork server) is a fresh execution of the same
//! binary. A hook the crate places in the binary's initialisers runs before `main`,
//! recognises a child, runs its task and exits, so `main` never runs twice and nothing
//! needs adding to it. This works in binaries, examples, integration tests under
//! `cargo test` and `cargo nextest`, and doctests.
//!
//! Targets are `fn` items or closures that capture nothing (they exist in the child
//! because it is the same binary), named by the [`Target`] trait; their arguments and
//! results travel with serde.
//!
//! Nothing from outside turns a program into a child: the marker is ignored under
//! setuid or file capabilities, and unless its descriptor is a socket made by the
//! process's own parent; a child runs only entries its own binary has.
//!
//! ## Coming from Python
//!
//! | Python | multiproc |
//! |---|---|
//! | `Process(target=f, args=(a,))` | [`Process::new(f, a)`](Process::new) |
//! | `Process(..., name=n, daemon=True)` | [`.name(n)`](Process::name), [`.daemon(true)`](Process::daemon) |
//! | subclass `Process`, override `run` | implement [`Run`], [`Process::from_run`] |
//! | `p.start()`, `p.join()`, `p.join(timeout)` | [`start`](Process::start), [`join`](Process::join), [`join_timeout`](Process::join_timeout) |
//! | `p.is_alive()`, `p.exitcode`, `p.pid` | [`is_alive`](Process::is_alive), [`exitcode`](Process::exitcode), [`pid`](Process::pid) |
//! | `p.terminate()`, `p.kill()`, `p.close()` | [`terminate`](Process::terminate), [`kill`](Process::kill), [`close`](Process::close) |
//! | `p.sentinel` | [`Process`] implements [`Waitable`] |
//! | a helper taking a target `f` | `fn helper<F: `[`Target`]`<A, R>>(f: F)` |
//! | `concurrent.futures` style result | [`spawn`] → [`JoinHandle::join`] |
//! | `current_process()`, `parent_process()` | [`current_process`], [`parent_process`] |
//! | `active_children()`, `cpu_count()` | [`active_children`], [`cpu_count`] |
//! | `get_context(m)`, `set_start_method(m)` | [`get_context`], [`set_start_method`], [`StartMethod`] |
//! | `Pipe(duplex=True)` | [`pipe(true)`](pipe) |
//! | `conn.send(obj)`, `conn.recv()` | [`send`](Connection::send), [`recv`](Connection::recv), [`recv_timeout`](Connection::recv_timeout) |
//! | `send_bytes`, `recv_bytes`, `recv_bytes_into` | [`send_bytes`](Connection::send_bytes), [`recv_bytes`](Connection::recv_bytes), [`recv_bytes_into`](Connection::recv_bytes_into); [`send_bytes_mapped`](Connection::send_bytes_mapped) / [`recv_bytes_mapped`](Connection::recv_bytes_mapped) to receive without a copy |
//! | `conn.send(b"...")`, `conn.send(bytearray)` | [`send`](Connection::send) a `Vec<u8>`, `&[u8]` or `bytes::Bytes`: one copy, no per-byte cost |
//! | `conn.send(np_array)`, `array('d')` (pickled as a buffer) | [`send`](Connection::send) a `Vec<f64>`/`Vec<f32>`; other element types and `#[repr(C)]` records in a [`PodVec`] (host layout, like `ndarray.tobytes()`) |
//! | `conn.poll(timeout)`, `conn.close()` | [`poll`](Connection::poll) (`Ok(false)` when the time runs out), [`close`](Connection::close) |
//! | `multiprocessing.connection.wait` | [`wait`] |
//! | `Listener(address, backlog=n, authkey=k)` | [`Listener::bind`], [`Listener::builder`]`.backlog(n).authkey(k).bind()` |
//! | `listener.accept()`, `.address`, `.last_accepted`, `.close()` | [`accept`](Listener::accept), [`accept_timeout`](Listener::accept_timeout), [`address`](Listener::address), [`last_accepted`](Listener::last_accepted), [`close`](Listener::close) |
//! | `accept()` raising `AuthenticationError`; one silent peer blocks it | [`accept`](Listener::accept) skips peers that fail the handshake (logged) and returns the first that passes; handshakes run side by side |
//! | `Client(address, authkey=k)` | [`Client::connect`], [`Client::builder`]`.authkey(k).timeout(t).connect()` |
//! | (no handshake deadline; HMAC-MD5 from 3.11 peers) | `handshake_timeout` on [`ListenerBuilder`](ListenerBuilder::handshake_timeout) and [`ClientBuilder`](ClientBuilder::handshake_timeout) (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); `require_sha256(true)` on [`ListenerBuilder`](ListenerBuilder::require_sha256) and [`ClientBuilder`](ClientBuilder::require_sha256) refuses HMAC-MD5 |
//! | `conn.send(other_conn)` over TCP | [`Error::Encode`]: descriptors travel only over Unix sockets |
//! | `'/tmp/sock'`, `'\0name'`, `('localhost', 6000)` | [`Address::Unix`], [`Address::Abstract`], [`Address::Tcp`] (all parse from strings, see [`ToAddress`]) |
//! | `AuthenticationError` | [`Error::AuthenticationFailed`] |
//! | `Lock()`, `RLock()` | [`Lock::new`], [`RLock::new`] |
//! | `with lock:` | `let _held = lock.acquire()?;` (a [`LockGuard`]) |
//! | `lock.acquire(timeout=t)`, `acquire(False)` (a bool) | [`acquire_timeout`](Lock::acquire_timeout), [`try_acquire`](Lock::try_acquire): the guard, or [`AcquireError::Timeout`] |
//! | (a holder that died: hangs forever) | [`AcquireError::OwnerDied`] with the lock, to every acquirer until one repairs the data and calls [`mark_consistent`](LockGuard::mark_consistent) on its guard (POSIX's robust mutex: `EOWNERDEAD`, `pthread_mutex_consistent`); also on the guards of [`RLock`](RLockGuard::mark_consistent), [`Condition`](ConditionGuard::mark_consistent), [`Value`](ValueGuard::mark_consistent), [`Array`](ArrayGuard::mark_consistent) |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore::new`], [`BoundedSemaphore::new`] |
//! | `sem.acquire()`, `sem.release()`, `sem.get_value()` | [`acquire`](Semaphore::acquire), [`release`](Semaphore::release), [`get_value`](Semaphore::get_value) |
//! | `sem.acquire(timeout=t)`, `sem.acquire(False)`, `with sem:` | [`acquire_timeout`](Semaphore::acquire_timeout), [`try_acquire`](Semaphore::try_acquire) (a `bool`); [`acquire_guard`](Semaphore::acquire_guard), [`acquire_guard_timeout`](Semaphore::acquire_guard_timeout), [`try_acquire_guard`](Semaphore::try_acquire_guard) (the guard, or [`Error::Timeout`]) |
//! | `Event()`: `set`, `clear`, `is_set`, `wait(t)` | [`Event`]: the same names |
//! | `Condition(lock)`: `wait`, `wait_for`, `notify(n)`, `notify_all` | [`Condition`] → [`ConditionGuard`] methods |
//! | `Barrier(n)`: `wait`, `abort`, `reset`, `broken`, `n_waiting` | [`Barrier`]: the same names |
//! | `Value('i', 0)`, `with v.get_lock(): v.value += 1` | [`Value::new(0i32)`](Value::new), `*v.get_lock()? += 1` |
//! | `Array('d', n)`, `RawValue`, `RawArray` | [`Array`], [`RawValue`], [`RawArray`] |
//! | `shared_memory.SharedMemory(name, create, size)` | [`SharedMemory::create`], [`SharedMemory::attach`] |
//! | `shm.buf` (a `memoryview`) | [`buf`](SharedMemory::buf) / [`buf_mut`](SharedMemory::buf_mut) under your own synchronisation; [`read_into`](SharedMemory::read_into) / [`write_from`](SharedMemory::write_from) while others write |
//! | `shared_memory.ShareableList` | [`ShareableList`] |
//! | `Queue()`, `Queue(maxsize)`, `SimpleQueue()`, `JoinableQueue()` | [`Queue::new`], [`Queue::with_maxsize`], [`SimpleQueue::new`], [`JoinableQueue::new`], [`Queue::builder`] |
//! | `q.put(x)`, `q.get()` | [`put`](Queue::put), [`get`](Queue::get) |
//! | `q.put(x, timeout=t)`, `q.put_nowait(x)` (`queue.Full`) | [`put_timeout`](Queue::put_timeout), [`try_put`](Queue::try_put): [`PutError::Full`] |
//! | `q.get(timeout=t)`, `q.get_nowait()` (`queue.Empty`) | [`get_timeout`](Queue::get_timeout), [`try_get`](Queue::try_get): [`GetError::Empty`] |
//! | `q.qsize()`, `q.empty()`, `q.full()`, `q.close()` | the same names; a closed handle may still `get` |
//! | `iter(q.get, sentinel)`; `get` when every producer is gone (waits forever) | [`iter`](Queue::iter), ending with the producers; [`Error::NoProducers`] |
//! | `q.join_thread()`, `q.cancel_join_thread()` | nothing: `put` is complete when it returns |
//! | `task_done()`, `join()` | [`JoinableQueue::task_done`], [`join`](JoinableQueue::join), [`join_timeout`](JoinableQueue::join_timeout) |
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | [`Pool::new`], [`Pool::builder`] ([`PoolBuilder`]) |
//! | `apply`, `apply_async(f, args, callback, error_callback)` | [`apply`](Pool::apply), [`apply_async`](Pool::apply_async), [`apply_async_with`](Pool::apply_async_with) (callbacks in this process) |
//! | `map`, `map_async`, `starmap`, `imap`, `imap_unordered` (with `chunksize`) | [`map`](Pool::map), [`map_chunked`](Pool::map_chunked), [`map_async`](Pool::map_async), [`starmap`](Pool::starmap), [`imap`](Pool::imap), [`imap_unordered`](Pool::imap_unordered) |
//! | `AsyncResult`: `get(timeout)`, `wait`, `ready`, `successful` | [`AsyncResult`], also a `Future` |
//! | a pool worker killed mid-task (hangs forever) | [`Error::WorkerLost`] for its chunk alone |
//! | `concurrent.futures.ProcessPoolExecutor` | [`ProcessPoolExecutor`], [`TaskFuture`] |
//! | `mpi4py.futures.MPIPoolExecutor` (`mpirun -n N python -m mpi4py.futures prog.py`) | `Pool::builder().mpi()` (feature `mpi`), run as `mpirun -n N prog`, or `prog` alone (spawned workers) |
//! | `with Manager() as m:` (`SyncManager`) | [`Manager::start`] (dropping it shuts the server down) |
//! | `m.dict()`, `m.list()`, `m.Namespace()`, `m.Value(t, v)`, `m.Array(t, seq)` | [`dict`](Manager::dict), [`dict_from`](Manager::dict_from), [`list`](Manager::list), [`list_from`](Manager::list_from), [`namespace`](Manager::namespace), [`value`](Manager::value), [`array`](Manager::array): [`DictProxy`], [`ListProxy`], [`NamespaceProxy`], [`ValueProxy`], [`ArrayProxy`] |
//! | `m.Lock()`, `m.RLock()`, `with lock:` | [`lock`](Manager::lock), [`rlock`](Manager::rlock): [`LockProxy`], [`RLockProxy`], held through a [`LockProxyGuard`] |
//! | a managed lock whose holder was killed (held forever) | released when the holder's connection ends: [`ProxyAcquireError::OwnerDied`] until [`mark_consistent`](LockProxyGuard::mark_consistent), as for [`Lock`] |
//! | `m.Semaphore(n)`, `m.BoundedSemaphore(n)` | [`semaphore`](Manager::semaphore), [`bounded_semaphore`](Manager::bounded_semaphore): [`SemaphoreProxy`], [`BoundedSemaphoreProxy`] ([`SemaphoreProxyGuard`] units come back if their holder is killed) |
//! | `m.Condition()`, `m.Condition(lock)` | [`condition`](Manager::condition), [`condition_with_lock`](Manager::condition_with_lock): [`ConditionProxy`] → [`ConditionProxyGuard`] |
//! | `m.Event()`, `m.Barrier(n)` | [`event`](Manager::event), [`barrier`](Manager::barrier), [`barrier_with_timeout`](Manager::barrier_with_timeout): [`EventProxy`], [`BarrierProxy`] |
//! | `m.Queue()`, `m.Queue(maxsize)`, `m.JoinableQueue()` | [`queue`](Manager::queue), [`queue_with_maxsize`](Manager::queue_with_maxsize), [`joinable_queue`](Manager::joinable_queue): [`QueueProxy`], [`JoinableQueueProxy`] ([`PutError::Full`], [`GetError::Empty`]) |
//! | `d[k] = v`, `d.get(k)`, `del d[k]`, `k in d`, `items()` | [`set`](DictProxy::set), [`get`](DictProxy::get), [`pop`](DictProxy::pop), [`contains`](DictProxy::contains), [`items`](DictProxy::items) |
//! | a dict with keys of several types | `DictProxy<`[`Key`]`, V>` |
//! | `l[i]`, `l.append(x)`, `l.sort()`, `ns.x = v`, `v.value += 1` | [`ListProxy::get`], [`ListProxy::append`], [`ListProxy::sort`], [`NamespaceProxy::set`], [`ValueProxy::update`] |
//! | `BaseManager.register('Maths', Maths)`, `manager.Maths(40)` | `#[multiproc::proxy] impl Maths {…}` → `MathsProxy` (feature `derive`), registered with [`ManagerBuilder::register`]: `Manager::builder().register::<Maths>().start()?`, `MathsProxy::new(&manager, 40)?`; by hand: a [`Registered`] type and a typed proxy wrapping a [`ProxyCore`] ([`Proxy`]) |
//! | `register(..., exposed=[...])`; a registered method that raised | the `pub` methods less those marked `#[multiproc(skip)]`; `Ok(Err(e))` from a method returning `Result`, [`Error::Panicked`] from one that panicked |
//! | `BaseManager(address, authkey)`: `start()`, `get_server().serve_forever()`, `connect()` | [`Manager::builder`]`.address(a).authkey(k)`: [`start`](ManagerBuilder::start), [`serve_forever`](ManagerBuilder::serve_forever); [`Manager::connect`] |
//! | `register('get_queue', callable=lambda: q)` | [`ManagerBuilder::expose`], [`Manager::expose`], [`Manager::get`] |
//! | `m.shutdown()`, `m._number_of_objects()` | [`Manager::shutdown`], [`Manager::number_of_objects`], [`Manager::refcount`] |
//! | `RemoteError` | [`Error::Remote`] |
//! | `EOFError`, `queue.Empty`, `BrokenBarrierError`, … | [`Error`] variants |
//! | `TimeoutError`, or `False` from `acquire`/`wait` with a timeout | see *Timeouts* below |
//!
//! ## Timeouts
//!
//! Every blocking call has a timed form, and every `Duration` is accepted: one too large
//! for a deadline (`Duration::MAX`) means no deadline. What running out of time looks
//! like follows one rule:
//!
//! - A timed call that **hands something back** (a guard, a message, a value, a
//!   connection) reports running out of time as an error: [`AcquireError::Timeout`] for
//!   lock guards, [`Error::Timeout`] otherwise ([`Lock::acquire_timeout`],
//!   [`Semaphore::acquire_guard_timeout`], [`Connection::recv_timeout`],
//!   [`Listener::accept_timeout`], [`JoinHandle::join_timeout`]). A `try_` form is a
//!   timeout of zero and answers the same way.
//! - A timed call that **only waits for a state** returns `bool`, as Python's
//!   `acquire(timeout=t)` and `wait(t)` return `True`/`False`
//!   ([`Semaphore::acquire_timeout`], [`Event::wait`]), wrapped in [`Result`] when the
//!   wait can also fail for another reason ([`ConditionGuard::wait`] can report
//!   [`Error::OwnerDied`], [`Process::join_timeout`] and [`Connection::poll`] an I/O
//!   error).
//!
//! [`Barrier::wait_timeout`] hands back an arrival index, and its timeout is an error as
//! the rule says; the error is [`Error::BrokenBarrier`], as in Python, because a
//! waiter's timeout breaks the barrier for every party; it comes by the deadline even
//! while another party is stuck inside the barrier. A queue's timed and `try_` forms
//! answer with Python's exceptions: [`GetError::Empty`] and [`PutError::Full`].
//! [`wait`] returns the ready objects, empty when the time ran out, as Python's
//! `connection.wait` does.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

mod connection;
mod deadline;
mod error;
mod manager;
mod pool;
mod process;
mod queue;
mod shared;
mod sync;
mod sys;
mod wire;

/// What `#[multiproc::proxy]` expands to names; not an API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Re-exported so that `#[derive(bytemuck::Pod, bytemuck::Zeroable)]` types for
/// `Value`, `Array` and friends need no direct dependency (use
/// `#[bytemuck(crate = "multiproc::bytemuck")]` on the type).
pub use bytemuck;
pub use connection::{
    Address, Client, ClientBuilder, Connection, DEFAULT_BACKLOG, DEFAULT_HANDSHAKE_TIMEOUT,
    LARGE_MESSAGE_THRESHOLD, Listener, ListenerBuilder, MAX_HANDLES_PER_MESSAGE,
    MAX_PENDING_HANDSHAKES, MappedBytes, ToAddress, Waitable, pipe, wait,
};
pub use error::{Error, Result};
pub use manager::{
    ArrayProxy, CallCx, CallError, ClientId, DictProxy, Key, ListProxy, Manager, ManagerBuilder,
    NamespaceProxy, Proxy, ProxyCore, Registered, RemoteFault, Served, ValueProxy, decode_args,
    encode_reply,
};
pub use manager::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, ConditionProxyGuard, EventProxy,
    JoinableQueueProxy, LockProxy, LockProxyGuard, ProxyAcquireError, ProxyAcquireResult,
    QueueProxy, RLockProxy, SemaphoreProxy, SemaphoreProxyGuard,
};
/// Serves a type of yours from a [`Manager`], with a typed proxy: Python's
/// `BaseManager.register('Maths', Maths)` (feature `derive`).
///
/// Put it on the type's inherent `impl` block. The block stays as written; the
/// attribute adds `impl Registered for Maths`, which a manager registers with
/// `Manager::builder().register::<Maths>()`, and `MathsProxy`, the handle every
/// process uses:
///
/// ```
/// use multiproc::Manager;
///
/// pub struct Maths {
///     total: i64,
/// }
///
/// #[multiproc::proxy]
/// impl Maths {
///     /// A total of `start`.
///     pub fn new(start: i64) -> Self {
///         Maths { total: start }
///     }
///
///     /// Adds `x`, returns the new total.
///     pub fn add(&mut self, x: i64) -> i64 {
///         self.total += x;
///         self.total
///     }
///
///     /// The total divided by `by`, or why not.
///     pub fn div(&self, by: i64) -> Result<i64, String> {
///         self.total.checked_div(by).ok_or_else(|| format!("{} / {by}", self.total))
///     }
///
///     /// The total, as a label.
///     pub fn label(&self, name: &str) -> String {
///         format!("{name}: {}", self.total)
///     }
/// }
///
/// fn child(maths: MathsProxy) -> i64 {
///     maths.add(1).expect("the manager answers")
/// }
///
/// let manager = Manager::builder().register::<Maths>().start()?;
/// let maths = MathsProxy::new(&manager, 40)?; // built in the server process
/// assert_eq!(maths.add(1)?, 41); // runs there
/// assert_eq!(multiproc::spawn(child, maths.clone())?.join()?, 42);
/// assert_eq!(maths.div(0)?, Err("42 / 0".to_string())); // the method's error, inside Ok
/// assert_eq!(maths.label("sum")?, "sum: 42");
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// - **Constructors** are the associated functions returning `Self`. The proxy's take
///   the manager first and ask it to build an object: `MathsProxy::new(&manager, 40)?`.
///   A constructor may return `Result<Self, E>` (`E: Display`): its `Err` reaches the
///   proxy's constructor as [`Error::Remote`] with the error's text (Python's
///   `RemoteError`).
/// - **Methods** take `&self` or `&mut self`. The proxy's take `&self` (the server
///   runs one call at a time on an object) and return [`Result<R>`](Result); a method
///   returning `Result<R, E>` gives `Result<Result<R, E>>`, the way there and back
///   outside, the method's answer inside. A panic in a method is
///   [`Error::Panicked`], and the server goes on.
/// - Only functions with a visibility are served, less those marked
///   `#[multiproc(skip)]`; each proxy function has the visibility and the doc comment
///   of its original. `MathsProxy` is as visible as its most visible constructor: in
///   a library, `pub fn new` makes it part of the API, `pub(crate) fn new` keeps it
///   inside.
/// - Arguments and results travel with serde, as one tuple. A parameter `&str`, `&[T]`
///   or `&T` arrives as a `String`, `Vec<T>` or `T` and is lent to the method; a
///   result `&str`, `&[T]` or `&T` comes back as a `String`, `Vec<T>` or `T`.
/// - The server runs only these functions: a request naming anything else is refused
///   ([`Error::InvalidArgument`]), and arguments that do not decode as the parameters
///   never reach the method ([`Error::Decode`]).
/// - `MathsProxy` is `Clone` (another reference to the same object), `Debug`,
///   `Serialize` and `Deserialize`: it travels in process arguments, through pipes
///   and queues, and inside other managed values. Decoding refuses a proxy of another
///   type. It implements [`Proxy`].
///
/// One `impl` block of a type carries the attribute, and lists every function served
/// (other blocks of the type may hold the rest): a second one would define the proxy
/// twice.
///
/// Arguments: `#[multiproc::proxy(typeid = "Maths2")]` sets the name the server knows
/// the type by (the type's name by default); `crate = "path"` names this crate where
/// it is renamed or re-exported.
///
/// Refused at compile time, each with a sentence at the offending code and all at
/// once: a block with no constructor, a generic block, a trait impl, `self` by value,
/// `async fn`, `unsafe fn`, generic methods, `impl Trait` parameters and results,
/// `&mut` parameters, borrows inside another type (`Vec<&str>`), more than 16
/// parameters (the arguments travel as one tuple), and the names every
/// proxy has from its traits (`clone`, `clone_from`, `fmt`, `serialize`,
/// `deserialize`, `core`, `from_core`).
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use multiproc_derive::proxy;
pub use pool::{
    AsyncResult, ExecutorMap, IMap, Pool, PoolBuilder, ProcessPoolExecutor, TaskFuture,
};
pub use process::{
    Context, JoinHandle, ParentProcess, Process, ProcessInfo, Run, StartMethod, Target,
    active_children, cpu_count, current_process, get_all_start_methods, get_context,
    get_start_method, parent_process, set_start_method, spawn,
};
pub use queue::{
    DEFAULT_RING_BYTES, GetError, JoinableQueue, MAX_ITEM_BYTES, PutError, Queue, QueueBuilder,
    QueueIter, SimpleQueue,
};
pub use shared::*;
pub use sync::*;
pub use wire::bulk::PodVec;
pub use wire::frame::DEFAULT_MAX_MESSAGE_SIZE;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

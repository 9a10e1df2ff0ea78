//! A pool of worker processes (Python's `multiprocessing.Pool`): `apply`,
//! `apply_async` with callbacks in this process, `map`, `map_async`, `imap`,
//! `imap_unordered`, `starmap`, `close`, `terminate`, `join`.
//!
//! Tasks travel to the workers and results back through shared-memory queues (see
//! [`Queue`](crate::Queue)), in chunks. A task names its function as a new process's
//! target does ([`Target`]): a `fn` item or a closure that captures nothing; arguments
//! and results travel by serde.
//!
//! ## When a worker dies
//!
//! CPython's `Pool` waits forever for the task of a worker that was killed. Here the
//! pool watches its workers: a worker that ends while it holds a task (killed, aborted,
//! `exit` in the task) is replaced, the tasks it had not started yet go to the other
//! workers, and the chunk it was running fails with [`Error::WorkerLost`] (its pid and
//! how it ended), or runs again on another worker when
//! [`retries`](PoolBuilder::retries) allow. Every other task completes as usual. A panic
//! in a task is that task's [`Error::Panicked`], with its message and location; the
//! worker goes on. A task whose arguments or result do not serialize fails alone.
//!
//! Dropping a pool terminates it, as leaving Python's `with Pool(...)` block does: the
//! workers are killed and unfinished tasks fail with [`Error::Cancelled`].
//!
//! ## Backends
//!
//! Everything here is written once; where the tasks run is a backend (`backend/`):
//! worker processes of this machine, or, with the feature `mpi` and
//! [`PoolBuilder::mpi`], the other ranks of the MPI job this process is rank 0 of. Both
//! take the same jobs (an entry of this binary and an encoded chunk) and give back the
//! same encoded outcomes.

mod backend;
mod call;
mod executor;
mod progress;
mod result;
mod worker;

pub use self::executor::{ExecutorMap, ProcessPoolExecutor, TaskFuture};
pub use self::result::AsyncResult;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::backend::local::{Core, Spec};
use self::backend::{Backend, Outcome, Sink};
use self::call::{ChunkOutcome, chunk_entry, init_entry};
use self::progress::Progress;
use self::result::Slot;
use self::worker::{Initializer, SharedInit};
use crate::error::{Error, Result};
use crate::process::{StartMethod, Target, cpu_count, get_start_method};
use crate::sys::{image, pages};
use crate::wire::codec;

/// A pool of worker processes. A worker that dies fails only the tasks it held
/// ([`Error::WorkerLost`], or they run again with [`PoolBuilder::retries`]), and a new
/// worker takes its place.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = multiproc::Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
/// assert_eq!(pool.apply(square, 12)?, 144);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pool {
    core: Backend,
    processes: usize,
    /// Draw a progress bar for map and imap calls.
    progress: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish()
    }
}

/// Options of a new [`Pool`]: [`Pool::builder`].
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    initializer: Option<Result<SharedInit>>,
    maxtasksperchild: Option<u64>,
    retries: u32,
    task_timeout: Option<Duration>,
    progress: bool,
    /// Run the tasks on the ranks of the MPI job instead of local processes.
    #[cfg(feature = "mpi")]
    mpi: bool,
}

impl PoolBuilder {
    /// The number of worker processes (Python's `processes`); [`cpu_count`] when not
    /// given or 0.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// How the workers start (Python's `context`); the default start method when not
    /// given.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A function each worker runs once when it starts, with `args` (Python's
    /// `initializer` and `initargs`). The arguments may hold handles (a `Queue`, a
    /// `Lock`): they travel in the worker's start, as a process's arguments do. If it panics, the pool cannot run tasks: every
    /// task fails, and new ones are refused, with [`Error::InvalidState`].
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Target<A, ()>,
        A: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.initializer = Some(codec::encode(&args).map(|e| {
            SharedInit(Arc::new(Initializer {
                entry: image::entry_offset(init_entry::<F, A>()),
                bytes: e.bytes,
                fds: e.fds,
            }))
        }));
        self
    }

    /// Tasks (chunks) a worker completes before it is replaced by a new one (Python's
    /// `maxtasksperchild`); no limit by default.
    pub fn maxtasksperchild(mut self, n: u64) -> Self {
        self.maxtasksperchild = Some(n.max(1));
        self
    }

    /// How many times a chunk whose worker died runs again on another worker before it
    /// fails with [`Error::WorkerLost`]; 0 by default.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The longest a task (a chunk) may run: one that runs longer is stopped (its
    /// worker is killed and replaced) and fails with [`Error::Timeout`]; no limit by
    /// default. The time counts from when the worker starts on it, to within the pool's
    /// 10 ms check.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Draws a progress bar on stderr during `map` and `imap` calls (and their
    /// variants): the items done out of all of them (a count, when an `imap`'s input has
    /// no known length). Off by default.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = multiproc::Pool::builder().processes(2).progress(true).build()?;
    /// assert_eq!(pool.map(square, 0..1000)?.len(), 1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[cfg(feature = "progress")]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Runs the tasks on the other ranks of the MPI job this program is rank 0 of,
    /// instead of on processes of this machine (Python's `mpi4py.futures`): started as
    /// `mpirun -n N prog`, rank 0 runs `main` and ranks 1 to N-1 serve as workers before
    /// their `main` would run, with no line in it. Every method of the pool works as it
    /// does locally, with the same targets, results and errors, and callbacks run on
    /// rank 0; [`processes`](Self::processes) caps the ranks used (all of them by
    /// default), and [`Pool::pids`] is empty (the ranks may be on other machines).
    ///
    /// Started as `mpirun -n 1 prog`, or with no launcher at all (`./prog`), the first MPI
    /// pool starts its workers with `MPI_Comm_spawn` (as `mpi4py.futures` does):
    /// [`processes`](Self::processes) of them, else the job's free slots (the MPI
    /// universe size less one, when MPI reports more than one), else one per CPU. They
    /// run this same program, serve every later MPI pool of it, and stop when it exits.
    /// With no launcher, the first MPI pool starts MPI itself, there and then, once per
    /// process (`MPI_Init_thread` with `MPI_THREAD_MULTIPLE`, an Open MPI "singleton"),
    /// and finalizes it when the program exits; it asks MPI to place its workers even
    /// where they outnumber the cores (Open MPI's `map_by` `:OVERSUBSCRIBE` hint on the
    /// spawn, as a local pool of that size would), and sets no variable of the
    /// environment: where spawning fails, the error says what to try. Under a launcher,
    /// the job's slots and the launcher's flags (`--oversubscribe`) decide, and a failed
    /// spawn ends the job (`mpirun` would not end otherwise), saying what to try.
    ///
    /// Where it differs:
    /// - A task over its [`task_timeout`](Self::task_timeout) fails with
    ///   [`Error::Timeout`], but its rank is not killed (MPI would end the whole job): it
    ///   finishes the task, its outcome is dropped, and it takes no new task until then.
    /// - A rank that dies ends the whole job, as MPI does: `mpirun` stops every rank,
    ///   rank 0 included, and exits with an error. Nothing waits forever. With no
    ///   launcher, the pool watches its spawned workers and ends the program itself
    ///   (`MPI_Abort`, exit code 1, saying which worker died) when one dies.
    /// - [`maxtasksperchild`](Self::maxtasksperchild), [`retries`](Self::retries) and
    ///   [`start_method`](Self::start_method) do not apply; an initializer runs once on
    ///   each rank, and its arguments cannot hold handles (queues, locks).
    /// - One MPI pool at a time; [`terminate`](Pool::terminate) lets a task already
    ///   running on a rank end (its outcome is dropped) and drops those not started.
    /// - The worker ranks stop when rank 0 exits (however `main` ends); a rank still
    ///   running a task then gets 60 s before the job is aborted.
    ///
    /// Under a launcher, MPI is initialized before `main` in every rank (with
    /// `MPI_THREAD_MULTIPLE`) and finalized when rank 0 exits: the bindings'
    /// `mpi::initialize()` returns `None` in such a program;
    /// `mpi::topology::SimpleCommunicator::world()` reaches the job. With no launcher the
    /// same holds once the first MPI pool is built; a program that initialized MPI
    /// itself before (the bindings' `Universe` would finalize it before the pool could
    /// stop its workers) is refused with [`Error::InvalidState`] saying to build the pool
    /// first. A process started by this crate (a local pool's worker, a
    /// [`Process`](crate::Process)), or forked from a process running MPI, never starts
    /// MPI: an MPI pool built there is refused the same way. The program may still start
    /// local pools and processes after MPI is up, with any start method: their
    /// processes make no MPI call.
    ///
    /// Hybrid layout: a task may build a local pool on its rank. With one rank per node
    /// (`mpirun --map-by ppr:1:node prog`), each task spreads over its node's cores:
    ///
    /// ```no_run
    /// use multiproc::Pool;
    ///
    /// fn score(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// /// Runs on a rank: a process per core of its node.
    /// fn score_block(block: Vec<u64>) -> u64 {
    ///     let node = Pool::new(multiproc::cpu_count()).expect("a local pool");
    ///     node.map(score, block).expect("the block's scores").iter().sum()
    /// }
    ///
    /// let cluster = Pool::builder().mpi().build()?;
    /// let blocks: Vec<Vec<u64>> = (0..8).map(|b| (b * 1000..(b + 1) * 1000).collect()).collect();
    /// let total: u64 = cluster.map_chunked(score_block, blocks, 1)?.iter().sum();
    /// # let _ = total;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// Every rank must run the same binary. Run with no launcher, this program starts
    /// MPI and two workers (on a container, Open MPI may need
    /// `OMPI_MCA_btl_vader_single_copy_mechanism=none`; as root, `mpirun` needs
    /// `--allow-run-as-root`):
    ///
    /// ```no_run
    /// use multiproc::Pool;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = Pool::builder().mpi().processes(2).build()?;
    /// assert_eq!(pool.map(square, 0..10)?[9], 81);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// [`build`](Self::build) fails with [`Error::InvalidState`] where MPI cannot be
    /// used, with the reason; here, in a local pool's worker:
    ///
    /// ```
    /// use multiproc::Pool;
    ///
    /// fn build_one_here(_: ()) -> bool {
    ///     matches!(
    ///         Pool::builder().mpi().build(),
    ///         Err(multiproc::Error::InvalidState(_))
    ///     )
    /// }
    ///
    /// let local = Pool::new(1)?;
    /// assert!(local.apply(build_one_here, ())?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[cfg(feature = "mpi")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
    pub fn mpi(mut self) -> Self {
        self.mpi = true;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool> {
        let processes = match self.processes {
            None | Some(0) => cpu_count(),
            Some(n) => n,
        };
        let initializer = self.initializer.transpose()?;
        #[cfg(feature = "mpi")]
        if self.mpi {
            let spec = backend::mpi::Spec {
                ranks: self.processes.filter(|n| *n > 0),
                initializer,
                task_timeout: self.task_timeout,
            };
            let (core, ranks) = backend::mpi::Core::start(spec)?;
            return Ok(Pool {
                core: Backend::Mpi(core),
                processes: ranks,
                progress: self.progress,
            });
        }
        let spec = Spec {
            processes,
            method: self.method.unwrap_or_else(get_start_method),
            initializer,
            max_tasks: self.maxtasksperchild,
            retries: self.retries,
            task_timeout: self.task_timeout,
        };
        Ok(Pool {
            core: Backend::Local(Core::start(spec)?),
            processes,
            progress: self.progress,
        })
    }
}

/// Python's default chunk size for `map`: four chunks per worker.
fn default_chunksize(items: usize, processes: usize) -> usize {
    let per = processes.max(1) * 4;
    items.div_ceil(per).max(1)
}

/// Most bytes of room made for a `map` that are mapped ahead of being written: a length
/// the items' iterator states may be wrong, and room is only memory once written.
const POPULATE_MAX: usize = 64 << 20;

/// Maps the start of `spare` (up to [`POPULATE_MAX`] bytes) in one call.
fn populate_some<T>(spare: &mut [std::mem::MaybeUninit<T>]) {
    let n = spare.len().min(POPULATE_MAX / size_of::<T>().max(1));
    pages::populate_uninit(&mut spare[..n]);
}

/// Decodes a chunk's outcome: every value, or the results one by one when some call
/// failed (`Err` holds one result per call).
fn decode_outcome<R: DeserializeOwned>(
    outcome: Result<Outcome>,
    len: usize,
) -> std::result::Result<Vec<R>, Vec<Result<R>>> {
    let all_fail = |e: Error| (0..len).map(|_| Err(copy_error(&e))).collect::<Vec<_>>();
    let wrong_count = |got: usize| {
        all_fail(Error::Decode(format!(
            "a chunk of {len} tasks came back with {got} results"
        )))
    };
    let decoded = outcome.and_then(|mut o| {
        let report = std::mem::take(&mut o.report);
        let (decoded, back) = codec::decode_owned_or_back(report, o.start, Vec::new());
        if let Some(report) = back {
            // Its memory goes back to the backend as `o` drops.
            o.report = report;
        }
        decoded
    });
    match decoded {
        Ok(ChunkOutcome::All(values)) if values.len() == len => Ok(values),
        Ok(ChunkOutcome::All(values)) => Err(wrong_count(values.len())),
        Ok(ChunkOutcome::Each(results)) if results.len() == len => Err(results
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect()),
        Ok(ChunkOutcome::Each(results)) => Err(wrong_count(results.len())),
        Ok(ChunkOutcome::Failed(failure)) => Err(all_fail(Error::from(failure))),
        Err(e) => Err(all_fail(e)),
    }
}

/// Decodes a chunk's outcome onto the end of `out`: its `len` values, or the first
/// failure among them (`out` is then as it was).
fn append_outcome<R: DeserializeOwned>(
    outcome: &Result<Outcome>,
    len: usize,
    out: &mut Vec<R>,
) -> Result<()> {
    let bytes = outcome.as_ref().map_err(copy_error)?.bytes();
    if let Some(values) = call::all_values(bytes) {
        return codec::decode_seq_append(values, Some(len), out);
    }
    let wrong_count = |got: usize| {
        Err(Error::Decode(format!(
            "a chunk of {len} tasks came back with {got} results"
        )))
    };
    match codec::decode::<ChunkOutcome<R>>(bytes, Vec::new())? {
        ChunkOutcome::All(values) if values.len() == len => {
            out.extend(values);
            Ok(())
        }
        ChunkOutcome::All(values) => wrong_count(values.len()),
        ChunkOutcome::Each(results) if results.len() == len => {
            let before = out.len();
            for r in results {
                match r {
                    Ok(v) => out.push(v),
                    Err(failure) => {
                        out.truncate(before);
                        return Err(failure.into());
                    }
                }
            }
            Ok(())
        }
        ChunkOutcome::Each(results) => wrong_count(results.len()),
        ChunkOutcome::Failed(failure) => Err(failure.into()),
    }
}

/// The result of a chunk of one call.
fn single_result<R: DeserializeOwned>(outcome: Result<Outcome>) -> Result<R> {
    decode_chunk::<R>(outcome, 1)
        .pop()
        .unwrap_or_else(|| Err(Error::Decode("no result".into())))
}

/// Decodes a chunk's outcome into one result per call.
fn decode_chunk<R: DeserializeOwned>(outcome: Result<Outcome>, len: usize) -> Vec<Result<R>> {
    match decode_outcome(outcome, len) {
        Ok(values) => values.into_iter().map(Ok).collect(),
        Err(each) => each,
    }
}

/// An error for each task of a chunk that failed as a whole.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::WorkerLost { pid, exitcode } => Error::WorkerLost {
            pid: *pid,
            exitcode: *exitcode,
        },
        Error::Panicked { message, location } => Error::Panicked {
            message: message.clone(),
            location: location.clone(),
        },
        Error::Cancelled => Error::Cancelled,
        Error::Timeout => Error::Timeout,
        Error::Decode(m) => Error::Decode(m.clone()),
        Error::Encode(m) => Error::Encode(m.clone()),
        Error::InvalidState(m) => Error::InvalidState(m.clone()),
        other => Error::InvalidState(other.to_string()),
    }
}

impl Pool {
    /// A pool of `processes` workers (0: [`cpu_count`]), started with the default
    /// start method.
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// Options for a new pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers now running.
    pub fn pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    /// Submits a chunk, encoded into `buf`; the job's id, and the encoding's length.
    fn submit_chunk<F, A, R>(
        &self,
        chunk: &[A],
        sink: Sink,
        callback: bool,
        buf: Vec<u8>,
    ) -> Result<(u64, usize)>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let args = codec::encode_plain_reusing(chunk, buf)?;
        let entry = image::entry_offset(chunk_entry::<F, A, R>());
        let len = args.len();
        Ok((self.core.submit(entry, args, sink, callback)?, len))
    }

    /// Runs `f(args)` in a worker and waits for its result (Python's `apply`).
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Runs `f(args)` in a worker (Python's `apply_async`); the result comes in the
    /// [`AsyncResult`].
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.submit_one::<F, A, R>(args).map(|(_, result)| result)
    }

    /// [`apply_async`](Pool::apply_async) with Python's `callback` and
    /// `error_callback`: one of them is called with the result or the error, **in this
    /// process** (on a thread of the pool, in the order tasks complete), before the
    /// [`AsyncResult`] is ready.
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn double(x: i32) -> i32 {
    ///     x * 2
    /// }
    ///
    /// let pool = multiproc::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.apply_async_with(
    ///     double,
    ///     21,
    ///     move |v: &i32| tx.send((*v, std::process::id())).unwrap(),
    ///     |e: &multiproc::Error| eprintln!("failed: {e}"),
    /// )?;
    /// assert_eq!(r.get()?, 42);
    /// assert_eq!(rx.recv().unwrap(), (42, std::process::id()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async_with<F, A, R, C, E>(
        &self,
        f: F,
        args: A,
        callback: C,
        error_callback: E,
    ) -> Result<AsyncResult<R>>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(&R) + Send + 'static,
        E: FnOnce(&Error) + Send + 'static,
    {
        let _ = f;
        let slot = Slot::new();
        let target = slot.clone();
        let sink: Sink = Box::new(move |outcome| {
            let result = single_result::<R>(outcome);
            let called = catch_unwind(AssertUnwindSafe(|| match &result {
                Ok(v) => callback(v),
                Err(e) => error_callback(e),
            }));
            // The result is set even if a callback panicked; the callback thread then
            // reports the panic and goes on.
            target.set(result);
            if let Err(panic) = called {
                resume_unwind(panic);
            }
        });
        self.submit_chunk::<F, A, R>(std::slice::from_ref(&args), sink, true, Vec::new())?;
        Ok(AsyncResult::new(slot))
    }

    /// Submits `f(args)`; the job's id and its result.
    fn submit_one<F, A, R>(&self, args: A) -> Result<(u64, AsyncResult<R>)>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let slot = Slot::new();
        let target = slot.clone();
        let sink: Sink = Box::new(move |outcome| target.set(single_result::<R>(outcome)));
        let id = self
            .submit_chunk::<F, A, R>(std::slice::from_ref(&args), sink, false, Vec::new())?
            .0;
        Ok((id, AsyncResult::new(slot)))
    }

    /// `f` over every item, the results in order (Python's `map`), in chunks of
    /// Python's default size (four per worker). The first failure is the error.
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, items)?.get()
    }

    /// [`map`](Pool::map) with chunks of `chunksize` items.
    pub fn map_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_chunked(f, items, chunksize)?.get()
    }

    /// [`map`](Pool::map) without waiting (Python's `map_async`). When the iterator
    /// states its exact length (a range, a vector), the chunk size comes from it and the
    /// items are read a chunk at a time, each chunk on its way before the next is read;
    /// otherwise they are all read first, as Python makes a list of them.
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items = items.into_iter();
        // The length decides the chunk size: told by the iterator when it knows it (the
        // items are then read chunk by chunk), else counted after reading them all.
        match items.size_hint() {
            (low, Some(high)) if low == high => {
                let chunksize = default_chunksize(low, self.processes);
                self.map_items(f, items, low, chunksize)
            }
            _ => {
                let items: Vec<A> = items.collect();
                let (n, chunksize) = (items.len(), default_chunksize(items.len(), self.processes));
                self.map_items(f, items.into_iter(), n, chunksize)
            }
        }
    }

    /// [`map_async`](Pool::map_async) with chunks of `chunksize` items.
    pub fn map_async_chunked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items = items.into_iter();
        let expected = items.size_hint().0;
        self.map_items(f, items, expected, chunksize.max(1))
    }

    /// Python's `starmap`: in Rust a target takes one argument, so a tuple is it, and
    /// this is [`map`](Pool::map) over tuples.
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map(f, items)
    }

    /// [`starmap`](Pool::starmap) with chunks of `chunksize` items.
    pub fn starmap_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_chunked(f, items, chunksize)
    }

    /// Python's `starmap_async`: [`map_async`](Pool::map_async) over tuples.
    pub fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, items)
    }

    /// Submits the items in chunks of `chunksize`, read one chunk at a time: a chunk is
    /// on its way before the next is read. `expected` (how many items the iterator says
    /// it has) sizes the result and the progress bar; the items read are what counts.
    fn map_items<F, A, R>(
        &self,
        _f: F,
        mut items: impl Iterator<Item = A>,
        expected: usize,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let slot = Slot::new();
        let bar = Progress::new(self.progress, Some(expected as u64));
        let mut values = Vec::new();
        // Only a hint: an iterator may claim more items than memory holds.
        let _ = values.try_reserve(expected);
        let gather = Arc::new(Mutex::new(Gather::<R> {
            values,
            next: 0,
            early: Vec::new(),
            left: 0,
            submitting: true,
            error: None,
        }));
        // Read in steps of a bounded size: reserving what the iterator claims could ask
        // for more memory than there is.
        const STEP: usize = 4096;
        let mut last_len: usize = 0;
        let mut chunk: Vec<A> = Vec::with_capacity(chunksize.min(expected).min(1 << 16));
        populate_some(chunk.spare_capacity_mut());
        for k in 0.. {
            while chunk.len() < chunksize {
                let had = chunk.len();
                chunk.extend(items.by_ref().take((chunksize - had).min(STEP)));
                if chunk.len() == had {
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            let len = chunk.len();
            {
                let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
                g.early.push(None);
                g.left += 1;
            }
            let mine = gather.clone();
            let target = slot.clone();
            let bar = bar.clone();
            let sink: Sink = Box::new(move |outcome| {
                let mut g = mine.lock().unwrap_or_else(|e| e.into_inner());
                g.arrived(k, len, outcome);
                bar.advance(len as u64);
                g.left -= 1;
                if let Some(value) = g.result() {
                    drop(g);
                    bar.finish();
                    target.set(value);
                }
            });
            // Room for as many bytes as the last chunk took and an eighth more, mapped
            // in one call: the encoding grows without copies of itself or page faults.
            let mut buf = Vec::with_capacity(last_len.saturating_add(last_len / 8));
            pages::populate_uninit(buf.spare_capacity_mut());
            match self.submit_chunk::<F, A, R>(&chunk, sink, false, buf) {
                Ok((_, len)) => last_len = len,
                Err(e) => {
                    slot.set(Err(copy_error(&e)));
                    return Err(e);
                }
            }
            chunk.clear();
            if k == 0 {
                // While the first chunk runs: the memory of the results, mapped in one
                // call instead of a fault per page as they are written.
                let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
                populate_some(g.values.spare_capacity_mut());
            }
        }
        let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
        g.submitting = false;
        if let Some(value) = g.result() {
            drop(g);
            bar.finish();
            slot.set(value);
        }
        Ok(AsyncResult::new(slot))
    }

    /// `f` over the items as an iterator of results, in order (Python's `imap`), one
    /// item per task. The items are read as the results are taken: at most two tasks
    /// per worker are in flight at a time.
    pub fn imap<'a, F, A, R, I>(&'a self, f: F, items: I) -> IMap<'a, R>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Pool::imap) with chunks of `chunksize` items.
    pub fn imap_chunked<'a, F, A, R, I>(&'a self, _f: F, items: I, chunksize: usize) -> IMap<'a, R>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMap::new(
            self,
            items.into_iter(),
            chunksize.max(1),
            false,
            submit_fn::<F, A, R>,
        )
    }

    /// `f` over the items as an iterator of results in the order they complete
    /// (Python's `imap_unordered`), one item per task.
    pub fn imap_unordered<'a, F, A, R, I>(&'a self, f: F, items: I) -> IMap<'a, R>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_unordered_chunked(f, items, 1)
    }

    /// [`imap_unordered`](Pool::imap_unordered) with chunks of `chunksize` items (the
    /// results of a chunk come together, in its order).
    pub fn imap_unordered_chunked<'a, F, A, R, I>(
        &'a self,
        _f: F,
        items: I,
        chunksize: usize,
    ) -> IMap<'a, R>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMap::new(
            self,
            items.into_iter(),
            chunksize.max(1),
            true,
            submit_fn::<F, A, R>,
        )
    }

    /// No more tasks may be submitted (Python's `close`); the workers end once the
    /// tasks submitted are done.
    pub fn close(&self) {
        self.core.close();
    }

    /// Stops the workers at once (Python's `terminate`): unfinished tasks fail with
    /// [`Error::Cancelled`].
    pub fn terminate(&self) {
        self.core.terminate();
    }

    /// Waits for the workers to end (Python's `join`), after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate); [`Error::InvalidState`] before either.
    pub fn join(&self) -> Result<()> {
        self.core.join()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.core.terminate();
        let _ = self.core.join();
    }
}

/// The results of a `map` as its chunks come back: each chunk's values are decoded
/// straight onto the end of the one vector returned, in order; a chunk that comes before
/// its turn waits, still encoded.
struct Gather<R> {
    values: Vec<R>,
    /// The chunk whose values come next.
    next: usize,
    /// A place per chunk submitted: its length and outcome, when it came before its turn.
    early: Vec<Option<(usize, Result<Outcome>)>>,
    /// Chunks submitted and not back.
    left: usize,
    /// More chunks may be submitted.
    submitting: bool,
    /// The first failure to come back.
    error: Option<Error>,
}

impl<R: DeserializeOwned> Gather<R> {
    /// Takes in the outcome of chunk `k` (of `len` items), and of every chunk after it
    /// that waited. A failure counts when it arrives, as in Python: the first to come is
    /// the error.
    fn arrived(&mut self, k: usize, len: usize, outcome: Result<Outcome>) {
        let all = matches!(&outcome, Ok(o) if call::all_values(o.bytes()).is_some());
        if !all
            && self.error.is_none()
            && let Err(e) = append_outcome::<R>(&outcome, len, &mut Vec::new())
        {
            self.error = Some(e);
            self.values = Vec::new();
        }
        if let Some(place) = self.early.get_mut(k) {
            *place = Some((len, outcome));
        }
        while let Some((len, outcome)) = self.early.get_mut(self.next).and_then(Option::take) {
            self.next += 1;
            if self.error.is_none()
                && let Err(e) = append_outcome(&outcome, len, &mut self.values)
            {
                self.error = Some(e);
                self.values = Vec::new();
            }
        }
    }

    /// The map's result, once every chunk is submitted and back.
    fn result(&mut self) -> Option<Result<Vec<R>>> {
        if self.submitting || self.left > 0 {
            return None;
        }
        Some(match self.error.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.values)),
        })
    }
}

/// Where the results of one chunk of an `imap` go.
type Deliver<R> = Box<dyn FnOnce(Vec<Result<R>>) + Send>;

/// Submits one chunk of an `imap`.
type SubmitFn<A, R> = fn(&Pool, &[A], Deliver<R>) -> Result<()>;

/// Takes the next chunk of an `imap`'s items and submits it; `None` once they ran out.
type Feed<'a, R> = Box<dyn FnMut(&Pool, Deliver<R>) -> Option<Result<()>> + 'a>;

fn submit_fn<F, A, R>(pool: &Pool, chunk: &[A], deliver: Deliver<R>) -> Result<()>
where
    F: Target<A, R>,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let len = chunk.len();
    let sink: Sink = Box::new(move |outcome| deliver(decode_chunk::<R>(outcome, len)));
    pool.submit_chunk::<F, A, R>(chunk, sink, false, Vec::new())
        .map(drop)
}

/// How the chunks of an `imap` come back.
enum Arrivals<R> {
    /// In the order submitted: a slot per chunk.
    Ordered(VecDeque<Arc<Slot<Vec<Result<R>>>>>),
    /// As they complete.
    Unordered {
        tx: mpsc::Sender<Vec<Result<R>>>,
        rx: mpsc::Receiver<Vec<Result<R>>>,
        in_flight: usize,
    },
}

impl<R> Arrivals<R> {
    fn in_flight(&self) -> usize {
        match self {
            Arrivals::Ordered(slots) => slots.len(),
            Arrivals::Unordered { in_flight, .. } => *in_flight,
        }
    }
}

/// The results of [`Pool::imap`], [`Pool::imap_chunked`] or [`Pool::imap_unordered`]:
/// an iterator of one `Result` per item.
pub struct IMap<'a, R> {
    pool: &'a Pool,
    feed: Feed<'a, R>,
    arrivals: Arrivals<R>,
    ready: VecDeque<Result<R>>,
    exhausted: bool,
    bar: Progress,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("in_flight", &self.arrivals.in_flight())
            .finish()
    }
}

impl<'a, R: Send + 'static> IMap<'a, R> {
    fn new<A: 'static>(
        pool: &'a Pool,
        mut items: impl Iterator<Item = A> + 'a,
        chunksize: usize,
        unordered: bool,
        submit: SubmitFn<A, R>,
    ) -> IMap<'a, R> {
        let total = match items.size_hint() {
            (low, Some(high)) if low == high => Some(low as u64),
            _ => None,
        };
        let bar = Progress::new(pool.progress, total);
        let feed: Feed<'a, R> = Box::new(move |pool: &Pool, deliver: Deliver<R>| {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                return None;
            }
            Some(submit(pool, &chunk, deliver))
        });
        let arrivals = if unordered {
            let (tx, rx) = mpsc::channel();
            Arrivals::Unordered {
                tx,
                rx,
                in_flight: 0,
            }
        } else {
            Arrivals::Ordered(VecDeque::new())
        };
        IMap {
            pool,
            feed,
            arrivals,
            ready: VecDeque::new(),
            exhausted: false,
            bar,
        }
    }

    /// Submits chunks until two per worker are in flight or the items run out.
    fn fill(&mut self) {
        while !self.exhausted && self.arrivals.in_flight() < 2 * self.pool.processes.max(1) {
            let submitted = match &mut self.arrivals {
                Arrivals::Ordered(slots) => {
                    let slot = Slot::new();
                    let target = slot.clone();
                    let r = (self.feed)(self.pool, Box::new(move |v| target.set(Ok(v))));
                    if matches!(r, Some(Ok(()))) {
                        slots.push_back(slot);
                    }
                    r
                }
                Arrivals::Unordered { tx, in_flight, .. } => {
                    let tx = tx.clone();
                    let r = (self.feed)(self.pool, Box::new(move |v| drop(tx.send(v))));
                    if matches!(r, Some(Ok(()))) {
                        *in_flight += 1;
                    }
                    r
                }
            };
            match submitted {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    self.ready.push_back(Err(e));
                    self.exhausted = true;
                }
                None => self.exhausted = true,
            }
        }
    }
}

impl<R: Send + 'static> Iterator for IMap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            self.fill();
            if let Some(r) = self.ready.pop_front() {
                self.bar.advance(1);
                return Some(r);
            }
            let chunk = match &mut self.arrivals {
                Arrivals::Ordered(slots) => match slots.pop_front() {
                    Some(slot) => AsyncResult::new(slot).get(),
                    None => {
                        self.bar.finish();
                        return None;
                    }
                },
                Arrivals::Unordered { rx, in_flight, .. } => {
                    if *in_flight == 0 {
                        self.bar.finish();
                        return None;
                    }
                    *in_flight -= 1;
                    // A chunk's sink always delivers (its outcome, or why it has none).
                    rx.recv().map_err(|_| Error::Cancelled)
                }
            };
            match chunk {
                Ok(results) => self.ready.extend(results),
                Err(e) => self.ready.push_back(Err(e)),
            }
        }
    }
}

//! Where a pool's tasks run: worker processes on this machine ([`local`]), or the
//! ranks of an MPI job (`mpi`, feature `mpi`). Both take the same jobs (an entry of
//! this binary and a chunk of encoded arguments) and give back the same encoded
//! outcomes, so that everything above this module is one code for both.

pub(crate) mod local;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};

/// What a job's outcome goes to: its encoded outcome, or why it has none.
pub(crate) type Sink = Box<dyn FnOnce(Result<Outcome>) + Send>;

/// A job's encoded outcome (see `call::ChunkOutcome`): the report it came in, whose
/// bytes from `start` on are the outcome's.
pub(crate) struct Outcome {
    pub(crate) report: Vec<u8>,
    pub(crate) start: usize,
    /// Where the report's memory goes once the outcome is decoded, when the backend
    /// receives the next reports into it.
    pub(crate) recycle: Option<fn(Vec<u8>)>,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(recycle) = self.recycle
            && self.report.capacity() > 0
        {
            recycle(std::mem::take(&mut self.report));
        }
    }
}

impl Outcome {
    /// The outcome's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.report.get(self.start..).unwrap_or_default()
    }
}

/// An ended job's sink, its outcome, and whether it goes to the callback thread.
type Ready = (Sink, Result<Outcome>, bool);

/// Work for the callback thread.
type CallbackTask = Box<dyn FnOnce() + Send>;

/// How long `join` waits between looks at the state when nothing notifies it.
const JOIN_TICK: Duration = Duration::from_millis(10);

/// A submitted job: what the backend runs (`W`), and where its outcome goes.
struct Job<W> {
    work: W,
    sink: Sink,
    /// Deliver on the callback thread (the sink runs a user callback).
    callback: bool,
}

/// The jobs of a pool, whatever runs them: those not done, those not yet given to a
/// worker (in the order submitted), and the outcomes on their way to their sinks.
pub(crate) struct Book<W> {
    jobs: HashMap<u64, Job<W>>,
    pending: VecDeque<u64>,
    /// No new jobs.
    pub(crate) closed: bool,
    /// Stopped at once.
    pub(crate) terminated: bool,
    /// Why the pool cannot run tasks (its initializer fails).
    pub(crate) broken: Option<String>,
    /// Jobs ended whose outcomes go to their sinks once the lock is let go (a sink
    /// decodes, which must not hold up the handing out of jobs).
    ready: Vec<Ready>,
    /// Outcomes taken from `ready` and not yet delivered.
    delivering: usize,
    /// Outcomes handed to the callback thread and not yet delivered.
    callbacks_pending: usize,
}

impl<W> Book<W> {
    fn new() -> Book<W> {
        Book {
            jobs: HashMap::new(),
            pending: VecDeque::new(),
            closed: false,
            terminated: false,
            broken: None,
            ready: Vec::new(),
            delivering: 0,
            callbacks_pending: 0,
        }
    }

    /// Adds job `id`, last of the pending ones. `Err` once the pool is closed or broken.
    pub(crate) fn add(&mut self, id: u64, work: W, sink: Sink, callback: bool) -> Result<()> {
        if self.closed || self.terminated {
            return Err(Error::state("the pool is closed"));
        }
        if let Some(why) = &self.broken {
            return Err(Error::state(format!("the pool cannot run tasks: {why}")));
        }
        self.jobs.insert(
            id,
            Job {
                work,
                sink,
                callback,
            },
        );
        self.pending.push_back(id);
        Ok(())
    }

    /// The first pending job still to run, and its work; the ids of jobs ended while
    /// pending are dropped on the way. [`taken`](Self::taken) once it has been given out.
    pub(crate) fn next_pending(&mut self) -> Option<(u64, &W)> {
        while let Some(&id) = self.pending.front() {
            if self.jobs.contains_key(&id) {
                return self.jobs.get(&id).map(|j| (id, &j.work));
            }
            self.pending.pop_front();
        }
        None
    }

    /// The first pending job has been given to a worker.
    pub(crate) fn taken(&mut self) {
        self.pending.pop_front();
    }

    /// Puts a job given out back at the head of the pending ones, unless it has ended.
    pub(crate) fn requeue(&mut self, id: u64) {
        if self.jobs.contains_key(&id) {
            self.pending.push_front(id);
        }
    }

    /// The work of a job not ended.
    pub(crate) fn work(&self, id: u64) -> Option<&W> {
        self.jobs.get(&id).map(|j| &j.work)
    }

    /// The work of a job not ended, to change.
    pub(crate) fn work_mut(&mut self, id: u64) -> Option<&mut W> {
        self.jobs.get_mut(&id).map(|j| &mut j.work)
    }

    /// Whether no job is left that is not ended.
    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Ends a job: its outcome is delivered once the lock is let go
    /// ([`Jobs::release`]).
    pub(crate) fn finish(&mut self, id: u64, outcome: Result<Outcome>) {
        if let Some(job) = self.jobs.remove(&id) {
            self.ready.push((job.sink, outcome, job.callback));
        }
    }

    /// Cancels a pending job; false if it was given to a worker, or is done.
    fn cancel(&mut self, id: u64) -> bool {
        let Some(at) = self.pending.iter().position(|j| *j == id) else {
            return false;
        };
        self.pending.remove(at);
        self.finish(id, Err(Error::Cancelled));
        true
    }

    /// Cancels every pending job.
    fn cancel_pending(&mut self) {
        let ids: Vec<u64> = self.pending.drain(..).collect();
        for id in ids {
            self.finish(id, Err(Error::Cancelled));
        }
    }

    /// Fails every job not ended with `error()`; no job is pending after.
    fn fail_all(&mut self, error: impl Fn() -> Error) {
        self.pending.clear();
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            self.finish(id, Err(error()));
        }
    }

    /// Stops at once: every job not ended fails with [`Error::Cancelled`].
    pub(crate) fn terminate(&mut self) {
        self.terminated = true;
        self.fail_all(|| Error::Cancelled);
    }

    /// The pool cannot run tasks: every job fails, and new ones are refused, with why
    /// (the first reason given).
    pub(crate) fn break_pool(&mut self, why: String) {
        self.fail_all(|| Error::state(why.clone()));
        self.broken.get_or_insert(why);
    }
}

/// What the lock of a pool's [`Jobs`] guards: the book, and what the backend keeps
/// with it (its workers), so that one taking of the lock sees both.
pub(crate) struct State<S, W> {
    pub(crate) book: Book<W>,
    pub(crate) own: S,
}

/// A pool's jobs and the delivery of their outcomes, shared by the backends: each core
/// holds one, with the backend's own state (`S`) under the same lock and its own work
/// per job (`W`). Callbacks run on a thread of their own, in the order the outcomes
/// came, so that a slow callback never holds up the backend's handler.
pub(crate) struct Jobs<S, W> {
    state: Mutex<State<S, W>>,
    /// Notified whenever a job ends or the pool stops (for `join`).
    idle: Condvar,
    callbacks: Mutex<Option<Sender<CallbackTask>>>,
}

impl<S: Send + 'static, W: Send + 'static> Jobs<S, W> {
    /// No jobs yet, the backend's state `own`, and the callback thread started (named
    /// `thread_name`).
    pub(crate) fn start(own: S, thread_name: &str) -> Result<Arc<Jobs<S, W>>> {
        let (cb_tx, cb_rx) = mpsc::channel::<CallbackTask>();
        let jobs = Arc::new(Jobs {
            state: Mutex::new(State {
                book: Book::new(),
                own,
            }),
            idle: Condvar::new(),
            callbacks: Mutex::new(Some(cb_tx)),
        });
        thread::Builder::new().name(thread_name.into()).spawn({
            let jobs = Arc::downgrade(&jobs);
            move || run_callbacks(cb_rx, jobs)
        })?;
        Ok(jobs)
    }
}

impl<S, W> Jobs<S, W> {
    /// The state, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<S, W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes `join`.
    pub(crate) fn notify(&self) {
        self.idle.notify_all();
    }

    /// The outcomes to deliver (state locked); [`deliver`](Self::deliver) them after
    /// letting go of the lock.
    fn take_ready(&self, st: &mut State<S, W>) -> Vec<Ready> {
        st.book.delivering += st.book.ready.len();
        std::mem::take(&mut st.book.ready)
    }

    /// Delivers what is ready: takes it from the locked state `st`, lets go of the
    /// lock, and delivers.
    pub(crate) fn release(&self, mut st: MutexGuard<'_, State<S, W>>) {
        let ready = self.take_ready(&mut st);
        drop(st);
        self.deliver(ready);
    }

    /// Runs the sinks of ended jobs (state not locked): on this thread, or on the
    /// callback thread for jobs with callbacks.
    fn deliver(&self, ready: Vec<Ready>) {
        if ready.is_empty() {
            return;
        }
        let n = ready.len();
        let mut to_callbacks = Vec::new();
        for (sink, outcome, callback) in ready {
            if callback {
                to_callbacks.push(Box::new(move || sink(outcome)) as CallbackTask);
            } else {
                sink(outcome);
            }
        }
        {
            let mut st = self.lock();
            st.book.delivering -= n;
            st.book.callbacks_pending += to_callbacks.len();
        }
        let sender = self
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for task in to_callbacks {
            let unsent = match &sender {
                Some(tx) => tx.send(task).err().map(|e| e.0),
                None => Some(task),
            };
            if let Some(task) = unsent {
                task();
                self.lock().book.callbacks_pending -= 1;
            }
        }
        self.idle.notify_all();
    }

    /// The callback thread ends once the callbacks handed to it have run; later ones
    /// run where they are delivered.
    pub(crate) fn stop_callbacks(&self) {
        *self.callbacks.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Cancels a job no worker has been given yet: it fails with [`Error::Cancelled`].
    /// False if it was given to a worker, or is done.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let mut st = self.lock();
        let cancelled = st.book.cancel(id);
        self.release(st);
        cancelled
    }

    /// Cancels every job no worker has been given yet.
    pub(crate) fn cancel_pending(&self) {
        let mut st = self.lock();
        st.book.cancel_pending();
        self.release(st);
    }

    /// Whether a job has been given to a worker and is not done.
    pub(crate) fn running(&self, id: u64) -> bool {
        let st = self.lock();
        st.book.jobs.contains_key(&id) && !st.book.pending.contains(&id)
    }

    /// No new jobs.
    pub(crate) fn close(&self) {
        self.lock().book.closed = true;
    }

    /// Waits until the pool has ended (after `close` or `terminate`): every job done,
    /// every callback run, and `ended` says the backend is done too.
    pub(crate) fn join(&self, ended: impl Fn(&S) -> bool) -> Result<()> {
        let mut st = self.lock();
        if !st.book.closed && !st.book.terminated {
            return Err(Error::state("join() before close() or terminate()"));
        }
        // As in Python, every callback has run when `join` returns.
        while !ended(&st.own)
            || !st.book.jobs.is_empty()
            || !st.book.ready.is_empty()
            || st.book.delivering > 0
            || st.book.callbacks_pending > 0
        {
            st = self
                .idle
                .wait_timeout(st, JOIN_TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

/// The callback thread: runs each outcome's callbacks in the order they came. A callback
/// that panics is reported and skipped; the next ones run as usual.
fn run_callbacks<S, W>(rx: mpsc::Receiver<CallbackTask>, jobs: Weak<Jobs<S, W>>) {
    for task in rx {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
            tracing::warn!("multiproc pool: a callback panicked");
        }
        let Some(jobs) = jobs.upgrade() else {
            continue;
        };
        jobs.lock().book.callbacks_pending -= 1;
        jobs.idle.notify_all();
    }
}

/// The running side of a pool: each method is one `match` over the backends.
pub(crate) enum Backend {
    /// Worker processes of this machine.
    Local(Arc<local::Core>),
    /// The other ranks of the MPI job this process is rank 0 of.
    #[cfg(feature = "mpi")]
    Mpi(Arc<mpi::Core>),
}

impl Backend {
    /// Adds a job running the entry at `entry` on `args`; its id. `Err` once the pool
    /// is closed or broken.
    pub(crate) fn submit(
        &self,
        entry: u64,
        args: Vec<u8>,
        sink: Sink,
        callback: bool,
    ) -> Result<u64> {
        match self {
            Backend::Local(c) => c.submit(entry, args, sink, callback),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.submit(entry, args, sink, callback),
        }
    }

    /// Cancels a job no worker has been given yet; false if it runs or is done.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        match self {
            Backend::Local(c) => c.jobs.cancel(id),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.jobs.cancel(id),
        }
    }

    /// Cancels every job no worker has been given yet.
    pub(crate) fn cancel_pending(&self) {
        match self {
            Backend::Local(c) => c.jobs.cancel_pending(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.jobs.cancel_pending(),
        }
    }

    /// Whether a job has been given to a worker and is not done.
    pub(crate) fn running(&self, id: u64) -> bool {
        match self {
            Backend::Local(c) => c.jobs.running(id),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.jobs.running(id),
        }
    }

    /// No new jobs; the workers end once the jobs submitted are done.
    pub(crate) fn close(&self) {
        match self {
            Backend::Local(c) => c.jobs.close(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.jobs.close(),
        }
    }

    /// Stops at once: every job not done fails with `Error::Cancelled`.
    pub(crate) fn terminate(&self) {
        match self {
            Backend::Local(c) => c.terminate(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.terminate(),
        }
    }

    /// Waits until the workers have ended (after `close` or `terminate`).
    pub(crate) fn join(&self) -> Result<()> {
        match self {
            Backend::Local(c) => c.join(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(c) => c.join(),
        }
    }

    /// The pids of the current workers (of this machine's processes: empty for ranks).
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            Backend::Local(c) => c.pids(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(_) => Vec::new(),
        }
    }
}

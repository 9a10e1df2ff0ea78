//! The local backend, the pool's side in the parent: the worker processes, the jobs,
//! and the threads that keep them going.
//!
//! A job is a chunk of calls. Each worker has a queue of its own for orders, and the pool
//! gives it a few jobs at a time (see [`PREFETCH`]), so that the pool always knows which
//! jobs each worker holds. All workers put their reports on one shared queue, which the
//! handler thread reads: it delivers outcomes, hands out more jobs, and checks the
//! workers. A worker that died is replaced, the jobs still in its queue are handed to
//! others, and the job it was running fails with [`Error::WorkerLost`] (or runs again,
//! when retries are allowed). Callbacks run on a thread of their own, in the order the
//! outcomes came, so that a slow callback never holds up the handler.
//!
//! Nothing the handler does blocks for long: an order small enough to be one record of
//! the worker's queue always finds room there (the orders a worker holds never take
//! more than half of its queue), and a larger
//! one, which streams through the queue while the worker reads it, goes only to a worker
//! that holds nothing (it is reading its queue already).

use std::collections::VecDeque;
use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::{Jobs, Outcome, Sink};
use crate::error::{Error, Result};
use crate::pool::worker::{self, Order, Report, SharedInit, WorkerArgs, worker_main};
use crate::process::{Process, StartMethod, get_context};
use crate::queue::Queue;

/// Jobs a worker whose jobs are short holds at most: one running, the others waiting in
/// its queue, so that it never waits for the handler between two of them. Only the
/// running one is lost if the worker dies; the others go to another worker. A worker
/// whose jobs take longer holds two (one waiting), so that an idle worker gets the
/// next job instead.
pub(crate) const PREFETCH: usize = 16;

/// A job shorter than this counts as short (see [`PREFETCH`]).
const SHORT_JOB: Duration = Duration::from_micros(200);

/// Orders up to this size (well under a quarter of the worker's queue: one record) go
/// to a worker that is busy; larger ones wait for an idle one.
const SMALL_ORDER: usize = 192 << 10;

/// The most bytes of orders a worker holds in its queue: half of it, so that a put never
/// waits for room.
const QUEUED_BYTES: usize = crate::queue::DEFAULT_RING_BYTES / 2;

/// How long the handler waits for the consumer side of a dead worker's order queue.
const DRAIN_LOCK_WAIT: Duration = Duration::from_secs(2);

/// How often the handler looks at the workers when no report comes.
const TICK: Duration = Duration::from_millis(10);

/// What a worker runs for a job.
pub(crate) struct Work {
    entry: u64,
    /// The encoded chunk of arguments, kept to run it again if its worker dies.
    args: Vec<u8>,
    retries_left: u32,
}

struct Worker {
    serial: u64,
    process: Process,
    orders: Queue<Order>,
    /// Jobs given to it that it has not reported on, in the order given.
    holding: VecDeque<u64>,
    retiring: bool,
    /// Found ended; its accounting waits for the `Ended` marker.
    ended: bool,
    /// Since when the first job it holds has been its current one (it runs its jobs in
    /// the order given: the first starts when it is given to an idle worker, or when the
    /// one before it is reported done).
    running_since: Instant,
    /// It was killed for running its current job past the task timeout.
    timed_out: bool,
    /// How many jobs it may hold (see [`PREFETCH`]).
    prefetch: usize,
    /// Bytes of the orders it holds (see [`QUEUED_BYTES`]).
    queued_bytes: usize,
}

/// How workers are made.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) initializer: Option<SharedInit>,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) retries: u32,
    /// A chunk running longer than this is stopped: its worker is killed and replaced.
    pub(crate) task_timeout: Option<Duration>,
}

/// The workers, kept with the jobs under one lock.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    next_job: u64,
    next_serial: u64,
}

type State = super::State<Workers, Work>;

/// The pool's shared core.
pub(crate) struct Core {
    spec: Spec,
    /// The jobs, and the workers with them.
    pub(crate) jobs: Arc<Jobs<Workers, Work>>,
    reports: Queue<Report>,
}

impl Core {
    /// Starts the workers and the pool's threads.
    pub(crate) fn start(spec: Spec) -> Result<Arc<Core>> {
        let reports = Queue::builder().ring_bytes(4 << 20).build()?;
        let own = Workers {
            workers: Vec::new(),
            next_job: 0,
            next_serial: 0,
        };
        let core = Arc::new(Core {
            spec,
            jobs: Jobs::start(own, "multiproc-pool-callbacks")?,
            reports,
        });
        {
            let mut st = core.lock();
            for _ in 0..core.spec.processes {
                let w = core.new_worker(&mut st)?;
                st.own.workers.push(w);
            }
        }
        let handler = core.clone();
        thread::Builder::new()
            .name("multiproc-pool-handler".into())
            .spawn(move || handler.handle())?;
        Ok(core)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.jobs.lock()
    }

    fn new_worker(&self, st: &mut State) -> Result<Worker> {
        let serial = st.own.next_serial;
        st.own.next_serial += 1;
        let orders = Queue::new()?;
        let args = WorkerArgs {
            serial,
            orders: orders.clone(),
            reports: self.reports.clone(),
            initializer: self.spec.initializer.clone(),
            max_tasks: self.spec.max_tasks,
        };
        let mut process = get_context(self.spec.method)
            .process(worker_main, args)
            .daemon(true)
            .name(format!("PoolWorker-{}", serial + 1));
        process.start()?;
        Ok(Worker {
            serial,
            process,
            orders,
            holding: VecDeque::new(),
            retiring: false,
            ended: false,
            running_since: Instant::now(),
            timed_out: false,
            prefetch: 4,
            queued_bytes: 0,
        })
    }

    /// Adds a job; its id. `Err` once the pool is closed or broken.
    pub(crate) fn submit(
        &self,
        entry: u64,
        args: Vec<u8>,
        sink: Sink,
        callback: bool,
    ) -> Result<u64> {
        let mut st = self.lock();
        let id = st.own.next_job;
        let work = Work {
            entry,
            args,
            retries_left: self.spec.retries,
        };
        st.book.add(id, work, sink, callback)?;
        st.own.next_job += 1;
        self.dispatch(&mut st);
        Ok(id)
    }

    /// Gives pending jobs to workers with room, the least busy first.
    fn dispatch(&self, st: &mut State) {
        let State { book, own } = st;
        while let Some((id, job)) = book.next_pending() {
            let len = job.args.len();
            let small = len <= SMALL_ORDER;
            let Some(w) = own
                .workers
                .iter_mut()
                .filter(|w| {
                    let room = if small { w.prefetch } else { 1 };
                    let fits = w.holding.is_empty() || w.queued_bytes + len <= QUEUED_BYTES;
                    !w.retiring && !w.ended && w.holding.len() < room && fits
                })
                .min_by_key(|w| w.holding.len())
            else {
                return;
            };
            let order = Order::Run {
                job: id,
                entry: job.entry,
            };
            if worker::send(&w.orders, &order, &job.args).is_err() {
                // This worker cannot take orders; it is replaced when found dead.
                w.retiring = true;
                continue;
            }
            if w.holding.is_empty() {
                w.running_since = Instant::now();
            }
            w.queued_bytes += len;
            w.holding.push_back(id);
            book.taken();
        }
    }

    /// The handler thread: reports, dead workers, replacements, until the pool ends.
    fn handle(self: Arc<Self>) {
        let mut last_check = Instant::now();
        loop {
            let first = self.reports.get_bytes_timeout(TICK);
            let mut st = self.lock();
            let mut report = first;
            // Every report that is there, under one taking of the lock. An error is
            // "empty", or damaged queue memory; a report whose header does not decode
            // is skipped (its job stays with its worker, and fails if the worker dies).
            while let Ok(r) = report {
                if let Ok((head, start)) = worker::open::<Report>(&r) {
                    self.take_report(&mut st, head, r, start);
                }
                report = self.reports.try_get_bytes();
            }
            // Looking at every worker costs a system call each: once per tick.
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                self.check_workers(&mut st);
            }
            self.dispatch(&mut st);
            let stop = st.book.terminated || (st.book.closed && st.book.is_empty());
            if stop {
                self.stop_workers(&mut st);
            }
            self.jobs.release(st);
            if stop {
                self.jobs.notify();
                self.jobs.stop_callbacks();
                return;
            }
        }
    }

    /// Takes in one report from a worker (state locked): its header, and the message
    /// it came in, whose bytes from `start` on are a chunk's outcome.
    fn take_report(&self, st: &mut State, report: Report, message: Vec<u8>, start: usize) {
        match report {
            Report::Done {
                worker,
                job,
                outcome,
            } => {
                let len = st.book.work(job).map_or(0, |j| j.args.len());
                if let Some(w) = st.own.workers.iter_mut().find(|w| w.serial == worker) {
                    if w.holding.contains(&job) {
                        w.queued_bytes = w.queued_bytes.saturating_sub(len);
                    }
                    if w.holding.front() == Some(&job) {
                        // Short jobs: keep more of them waiting in its queue.
                        w.prefetch = if w.running_since.elapsed() < SHORT_JOB {
                            PREFETCH
                        } else {
                            2
                        };
                        w.running_since = Instant::now();
                    }
                    w.holding.retain(|j| *j != job);
                }
                let outcome = outcome.map(|()| Outcome {
                    report: message,
                    start,
                    recycle: None,
                });
                st.book.finish(job, outcome.map_err(Error::from));
            }
            Report::Retiring { worker } => {
                if let Some(w) = st.own.workers.iter_mut().find(|w| w.serial == worker) {
                    w.retiring = true;
                }
            }
            Report::InitFailed { failure, .. } => {
                let why = format!("its initializer failed: {}", Error::from(failure));
                st.book.break_pool(why);
            }
            Report::Ended { worker } => self.account(st, worker),
        }
    }

    /// Marks workers that ended, and puts an `Ended` marker after their reports: the
    /// queue is one line, so every report a worker made before it ended comes before the
    /// marker, and no job it completed is taken for lost.
    fn check_workers(&self, st: &mut State) {
        if let Some(limit) = self.spec.task_timeout {
            for w in st.own.workers.iter_mut() {
                if !w.ended && !w.holding.is_empty() && w.running_since.elapsed() > limit {
                    w.timed_out = true;
                    let _ = w.process.kill();
                }
            }
        }
        for w in st.own.workers.iter_mut() {
            if !w.ended && !w.process.is_alive() {
                w.ended = true;
                if self
                    .reports
                    .put(&Report::Ended { worker: w.serial })
                    .is_err()
                {
                    tracing::warn!("multiproc pool: cannot queue the end of a worker");
                }
            }
        }
    }

    /// Settles the jobs of a worker that ended, and replaces it: the jobs it never took
    /// go back to the pending ones, the one it held fails (or runs again).
    fn account(&self, st: &mut State, serial: u64) {
        let Some(i) = st.own.workers.iter().position(|w| w.serial == serial) else {
            return;
        };
        let mut w = st.own.workers.swap_remove(i);
        let _ = w.process.join();
        let mut untaken = Vec::new();
        // A worker killed inside its `get` holds its queue's consumer side: wait for the
        // takeover rather than take its orders for lost.
        while let Ok(message) = w.orders.try_get_bytes_after(DRAIN_LOCK_WAIT) {
            match worker::open::<Order>(&message) {
                Ok((Order::Run { job, .. }, _)) => untaken.push(job),
                _ => break,
            }
        }
        for job in untaken.iter().rev() {
            st.book.requeue(*job);
        }
        let pid = w.process.pid().unwrap_or(0);
        let exitcode = w.process.exitcode().unwrap_or(-1);
        let mut held = w.holding.iter().filter(|j| !untaken.contains(j));
        if w.timed_out {
            // The job over its time is the first one held; it is not run again.
            if let Some(&id) = held.next() {
                st.book.finish(id, Err(Error::Timeout));
            }
        }
        for &id in held {
            let Some(job) = st.book.work_mut(id) else {
                continue;
            };
            if job.retries_left > 0 {
                job.retries_left -= 1;
                st.book.requeue(id);
            } else {
                st.book.finish(id, Err(Error::WorkerLost { pid, exitcode }));
            }
        }
        let b = &st.book;
        if !b.terminated && b.broken.is_none() && !(b.closed && b.is_empty()) {
            match self.new_worker(st) {
                Ok(nw) => st.own.workers.push(nw),
                Err(e) => tracing::warn!("multiproc pool: cannot replace a worker: {e}"),
            }
        }
        self.jobs.notify();
    }

    fn stop_workers(&self, st: &mut State) {
        for w in &st.own.workers {
            if st.book.terminated {
                let _ = w.process.kill();
            } else {
                let _ = w.orders.put(&Order::Stop);
            }
        }
        for mut w in st.own.workers.drain(..) {
            let _ = w.process.join();
        }
    }

    /// Stops at once: running jobs are killed with their workers, and every job not
    /// done fails with [`Error::Cancelled`].
    pub(crate) fn terminate(&self) {
        let mut st = self.lock();
        st.book.terminate();
        for w in &st.own.workers {
            let _ = w.process.kill();
        }
        self.jobs.release(st);
    }

    /// Waits until the workers have ended (after `close` or `terminate`).
    pub(crate) fn join(&self) -> Result<()> {
        self.jobs.join(|own| own.workers.is_empty())
    }

    /// The pids of the current workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock()
            .own
            .workers
            .iter()
            .filter_map(|w| w.process.pid())
            .collect()
    }
}

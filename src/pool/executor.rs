//! [`ProcessPoolExecutor`] (Python's `concurrent.futures.ProcessPoolExecutor`) on the
//! pool's machinery: `submit` gives a [`TaskFuture`] that can be waited for with a
//! timeout, asked whether it is done, cancelled while no worker has it, or awaited.
//!
//! Unlike CPython's executor, one dead worker does not break the executor: the task it
//! ran fails with [`Error::WorkerLost`](crate::Error::WorkerLost), every other task completes, and the worker is
//! replaced (see the [pool](crate::Pool)'s supervision).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AsyncResult, Pool, PoolBuilder};
use crate::deadline;
use crate::error::Result;
use crate::process::Target;

/// A pool of worker processes with the `concurrent.futures` surface.
///
/// ```
/// use multiproc::ProcessPoolExecutor;
///
/// fn cube(x: i64) -> i64 {
///     x * x * x
/// }
///
/// let executor = ProcessPoolExecutor::new(2)?;
/// let future = executor.submit(cube, 3)?;
/// assert_eq!(future.result()?, 27);
/// let all: Vec<i64> = executor.map(cube, [1, 2, 3], None)?.collect::<multiproc::Result<_>>()?;
/// assert_eq!(all, [1, 8, 27]);
/// executor.shutdown(true, false);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct ProcessPoolExecutor {
    pool: Pool,
}

impl ProcessPoolExecutor {
    /// An executor of `max_workers` processes (0: [`cpu_count`](crate::cpu_count)).
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor> {
        Pool::builder()
            .processes(max_workers)
            .build()
            .map(|pool| ProcessPoolExecutor { pool })
    }

    /// An executor from pool options: `max_tasks_per_child` is
    /// [`PoolBuilder::maxtasksperchild`], `initializer` is [`PoolBuilder::initializer`].
    pub fn with_options(options: PoolBuilder) -> Result<ProcessPoolExecutor> {
        options.build().map(|pool| ProcessPoolExecutor { pool })
    }

    /// Schedules `f(args)` (Python's `submit`).
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<'_, R>>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let (id, result) = self.pool.submit_one::<F, A, R>(args)?;
        Ok(TaskFuture {
            pool: &self.pool,
            id,
            result,
        })
    }

    /// `f` over the items (Python's `map`): every call is submitted at once, and the
    /// results come in order; with a `timeout`, a result not ready that long after this
    /// call is [`Error::Timeout`](crate::Error::Timeout).
    pub fn map<F, A, R, I>(
        &self,
        f: F,
        items: I,
        timeout: Option<Duration>,
    ) -> Result<ExecutorMap<R>>
    where
        F: Target<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let deadline = timeout.and_then(deadline::after);
        let _ = f;
        let results = items
            .into_iter()
            .map(|a| self.pool.submit_one::<F, A, R>(a).map(|(_, r)| r))
            .collect::<Result<Vec<_>>>()?;
        Ok(ExecutorMap {
            results: results.into_iter(),
            deadline,
        })
    }

    /// Stops taking tasks (Python's `shutdown`): with `cancel_futures`, tasks no worker
    /// has started are cancelled; with `wait`, returns once the rest are done and the
    /// workers have ended.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            self.pool.core.cancel_pending();
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }
}

/// A task submitted to a [`ProcessPoolExecutor`] (Python's `concurrent.futures.Future`).
/// It is also a [`Future`]: async code can `.await` it.
#[derive(Debug)]
pub struct TaskFuture<'a, R> {
    pool: &'a Pool,
    id: u64,
    result: AsyncResult<R>,
}

impl<R> TaskFuture<'_, R> {
    /// Waits for the result (Python's `result()`).
    pub fn result(self) -> Result<R> {
        self.result.get()
    }

    /// Waits at most `timeout` (Python's `result(timeout)`): [`Error::Timeout`](crate::Error::Timeout) if not
    /// done by then; the future can be asked again.
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.result.get_timeout(timeout)
    }

    /// Whether the task is done, failed or was cancelled (Python's `done()`).
    pub fn done(&self) -> bool {
        self.result.ready()
    }

    /// Whether a worker runs the task now (Python's `running()`).
    pub fn running(&self) -> bool {
        self.pool.core.running(self.id)
    }

    /// Cancels the task if no worker has started it (Python's `cancel()`): true if it
    /// is cancelled (its result is [`Error::Cancelled`](crate::Error::Cancelled)), false if it runs or is done.
    pub fn cancel(&self) -> bool {
        self.pool.core.cancel(self.id)
    }

    /// Whether the task was cancelled (Python's `cancelled()`).
    pub fn cancelled(&self) -> bool {
        self.result.is_cancelled()
    }
}

impl<R> Future for TaskFuture<'_, R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        Pin::new(&mut self.result).poll(cx)
    }
}

/// The results of [`ProcessPoolExecutor::map`], in order.
#[derive(Debug)]
pub struct ExecutorMap<R> {
    results: std::vec::IntoIter<AsyncResult<R>>,
    deadline: Option<Instant>,
}

impl<R> Iterator for ExecutorMap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let mut r = self.results.next()?;
        Some(match deadline::remaining(self.deadline) {
            None => r.get(),
            Some(left) => r.get_timeout(left),
        })
    }
}

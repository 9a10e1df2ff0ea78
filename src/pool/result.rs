//! Results of pool tasks: [`AsyncResult`] (Python's `AsyncResult`, also a `Future`) and
//! the iterators of `imap` and `imap_unordered`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::deadline;
use crate::error::{Error, Result};

enum State<T> {
    Pending(Vec<Waker>),
    Ready(Result<T>),
    Taken,
}

/// A value that one thread sets once and others wait for.
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            state: Mutex::new(State::Pending(Vec::new())),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic elsewhere while holding this lock leaves a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the value (the first time only) and wakes every waiter.
    pub(crate) fn set(&self, value: Result<T>) {
        let mut s = self.lock();
        if let State::Pending(wakers) = &mut *s {
            let wakers = std::mem::take(wakers);
            *s = State::Ready(value);
            drop(s);
            self.ready.notify_all();
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    fn is_ready(&self) -> bool {
        !matches!(*self.lock(), State::Pending(_))
    }

    /// Waits until set, at most until `deadline`; whether it is.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut s = self.lock();
        while matches!(*s, State::Pending(_)) {
            match deadline::remaining(deadline) {
                None => s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => return false,
                Some(left) => {
                    s = self
                        .ready
                        .wait_timeout(s, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            }
        }
        true
    }

    /// Takes the value if it is set.
    fn take(&self) -> Option<Result<T>> {
        let mut s = self.lock();
        match std::mem::replace(&mut *s, State::Taken) {
            State::Ready(v) => Some(v),
            State::Taken => Some(Err(Error::state("the result was already taken"))),
            pending => {
                *s = pending;
                None
            }
        }
    }
}

/// The result of a task submitted to a [`Pool`](crate::Pool) (Python's `AsyncResult`):
/// wait for it, ask whether it is ready, take it. It is also a [`Future`], so async code
/// can `.await` it on any runtime.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = multiproc::Pool::new(2)?;
/// let r = pool.apply_async(square, 7)?;
/// r.wait();
/// assert!(r.ready());
/// assert!(r.successful()?);
/// assert_eq!(r.get()?, 49);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<R> {
    slot: Arc<Slot<R>>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot<R>>) -> AsyncResult<R> {
        AsyncResult { slot }
    }

    /// Waits for the result and returns it (Python's `get()`): the task's value, or its
    /// error ([`Error::Panicked`], [`Error::WorkerLost`], …).
    pub fn get(self) -> Result<R> {
        self.slot.wait_until(None);
        self.slot
            .take()
            .unwrap_or_else(|| Err(Error::state("no result")))
    }

    /// Waits at most `timeout` (Python's `get(timeout)`): [`Error::Timeout`] if the
    /// result is not ready by then, and the `AsyncResult` can be asked again.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// fn slow(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let mut r = pool.apply_async(slow, 300)?;
    /// assert!(matches!(r.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Timeout)));
    /// assert_eq!(r.get_timeout(Duration::from_secs(60))?, 300);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        if !self.slot.wait_until(deadline::after(timeout)) {
            return Err(Error::Timeout);
        }
        self.slot.take().unwrap_or(Err(Error::Timeout))
    }

    /// Waits until the result is ready (Python's `wait()`).
    pub fn wait(&self) {
        self.slot.wait_until(None);
    }

    /// Waits at most `timeout` until the result is ready; whether it is.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait_until(deadline::after(timeout))
    }

    /// Whether the result is ready (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.slot.is_ready()
    }

    /// Whether the task completed without an error (Python's `successful()`);
    /// [`Error::InvalidState`] if it is not ready yet, as Python raises `ValueError`.
    pub fn successful(&self) -> Result<bool> {
        match &*self.slot.lock() {
            State::Pending(_) => Err(Error::state("the result is not ready")),
            State::Ready(r) => Ok(r.is_ok()),
            State::Taken => Err(Error::state("the result was already taken")),
        }
    }
}

impl<R> AsyncResult<R> {
    /// Whether the result is ready and is [`Error::Cancelled`].
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(&*self.slot.lock(), State::Ready(Err(Error::Cancelled)))
    }
}

impl<R> Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        {
            let mut s = self.slot.lock();
            if let State::Pending(wakers) = &mut *s {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        Poll::Ready(
            self.slot
                .take()
                .unwrap_or_else(|| Err(Error::state("no result"))),
        )
    }
}

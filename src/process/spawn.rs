//! `spawn`: `thread::spawn`, with a process, returning the function's value.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::process::children;
use crate::process::handle::Process;
use crate::process::method::StartMethod;
use crate::process::target::Target;
use crate::process::task::{self, Outcome};
use crate::sys::image;

/// How long one read of a report may block before the child's exit is checked again.
const REPORT_SLICE: Duration = Duration::from_millis(100);

/// Runs `target(args)` in a new child process and returns a handle to its result, like
/// `std::thread::spawn`.
///
/// ```
/// fn add((a, b): (i64, i64)) -> i64 { a + b }
///
/// let h = multiproc::spawn(add, (40, 2))?;
/// assert_eq!(h.join()?, 42);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A panic in the child comes back as [`Error::Panicked`] with its message and location:
///
/// ```
/// fn boom(_: ()) -> u8 { panic!("no luck") }
///
/// match multiproc::spawn(boom, ())?.join() {
///     Err(multiproc::Error::Panicked { message, location }) => {
///         assert_eq!(message, "no luck");
///         assert!(location.is_some());
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn spawn<F, A, R>(target: F, args: A) -> Result<JoinHandle<R>>
where
    F: Target<A, R>,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    JoinHandle::start(target, args, None)
}

/// An owned permission to join a child process and take its result.
///
/// Dropping the handle does not stop the child (as with threads); it is joined when the
/// parent exits, like any non-daemon child.
pub struct JoinHandle<R> {
    process: Process,
    /// The child's report, once read (it may come before the child has exited).
    report: Option<Option<Outcome<R>>>,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("process", &self.process)
            .finish()
    }
}

impl<R: DeserializeOwned> JoinHandle<R> {
    pub(crate) fn start<F, A>(
        _target: F,
        args: A,
        method: Option<StartMethod>,
    ) -> Result<JoinHandle<R>>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        const { image::assert_zero_sized::<F>() };
        let mut process = Process::with_entry(task::return_entry::<F, A, R>(), &args);
        if let Some(m) = method {
            process = process.start_method(m);
        }
        process.start()?;
        Ok(JoinHandle {
            process,
            report: None,
            _result: PhantomData,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    /// The underlying process (for `is_alive`, `exitcode`, `terminate`, `kill`).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Whether the child has ended.
    ///
    /// A child returning a large value (its encoding of
    /// [`LARGE_MESSAGE_THRESHOLD`](crate::LARGE_MESSAGE_THRESHOLD) bytes or more) sends
    /// it through its channel as [`join`](Self::join) reads it: until then it has not
    /// ended, so wait with `join` or [`join_timeout`](Self::join_timeout) rather than
    /// for this to turn true. Dropping the handle lets it end.
    pub fn is_finished(&self) -> bool {
        !self.process.is_alive()
    }

    /// Waits for the child and returns its value.
    ///
    /// [`Error::Panicked`] if it panicked, [`Error::WorkerLost`] if it ended without a
    /// result (killed by a signal, or `std::process::exit` called in the target),
    /// [`Error::Bootstrap`] if it could not run the target at all. Once the child has
    /// ended its exit decides: a process it forked, still holding the channel open,
    /// delays nothing.
    pub fn join(mut self) -> Result<R> {
        self.collect(None)
    }

    /// Like [`join`](Self::join), but gives up with [`Error::Timeout`] after `timeout`;
    /// the handle stays usable for another try. `Duration::MAX` waits as long as it takes.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.collect(crate::deadline::after(timeout))
    }

    fn collect(&mut self, deadline: Option<Instant>) -> Result<R> {
        let child = self
            .process
            .child()
            .ok_or_else(|| Error::state("process has not been started"))?
            .clone();
        let code = loop {
            if let Some(code) = child.poll()? {
                if self.report.is_none() {
                    // Ended: what it wrote is here; a missing or cut report is not waited for.
                    self.report = Some(match child.take_outcome::<R>(Some(Instant::now())) {
                        Err(Error::Timeout) => None,
                        r => r?,
                    });
                }
                break code;
            }
            if self.report.is_some() {
                match child.wait(deadline)? {
                    Some(code) => break code,
                    None => return Err(Error::Timeout),
                }
            }
            // Read the report while the child runs: a large result must be read before
            // the child can finish writing it and exit.
            if child.wait_report_or_end(deadline)? {
                let slice = crate::deadline::after(REPORT_SLICE);
                let until = match (deadline, slice) {
                    (Some(d), Some(s)) => Some(d.min(s)),
                    (d, s) => d.or(s),
                };
                match child.take_outcome::<R>(until) {
                    Ok(report) => self.report = Some(report),
                    Err(Error::Timeout) => {}
                    Err(e) => return Err(e),
                }
            }
            if crate::deadline::remaining(deadline) == Some(Duration::ZERO) {
                return Err(Error::Timeout);
            }
        };
        // Joined: no longer one of the active children.
        children::unregister(child.pid);
        match self.report.take().flatten() {
            Some(Outcome::Returned(r)) => Ok(r),
            Some(Outcome::Panicked { message, location }) => {
                Err(Error::Panicked { message, location })
            }
            Some(Outcome::Failed(msg)) => Err(Error::Bootstrap(msg)),
            None => Err(Error::WorkerLost {
                pid: child.pid,
                exitcode: code,
            }),
        }
    }
}

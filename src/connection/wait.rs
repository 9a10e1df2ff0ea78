//! Waiting on several objects at once (Python's `multiprocessing.connection.wait`).

use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::error::Result;
use crate::sys::fd as sysfd;

/// Something [`wait`] can wait on: it is ready when its descriptor is readable.
///
/// Implemented by [`Connection`](crate::Connection) (a message or end of stream is
/// waiting) and [`Process`](crate::Process) (its sentinel: the process has ended).
pub trait Waitable {
    /// The descriptor that becomes readable when this object is ready.
    fn ready_fd(&self) -> Result<BorrowedFd<'_>>;
}

impl Waitable for crate::Connection {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(std::os::fd::AsFd::as_fd(self))
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`, or a
/// timeout too large for the clock: no limit). Returns the indexes of the ready ones;
/// an empty list means the time ran out (as Python's `wait` returns an empty list).
///
/// ```
/// use std::time::Duration;
/// let (a, b) = multiproc::pipe(true)?;
/// let (c, d) = multiproc::pipe(true)?;
/// d.send(&1u8)?;
/// let ready = multiproc::wait(&[&a, &c], Some(Duration::from_secs(5)))?;
/// assert_eq!(ready, vec![1]);
/// assert!(multiproc::wait(&[&a], Some(Duration::from_millis(10)))?.is_empty());
/// # drop(b);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let fds = objects
        .iter()
        .map(|o| o.ready_fd())
        .collect::<Result<Vec<_>>>()?;
    let ready = sysfd::poll_readable(&fds, timeout)?;
    Ok(ready
        .iter()
        .enumerate()
        .filter(|(_, r)| **r)
        .map(|(i, _)| i)
        .collect())
}

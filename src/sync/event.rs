//! `Event` across processes (Python's `multiprocessing.Event`).
//!
//! One futex word holds everything: the flag (bit 0), "someone sleeps" (bit 1), and a
//! count of `set` calls (the other bits). A waiter returns true once the word shows a
//! set that happened after it started waiting, even if the flag was cleared again
//! before it woke up (so a quick `set` + `clear` never goes unnoticed).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deadline_after, deserialize_words, new_words, remaining, serialize_words, spin_until};
use crate::error::Result;
use crate::sys::futex;
use crate::sys::shm::SharedWords;

const MAGIC: u32 = u32::from_le_bytes(*b"mpEv");

const FLAG: u32 = 1;
const SLEEPERS: u32 = 2;
/// One `set` in the counter bits.
const ONE_SET: u32 = 4;
const COUNTER: u32 = !(FLAG | SLEEPERS);

/// A flag that processes can wait for (Python's `multiprocessing.Event`).
///
/// [`set`](Event::set) raises it and wakes every waiter, [`clear`](Event::clear) lowers
/// it, [`wait`](Event::wait) returns as soon as it is raised. Send it to a child in its
/// arguments or through a [`Connection`](crate::Connection): every copy is the same
/// event.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Event, Process};
///
/// fn child(ready: Event) {
///     ready.set();
/// }
///
/// let ready = Event::new()?;
/// let mut p = Process::new(child, ready.clone());
/// p.start()?;
/// assert!(ready.wait(Some(Duration::from_secs(60))));
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    words: SharedWords<2>,
}

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            words: new_words::<2>(MAGIC)?,
        })
    }

    fn state(&self) -> &AtomicU32 {
        &self.words.get()[1]
    }

    /// Raises the flag and wakes every process and thread waiting for it. Setting an
    /// event that is already set does nothing.
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) {
        let state = self.state();
        let mut s = state.load(Ordering::Relaxed);
        loop {
            if s & FLAG != 0 {
                return;
            }
            let next = ((s & COUNTER).wrapping_add(ONE_SET)) | FLAG;
            match state.compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if s & SLEEPERS != 0 {
            futex::wake_all(state);
        }
    }

    /// Lowers the flag: later waits block until the next [`set`](Event::set).
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) {
        let state = self.state();
        // Clearing a clear flag writes nothing: the word's cache line stays shared with
        // the waiters spinning on it.
        if state.load(Ordering::Relaxed) & FLAG != 0 {
            state.fetch_and(!FLAG, Ordering::AcqRel);
        }
    }

    /// Whether the flag is raised.
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state().load(Ordering::Acquire) & FLAG != 0
    }

    /// Waits until the flag is raised, at most `timeout` (`None`: as long as it takes).
    /// Returns true once it is set (at once if it already is), false if the timeout
    /// passed first.
    ///
    /// A `set` that happens while this call waits makes it return true even if the
    /// flag is cleared again before this waiter wakes up (like Python's
    /// `threading.Event`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.wait(Some(Duration::from_millis(10))));
    /// e.set();
    /// assert!(e.wait(None));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let state = self.state();
        let start = state.load(Ordering::Acquire);
        // Set now, or set (even if cleared again) since the wait began.
        let done = |s: u32| s & FLAG != 0 || s & COUNTER != start & COUNTER;
        if done(start) {
            return true;
        }
        if timeout == Some(Duration::ZERO) {
            return false;
        }
        let deadline = timeout.and_then(deadline_after);
        if spin_until(|| done(state.load(Ordering::Acquire))) {
            return true;
        }
        loop {
            let s = state.load(Ordering::Acquire);
            if done(s) {
                return true;
            }
            let left = remaining(deadline);
            if left == Some(Duration::ZERO) {
                return false;
            }
            if s & SLEEPERS == 0
                && state
                    .compare_exchange(s, s | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            futex::wait(state, s | SLEEPERS, left);
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_words(&self.words, s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Event, D::Error> {
        Ok(Event {
            words: deserialize_words(d, MAGIC, "event")?,
        })
    }
}

//! `Semaphore` and `BoundedSemaphore` across processes (Python's
//! `multiprocessing.Semaphore` / `BoundedSemaphore`).
//!
//! Layout (four 32-bit words): the kind tag, the value (the futex word), the number of
//! sleeping waiters, and the largest value a release may reach.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deserialize_words, new_words, remaining, serialize_words, spin_until};
use crate::error::{Error, Result};
use crate::sys::futex;
use crate::sys::shm::SharedWords;

const SEMAPHORE_MAGIC: u32 = u32::from_le_bytes(*b"mpSe");
const BOUNDED_MAGIC: u32 = u32::from_le_bytes(*b"mpBS");

const VALUE: usize = 1;
const WAITERS: usize = 2;
const MAX: usize = 3;

/// The counter shared by both kinds of semaphore.
#[derive(Clone)]
struct RawSemaphore {
    words: SharedWords<4>,
}

impl RawSemaphore {
    fn new(magic: u32, value: u32, max: u32) -> Result<RawSemaphore> {
        let words = new_words::<4>(magic)?;
        let w = words.get();
        w[MAX].store(max, Ordering::Relaxed);
        w[VALUE].store(value, Ordering::Release);
        Ok(RawSemaphore { words })
    }

    fn value(&self) -> &AtomicU32 {
        &self.words.get()[VALUE]
    }

    /// Takes one unit if there is one, without waiting.
    fn try_take(&self) -> bool {
        let value = self.value();
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes one unit, waiting until `deadline` (`None`: no limit). False on timeout.
    fn acquire(&self, deadline: Option<Instant>) -> bool {
        if self.try_take() {
            return true;
        }
        if remaining(deadline).is_some_and(|r| r.is_zero()) {
            return false;
        }
        if spin_until(|| self.try_take()) {
            return true;
        }
        let waiters = &self.words.get()[WAITERS];
        loop {
            // Announce the sleep before the kernel checks the value (both SeqCst, paired
            // with `release`): either the releaser sees a waiter and wakes it, or the
            // kernel sees the new value and does not sleep.
            waiters.fetch_add(1, Ordering::SeqCst);
            let left = remaining(deadline);
            if left != Some(Duration::ZERO) {
                futex::wait(self.value(), 0, left);
            }
            waiters.fetch_sub(1, Ordering::SeqCst);
            if self.try_take() {
                return true;
            }
            if remaining(deadline).is_some_and(|r| r.is_zero()) {
                return false;
            }
        }
    }

    /// Adds one unit and wakes one waiter; `Err` (with nothing changed) if the value
    /// would pass its maximum.
    fn release(&self) -> std::result::Result<(), ()> {
        let w = self.words.get();
        let max = w[MAX].load(Ordering::Relaxed);
        let value = &w[VALUE];
        let mut v = value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(());
            }
            match value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if w[WAITERS].load(Ordering::SeqCst) != 0 {
            futex::wake(value, 1);
        }
        Ok(())
    }

    fn get_value(&self) -> u32 {
        self.value().load(Ordering::Relaxed)
    }
}

/// Holds one unit of a [`Semaphore`] or [`BoundedSemaphore`] (Python's `with sem:`);
/// releases it when dropped.
///
/// ```
/// let sem = multiproc::Semaphore::new(1)?;
/// {
///     let _unit = sem.acquire_guard()?;
///     assert_eq!(sem.get_value(), 0);
/// }
/// assert_eq!(sem.get_value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the unit is released as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    raw: &'a RawSemaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot pass the maximum: this guard's unit was taken from the semaphore.
        let _ = self.raw.release();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("value", &self.raw.get_value())
            .finish()
    }
}

macro_rules! semaphore_api {
    ($ty:ident) => {
        impl $ty {
            /// Waits as long as it takes for a unit (Python's `acquire()`), then takes it.
            ///
            /// ```
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
            /// sem.acquire()?;
            /// assert_eq!(sem.get_value(), 0);
            /// sem.release()?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire(&self) -> Result<()> {
                self.raw.acquire(None);
                Ok(())
            }

            /// Waits at most `timeout` for a unit and takes it (Python's
            /// `acquire(timeout=t)`): true if one came in time, false if not. A wait
            /// for a state, like Python's, hence a `bool` (a `Duration` too large for a
            /// deadline waits as long as it takes).
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
            /// sem.acquire()?;
            /// assert!(!sem.acquire_timeout(Duration::from_millis(10)));
            /// sem.release()?;
            /// assert!(sem.acquire_timeout(Duration::MAX));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.raw.acquire(super::deadline_after(timeout))
            }

            /// Takes a unit only if one is free (Python's `acquire(block=False)`).
            ///
            /// ```
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
            /// assert!(sem.try_acquire());
            /// assert!(!sem.try_acquire());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn try_acquire(&self) -> bool {
                self.raw.try_take()
            }

            /// Waits for a unit and holds it in a guard that releases it when dropped
            /// (Python's `with sem:`).
            ///
            /// ```
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(2)?;")]
            /// let _a = sem.acquire_guard()?;
            /// let _b = sem.acquire_guard()?;
            /// assert!(!sem.try_acquire());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_guard(&self) -> Result<SemaphoreGuard<'_>> {
                self.raw.acquire(None);
                Ok(SemaphoreGuard { raw: &self.raw })
            }

            /// Like [`acquire_guard`](Self::acquire_guard), waiting at most `timeout`;
            /// [`Error::Timeout`] if no unit came in time (a call that hands something
            /// back reports running out of time as an error, as lock acquisitions do).
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
            /// let held = sem.acquire_guard_timeout(Duration::from_secs(1))?;
            /// assert!(matches!(
            ///     sem.acquire_guard_timeout(Duration::from_millis(1)),
            ///     Err(multiproc::Error::Timeout)
            /// ));
            /// # drop(held);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_guard_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>> {
                if self.raw.acquire(super::deadline_after(timeout)) {
                    Ok(SemaphoreGuard { raw: &self.raw })
                } else {
                    Err(Error::Timeout)
                }
            }

            /// Takes a unit into a guard only if one is free; [`Error::Timeout`] if
            /// none is (a timeout of zero, as for [`Lock::try_acquire`](crate::Lock::try_acquire)).
            ///
            /// ```
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
            /// let held = sem.try_acquire_guard()?;
            /// assert!(matches!(sem.try_acquire_guard(), Err(multiproc::Error::Timeout)));
            /// # drop(held);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn try_acquire_guard(&self) -> Result<SemaphoreGuard<'_>> {
                if self.raw.try_take() {
                    Ok(SemaphoreGuard { raw: &self.raw })
                } else {
                    Err(Error::Timeout)
                }
            }

            /// The current value: how many units are free (Python's `get_value()`).
            ///
            /// ```
            #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(3)?;")]
            /// sem.acquire()?;
            /// assert_eq!(sem.get_value(), 2);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_value(&self) -> u32 {
                self.raw.get_value()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("value", &self.raw.get_value())
                    .finish()
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                serialize_words(&self.raw.words, s)
            }
        }
    };
}

/// A counting semaphore shared by processes (Python's `multiprocessing.Semaphore`).
///
/// [`acquire`](Semaphore::acquire) takes a unit, waiting while there is none;
/// [`release`](Semaphore::release) gives one back (any process may release). Send it to
/// a child in its arguments or through a [`Connection`](crate::Connection): every copy
/// is the same semaphore.
///
/// A semaphore cannot know who "holds" it: if a process dies between `acquire` and
/// `release`, its unit is lost and nobody is told. Use
/// [`acquire_timeout`](Semaphore::acquire_timeout) where a worker may die.
///
/// ```
/// use multiproc::{Process, Semaphore};
///
/// fn worker(sem: Semaphore) {
///     let _slot = sem.acquire_guard().unwrap(); // at most 2 workers in here at once
/// }
///
/// let sem = Semaphore::new(2)?;
/// let mut children: Vec<Process> = (0..3).map(|_| Process::new(worker, sem.clone())).collect();
/// for p in &mut children {
///     p.start()?;
/// }
/// for p in &mut children {
///     p.join()?;
/// }
/// assert_eq!(sem.get_value(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    raw: RawSemaphore,
}

impl Semaphore {
    /// A semaphore with `value` free units.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0)?;
    /// assert!(!sem.try_acquire());
    /// sem.release()?;
    /// assert!(sem.try_acquire());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            raw: RawSemaphore::new(SEMAPHORE_MAGIC, value, u32::MAX)?,
        })
    }

    /// Gives a unit back and wakes one waiter. An error only if the value would pass
    /// `u32::MAX`.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0)?;
    /// sem.release()?;
    /// sem.release()?;
    /// assert_eq!(sem.get_value(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.raw
            .release()
            .map_err(|()| Error::state("semaphore value would overflow"))
    }
}

semaphore_api!(Semaphore);

impl<'de> Deserialize<'de> for Semaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Semaphore, D::Error> {
        Ok(Semaphore {
            raw: RawSemaphore {
                words: deserialize_words(d, SEMAPHORE_MAGIC, "semaphore")?,
            },
        })
    }
}

/// A semaphore that may not be released above its initial value (Python's
/// `multiprocessing.BoundedSemaphore`): releasing more than was acquired is an error,
/// which catches a release without an acquire.
///
/// Everything else is as for [`Semaphore`], including what happens when a process dies
/// before releasing (its unit is lost).
///
/// ```
/// let sem = multiproc::BoundedSemaphore::new(1)?;
/// sem.acquire()?;
/// sem.release()?;
/// assert!(sem.release().is_err()); // would go above 1
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    raw: RawSemaphore,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free units, which is also its maximum.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(2)?;
    /// assert_eq!(sem.get_value(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            raw: RawSemaphore::new(BOUNDED_MAGIC, value, value)?,
        })
    }

    /// Gives a unit back and wakes one waiter; [`Error::InvalidState`] (Python's
    /// `ValueError`) if that would raise the value above the initial one.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// let err = sem.release().unwrap_err();
    /// assert!(err.to_string().contains("released too many times"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.raw
            .release()
            .map_err(|()| Error::state("semaphore or lock released too many times"))
    }

    /// The initial value, above which it cannot be released.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(4)?;
    /// sem.acquire()?;
    /// assert_eq!(sem.max_value(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_value(&self) -> u32 {
        self.raw.words.get()[MAX].load(Ordering::Relaxed)
    }
}

semaphore_api!(BoundedSemaphore);

impl<'de> Deserialize<'de> for BoundedSemaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<BoundedSemaphore, D::Error> {
        Ok(BoundedSemaphore {
            raw: RawSemaphore {
                words: deserialize_words(d, BOUNDED_MAGIC, "bounded semaphore")?,
            },
        })
    }
}

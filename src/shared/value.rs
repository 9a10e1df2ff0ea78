//! `Value` and `RawValue`: one plain value in shared memory (Python's
//! `multiprocessing.Value` and `RawValue`).

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::Block;
use crate::error::Result;
use crate::sync::AcquireResult;

/// A plain value in shared memory, with a lock (Python's `multiprocessing.Value`).
///
/// `T` is any plain-old-data type: integers, floats, arrays of them, or a `#[repr(C)]`
/// struct deriving [`bytemuck::Pod`] and [`bytemuck::Zeroable`]. The value and its lock
/// live in one anonymous shared segment; clones, and copies sent to other processes in
/// their arguments or through a [`Connection`](crate::Connection), all reach the same
/// memory, which the kernel frees when the last of them is gone.
///
/// Python's `with v.get_lock(): v.value += 1` is `*v.get_lock()? += 1`: the guard
/// holds the lock and dereferences to the value. If a process died holding the lock,
/// the next [`get_lock`](Value::get_lock) returns
/// [`AcquireError::OwnerDied`](crate::AcquireError::OwnerDied) with the guard: the value
/// may be half-updated. The lock stays marked so, and every later `get_lock`, [`get`](Value::get)
/// and [`set`](Value::set) is told so too, until a holder repairs the value and calls
/// [`ValueGuard::mark_consistent`]. Unlike Python's default (a recursive lock), the lock is not
/// re-entrant: taking it again in the thread that holds it gives
/// [`AcquireError::AlreadyHeld`](crate::AcquireError::AlreadyHeld) at once, since two
/// guards would be two mutable references to one value.
///
/// ```
/// use multiproc::{Process, Value};
///
/// fn add(v: Value<u64>) -> multiproc::Result<()> {
///     for _ in 0..1000 {
///         *v.get_lock()? += 1;
///     }
///     Ok(())
/// }
///
/// let counter = Value::new(0u64)?;
/// let mut children: Vec<Process> = (0..2).map(|_| Process::new(add, counter.clone())).collect();
/// for p in &mut children {
///     p.start()?;
/// }
/// for p in &mut children {
///     p.join()?;
/// }
/// assert_eq!(counter.get()?, 2000);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Value<T: Pod> {
    block: Block<T>,
}

impl<T: Pod> Clone for Value<T> {
    /// Another handle to the same shared value.
    fn clone(&self) -> Self {
        Value {
            block: self.block.clone(),
        }
    }
}

impl<T: Pod> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("locked", &self.block.is_locked())
            .finish()
    }
}

/// Holds the lock of a [`Value`] and dereferences to the value; releases the lock when
/// dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    value: &'a Value<T>,
    // The lock belongs to the thread that took it: the guard stays on that thread.
    _thread_bound: PhantomData<*const ()>,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value.block.items()[0]
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value.block.items_mut()[0]
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.value.block.unlock();
    }
}

impl<T: Pod> ValueGuard<'_, T> {
    /// Declares the value repaired after
    /// [`AcquireError::OwnerDied`](crate::AcquireError::OwnerDied): later acquirers get
    /// the lock clean (see [`LockGuard::mark_consistent`](crate::LockGuard::mark_consistent)).
    ///
    /// ```
    /// use multiproc::{AcquireError, Process, Value};
    ///
    /// fn die_halfway(v: Value<u64>) {
    ///     std::mem::forget(v.get_lock().unwrap());
    /// }
    ///
    /// let v = Value::new(7u64)?;
    /// let mut p = Process::new(die_halfway, v.clone());
    /// p.start()?;
    /// p.join()?;
    /// assert!(matches!(v.get(), Err(multiproc::Error::OwnerDied)));
    /// assert!(matches!(v.get(), Err(multiproc::Error::OwnerDied))); // still marked
    /// if let Err(AcquireError::OwnerDied(mut held)) = v.get_lock() {
    ///     *held = 0; // repaired
    ///     held.mark_consistent();
    /// }
    /// assert_eq!(v.get()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.value.block.mark_consistent();
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

impl<T: Pod> Value<T> {
    /// A new shared value holding `v`.
    ///
    /// Fails if the segment cannot be created, or for a zero-sized `T`.
    pub fn new(v: T) -> Result<Value<T>> {
        Ok(Value {
            block: Block::new(true, &[v])?,
        })
    }

    fn take(&self, deadline: Option<Instant>) -> AcquireResult<ValueGuard<'_, T>> {
        self.block.lock(deadline, || ValueGuard {
            value: self,
            _thread_bound: PhantomData,
        })
    }

    /// Waits as long as it takes for the lock and returns a guard that dereferences to
    /// the value (Python's `with v.get_lock():`).
    ///
    /// ```
    /// let v = multiproc::Value::new(1.5f64)?;
    /// {
    ///     let mut x = v.get_lock()?;
    ///     *x *= 2.0;
    /// }
    /// assert_eq!(v.get()?, 3.0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> AcquireResult<ValueGuard<'_, T>> {
        self.take(None)
    }

    /// As [`get_lock`](Self::get_lock), waiting at most `timeout` (any `Duration`:
    /// one too large for a deadline waits as long as it takes); running out of time is
    /// [`AcquireError::Timeout`](crate::AcquireError::Timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = multiproc::Value::new(1u8)?;
    /// assert_eq!(*v.get_lock_timeout(Duration::MAX)?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock_timeout(&self, timeout: Duration) -> AcquireResult<ValueGuard<'_, T>> {
        self.take(crate::deadline::after(timeout))
    }

    /// As [`get_lock`](Self::get_lock), only if the lock is free now.
    pub fn try_get_lock(&self) -> AcquireResult<ValueGuard<'_, T>> {
        self.take(Some(Instant::now()))
    }

    /// The value, read under the lock (Python's `v.value`).
    ///
    /// A lock whose holder died gives [`Error::OwnerDied`](crate::Error::OwnerDied), on
    /// every call until the value is repaired: use [`get_lock`](Self::get_lock), fix the
    /// value and call [`ValueGuard::mark_consistent`].
    pub fn get(&self) -> Result<T> {
        Ok(*self.get_lock()?)
    }

    /// Replaces the value under the lock (Python's `v.value = x`).
    ///
    /// ```
    /// let v = multiproc::Value::new(0i32)?;
    /// v.set(-7)?;
    /// assert_eq!(v.get()?, -7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, v: T) -> Result<()> {
        *self.get_lock()? = v;
        Ok(())
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value<T>, D::Error> {
        let block = Block::deserialize(d, true)?;
        if block.len() != 1 {
            use serde::de::Error as _;
            return Err(D::Error::custom("a shared array received as a Value"));
        }
        Ok(Value { block })
    }
}

/// A plain value in shared memory without a lock (Python's
/// `multiprocessing.RawValue`).
///
/// [`get`](RawValue::get) and [`set`](RawValue::set) copy the value in and out with
/// atomic loads and stores, so they are no data race. Nothing orders them between
/// processes: a read concurrent with a write, or two concurrent
/// writes, may see or leave a torn value (part old, part new), exactly as with Python's
/// `RawValue`. Use [`Value`], or a [`Lock`](crate::Lock) of your own, when that matters.
///
/// ```
/// use multiproc::{Process, RawValue};
///
/// fn store(v: RawValue<u32>) {
///     v.set(7);
/// }
///
/// let v = RawValue::new(0u32)?;
/// let mut p = Process::new(store, v.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(v.get(), 7);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawValue<T: Pod> {
    block: Block<T>,
}

impl<T: Pod> Clone for RawValue<T> {
    /// Another handle to the same shared value.
    fn clone(&self) -> Self {
        RawValue {
            block: self.block.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> RawValue<T> {
    /// A new shared value holding `v`.
    ///
    /// Fails if the segment cannot be created, or for a zero-sized `T`.
    pub fn new(v: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            block: Block::new(false, &[v])?,
        })
    }

    /// A copy of the value (may be torn by a concurrent writer).
    pub fn get(&self) -> T {
        self.block.read(0).unwrap_or_else(T::zeroed)
    }

    /// Replaces the value (may tear against a concurrent reader or writer).
    pub fn set(&self, v: T) {
        self.block.write(0, v);
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RawValue<T>, D::Error> {
        let block = Block::deserialize(d, false)?;
        if block.len() != 1 {
            use serde::de::Error as _;
            return Err(D::Error::custom("a shared array received as a RawValue"));
        }
        Ok(RawValue { block })
    }
}

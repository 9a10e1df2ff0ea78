//! `Array` and `RawArray`: a fixed number of plain items in shared memory (Python's
//! `multiprocessing.Array` and `RawArray`).

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{Block, invalid};
use crate::error::Result;
use crate::sync::AcquireResult;

/// A fixed-length array of plain items in shared memory, with a lock (Python's
/// `multiprocessing.Array`).
///
/// Items are plain-old-data as for [`Value`](crate::Value). The lock and the items live
/// in one anonymous shared segment; clones and copies sent to other processes reach the
/// same memory. [`get_lock`](Array::get_lock) returns a guard that dereferences to the
/// items as a slice (Python's `with arr.get_lock(): arr[i] = x`); a lock whose holder
/// died gives [`AcquireError::OwnerDied`](crate::AcquireError::OwnerDied) with the guard,
/// to this acquirer and every later one until a holder calls
/// [`ArrayGuard::mark_consistent`]. The lock is not re-entrant (see
/// [`Value`](crate::Value)).
///
/// ```
/// use multiproc::{Array, Process};
///
/// fn square(a: Array<i64>) -> multiproc::Result<()> {
///     for x in a.get_lock()?.iter_mut() {
///         *x *= *x;
///     }
///     Ok(())
/// }
///
/// let a = Array::from_slice(&[1i64, 2, 3, 4])?;
/// let mut p = Process::new(square, a.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(a.to_vec()?, [1, 4, 9, 16]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Array<T: Pod> {
    block: Block<T>,
}

impl<T: Pod> Clone for Array<T> {
    /// Another handle to the same shared array.
    fn clone(&self) -> Self {
        Array {
            block: self.block.clone(),
        }
    }
}

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len())
            .field("locked", &self.block.is_locked())
            .finish()
    }
}

/// Holds the lock of an [`Array`] and dereferences to its items; releases the lock when
/// dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    // The lock belongs to the thread that took it: the guard stays on that thread.
    _thread_bound: PhantomData<*const ()>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.array.block.items()
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.array.block.items_mut()
    }
}

impl<T: Pod> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.array.block.unlock();
    }
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// Declares the items repaired after
    /// [`AcquireError::OwnerDied`](crate::AcquireError::OwnerDied): later acquirers get
    /// the lock clean (see [`LockGuard::mark_consistent`](crate::LockGuard::mark_consistent)).
    ///
    /// ```
    /// let a = multiproc::Array::<u32>::new(2)?;
    /// let held = a.get_lock()?;
    /// held.mark_consistent(); // a consistent lock: nothing to do
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.array.block.mark_consistent();
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

impl<T: Pod> Array<T> {
    /// A new shared array of `len` zeroed items (Python's `Array(typecode, len)`).
    ///
    /// Fails if the segment cannot be created, or for a zero-sized `T`.
    pub fn new(len: usize) -> Result<Array<T>> {
        Ok(Array {
            block: Block::zeroed(true, len)?,
        })
    }

    /// A new shared array holding a copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        Ok(Array {
            block: Block::new(true, items)?,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, deadline: Option<Instant>) -> AcquireResult<ArrayGuard<'_, T>> {
        self.block.lock(deadline, || ArrayGuard {
            array: self,
            _thread_bound: PhantomData,
        })
    }

    /// Waits as long as it takes for the lock and returns a guard that dereferences to
    /// the items (Python's `with arr.get_lock():`).
    ///
    /// ```
    /// let a = multiproc::Array::<u8>::new(3)?;
    /// a.get_lock()?.copy_from_slice(b"abc");
    /// assert_eq!(&*a.get_lock()?, b"abc");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> AcquireResult<ArrayGuard<'_, T>> {
        self.take(None)
    }

    /// As [`get_lock`](Self::get_lock), waiting at most `timeout` (any `Duration`:
    /// one too large for a deadline waits as long as it takes); running out of time is
    /// [`AcquireError::Timeout`](crate::AcquireError::Timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// let a = multiproc::Array::from_slice(&[1u8, 2])?;
    /// assert_eq!(&*a.get_lock_timeout(Duration::MAX)?, &[1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock_timeout(&self, timeout: Duration) -> AcquireResult<ArrayGuard<'_, T>> {
        self.take(crate::deadline::after(timeout))
    }

    /// As [`get_lock`](Self::get_lock), only if the lock is free now.
    pub fn try_get_lock(&self) -> AcquireResult<ArrayGuard<'_, T>> {
        self.take(Some(Instant::now()))
    }

    /// A copy of all items, taken under the lock (Python's `arr[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.get_lock()?.to_vec())
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Array<T>, D::Error> {
        Ok(Array {
            block: Block::deserialize(d, true)?,
        })
    }
}

/// A fixed-length array of plain items in shared memory without a lock (Python's
/// `multiprocessing.RawArray`).
///
/// Every access copies items in or out, touching the shared bytes only with atomic
/// loads and stores (a word at a time where aligned), so a process reading while
/// another writes is no data race, and no method hands out a slice of memory that
/// others may change under it. Nothing orders accesses between processes, though: an
/// item read while another process writes it may be torn, as with Python's `RawArray`.
/// Use [`Array`], or a [`Lock`](crate::Lock) of your own, when that matters.
///
/// ```
/// use multiproc::{Process, RawArray};
///
/// fn fill(a: RawArray<f32>) {
///     for i in 0..a.len() {
///         a.set(i, i as f32 / 2.0).unwrap();
///     }
/// }
///
/// let a = RawArray::<f32>::new(4)?;
/// let mut p = Process::new(fill, a.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(a.to_vec(), [0.0, 0.5, 1.0, 1.5]);
/// assert_eq!(a.get(3), Some(1.5));
/// assert_eq!(a.get(4), None);
/// assert_eq!(a.get_slice(1..3), Some(vec![0.5, 1.0]));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawArray<T: Pod> {
    block: Block<T>,
}

impl<T: Pod> Clone for RawArray<T> {
    /// Another handle to the same shared array.
    fn clone(&self) -> Self {
        RawArray {
            block: self.block.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

fn out_of_range(what: impl fmt::Display, len: usize) -> crate::Error {
    invalid(format!(
        "{what} out of range for a shared array of length {len}"
    ))
}

impl<T: Pod> RawArray<T> {
    /// A new shared array of `len` zeroed items (Python's `RawArray(typecode, len)`).
    ///
    /// Fails if the segment cannot be created, or for a zero-sized `T`.
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            block: Block::zeroed(false, len)?,
        })
    }

    /// A new shared array holding a copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        Ok(RawArray {
            block: Block::new(false, items)?,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of item `i`, `None` past the end (Python's `arr[i]`).
    pub fn get(&self, i: usize) -> Option<T> {
        self.block.read(i)
    }

    /// Replaces item `i` (Python's `arr[i] = v`); an
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) error past the end.
    pub fn set(&self, i: usize, v: T) -> Result<()> {
        if self.block.write(i, v) {
            Ok(())
        } else {
            Err(out_of_range(format_args!("index {i}"), self.len()))
        }
    }

    /// A copy of the items in `range` (Python's `arr[i:j]`), `None` if the range does
    /// not fit the array.
    pub fn get_slice(&self, range: impl RangeBounds<usize>) -> Option<Vec<T>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1)?,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len(),
        };
        let mut out = vec![T::zeroed(); end.checked_sub(start)?];
        self.block.read_range(start, &mut out).then_some(out)
    }

    /// Copies `items` over the items from `start` (Python's
    /// `arr[start:start + len(items)] = items`); an
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) error if they do not fit.
    pub fn set_slice(&self, start: usize, items: &[T]) -> Result<()> {
        if self.block.write_range(start, items) {
            Ok(())
        } else {
            Err(out_of_range(
                format_args!("{} items from index {start}", items.len()),
                self.len(),
            ))
        }
    }

    /// A copy of all items (Python's `arr[:]`).
    pub fn to_vec(&self) -> Vec<T> {
        self.block.to_vec()
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RawArray<T>, D::Error> {
        Ok(RawArray {
            block: Block::deserialize(d, false)?,
        })
    }
}

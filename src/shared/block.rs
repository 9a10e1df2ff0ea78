//! The memory behind `Value`, `Array`, `RawValue` and `RawArray`: `len` plain items in an
//! anonymous shared segment, after a lock for the locked kinds.
//!
//! Layout: locked kinds put an [`OwnerLock`] at offset 0 and the items at the first
//! offset after it aligned for `T`; raw kinds put the items at offset 0. The segment is
//! exactly as long as that (at least one byte), so a handle received from another
//! process is checked against the item size, the item count and the segment's length.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::sync::owner_lock::{LOCK_SIZE, OwnerLock};
use crate::sync::{AcquireError, AcquireResult, take_lock};
use crate::sys::shm::Region;
use crate::wire::handles::{FdOwned, FdRef};

/// Mappings start on a page boundary: no stricter alignment can be honoured.
const PAGE: usize = 4096;

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Where the items start and how long the segment is, or why `T` cannot be stored.
fn layout<T: Pod>(locked: bool, len: usize) -> std::result::Result<(usize, usize), String> {
    let size = size_of::<T>();
    let align = align_of::<T>();
    if size == 0 {
        return Err("zero-sized types cannot be shared".into());
    }
    if align > PAGE {
        return Err(format!("alignment {align} exceeds the page size"));
    }
    let data = if locked {
        LOCK_SIZE.next_multiple_of(align.max(8))
    } else {
        0
    };
    let total = len
        .checked_mul(size)
        .and_then(|bytes| bytes.checked_add(data))
        .filter(|&t| t <= isize::MAX as usize)
        .ok_or_else(|| format!("{len} items of {size} bytes do not fit in memory"))?;
    Ok((data, total.max(1)))
}

/// `len` items of `T` in a shared segment; clones share it.
pub(crate) struct Block<T> {
    region: Arc<Region>,
    lock: Option<OwnerLock>,
    data: usize,
    len: usize,
    _items: PhantomData<fn() -> T>,
}

impl<T> Clone for Block<T> {
    fn clone(&self) -> Self {
        Block {
            region: self.region.clone(),
            lock: self.lock.clone(),
            data: self.data,
            len: self.len,
            _items: PhantomData,
        }
    }
}

impl<T: Pod> Block<T> {
    /// A new block holding `items` (with a lock in front when `locked`).
    pub(crate) fn new(locked: bool, items: &[T]) -> Result<Block<T>> {
        let block = Block::zeroed(locked, items.len())?;
        block
            .region
            .write_at(block.data, bytemuck::cast_slice(items));
        Ok(block)
    }

    /// A new block of `len` zeroed items.
    pub(crate) fn zeroed(locked: bool, len: usize) -> Result<Block<T>> {
        let (data, total) = layout::<T>(locked, len).map_err(invalid)?;
        let region = Arc::new(Region::anonymous(total)?);
        Block::assemble(region, locked, data, len).map_err(invalid)
    }

    fn assemble(
        region: Arc<Region>,
        locked: bool,
        data: usize,
        len: usize,
    ) -> std::result::Result<Block<T>, String> {
        let lock = if locked {
            Some(
                OwnerLock::at(region.clone(), 0)
                    .ok_or_else(|| "segment too small for its lock".to_string())?,
            )
        } else {
            None
        };
        Ok(Block {
            region,
            lock,
            data,
            len,
            _items: PhantomData,
        })
    }

    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn offset(&self, i: usize) -> usize {
        self.data + i * size_of::<T>()
    }

    /// Item `i` (unsynchronised copy), `None` past the end.
    pub(crate) fn read(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let mut v = T::zeroed();
        self.region
            .read_at(self.offset(i), bytemuck::bytes_of_mut(&mut v));
        Some(v)
    }

    /// Writes item `i` (unsynchronised copy); `false` past the end.
    pub(crate) fn write(&self, i: usize, v: T) -> bool {
        if i >= self.len {
            return false;
        }
        self.region.write_at(self.offset(i), bytemuck::bytes_of(&v));
        true
    }

    /// Copies items `start..start + dst.len()` into `dst` (unsynchronised); `false` if
    /// the range does not fit.
    pub(crate) fn read_range(&self, start: usize, dst: &mut [T]) -> bool {
        if start
            .checked_add(dst.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        self.region
            .read_at(self.offset(start), bytemuck::cast_slice_mut(dst));
        true
    }

    /// Copies `src` over items `start..start + src.len()` (unsynchronised); `false` if the
    /// range does not fit.
    pub(crate) fn write_range(&self, start: usize, src: &[T]) -> bool {
        if start
            .checked_add(src.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        self.region
            .write_at(self.offset(start), bytemuck::cast_slice(src));
        true
    }

    /// All items, copied (unsynchronised).
    pub(crate) fn to_vec(&self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.len];
        self.read_range(0, &mut v);
        v
    }

    /// The items in place. The caller holds the block's lock.
    pub(crate) fn items(&self) -> &[T] {
        bytemuck::cast_slice(self.region.slice(self.data, self.len * size_of::<T>()))
    }

    /// The items in place, mutably. The caller holds the block's lock, and the guard it
    /// holds it through is the only way to these bytes in this process.
    pub(crate) fn items_mut(&self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.region.slice_mut(self.data, self.len * size_of::<T>()))
    }

    /// Takes the lock (locked kinds only), waiting until `deadline`.
    pub(crate) fn lock<G>(
        &self,
        deadline: Option<Instant>,
        guard: impl FnOnce() -> G,
    ) -> AcquireResult<G> {
        let Some(lock) = &self.lock else {
            // Raw kinds have no lock and never call this.
            return Err(AcquireError::AlreadyHeld);
        };
        take_lock(lock, deadline, false, |_| guard())
    }

    /// Releases the lock taken by [`lock`](Self::lock), for the guard it returned.
    pub(crate) fn unlock(&self) {
        if let Some(lock) = &self.lock {
            let _ = lock.release_guarded();
        }
    }

    /// Clears the lock's dead-owner mark (locked kinds; the caller holds the lock).
    pub(crate) fn mark_consistent(&self) {
        if let Some(lock) = &self.lock {
            lock.mark_consistent();
        }
    }

    /// Whether some thread of some process holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.lock.as_ref().is_some_and(|l| l.is_locked())
    }

    /// Serializes as a handle: the segment's descriptor, the item size and the count.
    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (
            FdRef(self.region.fd()),
            size_of::<T>() as u64,
            self.len as u64,
        )
            .serialize(s)
    }

    /// Takes a handle apart, checking it against `T` and the segment it names.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        locked: bool,
    ) -> std::result::Result<Block<T>, D::Error> {
        use serde::de::Error as _;
        let (fd, size, len) = <(FdOwned, u64, u64)>::deserialize(d)?;
        if size != size_of::<T>() as u64 {
            return Err(D::Error::custom(format!(
                "shared item of {size} bytes received as a type of {} bytes",
                size_of::<T>()
            )));
        }
        let len = usize::try_from(len).map_err(D::Error::custom)?;
        let (data, total) = layout::<T>(locked, len).map_err(D::Error::custom)?;
        let region = Region::from_fd(fd.0).map_err(D::Error::custom)?;
        if region.len() != total {
            return Err(D::Error::custom(format!(
                "shared segment of {} bytes does not hold {len} items of {size} bytes{}",
                region.len(),
                if locked { " with a lock" } else { "" }
            )));
        }
        Block::assemble(Arc::new(region), locked, data, len).map_err(D::Error::custom)
    }
}

//! `ShareableList`: a fixed-length list of plain items in a named segment (Python's
//! `multiprocessing.shared_memory.ShareableList`).

use std::fmt;
use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::invalid;
use super::memory::SharedMemory;
use crate::error::Result;

/// Marks a segment holding a `ShareableList`.
const MAGIC: u32 = u32::from_le_bytes(*b"mpSL");

/// The header at the start of the segment, checked by every process that attaches.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Header {
    magic: u32,
    item_size: u32,
    item_align: u32,
    reserved: u32,
    len: u64,
}

const HEADER: usize = size_of::<Header>();

/// Where the items start for `T`.
fn data_offset<T>() -> usize {
    HEADER.next_multiple_of(align_of::<T>())
}

/// A fixed-length list of plain items in a named [`SharedMemory`] segment (Python's
/// `ShareableList`), which other processes attach to by name.
///
/// Python's list may mix `int`, `float`, `bool`, `str` and `bytes`; this one holds
/// items of one plain-old-data type `T` (use a `#[repr(C)]` struct, or fixed-size byte
/// arrays for short strings). A small header records the length and the item size;
/// [`attach`](ShareableList::attach) checks it against `T`. Items are copied in and out;
/// nothing orders accesses between processes (use a [`Lock`](crate::Lock) if needed),
/// as in Python. The segment follows [`SharedMemory`]'s rules: the creator's list
/// removes the name when dropped, and the name is removed after a crash.
///
/// ```
/// use multiproc::{Process, ShareableList};
///
/// fn bump(name: String) -> multiproc::Result<()> {
///     let mut list = ShareableList::<i32>::attach(&name)?;
///     let first = list.get(0).unwrap_or_default();
///     list.set(0, first + 100)?;
///     Ok(())
/// }
///
/// let list = ShareableList::new(&[1i32, 2, 3], None)?;
/// let mut p = Process::new(bump, list.name().to_string());
/// p.start()?;
/// p.join()?;
/// assert_eq!(list.to_vec(), [101, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ShareableList<T: Pod> {
    shm: SharedMemory,
    len: usize,
    _items: PhantomData<fn() -> T>,
}

impl<T: Pod + fmt::Debug> fmt::Debug for ShareableList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("name", &self.name())
            .field("items", &self.to_vec())
            .finish()
    }
}

impl<T: Pod> ShareableList<T> {
    /// Creates a segment named `name` (`None`: a new unique name) holding `items`.
    pub fn new(items: &[T], name: Option<&str>) -> Result<ShareableList<T>> {
        let size = size_of::<T>();
        if size == 0 || align_of::<T>() > 4096 {
            return Err(invalid("this item type cannot be shared"));
        }
        let bytes = items
            .len()
            .checked_mul(size)
            .and_then(|b| b.checked_add(data_offset::<T>()))
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| invalid("list too long"))?;
        let mut shm = SharedMemory::create(name, bytes)?;
        let header = Header {
            magic: MAGIC,
            item_size: u32::try_from(size).map_err(|_| invalid("item type too large"))?,
            item_align: align_of::<T>() as u32,
            reserved: 0,
            len: items.len() as u64,
        };
        let buf = shm.buf_mut();
        buf[..HEADER].copy_from_slice(bytemuck::bytes_of(&header));
        buf[data_offset::<T>()..bytes].copy_from_slice(bytemuck::cast_slice(items));
        Ok(ShareableList {
            shm,
            len: items.len(),
            _items: PhantomData,
        })
    }

    /// Attaches to the list in segment `name`, checking that it holds items of `T`.
    pub fn attach(name: &str) -> Result<ShareableList<T>> {
        ShareableList::from_shm(SharedMemory::attach(name)?)
    }

    fn from_shm(shm: SharedMemory) -> Result<ShareableList<T>> {
        let not_a_list = || invalid(format!("{:?} does not hold a ShareableList", shm.name()));
        let buf = shm.buf();
        if buf.len() < HEADER {
            return Err(not_a_list());
        }
        let header: Header = bytemuck::pod_read_unaligned(&buf[..HEADER]);
        if header.magic != MAGIC {
            return Err(not_a_list());
        }
        if header.item_size as usize != size_of::<T>()
            || header.item_align as usize != align_of::<T>()
        {
            return Err(invalid(format!(
                "{:?} holds items of {} bytes (alignment {}), not of {} bytes (alignment {})",
                shm.name(),
                header.item_size,
                header.item_align,
                size_of::<T>(),
                align_of::<T>()
            )));
        }
        let len = usize::try_from(header.len).map_err(|_| not_a_list())?;
        let fits = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(data_offset::<T>()))
            .is_some_and(|end| end <= buf.len());
        if !fits {
            return Err(invalid(format!(
                "{:?}: a list of {len} items does not fit in {} bytes",
                shm.name(),
                buf.len()
            )));
        }
        Ok(ShareableList {
            shm,
            len,
            _items: PhantomData,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = data_offset::<T>() + i * size_of::<T>();
        start..start + size_of::<T>()
    }

    /// A copy of item `i`, `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| bytemuck::pod_read_unaligned(&self.shm.buf()[self.range(i)]))
    }

    /// Replaces item `i`; an [`Error::InvalidArgument`](crate::Error::InvalidArgument) error past
    /// the end.
    pub fn set(&mut self, i: usize, v: T) -> Result<()> {
        if i >= self.len {
            return Err(invalid(format!(
                "index {i} out of range for a list of length {}",
                self.len
            )));
        }
        let range = self.range(i);
        self.shm.buf_mut()[range].copy_from_slice(bytemuck::bytes_of(&v));
        Ok(())
    }

    /// A copy of all items.
    pub fn to_vec(&self) -> Vec<T> {
        let start = data_offset::<T>();
        let bytes = &self.shm.buf()[start..start + self.len * size_of::<T>()];
        bytes
            .chunks_exact(size_of::<T>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }

    /// The segment's name, to attach from elsewhere.
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The segment holding the list (Python's `shm`), to call
    /// [`unlink`](SharedMemory::unlink), [`keep_name`](SharedMemory::keep_name) or
    /// [`persist`](SharedMemory::persist) on it.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }
}

/// Sends an attached list (see [`SharedMemory`]'s serialization).
impl<T: Pod> Serialize for ShareableList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for ShareableList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ShareableList<T>, D::Error> {
        use serde::de::Error as _;
        ShareableList::from_shm(SharedMemory::deserialize(d)?).map_err(D::Error::custom)
    }
}

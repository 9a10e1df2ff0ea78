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
/// [`attach`](ShareableList::attach) checks it against `T`. Items are copied in and out
/// with atomic accesses, so a process reading while another writes is no data race; but
/// nothing orders accesses between processes, and an item read while it is written may
/// be torn (part old, part new): use a [`Lock`](crate::Lock) if that matters, as in
/// Python. The segment follows [`SharedMemory`]'s rules: the creator's list removes the
/// name when dropped, the name is removed after a crash, and a process of the same user
/// could shrink the segment under the list (see [`SharedMemory`]).
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
        let header = Header {
            magic: MAGIC,
            item_size: u32::try_from(size).map_err(|_| invalid("item type too large"))?,
            item_align: align_of::<T>() as u32,
            reserved: 0,
            len: items.len() as u64,
        };
        let mut shm = SharedMemory::create(name, bytes)?;
        shm.write_from(0, bytemuck::bytes_of(&header))?;
        shm.write_from(data_offset::<T>(), bytemuck::cast_slice(items))?;
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
        let mut header = Header::zeroed();
        if shm
            .read_into(0, bytemuck::bytes_of_mut(&mut header))
            .is_err()
        {
            return Err(not_a_list());
        }
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
            .is_some_and(|end| end <= shm.size());
        if !fits {
            return Err(invalid(format!(
                "{:?}: a list of {len} items does not fit in {} bytes",
                shm.name(),
                shm.size()
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

    fn offset(&self, i: usize) -> usize {
        data_offset::<T>() + i * size_of::<T>()
    }

    /// A copy of item `i`, `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let mut v = T::zeroed();
        // In range: `from_shm` checked that `len` items fit.
        self.shm
            .read_into(self.offset(i), bytemuck::bytes_of_mut(&mut v))
            .ok()?;
        Some(v)
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
        let offset = self.offset(i);
        self.shm.write_from(offset, bytemuck::bytes_of(&v))
    }

    /// A copy of all items.
    pub fn to_vec(&self) -> Vec<T> {
        let mut items = vec![T::zeroed(); self.len];
        // In range: `from_shm` checked that `len` items fit.
        if self
            .shm
            .read_into(self.offset(0), bytemuck::cast_slice_mut(&mut items))
            .is_err()
        {
            items.clear();
        }
        items
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

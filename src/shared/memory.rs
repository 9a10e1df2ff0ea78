//! `SharedMemory`: a named block of shared memory (Python's
//! `multiprocessing.shared_memory.SharedMemory`).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::invalid;
use super::tracker;
use crate::error::Result;
use crate::sys::proc as sysproc;
use crate::sys::shm::{FileId, Region};
use crate::wire::handles::{FdOwned, FdRef};

/// Longest name accepted (the file name in `/dev/shm`, less a margin).
const MAX_NAME: usize = 250;

/// A block of shared memory with a name in `/dev/shm`, which unrelated processes can
/// attach to by that name (Python's `multiprocessing.shared_memory.SharedMemory`).
///
/// **Who removes the name.** The handle returned by [`create`](SharedMemory::create)
/// owns the name: dropping it (or [`close`](SharedMemory::close)) unlinks the name,
/// after which no one can attach any more (mappings that exist stay valid). To let the
/// name outlive the handle, call [`keep_name`](SharedMemory::keep_name) (the name is
/// then removed when this process ends) or [`persist`](SharedMemory::persist) (the name
/// stays until someone calls [`unlink`](SharedMemory::unlink)). Handles from
/// [`attach`](SharedMemory::attach) never remove the name by themselves.
///
/// **After a crash.** Every name a process creates is registered, before `create`
/// returns, with a small tracker process (started with the first named segment): when
/// the creating process ends in any way, SIGKILL included, the tracker unlinks the names
/// still registered. A process created by `fork` from the creator shares its tracker,
/// which then waits for that child too. Names are never left behind in `/dev/shm`,
/// unless [`persist`](SharedMemory::persist) asked for it.
///
/// Unlike Python, [`attach`](SharedMemory::attach) does not register anything: a
/// process that only attaches never removes the segment.
///
/// **Only the segment that was created is removed.** The creator's handle, the tracker
/// and [`unlink`](SharedMemory::unlink) remove the name only while it still names the
/// same file (device and inode): if the name was removed and someone created a new
/// segment under it, that segment is left alone.
///
/// **What another process of the same user can do.** A named segment is a file in
/// `/dev/shm` that every process of its owner may open, and unlike the anonymous memory
/// of [`Value`](crate::Value) or [`Lock`](crate::Lock) it cannot be sealed at its size.
/// Such a process can shrink it, and a process that then touches the lost bytes (through
/// [`buf`](SharedMemory::buf), [`read_into`](SharedMemory::read_into), a
/// [`ShareableList`](crate::ShareableList)) is killed by `SIGBUS`; nothing in the
/// library can catch that. Share named segments only with processes you trust, or use
/// anonymous memory ([`RawArray`](crate::RawArray), [`Array`](crate::Array)), which
/// travels to children and through connections sealed against resizing.
/// [`attach`](SharedMemory::attach), and a handle received from another process, refuse
/// a segment owned by another user
/// ([`PermissionDenied`](std::io::ErrorKind::PermissionDenied)), and `attach` does not
/// follow a symbolic link planted under the name.
///
/// **Concurrent access.** [`buf`](SharedMemory::buf) and
/// [`buf_mut`](SharedMemory::buf_mut) are plain slices, valid snapshots only under your
/// own synchronisation; [`read_into`](SharedMemory::read_into) and
/// [`write_from`](SharedMemory::write_from) copy safely while others write.
///
/// A handle also travels in a child's arguments or through a
/// [`Connection`](crate::Connection): the receiver maps the same memory (even if the
/// name was unlinked meanwhile) and gets an attached handle.
///
/// ```
/// use multiproc::{Process, SharedMemory};
///
/// fn greet(name: String) -> multiproc::Result<()> {
///     let mut shm = SharedMemory::attach(&name)?;
///     shm.buf_mut()[..5].copy_from_slice(b"hello");
///     Ok(())
/// }
///
/// let shm = SharedMemory::create(None, 4096)?;
/// assert!(shm.name().starts_with("psm_"));
/// let mut p = Process::new(greet, shm.name().to_string());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(&shm.buf()[..5], b"hello");
/// let name = shm.name().to_string();
/// drop(shm); // the creator's handle removes the name
/// assert!(SharedMemory::attach(&name).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SharedMemory {
    region: Region,
    name: String,
    /// The file the name named when this handle was made: the name is removed only
    /// while it still names that file.
    id: FileId,
    /// The process that created the name, 0 for an attached handle. Only this process
    /// unlinks it on drop (a forked child's inherited copy does not).
    creator: u32,
    /// Unlink the name when this handle is dropped.
    unlink_on_drop: AtomicBool,
    /// The name is registered with this process's tracker.
    tracked: AtomicBool,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size())
            .field("creator", &(self.creator != 0))
            .finish()
    }
}

/// The name without the leading `/` Python accepts, or why it is not a valid name.
fn check_name(name: &str) -> Result<&str> {
    let n = name.strip_prefix('/').unwrap_or(name);
    if n.is_empty()
        || n.len() > MAX_NAME
        || n == "."
        || n == ".."
        || n.contains('/')
        || n.contains('\0')
    {
        return Err(invalid(format!(
            "invalid shared memory name {name:?}: 1 to {MAX_NAME} bytes, no '/' or NUL"
        )));
    }
    Ok(n)
}

/// A fresh name in Python's style: `psm_` and eight hex digits.
fn generated_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(sysproc::getpid());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("psm_{:08x}", h.finish() as u32)
}

impl SharedMemory {
    /// Creates a new segment of `size` bytes, zero-filled, named `name` or, with `None`,
    /// a new unique name like Python's `psm_1a2b3c4d`.
    ///
    /// Fails if the name exists already ([`AlreadyExists`](std::io::ErrorKind::AlreadyExists)),
    /// is not a valid name or `size` is 0 ([`Error::InvalidArgument`](crate::Error::InvalidArgument)),
    /// or the tracker that removes the name after a crash cannot be started (the segment
    /// is then removed again).
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        if size == 0 {
            return Err(invalid("shared memory size must be positive"));
        }
        let ((region, id), name) = match name {
            Some(n) => {
                let n = check_name(n)?;
                (Region::named(n, true, size)?, n.to_string())
            }
            None => {
                let mut tries = 0;
                loop {
                    let n = generated_name();
                    match Region::named(&n, true, size) {
                        Ok(r) => break (r, n),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => {
                            tries += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        if let Err(e) = tracker::register(&name, id) {
            let _ = Region::unlink_if(&name, id);
            return Err(e);
        }
        Ok(SharedMemory {
            region,
            name,
            id,
            creator: sysproc::getpid(),
            unlink_on_drop: AtomicBool::new(true),
            tracked: AtomicBool::new(true),
        })
    }

    /// Attaches to the existing segment `name` (a leading `/` is accepted and dropped).
    ///
    /// Fails with [`NotFound`](std::io::ErrorKind::NotFound) if there is no such segment,
    /// and with [`PermissionDenied`](std::io::ErrorKind::PermissionDenied) if it belongs
    /// to another user (who could resize it under this process), even for root.
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let name = check_name(name)?;
        let (region, id) = Region::named(name, false, 0)?;
        Ok(SharedMemory {
            region,
            name: name.to_string(),
            id,
            creator: 0,
            unlink_on_drop: AtomicBool::new(false),
            tracked: AtomicBool::new(false),
        })
    }

    /// The segment's name, without a leading `/` (Python's `name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes (Python's `size`).
    pub fn size(&self) -> usize {
        self.region.len()
    }

    /// The bytes in place (Python's `buf`).
    ///
    /// A plain slice is a promise that nothing changes the bytes while it is alive. Keep
    /// that promise with your own synchronisation: read it after the writers are done
    /// and have said so (a message, a [`join`](crate::Process::join), an
    /// [`Event`](crate::Event)), or while holding a [`Lock`](crate::Lock) that every
    /// writer takes. A process (or another handle to the segment) writing while the
    /// slice is read is a data race in Rust's model: the slice may change under the code
    /// reading it, and the compiler may assume it does not. Where writers may run
    /// concurrently, copy with [`read_into`](Self::read_into) and
    /// [`write_from`](Self::write_from) instead.
    ///
    /// ```
    /// let mut shm = multiproc::SharedMemory::create(None, 16)?;
    /// shm.buf_mut()[..2].copy_from_slice(b"hi");
    /// assert_eq!(&shm.buf()[..2], b"hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn buf(&self) -> &[u8] {
        self.region.slice(0, self.region.len())
    }

    /// The bytes in place, to write (Python's `buf`); the same promise as
    /// [`buf`](Self::buf): no other process reads or writes them meanwhile.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        self.region.slice_mut(0, self.region.len())
    }

    /// Copies the bytes from `offset` into `dst`, safely even while other processes
    /// write them: every shared byte is read with an atomic load (a word at a time; a
    /// large copy runs at about three quarters of memcpy's speed). A concurrent writer may leave the copy
    /// part old, part new, as Python's `buf` would; a [`Lock`](crate::Lock) held by
    /// both sides prevents that.
    ///
    /// An [`Error::InvalidArgument`](crate::Error::InvalidArgument) error if the range
    /// does not fit in the segment.
    ///
    /// ```
    /// let mut shm = multiproc::SharedMemory::create(None, 64)?;
    /// shm.write_from(10, b"hello")?;
    /// let mut out = [0u8; 5];
    /// shm.read_into(10, &mut out)?;
    /// assert_eq!(&out, b"hello");
    /// assert!(shm.read_into(60, &mut out).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_range(offset, dst.len())?;
        self.region.read_at(offset, dst);
        Ok(())
    }

    /// Copies `src` into the bytes from `offset`, with atomic stores only: safe while
    /// other processes read or write them (see [`read_into`](Self::read_into)). It takes
    /// `&mut self` because [`buf`](Self::buf) promises that this handle does not change
    /// the bytes while a slice of them is alive.
    ///
    /// An [`Error::InvalidArgument`](crate::Error::InvalidArgument) error if the range
    /// does not fit in the segment.
    pub fn write_from(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        self.check_range(offset, src.len())?;
        self.region.write_at(offset, src);
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if offset
            .checked_add(len)
            .is_some_and(|end| end <= self.size())
        {
            Ok(())
        } else {
            Err(invalid(format!(
                "{len} bytes from offset {offset} do not fit in a segment of {} bytes",
                self.size()
            )))
        }
    }

    /// Closes this handle's mapping (Python's `close`); the same as dropping it. The
    /// creator's handle also removes the name, unless [`keep_name`](Self::keep_name) or
    /// [`persist`](Self::persist) was called.
    pub fn close(self) {}

    /// Removes the name (Python's `unlink`): no one can attach any more; the memory lives
    /// on until every mapping is closed. Any handle may do it; a name already removed,
    /// or that now names another segment (which is left alone), is a
    /// [`NotFound`](std::io::ErrorKind::NotFound) error.
    pub fn unlink(&self) -> Result<()> {
        let result = match Region::unlink_if(&self.name, self.id) {
            Ok(true) => Ok(()),
            Ok(false) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{:?} names another shared memory segment now, which was left alone",
                    self.name
                ),
            )),
            Err(e) => Err(e),
        };
        self.unlink_on_drop.store(false, Ordering::Relaxed);
        if self.creator == sysproc::getpid() && self.tracked.swap(false, Ordering::Relaxed) {
            tracker::unregister(&self.name);
        }
        Ok(result?)
    }

    /// Leaves the name in place when this handle is dropped: others can still attach. It
    /// is removed when this process ends (crash or not), or by [`unlink`](Self::unlink).
    ///
    /// ```
    /// use multiproc::SharedMemory;
    ///
    /// let shm = SharedMemory::create(None, 64)?;
    /// shm.keep_name();
    /// let name = shm.name().to_string();
    /// drop(shm);
    /// let again = SharedMemory::attach(&name)?;
    /// assert_eq!(again.size(), 64);
    /// again.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn keep_name(&self) {
        self.unlink_on_drop.store(false, Ordering::Relaxed);
    }

    /// Leaves the name in place for good: neither this handle nor the end of this
    /// process removes it (Python's `track=False`); only [`unlink`](Self::unlink) does.
    pub fn persist(&self) {
        self.keep_name();
        if self.creator == sysproc::getpid() && self.tracked.swap(false, Ordering::Relaxed) {
            tracker::unregister(&self.name);
        }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if !self.unlink_on_drop.load(Ordering::Relaxed) || self.creator != sysproc::getpid() {
            return;
        }
        let _ = Region::unlink_if(&self.name, self.id);
        if self.tracked.load(Ordering::Relaxed) {
            tracker::unregister(&self.name);
        }
    }
}

/// Sends an attached handle: the receiver maps the same memory through the descriptor.
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (FdRef(self.region.fd()), &self.name).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<SharedMemory, D::Error> {
        use serde::de::Error as _;
        let (fd, name) = <(FdOwned, String)>::deserialize(d)?;
        let name = check_name(&name).map_err(D::Error::custom)?.to_string();
        let region = Region::from_named_fd(fd.0).map_err(D::Error::custom)?;
        let id = region.file_id().map_err(D::Error::custom)?;
        Ok(SharedMemory {
            region,
            name,
            id,
            creator: 0,
            unlink_on_drop: AtomicBool::new(false),
            tracked: AtomicBool::new(false),
        })
    }
}

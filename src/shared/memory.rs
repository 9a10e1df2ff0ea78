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
use crate::sys::shm::Region;
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
        let (region, name) = match name {
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
        if let Err(e) = tracker::register(&name) {
            let _ = Region::unlink(&name);
            return Err(e);
        }
        Ok(SharedMemory {
            region,
            name,
            creator: sysproc::getpid(),
            unlink_on_drop: AtomicBool::new(true),
            tracked: AtomicBool::new(true),
        })
    }

    /// Attaches to the existing segment `name` (a leading `/` is accepted and dropped).
    ///
    /// Fails with [`NotFound`](std::io::ErrorKind::NotFound) if there is no such segment.
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let name = check_name(name)?;
        Ok(SharedMemory {
            region: Region::named(name, false, 0)?,
            name: name.to_string(),
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

    /// The bytes (Python's `buf`). Other processes may change them at any time.
    pub fn buf(&self) -> &[u8] {
        self.region.slice(0, self.region.len())
    }

    /// The bytes, to write (Python's `buf`).
    pub fn buf_mut(&mut self) -> &mut [u8] {
        self.region.slice_mut(0, self.region.len())
    }

    /// Closes this handle's mapping (Python's `close`); the same as dropping it. The
    /// creator's handle also removes the name, unless [`keep_name`](Self::keep_name) or
    /// [`persist`](Self::persist) was called.
    pub fn close(self) {}

    /// Removes the name (Python's `unlink`): no one can attach any more; the memory lives
    /// on until every mapping is closed. Any handle may do it; a name already removed is
    /// a [`NotFound`](std::io::ErrorKind::NotFound) error.
    pub fn unlink(&self) -> Result<()> {
        let result = Region::unlink(&self.name);
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
        let _ = Region::unlink(&self.name);
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
        let region = Region::from_fd(fd.0).map_err(D::Error::custom)?;
        Ok(SharedMemory {
            region,
            name,
            creator: 0,
            unlink_on_drop: AtomicBool::new(false),
            tracked: AtomicBool::new(false),
        })
    }
}

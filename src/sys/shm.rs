//! Shared memory: anonymous segments (`memfd`) and named ones (`/dev/shm`), mapped
//! `MAP_SHARED` so that every process mapping the same descriptor sees the same bytes.
//!
//! An anonymous segment cannot leak: the kernel frees it when the last descriptor and
//! the last mapping are gone, crash or not.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use rustix::fs::{MemfdFlags, Mode};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm::OFlags;

/// A shared mapping of a whole segment.
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value (unmapped once, in Drop); the
// pointer may be used from any thread. Synchronisation of the bytes is the callers' job,
// through atomics placed in the region.
unsafe impl Send for Region {}
// SAFETY: as above; shared references only give out raw pointers and atomics.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd)
            .field("len", &self.len)
            .finish()
    }
}

impl Region {
    /// A new zero-filled anonymous segment of `len` bytes (at least one page is mapped).
    pub(crate) fn anonymous(len: usize) -> io::Result<Region> {
        let fd = rustix::fs::memfd_create("multiproc", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len.max(1) as u64)?;
        Region::map(fd, len.max(1), true)
    }

    /// Maps the whole segment behind `fd` (received from another process).
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Region> {
        let st = rustix::fs::fstat(&fd)?;
        let len =
            usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty shared memory segment",
            ));
        }
        Region::map(fd, len, false)
    }

    #[allow(dead_code)] // for the shared-memory types
    /// Creates (`create`) or opens the named segment `/dev/shm/<name>`.
    pub(crate) fn named(name: &str, create: bool, len: usize) -> io::Result<Region> {
        let path = format!("/{name}");
        let flags = if create {
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL
        } else {
            OFlags::RDWR
        };
        let fd = rustix::shm::open(path.as_str(), flags, Mode::from_raw_mode(0o600))?;
        if create {
            if let Err(e) = rustix::fs::ftruncate(&fd, len.max(1) as u64) {
                let _ = rustix::shm::unlink(path.as_str());
                return Err(e.into());
            }
            Region::map(fd, len.max(1), true)
        } else {
            Region::from_fd(fd)
        }
    }

    #[allow(dead_code)] // for the shared-memory types
    /// Removes the name `/dev/shm/<name>`; mappings stay valid.
    pub(crate) fn unlink(name: &str) -> io::Result<()> {
        Ok(rustix::shm::unlink(format!("/{name}").as_str())?)
    }

    fn map(fd: OwnedFd, len: usize, populate: bool) -> io::Result<Region> {
        let mut flags = MapFlags::SHARED;
        if populate {
            // The creator is about to fill it: fault the pages in now, in one go.
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps nothing; the
        // descriptor stays open for the mapping's life and `len` is the segment's size.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                &fd,
                0,
            )?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Region { fd, ptr, len })
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[allow(dead_code)] // for the shared-memory types
    /// The start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The segment's descriptor (to pass it to another process).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A 32-bit atomic at `offset` (4-byte aligned, inside the region).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "atomic outside the region"
        );
        // SAFETY: the address is inside the mapping (checked), 4-byte aligned (the mapping
        // is page-aligned and the offset is a multiple of 4), lives as long as `self`, and
        // is only ever accessed atomically by this crate in every process.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast::<u32>()) }
    }

    #[allow(dead_code)] // for the shared-memory types
    /// The bytes from `offset` for `len` (inside the region).
    ///
    /// Other processes may write them concurrently: callers synchronise through a lock in
    /// the region, or accept torn values (the "raw" types), as Python's do.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "slice outside the region"
        );
        // SAFETY: the range is inside the mapping (checked) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }

    #[allow(dead_code)] // for the shared-memory types
    /// Mutable bytes from `offset` for `len`; see [`slice`](Self::slice).
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn slice_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "slice outside the region"
        );
        // SAFETY: the range is inside the mapping (checked) and lives as long as `self`.
        // Exclusive access within this process is the caller's contract (a lock guard or
        // `&mut` of the owning handle).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping created in `map`, unmapped only here.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

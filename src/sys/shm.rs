//! Shared memory: anonymous segments (`memfd`) and named ones (`/dev/shm`), mapped
//! `MAP_SHARED` so that every process mapping the same descriptor sees the same bytes.
//!
//! An anonymous segment cannot leak: the kernel frees it when the last descriptor and
//! the last mapping are gone, crash or not.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
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

    /// The segment's descriptor (to pass it to another process).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `N` consecutive 32-bit atomics from `offset` (4-byte aligned, inside the region).
    #[inline]
    pub(crate) fn atomics<const N: usize>(&self, offset: usize) -> &[AtomicU32; N] {
        assert!(
            offset % 4 == 0 && offset + 4 * N <= self.len,
            "atomics outside the region"
        );
        // SAFETY: as for `atomic_u32`: inside the mapping (checked), 4-byte aligned, living
        // as long as `self`, and only ever accessed atomically. `[AtomicU32; N]` has the
        // layout of N consecutive `u32`s.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<[AtomicU32; N]>() }
    }

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

    /// Copies the bytes from `offset` into `dst`, forming no reference to the shared
    /// bytes (for the unlocked "raw" types: a concurrent writer may tear the copy).
    pub(crate) fn read_at(&self, offset: usize, dst: &mut [u8]) {
        assert!(
            offset
                .checked_add(dst.len())
                .is_some_and(|end| end <= self.len),
            "read outside the region"
        );
        // SAFETY: the source range is inside the mapping (checked), which lives as long
        // as `self`; `dst` is a valid, writable buffer of that length. `copy` tolerates
        // overlap, should a caller pass bytes of this very mapping.
        unsafe { std::ptr::copy(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the bytes from `offset`, forming no reference to the shared
    /// bytes; see [`read_at`](Self::read_at).
    pub(crate) fn write_at(&self, offset: usize, src: &[u8]) {
        assert!(
            offset
                .checked_add(src.len())
                .is_some_and(|end| end <= self.len),
            "write outside the region"
        );
        // SAFETY: the destination range is inside the mapping (checked, mapped writable),
        // which lives as long as `self`; `src` is a valid buffer of that length. `copy`
        // tolerates overlap.
        unsafe { std::ptr::copy(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping created in `map`, unmapped only here.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `N` 32-bit atomics at a fixed place in a shared region, with the region kept alive:
/// reaching them costs no bounds check (it was done once, at creation).
#[derive(Clone)]
pub(crate) struct SharedWords<const N: usize> {
    region: Arc<Region>,
    words: NonNull<[AtomicU32; N]>,
}

// SAFETY: the pointer targets atomics inside `region`, which this value keeps alive;
// atomics may be used from any thread.
unsafe impl<const N: usize> Send for SharedWords<N> {}
// SAFETY: as above: shared access only hands out `&AtomicU32`s.
unsafe impl<const N: usize> Sync for SharedWords<N> {}

impl<const N: usize> SharedWords<N> {
    /// The words at `offset` of `region`; `None` unless they fit, 4-byte aligned.
    pub(crate) fn at(region: Arc<Region>, offset: usize) -> Option<SharedWords<N>> {
        if offset % 4 != 0 || offset.checked_add(4 * N)? > region.len() {
            return None;
        }
        let words = NonNull::from(region.atomics::<N>(offset));
        Some(SharedWords { region, words })
    }

    /// The atomics.
    #[inline]
    pub(crate) fn get(&self) -> &[AtomicU32; N] {
        // SAFETY: `words` points inside the mapping of `self.region` (checked in `at`),
        // which lives at least as long as `self`.
        unsafe { self.words.as_ref() }
    }

    /// The region they live in.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

/// Detaches a helper process (the tracker of named segments) from the terminal and the
/// standard streams it inherited: a session of its own, so that Ctrl-C or a hang-up of
/// its parent's terminal does not stop it before it cleans up after that parent, and
/// `/dev/null` as stdin, stdout and stderr, so that it keeps no reader of the parent's
/// output waiting. Best effort: a step that fails is skipped.
pub(crate) fn detach_helper_process() {
    let _ = rustix::process::setsid();
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

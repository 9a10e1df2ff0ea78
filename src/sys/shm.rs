//! Shared memory: anonymous segments (`memfd`) and named ones (`/dev/shm`), mapped
//! `MAP_SHARED` so that every process mapping the same descriptor sees the same bytes.
//!
//! An anonymous segment cannot leak: the kernel frees it when the last descriptor and
//! the last mapping are gone, crash or not. Nor can a peer pull it away: it is sealed
//! against shrinking and growing as soon as it has its size (`F_SEAL_SHRINK`,
//! `F_SEAL_GROW`, and `F_SEAL_SEAL` so the seals stay as they are), and a received
//! descriptor without those seals is refused. Without them, any holder could
//! `ftruncate` the segment and every other process would die of `SIGBUS` at its next
//! access.
//!
//! A named segment cannot be sealed (`/dev/shm` files do not support it): any process
//! of the owning user can resize it. Attaching refuses a segment owned by another user,
//! and the name is removed only while it still names the segment that was created (its
//! device and inode, [`FileId`]).
//!
//! Bytes of a segment may be written by another process at any time, so
//! [`Region::read_at`] and [`Region::write_at`] touch them only through atomic accesses:
//! data-race-free, at the price of copies that a concurrent writer may tear.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use rustix::fs::{FileType, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use serde::{Deserialize, Serialize};

/// Segments up to this size are faulted in when created (`MAP_POPULATE`); larger ones
/// get their pages as they are touched.
const POPULATE_LIMIT: usize = 1 << 30;

/// Where named segments live (as `shm_open` has it on Linux).
const SHM_DIR: &str = "/dev/shm";

/// The seals every anonymous segment carries, and every received one must carry.
const SIZE_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Which file a named segment is: its device and inode. A name removed and created
/// again by someone else names another file, which is not ours to unlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    // The fields' types differ between targets (`u64`, `c_ulong`).
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> FileId {
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The size of a regular file, or why it cannot be a segment.
fn segment_len(st: &rustix::fs::Stat) -> io::Result<usize> {
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(invalid_data(
            "not a shared memory segment (not a regular file)".into(),
        ));
    }
    let len = usize::try_from(st.st_size)
        .map_err(|_| invalid_data(format!("shared memory segment of {} bytes", st.st_size)))?;
    if len == 0 {
        return Err(invalid_data("empty shared memory segment".into()));
    }
    Ok(len)
}

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
    /// A new zero-filled anonymous segment of `len` bytes (at least one page is mapped),
    /// sealed at that size.
    pub(crate) fn anonymous(len: usize) -> io::Result<Region> {
        let fd =
            rustix::fs::memfd_create("multiproc", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len.max(1) as u64)?;
        // Sealed before any other process can hold it: its size is fixed for good, and
        // no holder can lift the seals (F_SEAL_SEAL).
        rustix::fs::fcntl_add_seals(&fd, SIZE_SEALS)?;
        Region::map(fd, len.max(1), true)
    }

    /// Maps the whole anonymous segment behind `fd`, received from another process.
    ///
    /// Refused (`InvalidData`) unless it is a regular file (a memfd) sealed against
    /// shrinking, growing and changing its seals: the size mapped here then stays the
    /// size of the file, whatever its other holders do.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Region> {
        let len = segment_len(&rustix::fs::fstat(&fd)?)?;
        match rustix::fs::fcntl_get_seals(&fd) {
            Ok(seals) if seals.contains(SIZE_SEALS) => {}
            // EINVAL: a file that cannot carry seals at all.
            Ok(_) | Err(rustix::io::Errno::INVAL) => {
                return Err(invalid_data(
                    "shared memory segment is not sealed against resizing \
                     (its sender, or any holder, could truncate it under us)"
                        .into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        Region::map(fd, len, false)
    }

    /// Maps the whole named segment behind `fd` (opened here, or received): a regular
    /// file owned by this process's effective user, refused otherwise
    /// (`PermissionDenied`), since its owner could resize it at any time.
    pub(crate) fn from_named_fd(fd: OwnedFd) -> io::Result<Region> {
        let st = rustix::fs::fstat(&fd)?;
        let me = rustix::process::geteuid().as_raw();
        if st.st_uid != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "shared memory segment owned by uid {}, not by this process's uid {me} \
                     (its owner could resize it under us)",
                    st.st_uid
                ),
            ));
        }
        let len = segment_len(&st)?;
        Region::map(fd, len, false)
    }

    /// Creates (`create`) or opens the named segment `/dev/shm/<name>`, with its
    /// identity. `name` is a valid file name (no `/`, not `.` or `..`).
    ///
    /// An existing segment is opened as `shm_open` does, except that a symbolic link is
    /// not followed, and it must pass [`from_named_fd`](Self::from_named_fd).
    pub(crate) fn named(name: &str, create: bool, len: usize) -> io::Result<(Region, FileId)> {
        let path = format!("{SHM_DIR}/{name}");
        let mut flags = OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if create {
            flags |= OFlags::CREATE | OFlags::EXCL;
        }
        let fd = rustix::fs::open(path.as_str(), flags, Mode::from_raw_mode(0o600))?;
        let id = FileId::of(&rustix::fs::fstat(&fd)?);
        if !create {
            return Ok((Region::from_named_fd(fd)?, id));
        }
        let created = rustix::fs::ftruncate(&fd, len.max(1) as u64)
            .map_err(io::Error::from)
            .and_then(|()| Region::map(fd, len.max(1), true));
        match created {
            Ok(region) => Ok((region, id)),
            Err(e) => {
                let _ = Region::unlink_if(name, id);
                Err(e)
            }
        }
    }

    /// The identity of the file behind this segment.
    pub(crate) fn file_id(&self) -> io::Result<FileId> {
        Ok(FileId::of(&rustix::fs::fstat(&self.fd)?))
    }

    /// Removes the name `/dev/shm/<name>` if it still names the file `id`; mappings stay
    /// valid. `Ok(false)`: the name now names another file, which is left alone.
    ///
    /// A file put in its place between the check and the removal would still be
    /// removed: the kernel offers no unlink by identity. The check closes the window that
    /// matters, a name removed and created again long before its first owner lets go.
    pub(crate) fn unlink_if(name: &str, id: FileId) -> io::Result<bool> {
        let path = format!("{SHM_DIR}/{name}");
        if FileId::of(&rustix::fs::lstat(path.as_str())?) != id {
            return Ok(false);
        }
        rustix::fs::unlink(path.as_str())?;
        Ok(true)
    }

    fn map(fd: OwnedFd, len: usize, populate: bool) -> io::Result<Region> {
        let mut flags = MapFlags::SHARED;
        if populate && len <= POPULATE_LIMIT {
            // The creator is about to fill it: fault the pages in now, in one go. Not a
            // huge one: that would commit all its memory at once (an absurd size would
            // bring the out-of-memory killer instead of an error); its pages come as used.
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

    /// The 64-bit atomic at `offset` (8-byte aligned, inside the region).
    #[inline]
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset.checked_add(8).is_some_and(|end| end <= self.len),
            "atomic outside the region"
        );
        // SAFETY: inside the mapping (checked), 8-byte aligned (the mapping is
        // page-aligned and the offset checked), living as long as `self`, and only ever
        // accessed atomically; `AtomicU64` has the layout of `u64`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The bytes from `offset` for `len` (inside the region).
    ///
    /// Plain memory: the caller makes sure that no one writes these bytes while the
    /// slice lives (a lock in the region held, or the users' own synchronisation);
    /// otherwise a concurrent writer is a data race. [`read_at`](Self::read_at) has none.
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

    /// The shared bytes `offset..offset + len` as atomics: bytes up to the first
    /// word boundary, whole aligned words, then the bytes after the last one.
    fn atomic_parts(
        &self,
        offset: usize,
        len: usize,
    ) -> (&[AtomicU8], &[AtomicUsize], &[AtomicU8]) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "copy outside the region"
        );
        // SAFETY: the range is inside the mapping (checked), which lives as long as
        // `self`. Its bytes are shared with other processes, so they are only ever seen
        // here as atomics (interior mutability: no `&[u8]` to them is formed by this
        // path); `AtomicU8` has the layout of `u8`, and `AtomicUsize` that of `usize`,
        // whose alignment `align_offset` provides for a non-empty middle part (it
        // returns a distance to the boundary that is at most `len` then). Other code may
        // access the same bytes with atomics of another width (a word here, a byte
        // there): mixed-size atomics, which the hardware this runs on keeps single-copy
        // atomic per access, as it does between processes.
        unsafe {
            let start = self.ptr.as_ptr().add(offset);
            let head = start.align_offset(WORD).min(len);
            let words = (len - head) / WORD;
            let tail = len - head - words * WORD;
            let middle: &[AtomicUsize] = if words == 0 {
                // The pointer may be unaligned when the range ends before a word
                // boundary; an empty slice needs no memory, but an aligned pointer.
                &[]
            } else {
                std::slice::from_raw_parts(start.add(head).cast(), words)
            };
            let end = start.add(head + words * WORD);
            (
                std::slice::from_raw_parts(start.cast(), head),
                middle,
                std::slice::from_raw_parts(end.cast(), tail),
            )
        }
    }

    /// Copies the bytes from `offset` into `dst`, with atomic loads only (a word at a
    /// time where aligned): no data race with a concurrent writer in another process
    /// or thread, though the copy may mix its old and new bytes.
    pub(crate) fn read_at(&self, offset: usize, dst: &mut [u8]) {
        let (head, words, tail) = self.atomic_parts(offset, dst.len());
        let (dst_head, rest) = dst.split_at_mut(head.len());
        let (dst_words, dst_tail) = rest.split_at_mut(words.len() * WORD);
        for (d, s) in dst_head.iter_mut().zip(head) {
            *d = s.load(Ordering::Relaxed);
        }
        load_words(words, dst_words);
        for (d, s) in dst_tail.iter_mut().zip(tail) {
            *d = s.load(Ordering::Relaxed);
        }
    }

    /// Copies `src` into the bytes from `offset`, with atomic stores only; see
    /// [`read_at`](Self::read_at).
    pub(crate) fn write_at(&self, offset: usize, src: &[u8]) {
        let (head, words, tail) = self.atomic_parts(offset, src.len());
        let (src_head, rest) = src.split_at(head.len());
        let (src_words, src_tail) = rest.split_at(words.len() * WORD);
        for (s, d) in src_head.iter().zip(head) {
            d.store(*s, Ordering::Relaxed);
        }
        for (s, d) in src_words.chunks_exact(WORD).zip(words) {
            let mut w = [0u8; WORD];
            w.copy_from_slice(s);
            d.store(usize::from_ne_bytes(w), Ordering::Relaxed);
        }
        for (s, d) in src_tail.iter().zip(tail) {
            d.store(*s, Ordering::Relaxed);
        }
    }
}

/// The width of the atomic copies' middle part.
const WORD: usize = size_of::<usize>();

/// Copies `src.len()` words into `dst` (as long) with atomic loads.
fn load_words(src: &[AtomicUsize], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= streaming::MIN_BYTES && dst.as_ptr().addr() % WORD == 0 {
        streaming::load_words(src, dst);
        return;
    }
    load_words_plain(src, dst);
}

/// Bulk atomic copies out of a segment with streaming (non-temporal) stores into the
/// destination. A large copy, written with ordinary stores, first reads every
/// destination line into the cache (to own it) and so runs at half of memcpy's speed;
/// streaming stores skip that read, as memcpy itself does for large copies, and bring
/// it to about three quarters. Only the private destination is written this way: the
/// shared bytes are still only read with atomic loads.
#[cfg(target_arch = "x86_64")]
mod streaming {
    use std::arch::x86_64::{__m128i, _mm_set_epi64x, _mm_sfence, _mm_stream_si128};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::WORD;

    /// Below this, the destination is better left in the cache for its reader (memcpy
    /// switches at a few MiB too).
    pub(super) const MIN_BYTES: usize = 4 << 20;

    /// Words per step: eight loads issue back to back, then four 16-byte stores.
    const BLOCK: usize = 8;

    /// As [`super::load_words`]; `dst` is word-aligned.
    pub(super) fn load_words(src: &[AtomicUsize], dst: &mut [u8]) {
        // Plain stores up to the first 16-byte boundary (at most one word, since `dst`
        // is word-aligned), streaming stores for whole blocks, plain stores after.
        let lead = usize::from(dst.as_ptr().addr() % 16 != 0).min(src.len());
        let blocks = (src.len() - lead) / BLOCK;
        let (src_lead, rest) = src.split_at(lead);
        let (src_blocks, src_tail) = rest.split_at(blocks * BLOCK);
        let (dst_lead, rest) = dst.split_at_mut(lead * WORD);
        let (dst_blocks, dst_tail) = rest.split_at_mut(blocks * BLOCK * WORD);
        super::load_words_plain(src_lead, dst_lead);
        for (s, d) in src_blocks
            .chunks_exact(BLOCK)
            .zip(dst_blocks.chunks_exact_mut(BLOCK * WORD))
        {
            let mut w = [0usize; BLOCK];
            for (w, s) in w.iter_mut().zip(s) {
                *w = s.load(Ordering::Relaxed);
            }
            let d = d.as_mut_ptr().cast::<__m128i>();
            for k in 0..BLOCK / 2 {
                // SAFETY: `d` is 16-byte aligned (the lead above reached the boundary,
                // and blocks are 64 bytes long) and `d + k` lies inside this block of
                // `dst`, which is ours to write (`&mut`). SSE2, which both intrinsics
                // need, is part of every x86_64 processor. Little-endian: the first
                // word is the low half.
                unsafe {
                    let pair = _mm_set_epi64x(w[2 * k + 1] as i64, w[2 * k] as i64);
                    _mm_stream_si128(d.add(k), pair);
                }
            }
        }
        // Streaming stores are weakly ordered: fence them before anything this thread
        // does next (such as a release that publishes the copy).
        // SAFETY: SSE, which the fence needs, is part of every x86_64 processor.
        unsafe { _mm_sfence() };
        super::load_words_plain(src_tail, dst_tail);
    }
}

/// [`load_words`] with ordinary stores.
fn load_words_plain(src: &[AtomicUsize], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(WORD).zip(src) {
        d.copy_from_slice(&s.load(Ordering::Relaxed).to_ne_bytes());
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

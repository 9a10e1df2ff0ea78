//! Message bodies in sealed anonymous files (`memfd`): the sender writes a large body
//! into a fresh memfd, seals it, and passes the descriptor; the receiver checks the seals
//! and the size, then copies the body out (`pread`) or maps it read-only.
//!
//! The seals make a received body safe to map: `F_SEAL_SHRINK` means no holder can cut
//! the file under the mapping (which would be `SIGBUS` at the next access),
//! `F_SEAL_WRITE` that no holder can change a byte while it is read as a `&[u8]`,
//! `F_SEAL_GROW` and `F_SEAL_SEAL` that the size and the seals stay as checked.

use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{FileType, MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// The seals a body carries once written, and a received body must carry.
const BODY_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE)
    .union(SealFlags::SEAL);

/// The seals a received body must carry (`F_SEAL_SEAL` is not needed to trust it: the
/// seals above cannot be removed by anyone).
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// Small writes into a body are gathered up to this size before a `write` call.
const WRITE_BUFFER: usize = 256 << 10;

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// How many times sealing is tried while the kernel still counts the body's pages as
/// in use (`EBUSY`); each try waits up to about 75 ms in the kernel.
const SEAL_TRIES: usize = 4;

/// The calling thread held on the CPU it runs on, until dropped (which restores the CPUs
/// it may run on).
///
/// Why: `F_SEAL_WRITE` waits for the file's pages to have no extra references, and a
/// freshly written page keeps one while it sits in a per-CPU batch of pages on their way
/// to the LRU lists. The kernel drains only the sealing CPU's batch, so a thread that
/// wrote on one CPU and seals on another waits about 75 ms and gets `EBUSY`. Writing and
/// sealing on one CPU leaves no page in another CPU's batch.
#[derive(Debug)]
struct OnOneCpu {
    previous: rustix::thread::CpuSet,
    /// The mask belongs to this thread: restoring it elsewhere would be wrong.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl OnOneCpu {
    /// `None` when the thread's CPUs cannot be read or changed (then nothing changed).
    fn hold() -> Option<OnOneCpu> {
        let previous = rustix::thread::sched_getaffinity(None).ok()?;
        let mut one = rustix::thread::CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        rustix::thread::sched_setaffinity(None, &one).ok()?;
        Some(OnOneCpu {
            previous,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for OnOneCpu {
    fn drop(&mut self) {
        let _ = rustix::thread::sched_setaffinity(None, &self.previous);
    }
}

/// A body being written into a fresh memfd, by the thread that created it, which stays
/// on one CPU until the body is sealed or dropped (see [`OnOneCpu`]).
#[derive(Debug)]
pub(crate) struct BodyWriter {
    fd: OwnedFd,
    written: u64,
    buf: Vec<u8>,
    _cpu: Option<OnOneCpu>,
}

impl BodyWriter {
    /// A new, empty, unsealed body.
    pub(crate) fn new() -> io::Result<BodyWriter> {
        let fd = rustix::fs::memfd_create(
            "multiproc-message",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        Ok(BodyWriter {
            fd,
            written: 0,
            buf: Vec::new(),
            _cpu: OnOneCpu::hold(),
        })
    }

    /// Appends `data`: small pieces are gathered, large ones written straight from the
    /// caller's memory (`write` fills the file's pages in the kernel: no page faults
    /// here, one copy).
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() <= WRITE_BUFFER {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(WRITE_BUFFER);
            }
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        self.flush()?;
        if data.len() < WRITE_BUFFER {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        write_all(self.fd.as_fd(), data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_all(self.fd.as_fd(), &self.buf)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is gathered and seals the body: from here on no holder can change
    /// its bytes or size. Returns the descriptor and the body's length.
    pub(crate) fn seal(mut self) -> io::Result<(OwnedFd, u64)> {
        self.flush()?;
        let mut tries = 1;
        loop {
            match rustix::fs::fcntl_add_seals(&self.fd, BODY_SEALS) {
                Ok(()) => break,
                // Pages still counted in a CPU's batch (see `OnOneCpu`): each try drains
                // this CPU's batch again, and time lets the others drain.
                Err(Errno::BUSY) if tries < SEAL_TRIES => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok((self.fd, self.written))
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A sealed body holding the concatenation of `parts`.
pub(crate) fn sealed_copy(parts: &[&[u8]]) -> io::Result<(OwnedFd, u64)> {
    let mut w = BodyWriter::new()?;
    for p in parts {
        w.write(p)?;
    }
    w.seal()
}

/// Checks a received body before anything reads it: a regular file carrying the seals
/// against shrinking, growing and writing, of exactly `len` (non-zero) bytes.
pub(crate) fn check_received(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(invalid_data(
            "the message's body is not in a regular file (a memfd)",
        ));
    }
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) if seals.contains(REQUIRED_SEALS) => {}
        // EINVAL: a file that cannot carry seals at all.
        Ok(_) | Err(Errno::INVAL) => {
            return Err(invalid_data(
                "the message's body is not sealed against writing and resizing \
                 (its sender could change it while it is read)",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    if len == 0 || u64::try_from(st.st_size).ok() != Some(len) {
        return Err(invalid_data(format!(
            "the message's body holds {} bytes, not the {len} its header claims",
            st.st_size
        )));
    }
    Ok(())
}

/// Copies a checked body (see [`check_received`]) of `len` bytes into a new buffer.
pub(crate) fn read_received(fd: BorrowedFd<'_>, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| invalid_data("message body too large"))?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    super::pages::prefer_huge_pages_uninit(&mut v.spare_capacity_mut()[..len]);
    while v.len() < len {
        let off = v.len() as u64;
        match rustix::io::pread(fd, v.spare_capacity_mut(), off) {
            Ok(([], _)) => {
                return Err(invalid_data("the message's body ended early"));
            }
            Ok((got, _)) => {
                let n = got.len();
                // SAFETY: pread initialised the first `n` bytes of the spare capacity,
                // which the vector owns (`n` is at most its remaining capacity).
                unsafe { v.set_len(v.len() + n) };
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(v)
}

/// A checked body mapped read-only. The descriptor can be closed once it is mapped.
pub(crate) struct MappedBody {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a read-only mapping of a file sealed against writes and resizing: its bytes
// never change, so shared references to them may live on any thread.
unsafe impl Send for MappedBody {}
// SAFETY: as above.
unsafe impl Sync for MappedBody {}

impl std::fmt::Debug for MappedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedBody")
            .field("len", &self.len)
            .finish()
    }
}

impl MappedBody {
    /// Maps a body that passed [`check_received`] with this same `len`.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: u64) -> io::Result<MappedBody> {
        let len = usize::try_from(len).map_err(|_| invalid_data("message body too large"))?;
        if len == 0 {
            return Err(invalid_data("empty message body"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps nothing. The
        // file is sealed against shrinking and writing and has `len` bytes (checked by
        // the caller), so the mapping stays valid and unchanging until unmapped in Drop.
        // POPULATE maps the pages now, in one go, rather than one fault per page.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                0,
            )?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(MappedBody { ptr, len })
    }
}

impl Deref for MappedBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe a live read-only mapping of sealed bytes (see
        // `map`), which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MappedBody {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping created in `map`, unmapped only here;
        // no borrow of it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_body_round_trips_by_copy_and_by_mapping() {
        let data: Vec<u8> = (0..(3 * WRITE_BUFFER + 5)).map(|i| i as u8).collect();
        let (fd, len) = sealed_copy(&[&data[..7], &data[7..100], &data[100..]]).unwrap();
        assert_eq!(len, data.len() as u64);
        check_received(fd.as_fd(), len).unwrap();
        assert_eq!(read_received(fd.as_fd(), len).unwrap(), data);
        let m = MappedBody::map(fd.as_fd(), len).unwrap();
        drop(fd);
        assert_eq!(&m[..], &data[..]);
    }

    fn cpus() -> Vec<usize> {
        let set = rustix::thread::sched_getaffinity(None).unwrap();
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect()
    }

    #[test]
    fn a_writer_holds_its_thread_on_one_cpu_until_sealed_and_then_gives_all_back() {
        let before = cpus();
        let mut w = BodyWriter::new().unwrap();
        assert_eq!(cpus().len(), 1);
        w.write(&[5; 3 * WRITE_BUFFER]).unwrap();
        w.seal().unwrap();
        assert_eq!(cpus(), before);
        // Dropped unsealed (a failed encoding): given back too.
        drop(BodyWriter::new().unwrap());
        assert_eq!(cpus(), before);
    }

    #[test]
    fn sealed_body_refuses_writes_and_resizing() {
        let (fd, len) = sealed_copy(&[b"abc"]).unwrap();
        assert!(rustix::io::pwrite(&fd, b"x", 0).is_err());
        assert!(rustix::fs::ftruncate(&fd, 1).is_err());
        assert!(rustix::fs::ftruncate(&fd, 10).is_err());
        check_received(fd.as_fd(), len).unwrap();
    }

    #[test]
    fn received_body_with_wrong_size_or_seals_is_refused() {
        let (fd, _) = sealed_copy(&[b"abc"]).unwrap();
        assert!(check_received(fd.as_fd(), 4).is_err());
        assert!(check_received(fd.as_fd(), 2).is_err());
        let mut w = BodyWriter::new().unwrap();
        w.write(b"abc").unwrap();
        w.flush().unwrap();
        assert!(check_received(w.fd.as_fd(), 3).is_err());
        rustix::fs::fcntl_add_seals(&w.fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        assert!(check_received(w.fd.as_fd(), 3).is_err());
    }
}

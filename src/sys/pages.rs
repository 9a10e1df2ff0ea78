//! Hints to the kernel about how to back large buffers.
//!
//! A fresh buffer of many MiB otherwise costs one page fault per 4 KiB when it is first
//! written (16,384 for 64 MiB), which here takes longer than copying the data into it.

use std::ffi::c_void;
use std::io;
use std::mem::MaybeUninit;

/// Huge pages are 2 MiB on x86_64 and aarch64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

/// Buffers above this size are advised to use huge pages.
const HUGE_PAGE_BUFFER: usize = 1 << 20;

/// Advises huge pages for the whole 2 MiB pages inside `[start, start + len)`.
fn advise(start: *mut c_void, len: usize) {
    let addr = start.addr();
    let first = addr.next_multiple_of(HUGE_PAGE);
    let last = (addr + len) & !(HUGE_PAGE - 1);
    if last > first {
        // SAFETY: `[first, last)` lies inside the caller's buffer (borrowed exclusively
        // by the public functions below), and MADV_HUGEPAGE changes only how the kernel
        // backs those pages, never what they hold or whether they are mapped. A failure
        // (THP off) leaves them as they were.
        let _ = unsafe {
            rustix::mm::madvise(
                start.wrapping_add(first - addr),
                last - first,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `buf` with huge pages when they
/// are first touched. Only a hint: where transparent huge pages are off, nothing changes.
pub(crate) fn prefer_huge_pages<T>(buf: &mut [T]) {
    advise(buf.as_mut_ptr().cast(), std::mem::size_of_val(buf));
}

/// [`prefer_huge_pages`] for a buffer above 1 MiB; a smaller one spans no huge page
/// worth the system call.
pub(crate) fn prefer_huge_pages_if_large<T>(buf: &mut [T]) {
    if std::mem::size_of_val(buf) > HUGE_PAGE_BUFFER {
        prefer_huge_pages(buf);
    }
}

/// [`prefer_huge_pages`] for spare capacity about to be filled.
pub(crate) fn prefer_huge_pages_uninit<T>(buf: &mut [MaybeUninit<T>]) {
    advise(buf.as_mut_ptr().cast(), std::mem::size_of_val(buf));
}

/// The size of a page (4 KiB where it cannot be learnt).
fn page_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf only reads a system parameter.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// Asks the kernel to map the whole pages of `buf` writable now, in one call, rather
/// than at a fault per 4 KiB page when each is first written: spare capacity about to
/// be filled. A fault costs the most in a process that has forked since the memory was
/// last written (every page it writes is then write-protected, shared with the child
/// until touched), and on virtual machines. Only a hint: before Linux 5.14 nothing
/// changes.
pub(crate) fn populate_uninit<T>(buf: &mut [MaybeUninit<T>]) {
    let start = buf.as_mut_ptr().cast::<c_void>();
    let addr = start.addr();
    let page = page_size();
    let first = addr.next_multiple_of(page);
    let last = (addr + std::mem::size_of_val(buf)) & !(page - 1);
    if last > first {
        // SAFETY: `[first, last)` lies inside the caller's buffer (borrowed exclusively),
        // and MADV_POPULATE_WRITE only maps its pages (breaking any sharing with a
        // forked child by a copy), never changes what they hold. A failure (an older
        // kernel) leaves them as they were.
        let _ = unsafe {
            rustix::mm::madvise(
                start.wrapping_add(first - addr),
                last - first,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
    }
}

/// A zeroed buffer of `len` bytes about to be filled by a copy (a message body).
///
/// A large zeroed allocation is fresh memory from the kernel, backed only where it is
/// written: a length that lies costs address space, not memory, and the buffer's memory
/// grows as its bytes arrive. Above 1 MiB it is advised to use huge pages: receiving
/// 64 MiB ran twice as fast.
///
/// A length the allocator cannot serve is an `OutOfMemory` error, not an abort: the
/// length comes from a peer.
pub(crate) fn receive_buffer(len: usize) -> io::Result<Vec<u8>> {
    let mut v = bytemuck::allocation::try_zeroed_vec::<u8>(len).map_err(|()| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot allocate {len} bytes for a message"),
        )
    })?;
    prefer_huge_pages_if_large(&mut v);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_huge_page_hint_leaves_contents_alone() {
        let mut v = vec![7u8; 6 << 20];
        prefer_huge_pages(&mut v);
        assert!(v.iter().all(|&b| b == 7));
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn a_receive_buffer_takes_memory_only_where_written() {
        let before = rss_kib();
        let mut v = receive_buffer(512 << 20).unwrap();
        v[0] = 1;
        v[300 << 20] = 2;
        let during = rss_kib();
        assert_eq!(v.len(), 512 << 20);
        assert!(v[1..4096].iter().all(|&b| b == 0));
        drop(v);
        // Two touched places cost at most a huge page each, not 512 MiB.
        assert!(
            during < before + (64 << 10),
            "RSS {before} KiB before, {during} KiB with the buffer"
        );
    }

    #[test]
    fn populated_spare_capacity_is_mapped_and_what_the_vector_holds_stays() {
        let mut v: Vec<u8> = Vec::with_capacity(32 << 20);
        v.extend_from_slice(&[7; 1000]);
        let before = rss_kib();
        populate_uninit(v.spare_capacity_mut());
        let after = rss_kib();
        assert!(v.iter().all(|&b| b == 7));
        // Most of 32 MiB is mapped now, before anything was written there.
        assert!(
            after > before + (24 << 10),
            "RSS {before} KiB before, {after} KiB after"
        );
        v.resize(32 << 20, 1);
        assert_eq!(v[v.len() - 1], 1);
    }

    #[test]
    fn a_receive_buffer_the_allocator_cannot_serve_is_an_error_not_an_abort() {
        let e = receive_buffer(usize::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
    }
}

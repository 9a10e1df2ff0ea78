//! Hints to the kernel about how to back large buffers.

use std::ffi::c_void;

/// Huge pages are 2 MiB on x86_64 and aarch64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `buf` with huge pages when they
/// are first touched. A fresh 64 MiB buffer otherwise costs 16,384 page faults, which
/// here take longer than copying the data into it. Only a hint: where transparent huge
/// pages are off, nothing changes.
pub(crate) fn prefer_huge_pages<T>(buf: &mut [T]) {
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = end & !(HUGE_PAGE - 1);
    if last > first {
        // SAFETY: `[first, last)` lies inside `buf`, which is borrowed exclusively, and
        // MADV_HUGEPAGE changes only how the kernel backs those pages, never what they
        // hold or whether they are mapped. A failure (THP off) leaves them as they were.
        let _ = unsafe {
            rustix::mm::madvise(
                first as *mut c_void,
                last - first,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
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
}

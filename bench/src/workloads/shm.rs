//! Bandwidth of shared memory written by a child and read by the parent.

use std::time::Instant;

use multiproc::{Connection, Process, SharedMemory};

use super::Figures;
use crate::limits;
use crate::measure::Contender;
use crate::{BenchResult, Settings};

/// The byte at offset `i` of a segment: a period (251) that no power of two divides, so
/// that a page copied to the wrong place shows.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Fills `buf` with [`pattern`].
fn fill(buf: &mut [u8]) {
    let block: Vec<u8> = (0..251 * 64).map(pattern).collect();
    for chunk in buf.chunks_mut(block.len()) {
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// A warm, page-aligned buffer: every page written once, so that none faults when timed.
///
/// Page-aligned because memcpy's speed on this machine depends on where the destination
/// lies relative to the source within a page: from a page-aligned source (a mapping, or a
/// segment) into a destination 16 bytes into a page (where a large `Vec` starts), a copy
/// runs about 3x slower than with both at the same offset. Every buffer here starts at a
/// page, so all contenders copy with the same relative alignment.
pub(super) struct PageBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageBuf {
    const PAGE: usize = 4096;

    pub(super) fn new(len: usize) -> PageBuf {
        let bytes = vec![1u8; len + PageBuf::PAGE];
        let start = bytes.as_ptr().align_offset(PageBuf::PAGE);
        PageBuf { bytes, start, len }
    }

    pub(super) fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    pub(super) fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// Checks a copy of a segment: one byte in every page, and the last one.
fn check(buf: &[u8]) -> BenchResult<()> {
    let last = buf.len().saturating_sub(1);
    for i in (0..buf.len()).step_by(4096).chain([last]) {
        if buf[i] != pattern(i) {
            return Err(format!("byte {i} of the copy is {}, not {}", buf[i], pattern(i)).into());
        }
    }
    Ok(())
}

/// Child: creates a new segment of `size` bytes, writes it all, sends its name, and keeps
/// it until the parent says it is done.
fn writer((conn, size): (Connection, usize)) -> Result<(), String> {
    let fail = |e: multiproc::Error| e.to_string();
    let mut shm = SharedMemory::create(None, size).map_err(fail)?;
    fill(shm.buf_mut());
    conn.send(&shm.name().to_string()).map_err(fail)?;
    let _done: bool = conn.recv().map_err(fail)?;
    shm.unlink().map_err(fail)?;
    Ok(())
}

/// One repetition with multiproc: a child writes a new segment; the parent attaches it
/// by name and copies it into `dst`. GB/s of the attach + copy.
fn multiproc_once(dst: &mut [u8]) -> BenchResult<f64> {
    let (conn, theirs) = multiproc::pipe(true)?;
    let mut process = Process::new(writer, (theirs, dst.len()));
    process.start()?;
    let name: String = conn.recv()?;
    let started = Instant::now();
    let shm = SharedMemory::attach(&name)?;
    dst.copy_from_slice(shm.buf());
    let secs = started.elapsed().as_secs_f64();
    drop(shm);
    check(dst)?;
    conn.send(&true)?;
    process.join()?;
    match process.exitcode() {
        Some(0) => Ok(dst.len() as f64 / secs / 1e9),
        code => Err(format!("the writing child ended with exit code {code:?}").into()),
    }
}

/// One repetition of the limit: a copy between two warm buffers. GB/s.
fn limit_once(src: &[u8], dst: &mut [u8]) -> f64 {
    let started = Instant::now();
    limits::warm_copy(src, dst);
    dst.len() as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// `shm_bandwidth`: GB/s of reading 256 MiB (64 MiB in a quick run) that a child wrote
/// into a new `SharedMemory` segment: attach by name, copy into a warm buffer. Limit = a
/// copy between two warm buffers in one process.
pub fn shm_bandwidth(s: &Settings) -> BenchResult<Figures> {
    let size = s.pick(64, 256) << 20;
    let mut dst = PageBuf::new(size);
    let mut limit_dst = PageBuf::new(size);
    let mut src = PageBuf::new(size);
    fill(src.get_mut());
    limit_once(src.get(), limit_dst.get_mut());
    check(limit_dst.get())?;
    let mut contenders = [
        Contender::new("limit", || {
            Ok(vec![limit_once(src.get(), limit_dst.get_mut())])
        }),
        Contender::new("multiproc", || Ok(vec![multiproc_once(dst.get_mut())?])),
    ];
    Figures::interleaved(s.pick(3, 5), &mut contenders)
}

//! The running binary: the load-time hook, code addresses that cross `exec`, and the
//! identity of the executable.
//!
//! A spawned child is a fresh execution of the same binary, so a function is named by
//! its distance from a fixed anchor (this module's load hook): with address-space
//! randomisation the base moves but distances inside one binary do not.

use std::io;

use serde::{Deserialize, Serialize};

use crate::process::bootstrap::EntryFn;

extern "C" fn on_load() {
    crate::process::bootstrap::on_load();
}

/// Runs [`on_load`] before `main` in every binary that links this crate, so a child
/// process takes its task before the program's own code runs (no line in `main` needed).
#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

fn anchor() -> usize {
    // Reading the hook's slot keeps its object file (and so the hook) in every link
    // that uses process creation.
    let hook: extern "C" fn() = std::hint::black_box(ON_LOAD);
    hook as usize
}

/// Distance of an entry function from the anchor.
pub(crate) fn entry_offset(f: EntryFn) -> u64 {
    (f as usize).wrapping_sub(anchor()) as u64
}

/// The entry function at `offset` from the anchor.
///
/// Only called with an offset computed by [`entry_offset`] in a process running the
/// same executable, which the child checks first (see [`ExeId`]).
pub(crate) fn entry_at(offset: u64) -> EntryFn {
    let addr = anchor().wrapping_add(offset as usize);
    // SAFETY: the parent computed `offset` from a value of type `EntryFn` in the same
    // executable (the caller checked `ExeId` equality first), so `addr` is the address of
    // that same function in this process.
    unsafe { std::mem::transmute::<usize, EntryFn>(addr) }
}

/// Produces the value of a zero-sized function type (a `fn` item or a closure that
/// captures nothing): such a type has exactly one value and no bytes.
pub(crate) fn summon<F: Copy + 'static>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "the target must be a fn item or a non-capturing closure"
        )
    };
    // SAFETY: F is zero-sized (checked at compile time above): a read of a zero-sized
    // value through a non-null, aligned pointer is valid and yields its only value. F is
    // Copy, so duplicating that value is what the type allows anyway.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// Identity of an executable file: a child refuses a task from a parent whose binary is
/// not its own (a rebuilt file would put functions at other addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExeId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl ExeId {
    /// The identity of this process's executable.
    pub(crate) fn current() -> io::Result<ExeId> {
        let st = rustix::fs::stat("/proc/self/exe")?;
        Ok(ExeId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
        })
    }
}

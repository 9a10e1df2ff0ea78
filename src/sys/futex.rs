//! Futex wait and wake on 32-bit words in shared memory (process-shared futexes).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Sleeps while `word == expected`, at most `timeout` (`None`: no limit).
/// Returns early on a wake-up, a signal, or a changed value; callers re-check.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| futex::Timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    // Every outcome (woken, value changed, signal, timeout) means the same to the
    // caller: look at the word again.
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes up to `n` sleepers on `word`.
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// Wakes every sleeper on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    // The kernel reads the count as a signed int: `i32::MAX` means "all".
    wake(word, i32::MAX as u32);
}

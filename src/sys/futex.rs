//! Futex wait and wake on 32-bit words in shared memory (process-shared futexes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use rustix::thread::futex;

use super::shm::{Region, SharedWords};

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

/// Words of a lock in shared memory: a 64-bit state whose low half is a futex word,
/// then [`LOCK_WORDS`]` - 2` plain 32-bit words.
///
/// The first two words are only ever handed out as one `AtomicU64`, never as two
/// `AtomicU32`s, so no code accesses those bytes at two different sizes; the kernel's
/// futex reads of the low half are outside Rust's memory model.
#[derive(Clone)]
pub(crate) struct LockWords {
    words: SharedWords<LOCK_WORDS>,
    offset: usize,
}

/// Words a [`LockWords`] occupies.
pub(crate) const LOCK_WORDS: usize = 8;

impl LockWords {
    /// The lock words at `offset` of `region`; `None` unless they fit there, 8-byte
    /// aligned.
    pub(crate) fn at(region: Arc<Region>, offset: usize) -> Option<LockWords> {
        let words = SharedWords::<LOCK_WORDS>::at(region, offset)?;
        if words.get().as_ptr() as usize % align_of::<AtomicU64>() != 0 {
            return None;
        }
        Some(LockWords { words, offset })
    }

    /// Offset of the words in their region.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// The 64-bit state.
    #[inline]
    pub(crate) fn state(&self) -> &AtomicU64 {
        let p = self.words.get().as_ptr().cast::<AtomicU64>();
        // SAFETY: `at` checked that `p` is aligned for `AtomicU64`; its 8 bytes are the
        // first two words, inside the mapping that `self.words` keeps alive for as long
        // as the returned borrow of `self`. `AtomicU64` has the size of two `AtomicU32`s
        // and, like them, allows mutation through a shared reference. Those two words
        // are never handed out as `AtomicU32`s (`rest` starts after them), so every
        // access to them is a 64-bit one.
        unsafe { &*p }
    }

    /// The 32-bit words after the state.
    #[inline]
    pub(crate) fn rest(&self) -> &[AtomicU32] {
        &self.words.get()[2..]
    }

    /// The region they live in.
    pub(crate) fn region(&self) -> &Arc<Region> {
        self.words.region()
    }
}

/// The low 32 bits of `word`, as the kernel addresses them.
fn low_half(word: &AtomicU64) -> *mut u32 {
    let p = word.as_ptr().cast::<u32>();
    if cfg!(target_endian = "big") {
        p.wrapping_add(1)
    } else {
        p
    }
}

/// Sleeps while the low half of `word` equals `expected`, at most `timeout` (`None`: no
/// limit). Returns early on a wake-up, a signal, or a changed value; callers re-check.
pub(crate) fn wait_low(word: &AtomicU64, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the address is the aligned low half of a live `AtomicU64` (borrowed for
    // the call); FUTEX_WAIT only reads those 4 bytes atomically, and `ts_ptr` is null or
    // points to a timespec that outlives the call. Every outcome (woken, value changed,
    // signal, timeout) means the same to the caller: look at the word again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` sleepers on the low half of `word`.
pub(crate) fn wake_low(word: &AtomicU64, n: u32) {
    // SAFETY: as in `wait_low`; FUTEX_WAKE does not access the word's memory at all.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Asymmetric fences for wake-up protocols, where a waker publishes a change and then
/// looks for a sleep flag, and a sleeper raises its flag and then looks at the change.
/// Both sides need a full fence between their store and their load, or each may miss
/// the other's store (a lost wake-up); on the waker's side, which runs for every item a
/// queue carries, that fence costs a quarter of a `put`. With `membarrier`, the sleeper,
/// about to make a system call anyway, makes every CPU that runs a thread of a
/// registered process execute the fence, and the wakers of registered processes need
/// only keep the compiler from reordering.
///
/// True if this process is registered (registering it the first time, and again after a
/// fork, which starts a new process), so that its wakers may use [`light_fence`].
pub(crate) fn light_fences_allowed() -> bool {
    use rustix::thread::{MembarrierCommand, MembarrierQuery, membarrier, membarrier_query};
    use std::sync::atomic::{AtomicU32, Ordering};
    // The pid that registered; 0 not yet; u32::MAX never possible here.
    static REGISTERED: AtomicU32 = AtomicU32::new(0);
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    match REGISTERED.load(Ordering::Acquire) {
        p if p == pid => return true,
        u32::MAX => return false,
        _ => {}
    }
    let needed = MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED;
    let ok = membarrier_query().contains(needed)
        && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
    REGISTERED.store(if ok { pid } else { u32::MAX }, Ordering::Release);
    ok
}

/// The waker's side where [`light_fences_allowed`]: only the compiler is kept from
/// reordering (the sleeper's [`heavy_fence`] does the rest).
#[inline]
pub(crate) fn light_fence() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// The sleeper's side: a full fence on every CPU running a thread of a registered
/// process (and on this one). False if the system refused; then the caller must not
/// rely on it.
pub(crate) fn heavy_fence() -> bool {
    let ok = rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok();
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    ok
}

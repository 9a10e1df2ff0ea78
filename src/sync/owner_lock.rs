//! The lock word behind `Lock`, `RLock` and the locks of `Value` and `Array`: a futex
//! in shared memory that records its owner, so that a waiter can tell when the owner
//! died and take the lock over.
//!
//! Why not a robust pthread mutex: glibc's robust, error-checking, process-shared mutex
//! costs about twice a bare futex lock on the uncontended path (it maintains the
//! kernel's robust list on every lock and unlock). Here the uncontended path is one
//! compare-and-swap plus a few stores recording the owner; the cost of owner-death
//! detection moves to the waiter, which checks whether the recorded owner still lives
//! each time a bounded sleep ends. The owner is named by pid, thread id and the process's
//! start time, so a reused pid is not mistaken for the owner.
//!
//! Layout (six 32-bit words):
//! `state` (0 free, else owner tid | `WAITERS`), `owner_tid` (published after the owner
//! fields), `owner_pid`, `owner_start` (two words), `count` (recursion depth, RLock).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys::shm::{Region, SharedWords};
use crate::sys::{futex, proc as sysproc};

const WAITERS: u32 = 1 << 31;
const TID_MASK: u32 = !WAITERS;

/// Bytes one lock occupies in a region.
pub(crate) const LOCK_SIZE: usize = 24;

/// How long a waiter sleeps before it checks that the owner is still alive.
const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// The calling thread's identity, cached per thread (and renewed after a fork).
#[derive(Clone, Copy)]
struct Me {
    tid: u32,
    pid: u32,
    start: u64,
}

thread_local! {
    static ME: Cell<Option<Me>> = const { Cell::new(None) };
}

#[inline]
fn me() -> Me {
    if let Some(m) = ME.get() {
        return m;
    }
    let pid = sysproc::getpid();
    let m = Me {
        tid: sysproc::gettid(),
        pid,
        start: sysproc::start_time(pid).unwrap_or(0),
    };
    ME.set(Some(m));
    m
}

/// Forgets the cached identity (a forked child is another process and thread).
pub(crate) fn forget_identity_after_fork() {
    ME.set(None);
}

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The lock was free or released normally.
    Clean,
    /// The previous owner died holding it; it is ours now.
    OwnerDied,
    /// The caller already holds it (recursive use).
    Again,
}

/// A lock word inside a shared region.
#[derive(Clone)]
pub(crate) struct OwnerLock {
    words: SharedWords<6>,
    offset: usize,
}

impl std::fmt::Debug for OwnerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerLock")
            .field(
                "owner_tid",
                &(self.state().load(Ordering::Relaxed) & TID_MASK),
            )
            .finish()
    }
}

impl OwnerLock {
    /// The lock at `offset` of `region` (zeroed memory is an unlocked lock); `None` if
    /// it does not fit there (a corrupt handle).
    pub(crate) fn at(region: Arc<Region>, offset: usize) -> Option<OwnerLock> {
        if offset % 8 != 0 {
            return None;
        }
        Some(OwnerLock {
            words: SharedWords::at(region, offset)?,
            offset,
        })
    }

    #[inline]
    fn words(&self) -> &[AtomicU32; 6] {
        self.words.get()
    }
    fn word(&self, i: usize) -> &AtomicU32 {
        &self.words()[i]
    }
    fn state(&self) -> &AtomicU32 {
        self.word(0)
    }

    #[inline]
    fn record(&self, m: Me) {
        self.word(2).store(m.pid, Ordering::Relaxed);
        self.word(3).store(m.start as u32, Ordering::Relaxed);
        self.word(4)
            .store((m.start >> 32) as u32, Ordering::Relaxed);
        self.word(1).store(m.tid, Ordering::Release);
    }

    /// Whether the owner recorded for `tid` is known to be dead.
    fn owner_dead(&self, tid: u32) -> bool {
        if self.word(1).load(Ordering::Acquire) != tid {
            return false; // the owner has not published itself yet: it is running
        }
        let pid = self.word(2).load(Ordering::Relaxed);
        let start = u64::from(self.word(3).load(Ordering::Relaxed))
            | (u64::from(self.word(4).load(Ordering::Relaxed)) << 32);
        // Re-check that the record still belongs to this owner after reading it.
        if self.word(1).load(Ordering::Acquire) != tid {
            return false;
        }
        !sysproc::thread_alive(pid, tid, start)
    }

    /// Recursion depth (meaningful to the owner only).
    pub(crate) fn count(&self) -> &AtomicU32 {
        self.word(5)
    }

    /// Whether the calling thread holds the lock.
    pub(crate) fn held_by_me(&self) -> bool {
        self.state().load(Ordering::Relaxed) & TID_MASK == me().tid
    }

    /// Whether anyone holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.state().load(Ordering::Relaxed) != 0
    }

    /// Takes the lock, waiting until `deadline` (`None`: no limit). `None` on timeout.
    /// With `recursive`, a holder taking it again gets [`Taken::Again`]; without, it
    /// gets `Err` (it would wait for itself forever).
    #[inline]
    pub(crate) fn acquire(
        &self,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Option<Taken>, ()> {
        let m = me();
        if self.words()[0]
            .compare_exchange(0, m.tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.record(m);
            return Ok(Some(Taken::Clean));
        }
        self.acquire_slow(m, deadline, recursive)
    }

    #[cold]
    fn acquire_slow(
        &self,
        m: Me,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Option<Taken>, ()> {
        let state = self.state();
        let mut spins = 0u32;
        // Once we have slept, others may sleep too: keep the waiters mark when taking it.
        let mut claim = m.tid;
        loop {
            let cur = match state.compare_exchange(0, claim, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    self.record(m);
                    return Ok(Some(Taken::Clean));
                }
                Err(cur) => cur,
            };
            let owner = cur & TID_MASK;
            if owner == m.tid {
                return if recursive {
                    Ok(Some(Taken::Again))
                } else {
                    Err(())
                };
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            // A holder usually lets go within a few microseconds: watch the word (reading
            // only, so the holder keeps its cache line) before sleeping.
            if spins < 100 {
                spins += 1;
                while spins < 100 && state.load(Ordering::Relaxed) == cur {
                    spins += 1;
                    std::hint::spin_loop();
                }
                continue;
            }
            if cur & WAITERS == 0
                && state
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = match deadline {
                None => LIVENESS_SLICE,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(LIVENESS_SLICE),
            };
            let slept_from = Instant::now();
            futex::wait(state, cur | WAITERS, Some(slice));
            claim = m.tid | WAITERS;
            if slept_from.elapsed() >= slice
                && state.load(Ordering::Relaxed) & TID_MASK == owner
                && self.owner_dead(owner)
            {
                // Take it over from the dead owner; keep WAITERS so others get woken later.
                let seen = state.load(Ordering::Relaxed);
                if seen & TID_MASK == owner
                    && state
                        .compare_exchange(
                            seen,
                            m.tid | WAITERS,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    self.count().store(0, Ordering::Relaxed);
                    self.record(m);
                    return Ok(Some(Taken::OwnerDied));
                }
            }
        }
    }

    /// Releases the lock; `Err` if the calling thread does not hold it.
    #[inline]
    pub(crate) fn release(&self) -> Result<(), ()> {
        self.release_as(me().tid)
    }

    /// Releases the lock on behalf of thread `tid` (a guard knows its thread).
    #[inline]
    pub(crate) fn release_as(&self, tid: u32) -> Result<(), ()> {
        let w = self.words();
        let state = &w[0];
        if state.load(Ordering::Relaxed) & TID_MASK != tid {
            return Err(());
        }
        w[1].store(0, Ordering::Relaxed);
        let prev = state.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            futex::wake(state, 1);
        }
        Ok(())
    }

    /// The region holding the lock (to send it to another process).
    pub(crate) fn region(&self) -> &Arc<Region> {
        self.words.region()
    }

    /// Offset of the lock in its region.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

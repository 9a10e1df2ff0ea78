//! Process-wide state that a forked child can start afresh.
//!
//! A `fork` copies every mutex in the state it had, including one held by another
//! thread that does not exist in the child: locking it there would wait forever. A
//! [`ForkLocal`] is a mutex behind an atomic pointer; the child swaps in a new mutex
//! without touching the old one (which is leaked, a few bytes once per fork).

use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A `Mutex<T>` that a freshly forked child can replace.
pub(crate) struct ForkLocal<T: 'static> {
    ptr: AtomicPtr<Mutex<T>>,
    init: fn() -> T,
}

impl<T: 'static> ForkLocal<T> {
    /// State created by `init` on first use.
    pub(crate) const fn new(init: fn() -> T) -> Self {
        ForkLocal {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            init,
        }
    }

    /// The current mutex.
    pub(crate) fn get(&self) -> &'static Mutex<T> {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: every non-null pointer stored here comes from `Box::leak` and is never
            // freed, so it stays valid for the rest of the process.
            return unsafe { &*p };
        }
        let fresh: *mut Mutex<T> = Box::leak(Box::new(Mutex::new((self.init)())));
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: `fresh` was just leaked and is now published; it is never freed.
            Ok(_) => unsafe { &*fresh },
            Err(existing) => {
                // SAFETY: `fresh` lost the race and was never shared; reclaim it.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as above, a published pointer is leaked and never freed.
                unsafe { &*existing }
            }
        }
    }

    /// Locks the current mutex, ignoring poisoning (the state stays consistent).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'static, T> {
        self.get().lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the state was ever created (in this process, since a reset).
    pub(crate) fn is_created(&self) -> bool {
        !self.ptr.load(Ordering::Acquire).is_null()
    }

    /// In a freshly forked (single-threaded) child: start from new state, whatever the
    /// old mutex's condition. The old state is leaked, not dropped: its lock may be held.
    /// The new state is created on first use (a child that never needs it writes nothing).
    pub(crate) fn reset_after_fork(&self) {
        self.ptr.store(std::ptr::null_mut(), Ordering::Release);
    }
}

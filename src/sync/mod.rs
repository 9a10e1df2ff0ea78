//! Synchronisation across processes (Python's `multiprocessing.synchronize`): locks,
//! semaphores, events, conditions and barriers living in shared memory.
//!
//! Every primitive is a few words in an anonymous shared segment: it travels to other
//! processes in arguments or messages (its descriptor is passed), and the kernel frees it
//! when the last process using it is gone, crash or not.

mod lock;
pub(crate) mod owner_lock;

pub use self::lock::{AcquireError, AcquireResult, Lock, LockGuard, RLock, RLockGuard};

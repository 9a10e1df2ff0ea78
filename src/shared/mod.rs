//! Shared memory between processes (Python's `multiprocessing.sharedctypes` and
//! `multiprocessing.shared_memory`).
//!
//! - [`Value`] and [`Array`]: plain-old-data in anonymous shared memory with a lock;
//!   [`RawValue`] and [`RawArray`] without one. They travel to other processes in
//!   arguments or through a [`Connection`](crate::Connection); the kernel frees the
//!   memory when the last process using it is gone, crash or not.
//! - [`SharedMemory`] and [`ShareableList`]: segments with a name in `/dev/shm`, which
//!   unrelated processes attach to by name. The creating process removes the name when
//!   done with it, and a tracker process removes it if the creator crashes.
//!
//! ## When a process dies, and what a peer can do
//!
//! - Anonymous memory ([`Value`], [`Array`], [`RawValue`], [`RawArray`], and every
//!   lock, semaphore, event, condition and barrier) is freed by the kernel with its last user, and
//!   is sealed at its size when created: no process holding it can shrink or grow it,
//!   so none can make the others die of `SIGBUS`. A received segment that lacks those
//!   seals is refused with [`Error::Decode`](crate::Error::Decode).
//! - A named segment ([`SharedMemory`], [`ShareableList`]) whose creator dies is
//!   unlinked by the tracker, and only if the name still names the segment created
//!   (device and inode): a segment someone made again under the same name is left
//!   alone. Named segments cannot be sealed: a process of the owning user can shrink
//!   one, and a process that then reads or writes past the new end is killed by
//!   `SIGBUS`. Attaching (or receiving) a segment owned by another user is refused.
//!
//! ## Concurrent access
//!
//! Guards of [`Value`] and [`Array`] hand out references under the lock. Everything else
//! copies: [`RawValue`], [`RawArray`], [`ShareableList`] and
//! [`SharedMemory::read_into`]/[`write_from`](SharedMemory::write_from) touch the shared
//! bytes only with atomic loads and stores, so a concurrent writer in another process is
//! no data race (a copy may still be torn, part old and part new). The plain slices of
//! [`SharedMemory::buf`] and [`buf_mut`](SharedMemory::buf_mut) are for use under your
//! own synchronisation (after a message or a join, or under a [`Lock`](crate::Lock)).
//!
//! Items are any [`bytemuck::Pod`] type: integers, floats, arrays of them, or
//! `#[repr(C)]` structs deriving `Pod` and `Zeroable`:
//!
//! ```
//! use bytemuck::{Pod, Zeroable};
//!
//! #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
//! #[repr(C)]
//! struct Point {
//!     x: f64,
//!     y: f64,
//! }
//!
//! let p = multiproc::Value::new(Point { x: 1.0, y: 2.0 })?;
//! p.get_lock()?.y = 5.0;
//! assert_eq!(p.get()?, Point { x: 1.0, y: 5.0 });
//! # Ok::<(), multiproc::Error>(())
//! ```

mod array;
mod block;
mod list;
mod memory;
mod tracker;
mod value;

pub use self::array::{Array, ArrayGuard, RawArray};
pub use self::list::ShareableList;
pub use self::memory::SharedMemory;
pub use self::value::{RawValue, Value, ValueGuard};

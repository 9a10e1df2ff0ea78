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

//! What `#[multiproc::proxy]` expands to names, and nothing else. Not an API: it
//! changes with the macro, which the crate pins to its own version.

pub use crate::error::Result;
pub use crate::manager::{
    CallError, Manager, Proxy, ProxyCore, Registered, decode_args, encode_reply,
};
pub use serde;

use crate::manager::RemoteFault;

/// The `Err` of a constructor returning `Result<Self, E>`, as it travels to the
/// proxy: its text, arriving as `Error::Remote` (Python's `RemoteError`).
pub fn constructor_failed<E: std::fmt::Display>(e: E) -> CallError {
    CallError::Failed(RemoteFault::Other(e.to_string()))
}

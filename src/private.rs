//! What `#[multiproc::proxy]` expands to names, and nothing else. Not an API: it
//! changes with the macro, which the crate pins to its own version.

pub use crate::error::Result;
pub use crate::manager::{
    CallError, Manager, Proxy, ProxyCore, Registered, decode_args, encode_reply,
};
pub use serde;

//! The platform layer: every syscall and every `unsafe` block of the crate lives here,
//! each with a `// SAFETY:` comment. Everything above it is safe Rust.
//!
//! Linux only for now; this is the one module a port to another Unix would change.

pub(crate) mod fd;
pub(crate) mod forklocal;
pub(crate) mod futex;
pub(crate) mod image;
pub(crate) mod liveness;
pub(crate) mod memfd_body;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
pub(crate) mod net;
pub(crate) mod outflow;
pub(crate) mod pages;
pub(crate) mod proc;
pub(crate) mod same_type;
pub(crate) mod shm;

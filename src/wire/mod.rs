//! What crosses a process boundary: frames, the value codec, handles inside values.

pub(crate) mod bulk;
pub(crate) mod codec;
pub(crate) mod frame;
pub(crate) mod handles;
mod verbatim;

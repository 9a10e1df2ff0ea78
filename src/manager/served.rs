//! What the server holds: the [`Served`] trait every managed object implements, the
//! [`Registered`] trait of user types, and the encoding helpers shared by both sides.
//!
//! A call travels as a method name and the postcard encoding of its argument tuple;
//! its reply is the encoding of the result, or a [`CallError`] that becomes the
//! crate's [`Error`](crate::Error) on the client side, of the same kind where the
//! object failed with one of the crate's errors.

use std::os::fd::BorrowedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::sys::fd as sysfd;
use crate::wire::codec;

/// One client connection of a server.
///
/// Each thread of a client process talks to a manager through a connection of its
/// own, as in Python, so a `ClientId` names one thread of one process: what a lock
/// records as its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub(crate) u64);

/// What a call runs with: who called, and whether that caller is still there.
pub struct CallCx<'a> {
    pub(crate) client: ClientId,
    pub(crate) conn: BorrowedFd<'a>,
}

impl std::fmt::Debug for CallCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCx")
            .field("client", &self.client)
            .finish()
    }
}

impl CallCx<'_> {
    /// The connection the call came on.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The client closed its connection (end of stream seen) while this call runs.
    ///
    /// The protocol is request and reply: a client never sends while it waits for a
    /// reply, so a connection that turns readable during a call has been closed (or its
    /// process has died). A blocking object polls this to give up a wait nobody will
    /// see the end of.
    pub fn client_gone(&self) -> bool {
        matches!(
            sysfd::wait_readable(self.conn, Some(std::time::Duration::ZERO)),
            Ok(true) | Err(_)
        )
    }
}

/// A failure of a call as it travels back to the proxy. On the client side it becomes
/// the crate's [`Error`](crate::Error) (`From<CallError> for Error`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum CallError {
    /// The object has no such method (or the server no such type):
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) on the client side.
    NoSuchMethod {
        /// The type the call was for.
        typeid: String,
        /// The method (or constructor) asked for.
        method: String,
    },
    /// The arguments did not decode as the method's parameters:
    /// [`Error::Decode`](crate::Error::Decode) on the client side.
    BadArguments(String),
    /// The object refused: one of the crate's errors, carried by kind.
    Failed(RemoteFault),
    /// The method panicked; the server carries on:
    /// [`Error::Panicked`](crate::Error::Panicked) on the client side.
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },
}

/// The crate's errors an object may return, carried by kind so that the client gets
/// the same [`Error`](crate::Error) variant; anything else travels as text and arrives
/// as [`Error::Remote`](crate::Error::Remote) (Python's `RemoteError`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum RemoteFault {
    /// [`Error::Timeout`](crate::Error::Timeout).
    Timeout,
    /// [`Error::Empty`](crate::Error::Empty).
    Empty,
    /// [`Error::Full`](crate::Error::Full).
    Full,
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier).
    BrokenBarrier,
    /// [`Error::InvalidState`](crate::Error::InvalidState).
    InvalidState(String),
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    InvalidArgument(String),
    /// Any other error, as its text: [`Error::Remote`](crate::Error::Remote).
    Other(String),
}

impl From<Error> for CallError {
    fn from(e: Error) -> CallError {
        CallError::Failed(match e {
            Error::Timeout => RemoteFault::Timeout,
            Error::Empty => RemoteFault::Empty,
            Error::Full => RemoteFault::Full,
            Error::BrokenBarrier => RemoteFault::BrokenBarrier,
            Error::InvalidState(s) => RemoteFault::InvalidState(s),
            Error::InvalidArgument(s) => RemoteFault::InvalidArgument(s),
            Error::Panicked { message, location } => {
                return CallError::Panicked { message, location };
            }
            other => RemoteFault::Other(other.to_string()),
        })
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        match e {
            CallError::NoSuchMethod { typeid, method } => Error::InvalidArgument(format!(
                "the manager's {typeid} has no method or constructor {method:?}"
            )),
            CallError::BadArguments(s) => Error::Decode(s),
            CallError::Panicked { message, location } => Error::Panicked { message, location },
            CallError::Failed(f) => match f {
                RemoteFault::Timeout => Error::Timeout,
                RemoteFault::Empty => Error::Empty,
                RemoteFault::Full => Error::Full,
                RemoteFault::BrokenBarrier => Error::BrokenBarrier,
                RemoteFault::InvalidState(s) => Error::InvalidState(s),
                RemoteFault::InvalidArgument(s) => Error::InvalidArgument(s),
                RemoteFault::Other(s) => Error::Remote(s),
            },
        }
    }
}

/// An object held by the server.
///
/// Calls from many client threads run at once, so methods take `&self`: an object
/// that blocks (a lock, a queue get) must not hold an inner mutex while it waits.
pub trait Served: Send + Sync + 'static {
    /// Runs `method` on encoded `args` (postcard of the argument tuple; `()` for none)
    /// and returns the encoded result.
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError>;

    /// `client` is gone (closed, killed): release what it held (a lock, a semaphore
    /// count). The server calls it once per object that client called, after its last
    /// call ended.
    fn client_gone(&self, client: ClientId) {
        let _ = client;
    }
}

/// A user type served by the manager with `#[multiproc::proxy]` (which writes this
/// impl). The server wraps the value in a mutex, so its methods see `&mut self`, one
/// call at a time.
pub trait Registered: Send + 'static + Sized {
    /// The name the server knows the type by (Python's typeid); the type's name by
    /// default.
    const TYPEID: &'static str;
    /// Runs the constructor `ctor` (an associated fn returning `Self`) on encoded args.
    fn construct(ctor: &str, args: &[u8]) -> Result<Self, CallError>;
    /// Runs `method` on encoded args, returning the encoded result.
    fn dispatch(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, CallError>;
}

/// Decodes a call's arguments: [`CallError::BadArguments`] when they do not decode as
/// `A`.
///
/// ```
/// use multiproc::{decode_args, encode_reply};
/// let bytes = encode_reply(&(7i64, "x".to_string()))?;
/// let (n, s): (i64, String) = decode_args(&bytes).unwrap();
/// assert_eq!((n, s.as_str()), (7, "x"));
/// assert!(decode_args::<(i64, String)>(&[0xff]).is_err());
/// # Ok::<(), multiproc::CallError>(())
/// ```
pub fn decode_args<A: DeserializeOwned>(args: &[u8]) -> Result<A, CallError> {
    codec::decode(args, Vec::new())
        .map_err(|e| CallError::BadArguments(format!("cannot decode the arguments: {e}")))
}

/// Encodes a call's result (or arguments): values holding handles (descriptors) are
/// refused, since the manager's objects live in another process.
///
/// ```
/// let bytes = multiproc::encode_reply(&42u32)?;
/// assert_eq!(bytes, vec![42]);
/// # Ok::<(), multiproc::CallError>(())
/// ```
pub fn encode_reply<R: Serialize + ?Sized>(value: &R) -> Result<Vec<u8>, CallError> {
    codec::encode_plain(value).map_err(CallError::from)
}

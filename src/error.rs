//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong in `multiproc`.
///
/// Variants mirror the exceptions a Python user knows (`queue.Empty`, `EOFError`,
/// `AuthenticationError`, …) so that callers can match on what happened.
///
/// ```
/// use multiproc::Error;
/// let e = Error::WorkerLost { pid: 42, exitcode: -9 };
/// assert_eq!(e.to_string(), "process 42 was lost: killed by signal 9 (SIGKILL)");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing to take (Python's `queue.Empty`).
    #[error("empty")]
    Empty,
    /// No room to put (Python's `queue.Full`).
    #[error("full")]
    Full,
    /// A queue is empty and nothing can fill it any more: every handle that could put
    /// has been closed or dropped, or its process has died. Python has no counterpart
    /// (its `get` would wait forever).
    #[error("the queue is empty and no producer is left")]
    NoProducers,
    /// A blocking call gave up after its timeout.
    #[error("timed out")]
    Timeout,
    /// The other end of a connection was closed, or this end was (Python's `EOFError`).
    #[error("connection closed")]
    Closed,
    /// A peer process died while a reply was owed.
    #[error("peer died: {0}")]
    PeerDied(String),
    /// A child process ended without delivering its result.
    #[error("process {pid} was lost: {}", ExitDescription(*exitcode))]
    WorkerLost {
        /// The process id of the lost child.
        pid: u32,
        /// Its exit code: `-N` when killed by signal `N`, the exit status otherwise.
        exitcode: i32,
    },
    /// The child's function panicked; this carries its message, like Python's remote traceback.
    #[error("child panicked{}: {message}", location.as_deref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },
    /// A pool task that never ran: the pool was terminated (or dropped) first, or its
    /// future was cancelled.
    #[error("the task was cancelled before it completed")]
    Cancelled,
    /// A holder of the lock died while holding it, and no holder since has declared the
    /// protected data repaired (`mark_consistent` on a guard). Converting
    /// [`AcquireError::OwnerDied`](crate::AcquireError::OwnerDied) into this error (as `?`
    /// does) releases the lock still marked: the next acquirer is told too.
    #[error("the previous owner died while holding the lock")]
    OwnerDied,
    /// A barrier was aborted or reset while waiting, or a waiter timed out (Python's
    /// `BrokenBarrierError`).
    #[error("broken barrier")]
    BrokenBarrier,
    /// The peer did not prove it knows the authentication key.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// Bytes that do not decode: corrupt, truncated, or of the wrong type.
    #[error("decode error: {0}")]
    Decode(String),
    /// A value that cannot be encoded (for example a handle outside a multiproc transport).
    #[error("encode error: {0}")]
    Encode(String),
    /// A message longer than the connection accepts.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Length announced or attempted.
        len: u64,
        /// The configured maximum.
        limit: usize,
    },
    /// `recv_bytes_into` was given a buffer smaller than the message; the whole message is here.
    #[error("buffer too short for a message of {} bytes", message.len())]
    BufferTooShort {
        /// The message that did not fit.
        message: Vec<u8>,
    },
    /// A child process could not start the requested work.
    #[error("child bootstrap failed: {0}")]
    Bootstrap(String),
    /// An argument out of range or malformed (an index past the end, a bad name, a size
    /// of zero, an address that does not parse).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A call that is not valid in the object's current state (start twice, close while running, …).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A manager's object failed with an error of its own, carried as its text
    /// (Python's `RemoteError`).
    #[error("remote error: {0}")]
    Remote(String),
    /// An operating system error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The signal that killed the process, for [`Error::WorkerLost`].
    pub fn signal(&self) -> Option<i32> {
        match self {
            Error::WorkerLost { exitcode, .. } if *exitcode < 0 => Some(-exitcode),
            _ => None,
        }
    }

    pub(crate) fn state(msg: impl Into<String>) -> Self {
        Error::InvalidState(msg.into())
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats an exit code the way a reader wants to see it.
pub(crate) struct ExitDescription(pub i32);

impl fmt::Display for ExitDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0;
        if code < 0 {
            let name = signal_name(-code);
            write!(f, "killed by signal {}", -code)?;
            if let Some(n) = name {
                write!(f, " ({n})")?;
            }
            Ok(())
        } else {
            write!(f, "exited with code {code}")
        }
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

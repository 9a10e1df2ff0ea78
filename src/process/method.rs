//! Start methods and the default one (Python's `get_start_method`, `set_start_method`).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a child process comes to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// A fresh execution of the current binary: nothing is inherited but the arguments.
    Spawn,
    /// A `fork()` of the caller: fast, inherits all memory; unsafe if other threads run
    /// (a warning is logged through `tracing` then).
    ///
    /// As in Python, the child inherits every descriptor of the parent, including the
    /// parent's own ends of pipes: a child waiting for end of stream on a pipe whose other
    /// end it inherited waits for itself. Pass the ends a child needs in its arguments and
    /// prefer `Forkserver` when in doubt.
    Fork,
    /// A small single-threaded server, started once from a fresh execution of the binary,
    /// forks each child: as clean as spawn, nearly as fast as fork. The default.
    ///
    /// Children inherit the server's environment and working directory, which are the
    /// parent's as they were when the server started (its first use), as in Python.
    Forkserver,
}

impl StartMethod {
    /// Python's name for the method: `"spawn"`, `"fork"` or `"forkserver"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
            StartMethod::Forkserver => "forkserver",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "fork" => Ok(StartMethod::Fork),
            "forkserver" => Ok(StartMethod::Forkserver),
            other => Err(Error::state(format!("cannot find context for {other:?}"))),
        }
    }
}

static DEFAULT: OnceLock<StartMethod> = OnceLock::new();

/// The start method used when none is chosen (Python's `get_start_method()`):
/// [`StartMethod::Forkserver`] unless [`set_start_method`] chose another. Asking fixes it.
pub fn get_start_method() -> StartMethod {
    *DEFAULT.get_or_init(|| StartMethod::Forkserver)
}

/// Chooses the default start method, once (Python's `set_start_method`).
///
/// Setting it again to a different method is an error, as in Python.
///
/// ```
/// use multiproc::StartMethod;
/// multiproc::set_start_method(StartMethod::Spawn)?;
/// assert_eq!(multiproc::get_start_method(), StartMethod::Spawn);
/// assert!(multiproc::set_start_method(StartMethod::Fork).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let got = *DEFAULT.get_or_init(|| method);
    if got == method {
        Ok(())
    } else {
        Err(Error::state("context has already been set"))
    }
}

/// The start methods this platform supports, the default first.
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::Forkserver,
        StartMethod::Spawn,
        StartMethod::Fork,
    ]
}

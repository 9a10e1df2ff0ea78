//! Contexts (Python's `get_context`): constructors bound to one start method.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::{Connection, pipe};
use crate::error::Result;
use crate::process::handle::Process;
use crate::process::method::StartMethod;
use crate::process::spawn::JoinHandle;
use crate::process::target::{Run, Target};

/// A context whose constructors use `method` (Python's `get_context(method)`).
///
/// ```
/// use multiproc::{get_context, StartMethod};
/// fn square(x: u64) -> u64 { x * x }
/// let ctx = get_context(StartMethod::Spawn);
/// let h = ctx.spawn(square, 7)?;
/// assert_eq!(h.join()?, 49);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

/// Creates processes (and the objects that go with them) with one start method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// The start method of this context.
    pub fn get_start_method(&self) -> StartMethod {
        self.method
    }

    /// A [`Process`] that will start with this context's method.
    pub fn process<F, A, R>(&self, target: F, args: A) -> Process
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: std::process::Termination + 'static,
    {
        Process::new(target, args).start_method(self.method)
    }

    /// A [`Process`] running `obj.run()`, with this context's method.
    pub fn process_from_run<T: Run>(&self, obj: T) -> Process {
        Process::from_run(obj).start_method(self.method)
    }

    /// Starts `target(args)` in a child with this context's method; see [`crate::spawn`].
    pub fn spawn<F, A, R>(&self, target: F, args: A) -> Result<JoinHandle<R>>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        JoinHandle::start(target, args, Some(self.method))
    }

    /// A pipe, as [`crate::pipe`].
    pub fn pipe(&self, duplex: bool) -> Result<(Connection, Connection)> {
        pipe(duplex)
    }
}

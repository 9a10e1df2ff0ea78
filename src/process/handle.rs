//! `Process`: a handle to a child running a function of yours (Python's
//! `multiprocessing.Process`).

use std::fmt;
use std::os::fd::BorrowedFd;
use std::process::Termination;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::Waitable;
use crate::error::{Error, Result};
use crate::process::children::{self, Child};
use crate::process::method::{StartMethod, get_start_method};
use crate::process::target::{Run, Target};
use crate::process::task::{self, Entry, Outcome};
use crate::process::{current, launch};
use crate::sys::image;
use crate::wire::codec::{self, Encoded};

/// A child process running a function of yours (Python's `multiprocessing.Process`).
///
/// The target is a `fn` item or a closure that captures nothing (it must exist in the
/// child, which is the same binary); its arguments travel by serde and may contain
/// handles such as a [`Connection`](crate::Connection).
///
/// ```
/// use multiproc::Process;
///
/// fn work((n, word): (u32, String)) {
///     println!("{word} {n}");
/// }
///
/// let mut p = Process::new(work, (3, "hello".to_string())).name("worker");
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Process {
    entry: Entry,
    args: Option<Result<Encoded>>,
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    child: Option<Arc<Child>>,
    closed: bool,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.child, self.exitcode()) {
            (None, _) => "initial".to_string(),
            (Some(_), None) => "started".to_string(),
            (Some(_), Some(c)) => format!("stopped exitcode={c}"),
        };
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("state", &state)
            .finish()
    }
}

impl Process {
    pub(crate) fn with_entry<A: Serialize>(entry: Entry, args: &A) -> Process {
        let (identity, name) = current::next_child();
        Process {
            entry,
            args: Some(codec::encode(args)),
            name,
            identity,
            daemon: false,
            method: None,
            child: None,
            closed: false,
        }
    }

    /// A process that will run `target(args)`. Nothing starts until [`start`](Self::start).
    ///
    /// The target returns what a `main` may return: `()`, a `Result` (an `Err` is printed
    /// to stderr and makes the exit code 1, like an exception in Python's `run`), or an
    /// `ExitCode`. Use [`crate::spawn`] to get a value back.
    pub fn new<F, A, R>(_target: F, args: A) -> Process
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Termination + 'static,
    {
        const { image::assert_zero_sized::<F>() };
        Process::with_entry(task::discard_entry::<F, A, R>(), &args)
    }

    /// A process that will run `obj.run()` (Python's `Process` subclass with `run`).
    pub fn from_run<T: Run>(obj: T) -> Process {
        Process::with_entry(task::run_entry::<T>(), &obj)
    }

    /// Sets the name (builder style). The default is Python's `Process-N`.
    pub fn name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Sets the daemon flag (builder style): a daemon is terminated when its parent
    /// exits, and killed if its parent dies, even by SIGKILL.
    pub fn daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// Chooses the start method for this process (builder style).
    pub fn start_method(mut self, method: StartMethod) -> Process {
        self.method = Some(method);
        self
    }

    /// The process's name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Renames the process (only the parent's view changes once it has started, as in Python).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Whether the process is (or will be) a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Sets the daemon flag; an error once the process has started.
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::state("process has already started"));
        }
        self.daemon = daemon;
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::state("process object is closed"));
        }
        Ok(())
    }

    fn started(&self) -> Result<&Arc<Child>> {
        self.check_open()?;
        self.child
            .as_ref()
            .ok_or_else(|| Error::state("process has not been started"))
    }

    /// Starts the child. Starting twice is an error.
    pub fn start(&mut self) -> Result<()> {
        self.start_inner(true)
    }

    fn start_inner(&mut self, register: bool) -> Result<()> {
        self.check_open()?;
        if self.child.is_some() {
            return Err(Error::state("cannot start a process twice"));
        }
        if register && current::is_daemon() {
            return Err(Error::state(
                "daemonic processes are not allowed to have children",
            ));
        }
        let args = self
            .args
            .take()
            .ok_or_else(|| Error::state("cannot start a process twice"))??;
        let method = self.method.unwrap_or_else(get_start_method);
        let spec = launch::Spec {
            entry: self.entry,
            args,
            name: self.name.clone(),
            daemon: self.daemon,
            identity: self.identity.clone(),
        };
        let child = launch::launch(method, spec)?;
        if register {
            children::register(&child);
        }
        self.child = Some(child);
        Ok(())
    }

    /// Starts a helper process of the crate's own that is neither listed among the
    /// active children nor joined at exit (it watches this process and ends after it).
    pub(crate) fn start_detached(&mut self) -> Result<()> {
        self.start_inner(false)
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Whether the child has started and not yet ended.
    pub fn is_alive(&self) -> bool {
        match &self.child {
            Some(c) if !self.closed => matches!(c.poll(), Ok(None)),
            _ => false,
        }
    }

    /// `None` while running (or not started), `0` after a normal return, `1` after a
    /// panic, `-N` when killed by signal `N`, the status given to `std::process::exit`
    /// otherwise.
    pub fn exitcode(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| c.poll().ok().flatten())
    }

    /// Waits for the child to end.
    ///
    /// A child that ended is not an error, whatever its exit code (check
    /// [`exitcode`](Self::exitcode), as in Python); a child that could not run its target
    /// at all (its arguments did not decode, for instance) is [`Error::Bootstrap`].
    pub fn join(&mut self) -> Result<()> {
        let child = self.started()?.clone();
        child.wait(None)?;
        self.after_end(&child)
    }

    /// Waits at most `timeout` for the child to end. Returns whether it has ended; if
    /// not, it is still running and [`is_alive`](Self::is_alive) says so. A timeout too
    /// large to be a point in time (`Duration::MAX`) waits as long as it takes.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<bool> {
        let child = self.started()?.clone();
        if child.wait(crate::deadline::after(timeout))?.is_none() {
            return Ok(false);
        }
        self.after_end(&child)?;
        Ok(true)
    }

    fn after_end(&self, child: &Child) -> Result<()> {
        // Joined: no longer one of the active children.
        children::unregister(child.pid);
        // The exit is the authority: what the child reported before it ended is already
        // here, and nothing more is waited for (a descendant may hold the channel open).
        let deadline = Some(std::time::Instant::now());
        match child.take_outcome::<()>(deadline) {
            Ok(Some(Outcome::Failed(msg))) => Err(Error::Bootstrap(msg)),
            _ => Ok(()),
        }
    }

    /// Sends SIGTERM (Python's `terminate`). A child that already ended is left alone.
    pub fn terminate(&self) -> Result<()> {
        self.started()?.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (Python's `kill`).
    pub fn kill(&self) -> Result<()> {
        self.started()?.signal(libc::SIGKILL)
    }

    /// Releases the process's resources; an error while it still runs. Other methods
    /// fail afterwards, as in Python.
    pub fn close(&mut self) -> Result<()> {
        if let Some(c) = &self.child {
            if c.poll()?.is_none() {
                return Err(Error::state(
                    "cannot close a process while it is still running",
                ));
            }
            children::unregister(c.pid);
        }
        self.child = None;
        self.closed = true;
        Ok(())
    }

    pub(crate) fn child(&self) -> Option<&Arc<Child>> {
        self.child.as_ref()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Nobody can join through this handle any more; the registry keeps watching the
        // child (it is joined at exit unless it is a daemon).
        if let Some(c) = &self.child {
            c.discard_outcome();
        }
    }
}

/// A started process is ready for [`crate::wait`] once it has ended (Python's `sentinel`).
impl Waitable for Process {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.started()?.sentinel())
    }
}

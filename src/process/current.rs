//! Who this process is: `current_process`, `parent_process`, and the names given to
//! children (`Process-1`, `Process-1:2`, … as Python numbers them).

use crate::sys::forklocal::ForkLocal;
use crate::sys::{fd as sysfd, proc as sysproc};

/// A description of a process: its name, pid and daemon flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `MainProcess`, `Process-1`, or the name given at creation.
    pub name: String,
    /// The operating-system process id.
    pub pid: u32,
    /// Whether it is a daemon (killed when its parent ends).
    pub daemon: bool,
}

/// The process that started this one (Python's `parent_process()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentProcess {
    /// The parent's name.
    pub name: String,
    /// The parent's pid.
    pub pid: u32,
}

impl ParentProcess {
    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        match sysproc::pidfd_open(self.pid) {
            Ok(fd) => !sysfd::wait_readable(
                std::os::fd::AsFd::as_fd(&fd),
                Some(std::time::Duration::ZERO),
            )
            .unwrap_or(true),
            Err(_) => false,
        }
    }
}

struct Me {
    name: String,
    daemon: bool,
    identity: Vec<u32>,
    parent: Option<ParentProcess>,
    counter: u32,
}

static ME: ForkLocal<Me> = ForkLocal::new(|| Me {
    name: String::new(),
    daemon: false,
    identity: Vec::new(),
    parent: None,
    counter: 0,
});

fn me() -> std::sync::MutexGuard<'static, Me> {
    ME.lock()
}

/// In a freshly forked child, before it takes on its task.
pub(crate) fn reset_after_fork() {
    ME.reset_after_fork();
}

fn name_of(m: &Me) -> String {
    if m.name.is_empty() {
        "MainProcess".to_string()
    } else {
        m.name.clone()
    }
}

/// This process: `MainProcess` in the program that started it all, the child's name in a
/// child (Python's `current_process()`).
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let m = me();
    ProcessInfo {
        name: name_of(&m),
        pid: sysproc::getpid(),
        daemon: m.daemon,
    }
}

/// The parent of this process if it was started by multiproc, else `None`
/// (Python's `parent_process()`).
pub fn parent_process() -> Option<ParentProcess> {
    me().parent.clone()
}

/// The next child's identity and default name.
pub(crate) fn next_child() -> (Vec<u32>, String) {
    let mut m = me();
    m.counter += 1;
    let mut identity = m.identity.clone();
    identity.push(m.counter);
    let name = format!(
        "Process-{}",
        identity
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    (identity, name)
}

/// This process's name, for the tasks it sends.
pub(crate) fn name() -> String {
    name_of(&me())
}

/// Whether this process is a daemon (daemons may not have children, as in Python).
pub(crate) fn is_daemon() -> bool {
    me().daemon
}

/// Takes on the identity a task gives this new process.
pub(crate) fn become_child(
    name: &str,
    daemon: bool,
    identity: &[u32],
    parent_pid: u32,
    parent_name: &str,
) {
    let mut m = me();
    m.name = name.to_string();
    m.daemon = daemon;
    m.identity = identity.to_vec();
    m.counter = 0;
    m.parent = Some(ParentProcess {
        name: parent_name.to_string(),
        pid: parent_pid,
    });
}

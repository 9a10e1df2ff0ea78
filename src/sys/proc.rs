//! Process creation, waiting, signals and process-wide settings.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

/// The descriptor number a spawned child finds its bootstrap socket at.
pub(crate) const INHERITED_FD: i32 = 3;

/// Which side of a `fork` we are on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The original process; the child's pid.
    Parent(u32),
}

/// `fork()`.
///
/// In the child only the calling thread exists; the caller must keep to work that is
/// safe there (the crate's own bootstrap, then the user's function, as Python's fork does).
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the child continues on
    // this thread with a copy of the address space. The callers in this crate run only the
    // child bootstrap there and leave through `exit_now`, never returning into code that
    // assumes other threads exist.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(p as u32)),
    }
}

/// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34 and later), looked up at run
/// time so that the binary still starts on an older libc.
type AddCloseFrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

fn addclosefrom() -> Option<AddCloseFrom> {
    static FOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *FOUND.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
        unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addclosefrom_np".as_ptr(),
            ) as usize
        }
    });
    // SAFETY: a non-null result is glibc's function of that name, whose C signature is
    // `int (posix_spawn_file_actions_t *, int)`.
    (addr != 0).then(|| unsafe { std::mem::transmute::<usize, AddCloseFrom>(addr) })
}

/// What a bootstrap marker says: `<fd>,<parent pid>` and, when the libc could not close
/// the parent's other descriptors between fork and exec, `,close`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The bootstrap socket's number.
    pub(crate) fd: i32,
    /// The process that started this one (it made the socket).
    pub(crate) parent: u32,
    /// Whether this process must close what it inherited above `fd` itself.
    pub(crate) close_rest: bool,
}

impl Marker {
    /// Parses a marker value; `None` when it is not one.
    pub(crate) fn parse(value: &str) -> Option<Marker> {
        let mut parts = value.split(',');
        let fd = parts.next()?.parse().ok()?;
        let parent = parts.next()?.parse().ok()?;
        let close_rest = match parts.next() {
            None => false,
            Some("close") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Marker {
            fd,
            parent,
            close_rest,
        })
    }
}

/// Starts a fresh execution of the current binary (`/proc/self/exe`) with `fd` inherited
/// as descriptor [`INHERITED_FD`] and the marker `env_key` (see [`Marker`]) added to its
/// environment. No other
/// descriptor but the standard streams reaches the new program, also none that the
/// caller forgot to mark close-on-exec (as Python's spawn closes all but what it passes).
///
/// Uses `posix_spawn` (a `vfork`-style clone), which does not copy the parent's page
/// tables and is safe in a multi-threaded parent.
pub(crate) fn spawn_self(fd: BorrowedFd<'_>, env_key: &str) -> io::Result<u32> {
    // dup2(3, 3) would not clear close-on-exec: move the source off number 3 first.
    let moved;
    let mut src = fd.as_raw_fd();
    if src == INHERITED_FD {
        moved = rustix::io::fcntl_dupfd_cloexec(fd, 10)?;
        src = moved.as_raw_fd();
    }
    let argv0: OsString = std::env::args_os()
        .next()
        .unwrap_or_else(|| "multiproc-child".into());
    let argv0 = CString::new(argv0.as_bytes()).unwrap_or_else(|_| c"multiproc-child".to_owned());
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k.as_bytes() == env_key.as_bytes() {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            env.push(c);
        }
    }
    let closefrom = addclosefrom();
    let me = getpid();
    let marker = if closefrom.is_some() {
        format!("{env_key}={INHERITED_FD},{me}")
    } else {
        format!("{env_key}={INHERITED_FD},{me},close")
    };
    env.push(CString::new(marker).map_err(io::Error::other)?);
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|c| c.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    let argv: [*mut libc::c_char; 2] = [argv0.as_ptr() as *mut _, std::ptr::null_mut()];

    let mut pid: libc::pid_t = 0;
    // SAFETY: the file-actions and attribute objects are initialised before use and
    // destroyed on every path; all pointers passed to posix_spawn (path, argv, envp) point to
    // NUL-terminated strings and NULL-terminated arrays that outlive the call.
    let rc = unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawnattr_init(&mut attr);
        let mut rc = libc::posix_spawn_file_actions_adddup2(&mut actions, src, INHERITED_FD);
        if let (0, Some(closefrom)) = (rc, closefrom) {
            rc = closefrom(&mut actions, INHERITED_FD + 1);
        }
        if rc == 0 {
            // A fresh program starts with an empty signal mask and default SIGPIPE, as
            // std::process::Command gives it.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut pipe_only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe_only);
            libc::sigaddset(&mut pipe_only, libc::SIGPIPE);
            libc::posix_spawnattr_setsigmask(&mut attr, &empty);
            libc::posix_spawnattr_setsigdefault(&mut attr, &pipe_only);
            libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as _,
            );
            rc = libc::posix_spawn(
                &mut pid,
                c"/proc/self/exe".as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(pid as u32)
}

/// `pid` as the kernel's type: refused unless it is a positive `i32` (a larger number,
/// read from elsewhere, would become a negative one: a process group).
fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no pid {pid}")))
}

/// A descriptor that becomes readable when process `pid` exits.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(
        pid_of(pid)?,
        PidfdFlags::empty(),
    )?)
}

/// Whether process `pid` has certainly ended: it no longer exists, or it is a zombie
/// (its pidfd is readable). Anything unknown (no pidfd support, a failure) is `false`.
pub(crate) fn has_ended(pid: u32) -> bool {
    let Ok(p) = pid_of(pid) else {
        return false;
    };
    match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
        Ok(pidfd) => crate::sys::fd::wait_readable(pidfd.as_fd(), Some(std::time::Duration::ZERO))
            .unwrap_or(false),
        Err(rustix::io::Errno::SRCH) => true,
        // Kernels without pidfds: only a positive "no such process" counts.
        Err(_) => matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
    }
}

/// Python's exit code from a wait status: the exit status, or `-N` for signal `N`.
fn exitcode_of(status: rustix::process::WaitIdStatus) -> i32 {
    if let Some(sig) = status.terminating_signal() {
        -sig
    } else {
        status.exit_status().unwrap_or(0)
    }
}

/// Reaps our child `pid`. `Ok(None)`: still running (only when `block` is false).
/// `ECHILD` comes back as an error: somebody else reaped it.
pub(crate) fn reap(pid: u32, block: bool) -> io::Result<Option<i32>> {
    let mut opts = WaitIdOptions::EXITED;
    if !block {
        opts |= WaitIdOptions::NOHANG;
    }
    loop {
        match rustix::process::waitid(WaitId::Pid(pid_of(pid)?), opts) {
            Ok(Some(st)) => return Ok(Some(exitcode_of(st))),
            Ok(None) => return Ok(None),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `sig` to `pid`. A process that is already gone is not an error.
pub(crate) fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    let signal =
        Signal::from_named_raw(sig).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    match rustix::process::kill_process(pid_of(pid)?, signal) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends `sig` through a pidfd (immune to pid reuse).
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    let signal =
        Signal::from_named_raw(sig).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    match rustix::process::pidfd_send_signal(pidfd, signal) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Asks the kernel to SIGKILL this process when its parent dies; returns false if the
/// parent is already gone (it is no longer `expected_parent`).
pub(crate) fn die_with_parent(expected_parent: u32) -> io::Result<bool> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    Ok(getppid() == expected_parent)
}

/// This process's id.
pub(crate) fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// The parent's id (0 if none).
pub(crate) fn getppid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// Whether the calling thread is the process's main thread.
pub(crate) fn on_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}

pub(crate) use super::liveness::register_fork_handler;

/// Number of threads in this process.
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Ends the process at once with `code`, without running exit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Runs `f` when the process exits normally (`main` returns or `exit` is called).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with the C ABI and no captured state.
    unsafe {
        libc::atexit(f);
    }
}

/// Ignores SIGPIPE, as a Rust `main` does before it starts (a writer gets EPIPE instead).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Ignores SIGINT in this process: a manager's server, as CPython's does, since Ctrl-C
/// in a terminal reaches the whole process group and the program, not its server,
/// decides what it means.
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN for SIGINT has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// Reads and removes an environment variable.
///
/// Called only from the load-time hook, before `main` and before any thread is started,
/// so nothing can read the environment concurrently.
pub(crate) fn take_env(key: &str) -> Option<OsString> {
    let v = std::env::var_os(key)?;
    // SAFETY: see above: the process is single-threaded while the load-time hook runs.
    unsafe { std::env::remove_var(key) };
    Some(v)
}

/// Number of CPUs usable by this process.
pub(crate) fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod marker_tests {
    use super::Marker;

    #[test]
    fn markers_parse_strictly() {
        assert_eq!(
            Marker::parse("3,42"),
            Some(Marker {
                fd: 3,
                parent: 42,
                close_rest: false
            })
        );
        assert_eq!(
            Marker::parse("3,42,close").map(|m| m.close_rest),
            Some(true)
        );
        for bad in ["", "3", "x,1", "3,y", "3,1,open", "3,1,close,more", "-1"] {
            assert_eq!(Marker::parse(bad), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_that_is_no_process_id_is_unknown_never_ended() {
        // Above i32::MAX a pid would turn into a negative number: a process group.
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert!(!has_ended(pid), "pid {pid}");
            assert!(pidfd_open(pid).is_err(), "pid {pid}");
        }
        assert!(!has_ended(std::process::id()));
    }
}

//! Who a thread is, as other processes can name it, and whether such a thread still
//! runs: the facts behind owner-death detection of the crate's locks.
//!
//! A thread is named by its thread id, its process id, its process's start time (clock
//! ticks since boot: with the pid, it names a process even after the pid is reused) and
//! its PID namespace (the inode of `/proc/self/ns/pid`: pids mean something only inside
//! one namespace). The start time and the namespace are read once per process, eagerly:
//! at load time and in the fork handler of every forked child, while descriptors are
//! certainly free (without `/proc`, the namespace comes from a pidfd of the process).
//! The per-thread identity is cached in a thread-local, and a forked child forgets it.
//!
//! Death is only ever concluded from a positive answer: `ESRCH` from `kill`/`tgkill`/
//! `pidfd_open` in our own namespace, a pidfd opened at the owner's pid that has become
//! readable (that process exited: the owner's, or one that got its pid after it ended),
//! a process at the owner's pid whose start time differs (the pid was reused), or a
//! zombie. None of these needs the owner's start time, nor a `/proc` of our namespace:
//! an owner whose start time is unknown is still found dead. The start time only keeps
//! a reused pid from passing for a live owner. Anything else — `/proc` unreadable (out
//! of descriptors, `hidepid`, not mounted, mounted for another namespace), an owner in
//! another PID namespace — is "not known to be dead".

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

/// A thread, as another process can name it. A field that could not be read is 0
/// (unknown); an unknown namespace or start time never proves anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The thread id (in `ns`).
    pub(crate) tid: u32,
    /// The process id (in `ns`).
    pub(crate) pid: u32,
    /// The process's start time, in clock ticks since boot; 0 if unknown.
    pub(crate) start: u64,
    /// The inode of the process's PID namespace; 0 if unknown.
    pub(crate) ns: u32,
}

/// What the calling thread knows about itself and its view of the system.
#[derive(Clone, Copy)]
pub(crate) struct Me {
    /// Who the calling thread is.
    pub(crate) id: Identity,
    /// Whether `/proc` shows this process's PID namespace (so `/proc/<pid>` is the
    /// process that `pid` names here).
    proc_is_ours: bool,
}

thread_local! {
    static ME: Cell<Option<Me>> = const { Cell::new(None) };
}

/// Process-wide facts, read once: 0 not yet, 1 read (the values below are valid).
static FACTS_READ: AtomicU8 = AtomicU8::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static NS: AtomicU32 = AtomicU32::new(0);
static PROC_IS_OURS: AtomicU8 = AtomicU8::new(0);

/// The calling thread's identity (cached per thread, renewed after a fork).
#[inline]
pub(crate) fn me() -> Me {
    if let Some(m) = ME.get() {
        return m;
    }
    me_slow()
}

#[cold]
fn me_slow() -> Me {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let (start, ns, proc_is_ours) = process_facts(pid);
    let m = Me {
        id: Identity {
            tid: rustix::thread::gettid().as_raw_nonzero().get() as u32,
            pid,
            start,
            ns,
        },
        proc_is_ours,
    };
    ME.set(Some(m));
    m
}

/// This process's start time, PID namespace and whether `/proc` is of that namespace.
/// Only a complete answer is kept for the process; a partial one (a `/proc` read that
/// failed) is retried by the next thread that asks.
///
/// Allocates nothing and only makes system calls, so that a freshly forked child can
/// run it from its fork handler (async-signal-safe).
fn process_facts(pid: u32) -> (u64, u32, bool) {
    if FACTS_READ.load(Ordering::Acquire) == 1 {
        return (
            START.load(Ordering::Relaxed),
            NS.load(Ordering::Relaxed),
            PROC_IS_OURS.load(Ordering::Relaxed) == 1,
        );
    }
    let stat = read_stat_at("/proc/self/stat");
    // A start time is comparable across processes only outside a time namespace (which
    // offsets what `/proc` shows): elsewhere, it is left unknown.
    let start = stat
        .as_ref()
        .filter(|_| in_initial_time_namespace())
        .map_or(0, |s| s.start);
    // `/proc/self` names us in the namespace `/proc` was mounted for: our own pid there
    // means pids read from `/proc` are pids of our namespace.
    let proc_is_ours = stat.as_ref().is_some_and(|s| s.pid == pid);
    let ns = rustix::fs::stat("/proc/self/ns/pid")
        .ok()
        .and_then(|st| u32::try_from(st.st_ino).ok())
        .filter(|&ns| ns != 0)
        .or_else(|| pid_namespace_of(pid))
        .unwrap_or(0);
    if stat.is_some() && ns != 0 {
        START.store(start, Ordering::Relaxed);
        NS.store(ns, Ordering::Relaxed);
        PROC_IS_OURS.store(u8::from(proc_is_ours), Ordering::Relaxed);
        FACTS_READ.store(1, Ordering::Release);
    }
    (start, ns, proc_is_ours)
}

/// Reads this process's start time and PID namespace now, while descriptors are
/// certainly available, rather than at its first lock (a process that has run out of
/// descriptors by then would record an unknown start time). Cheap when already read.
///
/// Runs at load time in every process that links the crate and in the fork handler of
/// every forked child; a child started another way can call it from its bootstrap.
pub(crate) fn read_process_facts() {
    process_facts(rustix::process::getpid().as_raw_nonzero().get() as u32);
}

/// `PIDFD_GET_PID_NAMESPACE` (`_IO(0xFF, 5)`, Linux 6.11): a descriptor of the PID
/// namespace of a pidfd's process.
const PIDFD_GET_PID_NAMESPACE: libc::c_ulong = 0xFF05;

/// The PID namespace of process `pid` (of our namespace) without `/proc`: the inode of
/// the namespace its pidfd names. `None` on older kernels or without descriptors.
fn pid_namespace_of(pid: u32) -> Option<u32> {
    let pidfd = rustix::process::pidfd_open(as_pid(pid)?, PidfdFlags::empty()).ok()?;
    // SAFETY: the ioctl takes no argument and only returns a new descriptor (or -1);
    // `pidfd` is a valid open pidfd for the duration of the call.
    let raw = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_PID_NAMESPACE as _, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a non-negative return is a new descriptor that nothing else owns.
    let nsfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = rustix::fs::fstat(&nsfd).ok()?;
    u32::try_from(st.st_ino).ok().filter(|&ns| ns != 0)
}

/// The inode of the initial time namespace (`PROC_TIME_INIT_INO`).
const INITIAL_TIME_NS: u64 = 0xEFFF_FFFA;

/// Whether start times in `/proc` are free of a time namespace's offset: the initial
/// time namespace, or a kernel without time namespaces.
fn in_initial_time_namespace() -> bool {
    match rustix::fs::stat("/proc/self/ns/time") {
        Ok(st) => st.st_ino == INITIAL_TIME_NS,
        Err(e) => e == Errno::NOENT,
    }
}

extern "C" fn after_fork_in_child() {
    // The child is another process (and, after `unshare(CLONE_NEWPID)` in the parent,
    // possibly in another namespace): its facts are read again, now, while the child
    // still has its parent's descriptors free (see `read_process_facts`).
    FACTS_READ.store(0, Ordering::Relaxed);
    ME.set(None);
    read_process_facts();
}

/// Makes every child created by `fork` (however it was called) forget the cached
/// identity of its parent and read its own, and reads this process's facts. Called
/// once per process, from the load-time hook.
pub(crate) fn register_fork_handler() {
    read_process_facts();
    // SAFETY: the handler is a plain function that only stores to an atomic and resets
    // a thread-local cell of the forking thread, both valid in the freshly forked child.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    }
}

/// The fields of `/proc/<pid>/stat` that owner checks need.
struct Stat {
    pid: u32,
    zombie: bool,
    start: u64,
}

/// Reads a `/proc/<pid>/stat` file; `None` if it cannot be read or parsed. Allocates
/// nothing (see `process_facts`).
fn read_stat_at(path: &str) -> Option<Stat> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    // The whole file is a few hundred bytes, and the kernel produces it in one read.
    let mut buf = [0u8; 1024];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    parse_stat(&buf[..n])
}

/// Reads `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<Stat> {
    read_stat_at(&format!("/proc/{pid}/stat"))
}

fn parse_stat(stat: &[u8]) -> Option<Stat> {
    fn num<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
        std::str::from_utf8(field).ok()?.parse().ok()
    }
    let pid = num(stat.split(|&b| b == b' ').next()?)?;
    // The command name (field 2) may contain spaces and parentheses: skip past its end.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut rest = stat[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = rest.next()?;
    // Field 22 is the start time: 19 fields after the state (field 3).
    let start = num(rest.nth(18)?)?;
    Some(Stat {
        pid,
        zombie: matches!(state, b"Z" | b"X" | b"x"),
        start,
    })
}

/// What `kill(pid, 0)` (or `tgkill`) says about a process or thread.
#[derive(PartialEq, Eq)]
enum Probe {
    /// `ESRCH`: there is no such process or thread in our namespace.
    Gone,
    /// It exists (or the answer says nothing: `EPERM` means it exists too).
    NotGone,
}

/// `id` as a process or thread id: positive, within `pid_t`.
fn as_pid(id: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(id).ok()?)
}

fn probe_kill(pid: u32) -> Probe {
    match as_pid(pid) {
        // Linux accepts any thread id here, not only a process id.
        Some(p) if rustix::process::test_kill_process(p) == Err(Errno::SRCH) => Probe::Gone,
        _ => Probe::NotGone,
    }
}

fn probe_tgkill(pid: u32, tid: u32) -> Probe {
    if as_pid(pid).is_none() || as_pid(tid).is_none() {
        return Probe::NotGone;
    }
    // SAFETY: tgkill with signal 0 sends nothing; it only checks that thread `tid`
    // exists in thread group `pid`. No memory is passed.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid as libc::c_int, tid as libc::c_int, 0) };
    if rc == -1 && Errno::from_io_error(&std::io::Error::last_os_error()) == Some(Errno::SRCH) {
        Probe::Gone
    } else {
        Probe::NotGone
    }
}

/// Whether process `pid` still exists (a zombie not yet reaped counts as existing; a
/// process of another user too). Used to skip the records of waiters that died.
pub(crate) fn process_exists(pid: u32) -> bool {
    pid != 0 && probe_kill(pid) == Probe::NotGone
}

/// Whether `ns` names the caller's PID namespace (an unknown one names none).
pub(crate) fn same_namespace(ns: u32) -> bool {
    let mine = me().id.ns;
    ns != 0 && ns == mine
}

/// The holder of a lock, as the lock word and its record show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The full record is published.
    Recorded(Identity),
    /// Only the lock word names the holder: it took the lock and has not (yet, or ever)
    /// written its record.
    Unrecorded {
        /// The holder's thread id.
        tid: u32,
        /// The holder's PID namespace.
        ns: u32,
    },
}

/// Watches one owner across the checks of one wait. Holds, once it could be opened, a
/// pidfd of the process at the owner's pid, so that later checks open no file.
///
/// Why a pidfd proves death without the start time: it is opened after the owner
/// recorded its pid, so it names either the owner's process or a process that got the
/// pid after the owner's had ended. Once it is readable (that process exited, zombie
/// or reaped), the owner's process has ended in both cases. The start time is needed
/// only against the opposite mistake: a reused pid taken for a live owner.
pub(crate) struct Watch {
    owner: Owner,
    pidfd: Option<OwnedFd>,
    /// Whether the pidfd was checked against the owner's recorded start time.
    verified: bool,
}

impl Watch {
    /// A watch of `owner`; nothing is opened before the first check.
    pub(crate) fn new(owner: Owner) -> Watch {
        Watch {
            owner,
            pidfd: None,
            verified: false,
        }
    }

    /// The owner watched.
    pub(crate) fn owner(&self) -> Owner {
        self.owner
    }

    /// True only when the owner is known to have died. False means alive, or unknown.
    pub(crate) fn owner_dead(&mut self) -> bool {
        let me = me();
        match self.owner {
            Owner::Unrecorded { tid, ns } => {
                if ns == 0 || ns != me.id.ns || as_pid(tid).is_none() {
                    return false;
                }
                if probe_kill(tid) == Probe::Gone {
                    return true;
                }
                // Whatever task has this id now: if it is a zombie, it is either the
                // holder (ended) or another task (the holder is gone). Without `/proc`
                // of our namespace, a pidfd tells the same when the id is a process id
                // (a thread id is refused, and proves nothing).
                if me.proc_is_ours && read_stat(tid).is_some_and(|s| s.zombie) {
                    return true;
                }
                self.pidfd_says_dead(tid)
            }
            Owner::Recorded(o) => self.recorded_dead(o, me),
        }
    }

    fn recorded_dead(&mut self, o: Identity, me: Me) -> bool {
        if o.ns == 0 || o.ns != me.id.ns {
            return false;
        }
        // Not a process id (a corrupt record): it proves nothing, and a negative number
        // would name a process group.
        let (Some(_), Some(_)) = (as_pid(o.pid), as_pid(o.tid)) else {
            return false;
        };
        // No process, or no such thread in the process at that pid: whether the pid is
        // still the owner's process or was reused, the owner thread is gone.
        if probe_kill(o.pid) == Probe::Gone || probe_tgkill(o.pid, o.tid) == Probe::Gone {
            return true;
        }
        if self.pidfd_says_dead(o.pid) {
            return true;
        }
        // Start times compare only when both sides could record theirs (see
        // `process_facts`: a time namespace makes it unknown), and only through a
        // `/proc` of our namespace. Read after the pidfd was opened: a process with the
        // owner's start time there means the pidfd is the owner's process.
        if !self.verified
            && self.pidfd.is_some()
            && o.start != 0
            && me.id.start != 0
            && me.proc_is_ours
            && let Some(st) = read_stat(o.pid)
        {
            if st.start != o.start {
                return true; // the pid names another process now
            }
            if st.zombie && o.tid == o.pid {
                return true; // the owner thread (the leader) has ended
            }
            self.verified = true;
        }
        false
    }

    /// Whether a pidfd of process `pid`, opened now or at an earlier check of this
    /// owner, shows that the process has exited (`ESRCH` from opening it too).
    fn pidfd_says_dead(&mut self, pid: u32) -> bool {
        if self.pidfd.is_none() {
            let Some(p) = as_pid(pid) else {
                return false;
            };
            match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
                Ok(fd) => self.pidfd = Some(fd),
                Err(Errno::SRCH) => return true,
                // Out of descriptors, or not a process id: unknown, tried again later.
                Err(_) => return false,
            }
        }
        // Readable once the whole process has exited, zombie or reaped.
        self.pidfd.as_ref().is_some_and(|fd| {
            let mut pfd = [PollFd::new(fd, PollFlags::IN)];
            matches!(rustix::event::poll(&mut pfd, Some(&Default::default())), Ok(n) if n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_alive_and_a_finished_one_is_dead() {
        let me = me().id;
        assert!(me.start != 0 && me.ns != 0, "{me:?}");
        assert!(!Watch::new(Owner::Recorded(me)).owner_dead());
        assert!(
            !Watch::new(Owner::Unrecorded {
                tid: me.tid,
                ns: me.ns
            })
            .owner_dead()
        );
        let other = std::thread::spawn(|| super::me().id).join().unwrap();
        assert!(Watch::new(Owner::Recorded(other)).owner_dead());
        assert!(
            Watch::new(Owner::Unrecorded {
                tid: other.tid,
                ns: other.ns
            })
            .owner_dead()
        );
    }

    #[test]
    fn an_owner_in_another_namespace_or_with_another_start_time() {
        let me = me().id;
        // Another namespace: nothing can be proven, whatever the pid says here.
        let foreign = Identity {
            ns: me.ns ^ 1,
            tid: u32::MAX >> 10,
            pid: u32::MAX >> 10,
            ..me
        };
        assert!(!Watch::new(Owner::Recorded(foreign)).owner_dead());
        // Our pid, but another start time: the process that held the pid is gone.
        let reused = Identity {
            start: me.start + 1,
            ..me
        };
        assert!(Watch::new(Owner::Recorded(reused)).owner_dead());
        // An unknown start time cannot tell a reused pid: not dead.
        assert!(!Watch::new(Owner::Recorded(Identity { start: 0, ..me })).owner_dead());
    }

    #[test]
    fn a_zombie_owner_with_an_unknown_start_time_is_dead() {
        let me = me().id;
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = child.id();
        // A holder that could not read its start time (out of descriptors, say).
        let owner = Owner::Recorded(Identity {
            tid: pid,
            pid,
            start: 0,
            ns: me.ns,
        });
        let mut watch = Watch::new(owner);
        assert!(!watch.owner_dead());
        child.kill().unwrap();
        // Killed but not reaped: a zombie that only this process would reap.
        let mut dead = false;
        for _ in 0..100 {
            if watch.owner_dead() && Watch::new(owner).owner_dead() {
                dead = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait().unwrap();
        assert!(dead, "a zombie owner was not found dead");
    }

    /// In a new PID namespace whose `/proc` was not remounted: forks the owner (pid 2
    /// there), learns its identity through a pipe, kills it and watches it as a zombie
    /// that only this process would reap. The exit code says what happened.
    fn watch_in_a_new_pid_namespace() -> i32 {
        use crate::sys::proc::{Forked, exit_now, fork};
        if me().proc_is_ours {
            return 3; // `/proc` must be of the outer namespace here
        }
        let (r, w) = rustix::pipe::pipe().unwrap();
        match fork().unwrap() {
            Forked::Child => {
                let id = me().id;
                let mut bytes = [0u8; 20];
                bytes[..4].copy_from_slice(&id.tid.to_ne_bytes());
                bytes[4..8].copy_from_slice(&id.pid.to_ne_bytes());
                bytes[8..12].copy_from_slice(&id.ns.to_ne_bytes());
                bytes[12..].copy_from_slice(&id.start.to_ne_bytes());
                let _ = rustix::io::write(&w, &bytes);
                std::thread::sleep(std::time::Duration::from_secs(60));
                exit_now(0)
            }
            Forked::Parent(owner) => {
                let mut bytes = [0u8; 20];
                if rustix::io::read(&r, &mut bytes) != Ok(20) {
                    return 6;
                }
                let word = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().unwrap());
                let id = Identity {
                    tid: word(0),
                    pid: word(4),
                    ns: word(8),
                    start: u64::from_ne_bytes(bytes[12..].try_into().unwrap()),
                };
                if id.pid != owner || id.ns != me().id.ns {
                    return 7;
                }
                let mut watch = Watch::new(Owner::Recorded(id));
                if watch.owner_dead() {
                    return 4; // alive, yet called dead
                }
                let _ = crate::sys::proc::send_signal(owner, libc::SIGKILL);
                for _ in 0..250 {
                    if watch.owner_dead() {
                        return 0;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                5 // never found dead
            }
        }
    }

    #[test]
    fn a_dead_owner_is_found_by_a_waiter_whose_proc_is_of_another_pid_namespace() {
        use crate::sys::proc::{Forked, exit_now, fork, reap, send_signal};
        let outer = match fork().unwrap() {
            Forked::Child => {
                // SAFETY: unshare(CLONE_NEWPID) only decides the namespace of this
                // process's later children; no memory is involved.
                if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                    exit_now(2);
                }
                let code = match fork() {
                    Ok(Forked::Child) => exit_now(watch_in_a_new_pid_namespace()),
                    Ok(Forked::Parent(first)) => reap(first, true).ok().flatten().unwrap_or(8),
                    Err(_) => 9,
                };
                exit_now(code)
            }
            Forked::Parent(pid) => pid,
        };
        let mut code = None;
        for _ in 0..600 {
            code = reap(outer, false).unwrap();
            if code.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let Some(code) = code else {
            let _ = send_signal(outer, libc::SIGKILL);
            let _ = reap(outer, true);
            panic!("the namespace test did not end within 30 s");
        };
        if code == 2 {
            // Only without the right to make PID namespaces (not root): nothing to test.
            eprintln!("skipped: unshare(CLONE_NEWPID) is not permitted here");
            return;
        }
        assert_eq!(code, 0, "1-9: see watch_in_a_new_pid_namespace");
    }

    #[test]
    fn the_pid_namespace_from_a_pidfd_is_the_one_proc_shows() {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        assert_eq!(pid_namespace_of(pid), Some(me().id.ns));
    }
}

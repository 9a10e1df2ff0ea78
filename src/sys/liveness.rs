//! Who a thread is, as other processes can name it, and whether such a thread still
//! runs: the facts behind owner-death detection of the crate's locks.
//!
//! A thread is named by its thread id, its process id, its process's start time (clock
//! ticks since boot: with the pid, it names a process even after the pid is reused) and
//! its PID namespace (the inode of `/proc/self/ns/pid`: pids mean something only inside
//! one namespace). The start time and the namespace are read once per process; the
//! per-thread identity is cached in a thread-local, and a forked child forgets both.
//!
//! Death is only ever concluded from a positive answer: `ESRCH` from `kill`/`tgkill` in
//! our own namespace, a pidfd of the owner's process that has become readable (it
//! exited), a process at the owner's pid whose start time differs (the pid was reused),
//! or a zombie. Anything else — `/proc` unreadable (out of descriptors, `hidepid`, not
//! mounted, mounted for another namespace), an owner in another PID namespace, an
//! owner whose start time could not be recorded — is "not known to be dead".

use std::cell::Cell;
use std::os::fd::OwnedFd;
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
fn process_facts(pid: u32) -> (u64, u32, bool) {
    if FACTS_READ.load(Ordering::Acquire) == 1 {
        return (
            START.load(Ordering::Relaxed),
            NS.load(Ordering::Relaxed),
            PROC_IS_OURS.load(Ordering::Relaxed) == 1,
        );
    }
    let stat = read_stat("self");
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
        .unwrap_or(0);
    if stat.is_some() && ns != 0 {
        START.store(start, Ordering::Relaxed);
        NS.store(ns, Ordering::Relaxed);
        PROC_IS_OURS.store(u8::from(proc_is_ours), Ordering::Relaxed);
        FACTS_READ.store(1, Ordering::Release);
    }
    (start, ns, proc_is_ours)
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
    // possibly in another namespace): everything is read again on first use.
    FACTS_READ.store(0, Ordering::Relaxed);
    ME.set(None);
}

/// Makes every child created by `fork` (however it was called) forget the cached
/// identity of its parent. Called once per process, from the load-time hook.
pub(crate) fn register_fork_handler() {
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

/// Reads `/proc/<which>/stat`; `None` if it cannot be read or parsed.
fn read_stat(which: &str) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its end.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?;
    // Field 22 is the start time: 19 fields after the state (field 3).
    let start = rest.nth(18)?.parse().ok()?;
    Some(Stat {
        pid,
        zombie: matches!(state, "Z" | "X" | "x"),
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

/// Watches one owner across the checks of one wait. Holds, once it could be verified,
/// a pidfd of the owner's process, so that later checks open no file.
pub(crate) struct Watch {
    owner: Owner,
    pidfd: Option<OwnedFd>,
}

impl Watch {
    /// A watch of `owner`; nothing is opened before the first check.
    pub(crate) fn new(owner: Owner) -> Watch {
        Watch { owner, pidfd: None }
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
                // holder (ended) or another task (the holder is gone).
                me.proc_is_ours && read_stat(&tid.to_string()).is_some_and(|s| s.zombie)
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
        let (Some(pid), Some(_)) = (as_pid(o.pid), as_pid(o.tid)) else {
            return false;
        };
        // No process, or no such thread in the process at that pid: whether the pid is
        // still the owner's process or was reused, the owner thread is gone.
        if probe_kill(o.pid) == Probe::Gone || probe_tgkill(o.pid, o.tid) == Probe::Gone {
            return true;
        }
        // Start times compare only when both sides could record theirs (see
        // `process_facts`: a time namespace makes it unknown).
        if self.pidfd.is_none() && o.start != 0 && me.id.start != 0 && me.proc_is_ours {
            let fd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                Ok(fd) => Some(fd),
                Err(Errno::SRCH) => return true,
                Err(_) => None,
            };
            if let Some(st) = read_stat(&o.pid.to_string()) {
                if st.start != o.start {
                    return true; // the pid names another process now
                }
                if st.zombie && o.tid == o.pid {
                    return true; // the owner thread (the leader) has ended
                }
                // Opened before a read that found the owner's start time: the pidfd is
                // the owner's process (the pid cannot have been reused in between,
                // since the owner's process started before either step).
                self.pidfd = fd;
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
}

//! Helpers shared by the integration tests (each test file is its own crate and uses
//! only some of them).
#![allow(dead_code)]

pub mod pool_behaviours;

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};

/// Every start method, in the order the tests try them.
pub const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Forkserver,
    StartMethod::Fork,
];

/// The start methods that do not fork the (multi-threaded) test process itself.
pub const CLEAN_METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Forkserver];

/// A bound for anything that should take milliseconds: generous, for a loaded machine.
pub const LONG: Duration = Duration::from_secs(60);

/// Joins `p`, giving up after [`LONG`]; on that failure path the child is killed and
/// reaped before the test panics, so no test leaves a process behind.
pub fn join_bounded(p: &mut Process, what: &str) {
    match p.join_timeout(LONG) {
        Ok(true) => {}
        Ok(false) => {
            let _ = p.kill();
            let _ = p.join();
            panic!("{what}: the child did not end within {LONG:?}");
        }
        Err(e) => panic!("{what}: join failed: {e:?}"),
    }
}

/// Kills `p` if it still runs and reaps it (for failure paths and cleanups).
pub fn kill_and_reap(p: &mut Process) {
    if p.pid().is_some() {
        let _ = p.kill();
        let _ = p.join_timeout(LONG);
    }
}

/// Kills a process and reaps it when dropped: a guard for children on failure paths.
pub struct KillOnDrop(pub Process);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// The state letter of process `pid` (`R`, `S`, `Z`, …), or `None` if it does not exist.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses; the state follows
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// The parent pid and state of process `pid`, from `/proc/<pid>/stat`.
pub fn ppid_and_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Children of this process that have ended but were not reaped.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(ppid_and_state(pid), Some((ppid, 'Z')) if ppid == me))
        .collect()
}

/// Whether process `pid` is gone: absent, or a zombie (it has ended; only its entry waits
/// for a reaper).
pub fn is_gone(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z'))
}

/// Polls until process `pid` is gone, for at most `within`. Returns whether it went.
pub fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if is_gone(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs an arbitrary pid through the `kill` command (for cleanup of grandchildren on
/// failure paths; the tests cannot call libc directly).
pub fn kill_pid(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
}

/// This process's open descriptors, each with what it points to, sorted.
pub fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// This process with (almost) no descriptor left: the soft limit lowered to 64 and every
/// free number taken by `/dev/null`, but for `free` of them. Dropping it closes them and
/// puts the limit back.
pub struct DescriptorsUsedUp {
    files: Vec<std::fs::File>,
    limit: rustix::process::Rlimit,
}

impl DescriptorsUsedUp {
    /// Uses up every descriptor but `free`.
    pub fn leaving(free: usize) -> DescriptorsUsedUp {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(64),
                maximum: limit.maximum,
            },
        )
        .unwrap();
        let mut files = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            files.push(f);
        }
        files.truncate(files.len().saturating_sub(free));
        DescriptorsUsedUp { files, limit }
    }
}

impl Drop for DescriptorsUsedUp {
    fn drop(&mut self) {
        self.files.clear();
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, self.limit);
    }
}

/// How long a blocked thread is left blocked by [`cpu_while_blocked`].
pub const BLOCKED_FOR: Duration = Duration::from_millis(1500);

/// Runs `block` on a new thread, lets it block for [`BLOCKED_FOR`], then calls `release`
/// (which must end the block) and returns the CPU time the blocked thread used (its own
/// thread clock, read before and after `block`) and the wall time `block` took.
pub fn cpu_while_blocked(
    block: impl FnOnce() + Send + 'static,
    release: impl FnOnce(),
) -> (Duration, Duration) {
    fn thread_cpu() -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }
    let blocked = std::thread::spawn(move || {
        let (cpu, wall) = (thread_cpu(), Instant::now());
        block();
        (thread_cpu() - cpu, wall.elapsed())
    });
    std::thread::sleep(BLOCKED_FOR);
    release();
    blocked.join().expect("the blocked thread panicked")
}

/// Asserts that a thread blocked for about [`BLOCKED_FOR`] used little CPU meanwhile
/// (under a fifth of the wall time: a loose bound, for a loaded machine), and that it
/// really blocked.
pub fn assert_idle_while_blocked(what: &str, (cpu, wall): (Duration, Duration)) {
    assert!(
        wall >= BLOCKED_FOR / 2,
        "{what}: returned after {wall:?}, before it was released"
    );
    assert!(
        cpu * 5 < wall,
        "{what}: used {cpu:?} of CPU while blocked for {wall:?}"
    );
}

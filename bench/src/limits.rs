//! The bare-syscall limits: what the kernel charges for the work itself, with no library
//! around it. These are the only places in the crate that call `libc` directly, besides
//! the signals that stop a launch (`launch.rs`) and `mpirun`'s root check
//! (`workloads/mpi_pool.rs`).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When this variable is set, the bench binary exits as the first statement of `main`:
/// re-executing it measures what a spawn costs the kernel and the loader.
pub const EXIT_AT_ONCE_ENV: &str = "MULTIPROC_BENCH_EXIT_AT_ONCE";

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Waits for `pid` and checks that it exited with status 0.
fn wait_ok(pid: libc::pid_t) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; waiting for our own child has no other effect.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "child {pid} ended with wait status {status:#x}"
        )))
    }
}

/// `posix_spawn` of this very binary (`/proc/self/exe`) with [`EXIT_AT_ONCE_ENV`] set,
/// then `waitpid`: the floor under any spawn start method.
pub struct SelfSpawn {
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl SelfSpawn {
    /// Prepares the arguments and environment once, outside the timed part.
    pub fn new() -> io::Result<SelfSpawn> {
        let argv0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("multiproc-bench"));
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(cstring(kv)?);
        }
        env.push(cstring(format!("{EXIT_AT_ONCE_ENV}=1").into_bytes())?);
        Ok(SelfSpawn {
            argv: vec![cstring(argv0.into_vec())?],
            env,
        })
    }

    /// Starts the binary and waits for it to exit.
    pub fn run(&self) -> io::Result<()> {
        let mut argv: Vec<*mut libc::c_char> =
            self.argv.iter().map(|c| c.as_ptr().cast_mut()).collect();
        argv.push(ptr::null_mut());
        let mut envp: Vec<*mut libc::c_char> =
            self.env.iter().map(|c| c.as_ptr().cast_mut()).collect();
        envp.push(ptr::null_mut());
        let mut pid: libc::pid_t = 0;
        // SAFETY: the path is a NUL-terminated string, `argv` and `envp` are NULL-terminated
        // arrays of NUL-terminated strings owned by `self`, which outlives the call; null
        // file actions and attributes are allowed and mean "none".
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                c"/proc/self/exe".as_ptr(),
                ptr::null(),
                ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        wait_ok(pid)
    }
}

/// `fork()`, `_exit(0)` in the child, `waitpid` in the parent: the floor under the fork
/// and forkserver start methods.
pub fn fork_exit_wait() -> io::Result<()> {
    // SAFETY: the child calls only `_exit`, which is async-signal-safe, so forking a
    // process that may have other threads is sound.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: ends the forked child at once, running nothing of the parent's.
            unsafe { libc::_exit(0) }
        }
        pid => wait_ok(pid),
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at end of stream before the first byte.
fn read_full(fd: RawFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        match n {
            0 if got == 0 => return Ok(false),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => got += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(true)
}

/// Writes all of `buf`.
fn write_full(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        let rest = &buf[put..];
        // SAFETY: `rest` is a valid readable buffer of `rest.len()` bytes.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n >= 0 {
            put += n as usize;
        } else {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// How long a busy-polling side of a floor spins with nothing to read before it sleeps
/// in the kernel: far longer than a round trip, so a batch never sleeps, and short
/// enough that an idle floor child does not take a CPU from the contenders measured
/// after it.
const IDLE_SPIN: Duration = Duration::from_millis(2);

/// Spin iterations between two readings of the clock.
const CLOCK_EVERY: u32 = 64;

/// Reads exactly `buf.len()` bytes by busy-polling: non-blocking `recv` in a loop, with
/// no sleep and no yield. After `idle` without a byte (`None`: never) the rest is read
/// blocking; after `give_up` (`None`: never) it fails with `TimedOut`. `Ok(false)` at end
/// of stream before the first byte.
fn recv_full_polling(
    fd: RawFd,
    buf: &mut [u8],
    idle: Option<Duration>,
    give_up: Option<Duration>,
) -> io::Result<bool> {
    let mut got = 0;
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), libc::MSG_DONTWAIT) };
        match n {
            0 if got == 0 => return Ok(false),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => {
                got += n as usize;
                continue;
            }
            _ => {}
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
        spins += 1;
        if spins % CLOCK_EVERY != 0 {
            continue;
        }
        let waited = since.get_or_insert_with(Instant::now).elapsed();
        if give_up.is_some_and(|g| waited >= g) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the busy-polling echo does not answer",
            ));
        }
        if idle.is_some_and(|i| waited >= i) {
            return match read_full(fd, &mut buf[got..])? {
                false if got > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
                more => Ok(more || got > 0),
            };
        }
    }
    Ok(true)
}

/// How a [`SocketpairEcho`] waits for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoWait {
    /// Blocking `read`: each side sleeps in the kernel until the message arrives.
    Blocking,
    /// Busy-polling: each side spins on non-blocking `recv` (no sleep, no yield); the
    /// child sleeps only after [`IDLE_SPIN`] without a message, between batches.
    BusyPoll,
}

/// A forked child that echoes fixed-size messages on a Unix stream socket pair.
/// Blocking, it is the limit under any message round trip that sleeps in the kernel;
/// busy-polling, the floor under any round trip through a socket.
pub struct SocketpairEcho {
    fd: Option<OwnedFd>,
    pid: libc::pid_t,
    wait: EchoWait,
    msg: Vec<u8>,
    buf: Vec<u8>,
}

impl SocketpairEcho {
    /// Starts the echoing child; every message is `msg_len` bytes.
    pub fn start(msg_len: usize, wait: EchoWait) -> io::Result<SocketpairEcho> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid out-array of two descriptors.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (mine, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Allocate before forking: the child must not allocate.
        let mut echo_buf = vec![0u8; msg_len];
        // SAFETY: the child calls only async-signal-safe functions (close_range, read, recv,
        // write, clock_gettime, _exit) on memory allocated before the fork, and builds no
        // error that allocates (its polling read has no give-up time), so forking a
        // process that may have other threads is sound.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                let fd = theirs.as_raw_fd();
                // Keep only this child's end: the parent's end, and the ends of echoes
                // started earlier, must close when their owner closes them, or an earlier
                // echo child never sees the end of its stream.
                let keep = fd as libc::c_uint;
                // SAFETY: closes descriptor numbers of this forked child only (close_range
                // is async-signal-safe); the `OwnedFd`s among them are never dropped in
                // the child, which leaves with `_exit`.
                unsafe {
                    if keep > 3 {
                        libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, keep - 1, 0);
                    }
                    libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
                }
                let mut resting = false;
                let code = loop {
                    let got = match wait {
                        EchoWait::BusyPoll if !resting => {
                            recv_full_polling(fd, &mut echo_buf, Some(IDLE_SPIN), None)
                        }
                        _ => read_full(fd, &mut echo_buf),
                    };
                    match got {
                        Ok(true) => {}
                        Ok(false) => break 0,
                        Err(_) => break 1,
                    }
                    // A rest message is not answered; the next message is awaited asleep.
                    resting = echo_buf.iter().all(|&b| b == REST_BYTE);
                    if resting {
                        continue;
                    }
                    if write_full(fd, &echo_buf).is_err() {
                        break 1;
                    }
                };
                // SAFETY: ends the forked child without running anything of the parent's.
                unsafe { libc::_exit(code) }
            }
            pid => {
                drop(theirs);
                Ok(SocketpairEcho {
                    fd: Some(mine),
                    pid,
                    wait,
                    msg: vec![0x5a; msg_len],
                    buf: vec![0; msg_len],
                })
            }
        }
    }

    /// `n` round trips: write a message, read the echo.
    pub fn round_trips(&mut self, n: usize) -> io::Result<()> {
        let fd = self.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        for _ in 0..n {
            write_full(fd, &self.msg)?;
            let more = match self.wait {
                EchoWait::Blocking => read_full(fd, &mut self.buf)?,
                EchoWait::BusyPoll => {
                    recv_full_polling(fd, &mut self.buf, None, Some(ANSWER_TIMEOUT))?
                }
            };
            if !more {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Tells a busy-polling child to wait for the next message asleep, so that it leaves
    /// the CPUs to whatever is measured next (no answer comes back).
    pub fn rest(&mut self) -> io::Result<()> {
        if self.wait == EchoWait::BusyPoll {
            let fd = self.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
            write_full(fd, &vec![REST_BYTE; self.msg.len()])?;
        }
        Ok(())
    }

    /// Closes the socket, which ends the child, and reaps it.
    pub fn close(mut self) -> io::Result<()> {
        self.fd.take();
        wait_ok(self.pid)
    }
}

/// Every byte of the message that tells a busy-polling echo child to rest (the messages
/// of the round trips are other bytes).
const REST_BYTE: u8 = 0xff;

// ---- futexes in a page shared with forked children ----

/// The size of a [`SharedPage`].
const PAGE: usize = 4096;

/// One page of anonymous memory shared with forked children (`MAP_SHARED |
/// MAP_ANONYMOUS`), zeroed, seen as 32-bit atomic words.
pub struct SharedPage {
    base: NonNull<AtomicU32>,
}

/// Maps `len` bytes of fresh anonymous memory shared with forked children (`MAP_SHARED |
/// MAP_ANONYMOUS`): zeroed and page-aligned. The caller unmaps it.
fn map_shared(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a new anonymous mapping at an address of the kernel's choosing touches no
    // memory that exists already.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave null"))
}

impl SharedPage {
    /// Maps a fresh page.
    pub fn new() -> io::Result<SharedPage> {
        Ok(SharedPage {
            base: map_shared(PAGE)?.cast(),
        })
    }

    /// The `i`th 32-bit word of the page.
    pub fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < PAGE / 4, "word {i} is outside the page");
        // SAFETY: the mapping is `PAGE` readable and writable bytes, page-aligned and
        // zero-filled, and lives as long as `self`; word `i` lies inside it. `AtomicU32` has
        // the size and alignment of `u32`, any bit pattern is valid, and every access to the
        // page (here and in forked children) goes through atomics.
        unsafe { &*self.base.as_ptr().add(i) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), PAGE) };
    }
}

/// `FUTEX_WAIT` while `*word == expected`, at most `timeout` (`None`: no limit). The
/// shared (not private) operation: the word is seen by several processes. `false` when
/// the timeout passed.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    let tsp = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned 32-bit word for the whole call, and `tsp` is null
    // or points to a timespec that outlives the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ETIMEDOUT)
}

/// `FUTEX_WAKE` of at most `n` waiters on `word`.
fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a valid, aligned 32-bit word; waking reads and writes no memory.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}

/// Takes the bare futex lock in `w` (0 free, 1 held, 2 held with sleepers): a
/// compare-and-swap 0 → 1; when held, mark it contended and sleep until it is free.
#[inline]
fn bare_lock(w: &AtomicU32) {
    if w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return;
    }
    while w.swap(2, Ordering::Acquire) != 0 {
        futex_wait(w, 2, None);
    }
}

/// Releases the bare futex lock in `w`: a swap to 0, and a `FUTEX_WAKE` only when it was
/// contended.
#[inline]
fn bare_unlock(w: &AtomicU32) {
    if w.swap(0, Ordering::Release) == 2 {
        futex_wake(w, 1);
    }
}

/// Forks a child that runs `child` and leaves with `_exit(child())`.
///
/// # Safety
///
/// `child` must do only what is sound in the forked child of a process that may have
/// other threads: no allocation, no locks, only atomics and async-signal-safe calls.
unsafe fn fork_with(child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: the caller promises that `child` is async-signal-safe, and the child leaves
    // with `_exit`, running nothing else of the parent's.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = child();
            // SAFETY: ends the forked child without running anything of the parent's.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

/// Forks a child for each closure of `children`, runs `parent` (given how many were
/// started) once all are, then reaps them all, killing them first if a fork or `parent`
/// failed. The first error wins.
///
/// # Safety
///
/// As [`fork_with`], for every closure.
unsafe fn with_children<C, T>(
    children: impl IntoIterator<Item = C>,
    parent: impl FnOnce(usize) -> io::Result<T>,
) -> io::Result<T>
where
    C: FnOnce() -> i32,
{
    let mut pids = Vec::new();
    let mut outcome = Ok(());
    for child in children {
        // SAFETY: the caller's promise, for this closure.
        match unsafe { fork_with(child) } {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let done = outcome.and_then(|()| parent(pids.len()));
    if done.is_err() {
        for &pid in &pids {
            // SAFETY: kills our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mut reaped = Ok(());
    for pid in pids {
        let r = wait_ok(pid);
        if reaped.is_ok() {
            reaped = r;
        }
    }
    let value = done?;
    reaped?;
    Ok(value)
}

/// The `lock_uncontended` limit: the bare futex lock in a shared page.
pub struct BareLock {
    page: SharedPage,
}

impl BareLock {
    /// A free lock in a fresh shared page.
    pub fn new() -> io::Result<BareLock> {
        Ok(BareLock {
            page: SharedPage::new()?,
        })
    }

    /// `n` acquisitions, each released at once.
    pub fn acquire_release(&self, n: usize) {
        let w = self.page.word(0);
        for _ in 0..n {
            bare_lock(std::hint::black_box(w));
            bare_unlock(w);
        }
    }
}

/// The `value_contended` limit: `procs` forked processes each add 1 to a counter
/// `per_proc` times, each time under the bare futex lock, the lock and the counter in one
/// shared page. The children wait at a start gate until all are ready, so that they
/// really contend. Returns the final count and the time from opening the gate to the
/// last `waitpid`.
pub fn futex_mutex_increments(procs: usize, per_proc: u32) -> io::Result<(u32, Duration)> {
    let page = SharedPage::new()?;
    let (lock, count, ready, go) = (page.word(0), page.word(1), page.word(16), page.word(32));
    let mut pids = Vec::with_capacity(procs);
    let mut failed = None;
    for _ in 0..procs {
        // SAFETY: the child only uses atomics and futex syscalls on the shared page, which
        // was mapped before the fork.
        let forked = unsafe {
            fork_with(|| {
                ready.fetch_add(1, Ordering::AcqRel);
                if wait_nonzero(go, IDLE_TIMEOUT).is_none() {
                    return 1;
                }
                for _ in 0..per_proc {
                    bare_lock(lock);
                    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                    bare_unlock(lock);
                }
                0
            })
        };
        match forked {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while (ready.load(Ordering::Acquire) as usize) < pids.len() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let started = Instant::now();
    go.store(1, Ordering::Release);
    futex_wake(go, i32::MAX);
    for pid in pids {
        wait_ok(pid)?;
    }
    let elapsed = started.elapsed();
    match failed {
        Some(e) => Err(e),
        None => Ok((count.load(Ordering::Acquire), elapsed)),
    }
}

/// Words of a [`FutexPingPong`] page: the parent's ping, the child's pong.
const PING: usize = 0;
const PONG: usize = 1;
/// Values of the ping word: the child should answer, or end.
const GO: u32 = 1;
const STOP: u32 = 2;
/// A [`SpinPingPong`] ping: sleep until the next batch.
const REST: u32 = 3;
/// How long one side waits for the other before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the child waits for the next ping before it ends by itself.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `w` is not 0 and returns its value; `None` if `timeout` passes first.
fn wait_nonzero(w: &AtomicU32, timeout: Duration) -> Option<u32> {
    loop {
        let v = w.load(Ordering::Acquire);
        if v != 0 {
            return Some(v);
        }
        if !futex_wait(w, 0, Some(timeout)) {
            let v = w.load(Ordering::Acquire);
            return (v != 0).then_some(v);
        }
    }
}

/// The `event_pingpong` limit: the parent and a forked child alternate on two words of a
/// shared page. Each side sets the other's word, wakes it with `FUTEX_WAKE`, and sleeps in
/// `FUTEX_WAIT` on its own word until it is set, then clears it: a blocking round trip
/// with nothing around the futex.
pub struct FutexPingPong {
    page: SharedPage,
    pid: Option<libc::pid_t>,
}

impl FutexPingPong {
    /// Starts the answering child.
    pub fn start() -> io::Result<FutexPingPong> {
        let page = SharedPage::new()?;
        let (ping, pong) = (page.word(PING), page.word(PONG));
        // SAFETY: the child only uses atomics and futex syscalls on the shared page, which
        // was mapped before the fork.
        let pid = unsafe {
            fork_with(|| {
                loop {
                    match wait_nonzero(ping, IDLE_TIMEOUT) {
                        Some(GO) => {
                            ping.store(0, Ordering::Relaxed);
                            pong.store(GO, Ordering::Release);
                            futex_wake(pong, 1);
                        }
                        Some(_) => break 0,
                        None => break 1,
                    }
                }
            })
        }?;
        Ok(FutexPingPong {
            page,
            pid: Some(pid),
        })
    }

    /// `n` round trips.
    pub fn round_trips(&mut self, n: usize) -> io::Result<()> {
        let (ping, pong) = (self.page.word(PING), self.page.word(PONG));
        for _ in 0..n {
            ping.store(GO, Ordering::Release);
            futex_wake(ping, 1);
            if wait_nonzero(pong, ANSWER_TIMEOUT).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the futex ping-pong child does not answer",
                ));
            }
            pong.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Tells the child to end, and reaps it.
    pub fn close(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        match self.pid.take() {
            Some(pid) => {
                let ping = self.page.word(PING);
                ping.store(STOP, Ordering::Release);
                futex_wake(ping, 1);
                wait_ok(pid)
            }
            None => Ok(()),
        }
    }
}

impl Drop for FutexPingPong {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Words of a [`SpinPingPong`] page: the parent's ping and the child's pong, side by side
/// in one cache line (faster here than a line each), and the child's "asleep" flag on a
/// line of its own.
const SPIN_PING: usize = 0;
const SPIN_PONG: usize = 1;
const SPIN_ASLEEP: usize = 32;

/// Spins on loads of `w` until it is not 0 and returns its value; `None` once `limit`
/// passes. The clock is read only every [`CLOCK_EVERY`] × 64 loads.
fn spin_nonzero(w: &AtomicU32, limit: Duration) -> Option<u32> {
    let mut since: Option<Instant> = None;
    loop {
        for _ in 0..CLOCK_EVERY * 64 {
            let v = w.load(Ordering::Acquire);
            if v != 0 {
                return Some(v);
            }
        }
        if since.get_or_insert_with(Instant::now).elapsed() >= limit {
            return None;
        }
    }
}

/// The `event_pingpong` floor: the parent and a forked child alternate on two words of a
/// shared page, each side spinning on loads of its own word (no pause, no syscall) and
/// storing into the other's. Between batches the idle child sleeps in `FUTEX_WAIT` (after
/// [`IDLE_SPIN`]), so that it does not take a CPU from the contenders measured meanwhile;
/// [`wake`](Self::wake) brings it back before a batch, outside the timed part.
pub struct SpinPingPong {
    page: SharedPage,
    pid: Option<libc::pid_t>,
}

impl SpinPingPong {
    /// Starts the answering child.
    pub fn start() -> io::Result<SpinPingPong> {
        let page = SharedPage::new()?;
        let (ping, pong, asleep) = (
            page.word(SPIN_PING),
            page.word(SPIN_PONG),
            page.word(SPIN_ASLEEP),
        );
        // SAFETY: the child only uses atomics, clock_gettime and futex syscalls on the
        // shared page, which was mapped before the fork.
        let pid = unsafe {
            fork_with(|| {
                loop {
                    match spin_nonzero(ping, IDLE_SPIN) {
                        Some(GO) => {
                            ping.store(0, Ordering::Relaxed);
                            pong.store(GO, Ordering::Release);
                            continue;
                        }
                        Some(REST) => {
                            // Unless the next ping came already.
                            let _ =
                                ping.compare_exchange(REST, 0, Ordering::SeqCst, Ordering::SeqCst);
                        }
                        Some(_) => break 0,
                        None => {}
                    }
                    // Announce the sleep, then look once more: a ping stored before the
                    // announcement is seen here, one stored after it finds the flag and
                    // wakes this side.
                    asleep.store(1, Ordering::SeqCst);
                    if ping.load(Ordering::SeqCst) == 0
                        && !futex_wait(asleep, 1, Some(IDLE_TIMEOUT))
                        && ping.load(Ordering::SeqCst) == 0
                    {
                        break 1;
                    }
                    asleep.store(0, Ordering::SeqCst);
                }
            })
        }?;
        Ok(SpinPingPong {
            page,
            pid: Some(pid),
        })
    }

    /// Tells the child to sleep at once, so that it leaves the CPUs to whatever is
    /// measured next.
    pub fn rest(&self) {
        self.page.word(SPIN_PING).store(REST, Ordering::SeqCst);
    }

    /// Wakes the child if it sleeps, so that the next batch finds it spinning.
    pub fn wake(&self) {
        let asleep = self.page.word(SPIN_ASLEEP);
        if asleep.swap(0, Ordering::SeqCst) == 1 {
            futex_wake(asleep, 1);
        }
    }

    /// `n` round trips.
    pub fn round_trips(&mut self, n: usize) -> io::Result<()> {
        let (ping, pong) = (self.page.word(SPIN_PING), self.page.word(SPIN_PONG));
        for _ in 0..n {
            ping.store(GO, Ordering::Release);
            // A child that fell asleep just as this ping came is woken after a while.
            if spin_nonzero(pong, IDLE_SPIN).is_none() {
                self.wake();
                if spin_nonzero(pong, ANSWER_TIMEOUT).is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the spinning ping-pong child does not answer",
                    ));
                }
            }
            pong.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Tells the child to end, and reaps it.
    pub fn close(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        match self.pid.take() {
            Some(pid) => {
                self.page.word(SPIN_PING).store(STOP, Ordering::SeqCst);
                self.wake();
                wait_ok(pid)
            }
            None => Ok(()),
        }
    }
}

impl Drop for SpinPingPong {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// ---- single-producer, single-consumer rings of u64 in shared memory ----

/// Slots of a bare ring: a power of two (32 KiB of `u64`).
const RING_SLOTS: u64 = 1 << 12;
/// The distance between the ring's head and tail indices: two cache lines, so that neither
/// the line nor its prefetched neighbour holds the other index.
const RING_LINE: usize = 128;
/// Bytes of one ring in the mapping: the head's line pair, the tail's, then the slots.
const RING_BYTES: usize = 2 * RING_LINE + RING_SLOTS as usize * 8;
/// Failed checks of an index between two `sched_yield`s of a waiting side.
const YIELD_EVERY: u32 = 64;

/// One ring of a [`BareRings`] mapping, as both sides see it.
#[derive(Clone, Copy)]
struct RingView {
    base: NonNull<u8>,
}

impl RingView {
    /// The word at byte `offset` of the ring.
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset < RING_BYTES && offset % 8 == 0);
        // SAFETY: `base` is the start of a ring of `RING_BYTES` bytes inside a live,
        // page-aligned shared mapping (its owner, `BareRings`, outlives every view, and a
        // forked child keeps its copy of the mapping until it exits); `offset` is inside the
        // ring and 8-aligned. `AtomicU64` has the size and alignment of `u64`, any bit
        // pattern is valid, and every access to the ring (in the parent and in the
        // children) goes through atomics.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// How many items the producer has written: only the producer stores it.
    fn head(&self) -> &AtomicU64 {
        self.word(0)
    }

    /// How many items the consumer has taken: only the consumer stores it.
    fn tail(&self) -> &AtomicU64 {
        self.word(RING_LINE)
    }

    /// The slot of the item with index `i`.
    fn slot(&self, i: u64) -> &AtomicU64 {
        self.word(2 * RING_LINE + (i & (RING_SLOTS - 1)) as usize * 8)
    }
}

/// Waits until `ready()` gives a value: spins on it (a pause instruction between checks),
/// yields the CPU with `sched_yield` every [`YIELD_EVERY`] checks so that a waiting side
/// never holds a CPU that the other side needs, and gives up (`None`) after `limit`.
fn spin_for(mut ready: impl FnMut() -> Option<u64>, limit: Duration) -> Option<u64> {
    let mut since: Option<Instant> = None;
    loop {
        for _ in 0..CLOCK_EVERY {
            for _ in 0..YIELD_EVERY {
                if let Some(v) = ready() {
                    return Some(v);
                }
                std::hint::spin_loop();
            }
            // SAFETY: sched_yield takes no arguments and only reschedules the caller.
            unsafe { libc::sched_yield() };
        }
        if since.get_or_insert_with(Instant::now).elapsed() >= limit {
            return None;
        }
    }
}

/// The producer of a ring, in a forked child: writes `first..first + n` in order, waiting
/// while the ring is full. Returns the child's exit code (1: the consumer stopped taking).
fn ring_produce(ring: RingView, first: u64, n: u64) -> i32 {
    let (head_word, tail_word) = (ring.head(), ring.tail());
    let mut head = head_word.load(Ordering::Relaxed);
    // The consumer's index as last read: read again only when the ring looks full.
    let mut tail = tail_word.load(Ordering::Acquire);
    for v in first..first + n {
        if head - tail == RING_SLOTS {
            let seen = spin_for(
                || {
                    let t = tail_word.load(Ordering::Acquire);
                    (head - t < RING_SLOTS).then_some(t)
                },
                IDLE_TIMEOUT,
            );
            match seen {
                Some(t) => tail = t,
                None => return 1,
            }
        }
        ring.slot(head).store(v, Ordering::Relaxed);
        head += 1;
        head_word.store(head, Ordering::Release);
    }
    0
}

/// The consumer's side of one ring.
struct RingReader {
    ring: RingView,
    /// Items taken.
    tail: u64,
    /// The producer's index as last read: read again only when the ring looks empty.
    head: u64,
    /// The value the next item must have.
    next: u64,
    /// Items still to come.
    left: u64,
}

impl RingReader {
    /// Takes the next item if the producer has written it, checking that it is the one
    /// expected; `Ok(false)` when the ring is empty.
    fn try_take(&mut self) -> io::Result<bool> {
        if self.tail == self.head {
            self.head = self.ring.head().load(Ordering::Acquire);
            if self.tail == self.head {
                return Ok(false);
            }
        }
        let v = self.ring.slot(self.tail).load(Ordering::Relaxed);
        self.tail += 1;
        self.ring.tail().store(self.tail, Ordering::Release);
        if v != self.next {
            return Err(io::Error::other(format!(
                "the bare ring delivered {v}, expected {}",
                self.next
            )));
        }
        self.next += 1;
        self.left -= 1;
        Ok(true)
    }
}

/// The limit of the small-item queue workloads: `producers` forked processes, each writing
/// `u64`s into a single-producer, single-consumer ring of its own in shared memory (a
/// power-of-two array of slots, the head and tail indices on cache lines of their own,
/// each side spinning while the ring is full or empty); the parent takes the items from
/// the rings in turn and checks that each ring's come in order.
pub struct BareRings {
    base: NonNull<u8>,
    producers: usize,
}

impl BareRings {
    /// Maps one ring per producer.
    pub fn new(producers: usize) -> io::Result<BareRings> {
        if producers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a bare ring needs a producer",
            ));
        }
        Ok(BareRings {
            base: map_shared(producers * RING_BYTES)?,
            producers,
        })
    }

    fn ring(&self, k: usize) -> RingView {
        assert!(k < self.producers, "ring {k} is not mapped");
        // SAFETY: ring `k` starts `k * RING_BYTES` bytes into a mapping of
        // `producers * RING_BYTES` bytes.
        let base = unsafe { self.base.add(k * RING_BYTES) };
        RingView { base }
    }

    /// Forks the producers, each writing `per_producer` items (producer `k` the values
    /// `k * per_producer..(k + 1) * per_producer`), takes them all and reaps the producers.
    /// Returns the time from the first item taken to the last.
    pub fn run(&mut self, per_producer: u64) -> io::Result<Duration> {
        if per_producer == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a bare ring run needs an item",
            ));
        }
        let mut readers = Vec::with_capacity(self.producers);
        for k in 0..self.producers {
            let ring = self.ring(k);
            // No producer is alive: the indices start again from 0.
            ring.head().store(0, Ordering::Relaxed);
            ring.tail().store(0, Ordering::Relaxed);
            readers.push(RingReader {
                ring,
                tail: 0,
                head: 0,
                next: k as u64 * per_producer,
                left: per_producer,
            });
        }
        let rings: Vec<RingView> = readers.iter().map(|r| r.ring).collect();
        let producers = rings
            .into_iter()
            .enumerate()
            .map(|(k, ring)| move || ring_produce(ring, k as u64 * per_producer, per_producer));
        // SAFETY: the children only use atomics, clock_gettime and sched_yield on the
        // shared mapping, which was made before the fork.
        unsafe { with_children(producers, |_| take_all(&mut readers)) }
    }
}

/// Takes every item of `readers`, one ring after the other in turn, and returns the time
/// from the first item to the last.
fn take_all(readers: &mut [RingReader]) -> io::Result<Duration> {
    let mut started: Option<Instant> = None;
    loop {
        let mut took = false;
        let mut left = 0;
        for r in readers.iter_mut().filter(|r| r.left > 0) {
            if r.try_take()? {
                took = true;
                started.get_or_insert_with(Instant::now);
            }
            left += r.left;
        }
        if left == 0 {
            return Ok(started.map_or(Duration::ZERO, |s| s.elapsed()));
        }
        if !took {
            let readers = &*readers;
            let ready = || {
                readers
                    .iter()
                    .any(|r| r.left > 0 && r.ring.head().load(Ordering::Acquire) != r.tail)
                    .then_some(0)
            };
            if spin_for(ready, ANSWER_TIMEOUT).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the bare ring producers write nothing",
                ));
            }
        }
    }
}

impl Drop for BareRings {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no view of it outlives `self` (`run`'s
        // readers are gone, and its children were reaped).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.producers * RING_BYTES) };
    }
}

/// A forked echo worker of [`BareEchoRings`]: takes `n` items from `input` and writes
/// each to `output` as it came, waiting while `input` is empty or `output` full. Returns
/// the child's exit code (1: the parent stopped giving or taking).
fn ring_echo(input: RingView, output: RingView, n: u64) -> i32 {
    let mut taken = 0;
    let mut head_in = 0;
    let mut put = 0;
    let mut tail_out = 0;
    while taken < n {
        if taken == head_in {
            let seen = spin_for(
                || {
                    let h = input.head().load(Ordering::Acquire);
                    (h != taken).then_some(h)
                },
                IDLE_TIMEOUT,
            );
            match seen {
                Some(h) => head_in = h,
                None => return 1,
            }
        }
        let v = input.slot(taken).load(Ordering::Relaxed);
        taken += 1;
        input.tail().store(taken, Ordering::Release);
        if put - tail_out == RING_SLOTS {
            let seen = spin_for(
                || {
                    let t = output.tail().load(Ordering::Acquire);
                    (put - t < RING_SLOTS).then_some(t)
                },
                IDLE_TIMEOUT,
            );
            match seen {
                Some(t) => tail_out = t,
                None => return 1,
            }
        }
        output.slot(put).store(v, Ordering::Relaxed);
        put += 1;
        output.head().store(put, Ordering::Release);
    }
    0
}

/// The parent's side of one echo worker: the items it still has to give and take.
struct EchoLane {
    input: RingView,
    output: RingView,
    /// Items given (the producer's index of `input`).
    given: u64,
    /// The worker's index of `input` as last read.
    input_tail: u64,
    /// Items taken back (the consumer's index of `output`).
    taken: u64,
    /// The worker's index of `output` as last read.
    output_head: u64,
    /// Items this worker echoes in all.
    n: u64,
    /// Workers in all: this lane's item `j` is `first + j * stride`.
    stride: u64,
    first: u64,
}

impl EchoLane {
    /// Gives the worker what its input ring has room for, then takes back what its
    /// output ring holds, checking each item; whether anything moved.
    fn step(&mut self) -> io::Result<bool> {
        let mut moved = false;
        while self.given < self.n {
            if self.given - self.input_tail == RING_SLOTS {
                self.input_tail = self.input.tail().load(Ordering::Acquire);
                if self.given - self.input_tail == RING_SLOTS {
                    break;
                }
            }
            let v = self.first + self.given * self.stride;
            self.input.slot(self.given).store(v, Ordering::Relaxed);
            self.given += 1;
            self.input.head().store(self.given, Ordering::Release);
            moved = true;
        }
        while self.taken < self.given {
            if self.taken == self.output_head {
                self.output_head = self.output.head().load(Ordering::Acquire);
                if self.taken == self.output_head {
                    break;
                }
            }
            let v = self.output.slot(self.taken).load(Ordering::Relaxed);
            let expected = self.first + self.taken * self.stride;
            if v != expected {
                return Err(io::Error::other(format!(
                    "a bare echo worker gave back {v}, expected {expected}"
                )));
            }
            self.taken += 1;
            self.output.tail().store(self.taken, Ordering::Release);
            moved = true;
        }
        Ok(moved)
    }
}

/// The limit of the small-task pool workloads: `workers` forked processes, each with two
/// single-producer, single-consumer rings of `u64` of its own in shared memory (the rings
/// of [`BareRings`]), one to it and one back. Each worker echoes the items of its input
/// ring into its output ring; the parent deals the items out in turn (item `i` to worker
/// `i % workers`), gives each worker what its ring has room for, takes back and checks
/// what comes, and spins (yielding now and then) when nothing moves.
pub struct BareEchoRings {
    base: NonNull<u8>,
    workers: usize,
}

impl BareEchoRings {
    /// Maps two rings per worker.
    pub fn new(workers: usize) -> io::Result<BareEchoRings> {
        if workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bare echo rings need a worker",
            ));
        }
        Ok(BareEchoRings {
            base: map_shared(2 * workers * RING_BYTES)?,
            workers,
        })
    }

    fn ring(&self, k: usize) -> RingView {
        assert!(k < 2 * self.workers, "ring {k} is not mapped");
        // SAFETY: ring `k` starts `k * RING_BYTES` bytes into a mapping of
        // `2 * workers * RING_BYTES` bytes.
        let base = unsafe { self.base.add(k * RING_BYTES) };
        RingView { base }
    }

    /// Forks the workers, sends the items `0..n` through them and takes them all back,
    /// then reaps the workers. Returns the time from the first item given to the last
    /// taken back (the forks are not timed).
    pub fn run(&mut self, n: u64) -> io::Result<Duration> {
        let w = self.workers as u64;
        let mut lanes = Vec::with_capacity(self.workers);
        for k in 0..self.workers {
            let (input, output) = (self.ring(2 * k), self.ring(2 * k + 1));
            // No worker is alive: the indices start again from 0.
            for r in [input, output] {
                r.head().store(0, Ordering::Relaxed);
                r.tail().store(0, Ordering::Relaxed);
            }
            let first = k as u64;
            lanes.push(EchoLane {
                input,
                output,
                given: 0,
                input_tail: 0,
                taken: 0,
                output_head: 0,
                n: if first < n {
                    (n - first).div_ceil(w)
                } else {
                    0
                },
                stride: w,
                first,
            });
        }
        let ends: Vec<_> = lanes.iter().map(|l| (l.input, l.output, l.n)).collect();
        let echoes = ends
            .into_iter()
            .map(|(input, output, count)| move || ring_echo(input, output, count));
        // SAFETY: the children only use atomics, clock_gettime and sched_yield on the
        // shared mapping, which was made before the fork.
        unsafe { with_children(echoes, |_| echo_all(&mut lanes)) }
    }
}

/// Moves every item of `lanes` there and back; the time from the first given to the
/// last taken back.
fn echo_all(lanes: &mut [EchoLane]) -> io::Result<Duration> {
    let started = Instant::now();
    loop {
        let mut moved = false;
        for lane in lanes.iter_mut() {
            moved |= lane.step()?;
        }
        if lanes.iter().all(|l| l.taken == l.n) {
            return Ok(started.elapsed());
        }
        if !moved {
            let lanes = &*lanes;
            let ready = || {
                lanes
                    .iter()
                    .any(|l| {
                        l.output.head().load(Ordering::Acquire) != l.taken
                            || (l.given < l.n
                                && l.given - l.input.tail().load(Ordering::Acquire) < RING_SLOTS)
                    })
                    .then_some(0)
            };
            if spin_for(ready, ANSWER_TIMEOUT).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the bare echo workers give nothing back",
                ));
            }
        }
    }
}

impl Drop for BareEchoRings {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no view of it outlives `self` (`run`'s
        // lanes are gone, and its children were reaped).
        unsafe { libc::munmap(self.base.as_ptr().cast(), 2 * self.workers * RING_BYTES) };
    }
}

// ---- a job split over forked processes ----

/// The `pool_cpu_speedup` limit: `parts` forked processes each run `job` on its share
/// of `0..n` (part `k` takes `k * n / parts..(k + 1) * n / parts`) and write the `u128`
/// it returns into one pipe (16 bytes, one atomic write); the parent reads the results,
/// adds them and reaps the children. Returns the sum and the time from the first fork to
/// the last `waitpid`.
pub fn fork_split(n: u64, parts: u64, job: fn(u64, u64) -> u128) -> io::Result<(u128, Duration)> {
    if parts == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a split job needs a part",
        ));
    }
    let started = Instant::now();
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 gave two new descriptors that nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let fd = wr.as_raw_fd();
    let halves = (0..parts).map(|k| {
        let lo = (u128::from(n) * u128::from(k) / u128::from(parts)) as u64;
        let hi = (u128::from(n) * u128::from(k + 1) / u128::from(parts)) as u64;
        move || {
            let bytes = job(lo, hi).to_ne_bytes();
            match write_full(fd, &bytes) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
    });
    let collect = |started_children: usize| {
        // Only the children write now: the pipe ends at the last one's exit.
        drop(wr);
        let mut sum: u128 = 0;
        for _ in 0..started_children {
            let mut buf = [0u8; 16];
            if !read_full(rd.as_raw_fd(), &mut buf)? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a split job's child wrote no result",
                ));
            }
            sum = sum.wrapping_add(u128::from_ne_bytes(buf));
        }
        Ok(sum)
    };
    // SAFETY: the children run `job` (arithmetic only, no allocation or lock), `write`
    // and `_exit`, all async-signal-safe.
    let sum = unsafe { with_children(halves, collect) }?;
    let elapsed = started.elapsed();
    Ok((sum, elapsed))
}

/// The `shm_bandwidth` limit: a copy between two buffers of this process that are mapped
/// and written already (no page fault, no syscall): what memcpy does on this machine.
pub fn warm_copy(src: &[u8], dst: &mut [u8]) {
    dst.copy_from_slice(std::hint::black_box(src));
    std::hint::black_box(dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_limit_reaps_its_child() {
        fork_exit_wait().unwrap();
    }

    #[test]
    fn bare_lock_excludes_and_counts_exactly() {
        BareLock::new().unwrap().acquire_release(1000);
        assert_eq!(futex_mutex_increments(2, 20_000).unwrap().0, 40_000);
    }

    #[test]
    fn futex_ping_pong_round_trips() {
        let mut p = FutexPingPong::start().unwrap();
        p.round_trips(100).unwrap();
        p.close().unwrap();
    }

    #[test]
    fn bare_rings_deliver_every_item_in_order() {
        for producers in [1, 2] {
            let mut rings = BareRings::new(producers).unwrap();
            // More items than a ring has slots: the producers wait while it is full.
            rings.run(3 * RING_SLOTS + 5).unwrap();
            rings.run(7).unwrap();
        }
    }

    #[test]
    fn bare_echo_rings_give_every_item_back() {
        for workers in [1, 2] {
            let mut rings = BareEchoRings::new(workers).unwrap();
            // More items than a ring has slots: both sides wait on full rings.
            rings.run(3 * RING_SLOTS + 5).unwrap();
            rings.run(1).unwrap();
        }
    }

    fn triangle(lo: u64, hi: u64) -> u128 {
        (lo..hi).map(u128::from).sum()
    }

    #[test]
    fn fork_split_adds_the_parts() {
        let (sum, _) = fork_split(1001, 2, triangle).unwrap();
        assert_eq!(sum, 1000 * 1001 / 2);
        assert_eq!(fork_split(10, 3, triangle).unwrap().0, 45);
    }

    #[test]
    fn warm_copy_copies() {
        let src = vec![7u8; 4096];
        let mut dst = vec![0u8; 4096];
        warm_copy(&src, &mut dst);
        assert_eq!(src, dst);
    }

    #[test]
    fn socketpair_echo_round_trips() {
        for wait in [EchoWait::Blocking, EchoWait::BusyPoll] {
            let mut e = SocketpairEcho::start(8, wait).unwrap();
            e.round_trips(100).unwrap();
            e.close().unwrap();
        }
    }

    #[test]
    fn busy_poll_echo_answers_after_its_child_slept() {
        let mut e = SocketpairEcho::start(8, EchoWait::BusyPoll).unwrap();
        e.round_trips(10).unwrap();
        std::thread::sleep(IDLE_SPIN * 5);
        e.round_trips(10).unwrap();
        e.rest().unwrap();
        e.round_trips(10).unwrap();
        e.rest().unwrap();
        e.close().unwrap();
    }

    #[test]
    fn spin_ping_pong_round_trips_across_sleeps() {
        let mut p = SpinPingPong::start().unwrap();
        p.round_trips(1000).unwrap();
        std::thread::sleep(IDLE_SPIN * 5);
        // Without a wake: the round trip must find the sleeping child by itself.
        p.round_trips(10).unwrap();
        p.rest();
        p.wake();
        p.round_trips(10).unwrap();
        p.rest();
        std::thread::sleep(IDLE_SPIN);
        std::thread::sleep(IDLE_SPIN * 5);
        p.wake();
        p.round_trips(10).unwrap();
        p.close().unwrap();
    }
}

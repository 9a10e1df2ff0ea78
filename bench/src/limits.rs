//! The bare-syscall limits: what the kernel charges for the work itself, with no library
//! around it. These are the only places in the crate that call `libc` directly.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr;

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

/// A forked child that echoes fixed-size messages on a blocking Unix stream socket pair:
/// the floor under any message round trip that sleeps in the kernel.
pub struct SocketpairEcho {
    fd: Option<OwnedFd>,
    pid: libc::pid_t,
    msg: Vec<u8>,
    buf: Vec<u8>,
}

impl SocketpairEcho {
    /// Starts the echoing child; every message is `msg_len` bytes.
    pub fn start(msg_len: usize) -> io::Result<SocketpairEcho> {
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
        // SAFETY: the child calls only async-signal-safe functions (close, read, write,
        // _exit) on memory allocated before the fork, so forking a process that may have
        // other threads is sound.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                let fd = theirs.as_raw_fd();
                // SAFETY: closes the child's copy of the parent's end so that the parent
                // closing it ends the stream; the `OwnedFd` is never dropped in the child.
                unsafe { libc::close(mine.as_raw_fd()) };
                let code = loop {
                    match read_full(fd, &mut echo_buf) {
                        Ok(true) => {}
                        Ok(false) => break 0,
                        Err(_) => break 1,
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
            if !read_full(fd, &mut self.buf)? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Closes the socket, which ends the child, and reaps it.
    pub fn close(mut self) -> io::Result<()> {
        self.fd.take();
        wait_ok(self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_limit_reaps_its_child() {
        fork_exit_wait().unwrap();
    }

    #[test]
    fn socketpair_echo_round_trips() {
        let mut e = SocketpairEcho::start(8).unwrap();
        e.round_trips(100).unwrap();
        e.close().unwrap();
    }
}

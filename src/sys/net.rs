//! Listening sockets with a chosen backlog, Unix connects with a deadline, and the
//! random bytes of authentication challenges.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// The name of a Unix socket: a filesystem path or a Linux abstract name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UnixName<'a> {
    /// A socket file.
    Path(&'a Path),
    /// An abstract name (no file; gone with its last descriptor).
    Abstract(&'a [u8]),
}

impl UnixName<'_> {
    fn to_addr(self) -> io::Result<SocketAddrUnix> {
        Ok(match self {
            UnixName::Path(p) => SocketAddrUnix::new(p)?,
            UnixName::Abstract(n) => SocketAddrUnix::new_abstract_name(n)?,
        })
    }
}

fn unix_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        flags,
        None,
    )?)
}

/// A non-blocking, close-on-exec Unix listener bound to `name`.
pub(crate) fn unix_listener(name: UnixName<'_>, backlog: i32) -> io::Result<UnixListener> {
    let addr = name.to_addr()?;
    let fd = unix_socket(true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(UnixListener::from(fd))
}

/// A non-blocking, close-on-exec TCP listener bound to `addr` (with `SO_REUSEADDR`, as
/// CPython sets it).
pub(crate) fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// A blocking, close-on-exec Unix stream connected to `name`.
///
/// With a deadline, a listener whose backlog is full is retried until the deadline
/// (the kernel answers `EAGAIN` at once to a non-blocking connect there).
pub(crate) fn unix_connect(name: UnixName<'_>, deadline: Option<Instant>) -> io::Result<OwnedFd> {
    let addr = name.to_addr()?;
    let fd = unix_socket(deadline.is_some())?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => {
                let Some(d) = deadline else {
                    return Err(Errno::AGAIN.into());
                };
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the listener's backlog stayed full",
                    ));
                }
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if deadline.is_some() {
        rustix::io::ioctl_fionbio(&fd, false)?;
    }
    Ok(fd)
}

/// Whether `fd` is a Unix-domain socket, the only kind that carries descriptors
/// (`SCM_RIGHTS` on a TCP socket is dropped by the kernel without an error).
pub(crate) fn carries_descriptors(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::net::sockopt::socket_domain(fd)? == AddressFamily::UNIX)
}

/// Asks for a send buffer of `bytes` on a Unix socket (the kernel caps the request at
/// `net.core.wmem_max`); other sockets are left alone, since a fixed size would turn off
/// TCP's own tuning. Best effort: a failure leaves the buffer as it was.
pub(crate) fn widen_unix_send_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    if matches!(carries_descriptors(fd), Ok(true)) {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, bytes);
    }
}

/// Fills `buf` with bytes from the kernel's random generator.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Shuts a connected socket down both ways: a thread reading it (through another
/// descriptor of the same socket) sees end of stream at once. Best effort.
pub(crate) fn shutdown_both(fd: BorrowedFd<'_>) {
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

//! Sockets, descriptor passing (`SCM_RIGHTS`) and readiness.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// Most descriptors one message may carry (the kernel's `SCM_MAX_FD` is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 64;

/// Most descriptors one `sendmsg` may carry: a message's own, plus the memfd holding
/// its body when the body travels out of band.
pub(crate) const MAX_FDS_PER_FRAME: usize = MAX_FDS_PER_MESSAGE + 1;

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Writes every byte of `parts`; the first `sendmsg` carries `fds`.
///
/// `MSG_NOSIGNAL` turns a closed peer into `EPIPE` instead of a `SIGPIPE`.
pub(crate) fn send_all(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message may carry at most {MAX_FDS_PER_MESSAGE} handles"),
        ));
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0usize;
    let mut fds_pending = !fds.is_empty();
    while sent < total || fds_pending {
        // The slices past what is already sent (a frame has a header and a body in at
        // most a few parts).
        let mut skip = sent;
        let mut slices = [IoSlice::new(&[]); 4];
        let mut count = 0;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            if count == slices.len() {
                break;
            }
            slices[count] = IoSlice::new(&p[skip..]);
            count += 1;
            skip = 0;
        }
        let slices = &slices[..count];
        let flags = SendFlags::NOSIGNAL;
        let r = if fds_pending {
            let mut space =
                [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME))];
            let mut anc = SendAncillaryBuffer::new(&mut space);
            if !anc.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(io::Error::other(
                    "descriptor list does not fit the control buffer",
                ));
            }
            rustix::net::sendmsg(fd, slices, &mut anc, flags)
        } else if slices.len() == 1 {
            rustix::net::send(fd, &slices[0], flags)
        } else {
            rustix::net::sendmsg(fd, slices, &mut SendAncillaryBuffer::default(), flags)
        };
        match r {
            Ok(n) => {
                sent += n;
                fds_pending = false;
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => {
                wait_writable(fd)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut pfd = [PollFd::new(&fd, PollFlags::OUT)];
    loop {
        match rustix::event::poll(&mut pfd, None) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Outcome of one receive attempt.
pub(crate) enum Received {
    /// This many bytes arrived (0 means end of stream).
    Bytes(usize),
    /// Nothing is there yet (non-blocking attempt only).
    WouldBlock,
}

/// One `recvmsg`, collecting any passed descriptors into `fds` (close-on-exec).
///
/// When some passed descriptors could not be received (this process's descriptor table
/// is full, or the message carried more than a message may), the bytes still arrived and
/// are counted; why the descriptors were lost goes to `lost`, for the caller to report
/// once the message is whole, so that the stream keeps its place.
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    lost: &mut Option<io::Error>,
    nonblocking: bool,
) -> io::Result<Received> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(fd, &mut iov, &mut anc, flags) {
            Ok(msg) => {
                for m in anc.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = m {
                        fds.extend(rights);
                    }
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) && lost.is_none() {
                    *lost = Some(why_descriptors_lost(fd));
                }
                return Ok(Received::Bytes(msg.bytes));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if nonblocking => return Ok(Received::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why the kernel dropped passed descriptors: a full descriptor table here (the kernel
/// installs what fits and drops the rest), or more descriptors than a message may carry.
fn why_descriptors_lost(fd: BorrowedFd<'_>) -> io::Error {
    match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
        Err(e @ (Errno::MFILE | Errno::NFILE)) => io::Error::from(e),
        _ => io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors in one message",
        ),
    }
}

/// One plain receive (no descriptors expected).
pub(crate) fn recv_plain(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<Received> {
    let flags = if nonblocking {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    };
    loop {
        match rustix::net::recv(fd, &mut *buf, flags) {
            Ok((n, _)) => return Ok(Received::Bytes(n)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if nonblocking => return Ok(Received::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Plain `read` on any descriptor (pipes included).
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Plain `write` of the whole buffer.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until any of `fds` is readable (or hung up); returns which ones.
///
/// `None` waits forever; the wait restarts after signals with the remaining time.
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    // A timeout past what `Instant` holds is no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    loop {
        let ts = deadline.map(|d| timespec(d.saturating_duration_since(Instant::now())));
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(_) => {
                return Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect());
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `fd` is readable within `timeout`.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    // A timeout past what `Instant` holds is no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        let ts = deadline.map(|d| timespec(d.saturating_duration_since(Instant::now())));
        match rustix::event::poll(&mut pfd, ts.as_ref()) {
            Ok(_) => return Ok(!pfd[0].revents().is_empty()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Duplicates a descriptor (close-on-exec).
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Why an inherited bootstrap descriptor was not taken.
pub(crate) enum Refusal {
    /// It is the socket of the parent named by the marker, and that process has ended
    /// (gone, or a zombie): it died before this check.
    ParentGone,
    /// It is not what a multiproc parent passes; the reason, for a warning.
    Foreign(String),
}

/// Takes ownership of a descriptor number inherited through `exec`, if it is what a
/// multiproc parent passes: a Unix stream socket created by this process's parent
/// (`getppid()`), under this process's user and group. Standard streams are never taken.
/// `named_parent` is the parent the marker names, which only tells a parent that died
/// apart from a foreign socket.
///
/// On refusal the number is left untouched (it may be the program's own); on success it
/// is marked close-on-exec.
pub(crate) fn adopt_from_parent(raw: RawFd, named_parent: u32) -> Result<OwnedFd, Refusal> {
    if raw <= 2 {
        return Err(Refusal::Foreign(format!(
            "descriptor {raw} is a standard stream"
        )));
    }
    // SAFETY: `raw` is only used with getsockopt, which fails with EBADF on a closed
    // number and changes nothing on an open one; the borrow ends here.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let why = |e: rustix::io::Errno| Refusal::Foreign(format!("descriptor {raw}: {e}"));
    if rustix::net::sockopt::socket_domain(fd).map_err(why)? != AddressFamily::UNIX
        || rustix::net::sockopt::socket_type(fd).map_err(why)? != SocketType::STREAM
    {
        return Err(Refusal::Foreign(format!(
            "descriptor {raw} is not a Unix stream socket"
        )));
    }
    // A listening or unconnected socket carries the credentials of whoever called
    // `listen` (or none): only a connected socket names the process at its other end.
    if rustix::net::sockopt::socket_acceptconn(fd).map_err(why)?
        || rustix::net::getpeername(fd).is_err()
    {
        return Err(Refusal::Foreign(format!(
            "descriptor {raw} is not a connected socket"
        )));
    }
    let peer = rustix::net::sockopt::socket_peercred(fd).map_err(why)?;
    if peer.uid != rustix::process::geteuid() || peer.gid != rustix::process::getegid() {
        return Err(Refusal::Foreign(format!(
            "descriptor {raw} belongs to user {} group {}",
            peer.uid.as_raw(),
            peer.gid.as_raw()
        )));
    }
    let peer_pid = peer.pid.as_raw_nonzero().get() as u32;
    if Some(peer.pid) != rustix::process::getppid() {
        // The socket's maker is the named parent yet not our parent: either it died and
        // this process was reparented (a real child: quit), or it is alive and simply
        // not our parent (a foreign socket: ignore it).
        if peer_pid == named_parent && crate::sys::proc::has_ended(peer_pid) {
            return Err(Refusal::ParentGone);
        }
        return Err(Refusal::Foreign(format!(
            "descriptor {raw} was made by process {peer_pid}, not by this process's parent"
        )));
    }
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).map_err(why)?;
    // SAFETY: the descriptor is open (the queries succeeded) and is the socket the
    // parent made for this process's bootstrap; nothing else in the process owns it
    // (this runs in the load hook, before any code of the program).
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Closes every descriptor from `first` up, for a freshly executed child that must not
/// keep what its parent left open by mistake (descriptors without close-on-exec).
pub(crate) fn close_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; the caller runs before any code that
    // could own a descriptor at or above `first` (the load hook of a spawned child). The
    // raw syscall needs no particular libc version.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if rc != 0 {
        // Kernels before 5.9: close one by one what /proc lists.
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let open: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&n| n >= first)
            .collect();
        for n in open {
            // SAFETY: as above; a number that was the directory's own (now closed) gives
            // EBADF and nothing else.
            unsafe { libc::close(n) };
        }
    }
}

/// Closes a descriptor number whose owner was leaked in a forked child (see
/// `forklocal`): the owning object is never dropped, so the number is closed once.
pub(crate) fn close_leaked(raw: RawFd) {
    // SAFETY: the caller's owner of `raw` was leaked and will never close it; closing the
    // number here is the only close, and nothing else in this (single-threaded, freshly
    // forked) process uses it.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
}

/// The descriptor number [`keep_out_of_forks`] protects (-1: none).
static KEPT_OUT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn replace_kept_out_in_child() {
    use std::sync::atomic::Ordering::Relaxed;
    // Read before writing: a child of a process that keeps nothing out writes no page.
    if KEPT_OUT.load(Relaxed) < 0 {
        return;
    }
    let raw = KEPT_OUT.swap(-1, Relaxed);
    if raw < 0 {
        return;
    }
    // An unconnected socket takes the number's place: the forked copy no longer holds
    // the channel, and whatever object still names the number in this copy owns a
    // harmless descriptor instead of a number that a later open could reuse.
    // SAFETY: socket, dup3 and close are async-signal-safe calls on descriptors this
    // handler alone creates; `raw` was an open descriptor of the parent, so also of this
    // freshly forked copy, and dup3 replaces it atomically.
    unsafe {
        let stub = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if stub >= 0 {
            libc::dup3(stub, raw, libc::O_CLOEXEC);
            libc::close(stub);
        }
    }
}

/// Registers the fork handler behind [`keep_out_of_forks`]. Called from the load-time
/// hook, so that children forked from this process inherit it registered: registering
/// anew in each child (a `Once`, libc's handler list) would copy pages at every start.
pub(crate) fn register_fork_handler() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handler only makes async-signal-safe calls (see above) and reads an
        // atomic; registering it has no other precondition.
        unsafe {
            libc::pthread_atfork(None, None, Some(replace_kept_out_in_child));
        }
    });
}

/// Makes every process forked from this one (by `fork` from any code, the program's own
/// included) lose its copy of `fd`, which stays open here. One descriptor per process: a
/// process's own channel to its parent.
pub(crate) fn keep_out_of_forks(fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    KEPT_OUT.store(fd.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    // Registered already when the load hook ran (the usual case): then this only reads.
    register_fork_handler();
}

//! `Listener` and `Client` (Python's `multiprocessing.connection.Listener` and `Client`):
//! connections between processes that did not start each other, over a Unix socket
//! path, a Linux abstract name or TCP, optionally authenticated with a shared key.
//!
//! The framing and the authkey handshake are CPython's, so either end may be a Python
//! program using `multiprocessing.connection` with the same address and authkey.
//!
//! A listener with a key runs the handshakes of all connected peers side by side inside
//! `accept` (non-blocking state machines polled together, at most
//! [`MAX_PENDING_HANDSHAKES`]), so a silent or hostile peer never delays another, and
//! each handshake has a deadline on both sides ([`DEFAULT_HANDSHAKE_TIMEOUT`]). Both
//! sides accept CPython 3.11's HMAC-MD5 by default and can be told to require
//! HMAC-SHA256 (`require_sha256`).

use std::collections::VecDeque;
use std::fmt;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    ToSocketAddrs,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Connection, Waitable, auth};
use crate::deadline;
use crate::error::{Error, Result};
use crate::sys::fd as sysfd;
use crate::sys::net::{self as sysnet, UnixName};

/// How long the authkey handshake may take, by default: for a peer a [`Listener`] has
/// taken in, and for a [`Client`] from its connect on (Python sets no limit on either).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes a [`Listener`] runs at once. A peer arriving when all are taken
/// pushes out the one that has been waiting longest, so a flood of silent peers costs a
/// bounded number of descriptors and cannot keep a quick peer out for long.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// Connections a listener queues before they are accepted, by default (Python's
/// `Listener` uses 1).
pub const DEFAULT_BACKLOG: u32 = 128;

/// Where a [`Listener`] listens and a [`Client`] connects: Python's `'/tmp/sock'`,
/// `'\0name'` and `('localhost', 6000)`.
///
/// Strings parse as Python reads them, with TCP written `host:port`: a string starting
/// with `\0` is an abstract name, `127.0.0.1:6000` or `[::1]:6000` a TCP address,
/// `localhost:6000` a host name resolved at once (an IPv4 address preferred, as Python's
/// `AF_INET` listener and client do), anything else a socket file path (write
/// `./host:1` for a file whose name looks like a host and port).
///
/// ```
/// use multiproc::Address;
/// assert_eq!("/tmp/app.sock".parse::<Address>()?, Address::Unix("/tmp/app.sock".into()));
/// assert_eq!("\0app".parse::<Address>()?, Address::Abstract(b"app".to_vec()));
/// assert_eq!(
///     "127.0.0.1:6000".parse::<Address>()?,
///     Address::Tcp(([127, 0, 0, 1], 6000).into())
/// );
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket file; the listener removes it when dropped.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (Python's `'\0name'`, without the `\0`): no
    /// file, gone when the listener closes.
    Abstract(Vec<u8>),
    /// A TCP address, IPv4 or IPv6.
    Tcp(SocketAddr),
}

impl Address {
    /// A TCP address from a host name or IP literal and a port, like Python's
    /// `('localhost', 6000)`; names are resolved now, an IPv4 address preferred.
    ///
    /// ```
    /// let a = multiproc::Address::tcp("127.0.0.1", 6000)?;
    /// assert_eq!(a.to_string(), "127.0.0.1:6000");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn tcp(host: &str, port: u16) -> Result<Address> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Address::Tcp(SocketAddr::new(ip, port)));
        }
        let all: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or_else(|| all.first())
            .map(|a| Address::Tcp(*a))
            .ok_or_else(|| invalid(format!("host {host:?} has no address")))
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        if s.is_empty() {
            return Err(invalid("an empty address".into()));
        }
        if let Some(name) = s.strip_prefix('\0') {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        if !s.contains('/') {
            if let Some((host, port)) = s.rsplit_once(':') {
                if let (false, Ok(port)) = (host.is_empty(), port.parse::<u16>()) {
                    return Address::tcp(host, port);
                }
            }
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for Address {
    /// A path as itself, an abstract name as `\0name`, a TCP address as `ip:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "\\0{}", n.escape_ascii()),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<SocketAddrV4> for Address {
    fn from(a: SocketAddrV4) -> Address {
        Address::Tcp(a.into())
    }
}

impl From<SocketAddrV6> for Address {
    fn from(a: SocketAddrV6) -> Address {
        Address::Tcp(a.into())
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

/// Anything that names an [`Address`] (as `ToSocketAddrs` does for std's sockets):
/// an `Address`, a string (parsed as [`Address`]'s `FromStr` says), a `Path`, a
/// `SocketAddr`, or a `(host, port)` pair.
///
/// ```
/// use multiproc::{Address, ToAddress};
/// assert_eq!(("127.0.0.1", 80).to_address()?, "127.0.0.1:80".parse::<Address>()?);
/// assert_eq!(std::path::Path::new("s").to_address()?, Address::Unix("s".into()));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait ToAddress {
    /// The address this names (resolving a host name if there is one).
    fn to_address(&self) -> Result<Address>;
}

impl<T: ToAddress + ?Sized> ToAddress for &T {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for Path {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

impl ToAddress for PathBuf {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.clone()))
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp(*self))
    }
}

impl ToAddress for SocketAddrV4 {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp((*self).into()))
    }
}

impl ToAddress for SocketAddrV6 {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp((*self).into()))
    }
}

impl ToAddress for (&str, u16) {
    fn to_address(&self) -> Result<Address> {
        Address::tcp(self.0, self.1)
    }
}

impl ToAddress for (String, u16) {
    fn to_address(&self) -> Result<Address> {
        Address::tcp(&self.0, self.1)
    }
}

impl ToAddress for (IpAddr, u16) {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp((*self).into()))
    }
}

impl ToAddress for (Ipv4Addr, u16) {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp((*self).into()))
    }
}

impl ToAddress for (Ipv6Addr, u16) {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp((*self).into()))
    }
}

/// Hides the key in `Debug` output.
fn redacted(key: &Option<Vec<u8>>) -> &'static str {
    if key.is_some() {
        "Some(<redacted>)"
    } else {
        "None"
    }
}

/// A timeout from the operating system, as the crate's [`Error::Timeout`].
fn timeout_as_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::TimedOut {
        Error::Timeout
    } else {
        Error::Io(e)
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A bound, listening socket that hands out a [`Connection`] per accepted peer
/// (Python's `multiprocessing.connection.Listener`).
///
/// With an authkey, every accepted peer must complete CPython's HMAC challenge within
/// the handshake timeout (10 s by default) before [`accept`](Listener::accept) returns
/// it; a peer without the key, or one that stays silent, is refused and nothing it sent
/// is handed to the program. Handshakes run side by side (up to
/// [`MAX_PENDING_HANDSHAKES`]), so a slow or hostile peer never delays another.
/// Dropping the listener closes it, ends the handshakes in progress and removes its
/// socket file.
///
/// ```
/// use multiproc::{Client, Listener};
///
/// let listener = Listener::builder("127.0.0.1:0").authkey(b"secret").bind()?;
/// let address = listener.address().clone(); // the port the kernel chose
/// let client = std::thread::spawn(move || -> multiproc::Result<Vec<u8>> {
///     let conn = Client::builder(&address).authkey(b"secret").connect()?;
///     conn.send_bytes(b"ping")?;
///     conn.recv_bytes()
/// });
/// let conn = listener.accept()?;
/// assert_eq!(conn.recv_bytes()?, b"ping");
/// conn.send_bytes(b"pong")?;
/// assert_eq!(client.join().unwrap()?, b"pong");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    policy: auth::Policy,
    /// Peers are declared multiproc: `send_bytes_mapped` may use a sealed file (Unix
    /// sockets only).
    multiproc_peer: bool,
    /// The socket file to remove on drop, and the process that created it.
    unlink: Option<(PathBuf, u32)>,
    last_accepted: Mutex<Option<Address>>,
    /// Handshakes in progress; `None` while an `accept` is driving them (another
    /// accepting thread waits on `handshakes_back`).
    handshakes: Mutex<Option<Handshakes>>,
    handshakes_back: Condvar,
}

/// The peers taken in whose handshake is not finished, oldest first.
#[derive(Debug, Default)]
struct Handshakes {
    pending: VecDeque<Pending>,
    /// When the last `accept` returned: handshakes advance only inside `accept`, so
    /// the time between calls is not counted against a peer.
    idle_since: Option<Instant>,
}

#[derive(Debug)]
struct Pending {
    conn: Connection,
    peer: Option<Address>,
    handshake: auth::Accepting,
    deadline: Option<Instant>,
    /// Something arrived since this handshake was last advanced.
    readable: bool,
}

/// Holds the handshakes while one `accept` drives them; gives them back however it ends.
struct Driving<'a> {
    listener: &'a Listener,
    handshakes: Option<Handshakes>,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if let Some(mut h) = self.handshakes.take() {
            h.idle_since = Some(Instant::now());
            *self
                .listener
                .handshakes
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(h);
            self.listener.handshakes_back.notify_one();
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authkey", &redacted(&self.authkey))
            .field("handshake_timeout", &self.handshake_timeout)
            .field("require_sha256", &self.policy.require_sha256)
            .finish()
    }
}

impl Listener {
    /// Listens on `address` without authentication, like Python's `Listener(address)`.
    ///
    /// ```
    /// let name = format!("\0multiproc-doc-bind-{}", std::process::id());
    /// let listener = multiproc::Listener::bind(name.as_str())?;
    /// let client = multiproc::Client::connect(name.as_str())?;
    /// let server_side = listener.accept()?;
    /// client.send_bytes(b"hi")?;
    /// assert_eq!(server_side.recv_bytes()?, b"hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn bind(address: impl ToAddress) -> Result<Listener> {
        Listener::builder(address).bind()
    }

    /// A builder for a listener with an authkey, a backlog or a handshake timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let listener = multiproc::Listener::builder(("127.0.0.1", 0))
    ///     .authkey(b"secret")
    ///     .backlog(16)
    ///     .handshake_timeout(Duration::from_secs(5))
    ///     .bind()?;
    /// assert!(matches!(listener.address(), multiproc::Address::Tcp(a) if a.port() != 0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder(address: impl ToAddress) -> ListenerBuilder {
        ListenerBuilder {
            address: address.to_address(),
            authkey: None,
            backlog: DEFAULT_BACKLOG,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            policy: auth::Policy::default(),
            multiproc_peer: false,
        }
    }

    /// The address the listener is bound to; for TCP port 0, the port the kernel chose
    /// (Python's `listener.address`).
    ///
    /// ```
    /// let listener = multiproc::Listener::bind("127.0.0.1:0")?;
    /// let multiproc::Address::Tcp(a) = listener.address() else { unreachable!() };
    /// assert_ne!(a.port(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the peer accepted last, when it has one (TCP peers, Unix peers
    /// that bound a name); Python's `listener.last_accepted`.
    ///
    /// ```
    /// let listener = multiproc::Listener::bind("127.0.0.1:0")?;
    /// assert_eq!(listener.last_accepted(), None);
    /// let _client = multiproc::Client::connect(listener.address())?;
    /// let _conn = listener.accept()?;
    /// assert!(matches!(listener.last_accepted(), Some(multiproc::Address::Tcp(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for a peer and returns a connection to it, after the authkey handshake
    /// when the listener has a key (Python's `listener.accept()`).
    ///
    /// With a key, the handshakes of all peers that have connected run side by side
    /// while `accept` waits, and it returns the first peer that completes one. A peer
    /// that fails (a wrong key, silence past the handshake timeout, a message too long,
    /// leaving half-way) is closed and logged at `debug` level, and never reaches the
    /// program: unlike Python, `accept` does not fail because of it. Handshakes still
    /// running when `accept` returns carry on at the next call (the time between calls
    /// does not count against them).
    ///
    /// ```
    /// let listener = multiproc::Listener::bind("127.0.0.1:0")?;
    /// let client = multiproc::Client::connect(listener.address())?;
    /// let conn = listener.accept()?;
    /// conn.send(&42u32)?;
    /// assert_eq!(client.recv::<u32>()?, 42);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn accept(&self) -> Result<Connection> {
        self.accept_until(None)
    }

    /// Like [`accept`](Self::accept), giving up with [`Error::Timeout`] when no peer
    /// has connected and completed its handshake within `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let listener = multiproc::Listener::bind("127.0.0.1:0")?;
    /// let r = listener.accept_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(multiproc::Error::Timeout)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_until(deadline::after(timeout))
    }

    /// Closes the listener (dropping it does the same), removing its socket file.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("multiproc-doc-{}.sock", std::process::id()));
    /// let listener = multiproc::Listener::bind(path.as_path())?;
    /// assert!(path.exists());
    /// listener.close();
    /// assert!(!path.exists());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(self) {}

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Connection> {
        if let Some(key) = &self.authkey {
            return self.accept_authenticated(key, deadline);
        }
        let (fd, peer) = loop {
            if let Some(accepted) = self.try_accept()? {
                break accepted;
            }
            let left = deadline::remaining(deadline);
            if left == Some(Duration::ZERO) {
                return Err(Error::Timeout);
            }
            sysfd::wait_readable(self.as_fd(), left)?;
        };
        *self.last_accepted.lock().unwrap_or_else(|p| p.into_inner()) = peer;
        Ok(self.adopt(fd))
    }

    /// An accepted socket as a connection: a multiproc peer's, if declared so.
    fn adopt(&self, fd: OwnedFd) -> Connection {
        let mut conn = Connection::from_socket(fd);
        conn.known_peer = self.multiproc_peer && !matches!(self.address, Address::Tcp(_));
        conn
    }

    /// Takes the handshakes in progress, waiting while another thread's `accept`
    /// drives them.
    fn drive(&self, deadline: Option<Instant>) -> Result<Driving<'_>> {
        let mut slot = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(mut h) = slot.take() {
                if let Some(gap) = h.idle_since.take().map(|t| t.elapsed()) {
                    for p in &mut h.pending {
                        p.deadline = p.deadline.and_then(|d| d.checked_add(gap));
                        // Whatever came while nobody was accepting is read now.
                        p.readable = true;
                    }
                }
                return Ok(Driving {
                    listener: self,
                    handshakes: Some(h),
                });
            }
            slot = match deadline::remaining(deadline) {
                None => self
                    .handshakes_back
                    .wait(slot)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(Duration::ZERO) => return Err(Error::Timeout),
                Some(left) => {
                    self.handshakes_back
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Runs the handshakes of every peer that connects, side by side, until one
    /// succeeds or `deadline` passes.
    fn accept_authenticated(&self, key: &[u8], deadline: Option<Instant>) -> Result<Connection> {
        let mut driving = self.drive(deadline)?;
        let h = driving
            .handshakes
            .as_mut()
            .ok_or_else(|| Error::state("listener handshakes missing"))?;
        loop {
            // Take in the peers waiting in the backlog; a bounded number per round, so
            // a flood cannot keep the handshakes under way from being advanced.
            for _ in 0..MAX_PENDING_HANDSHAKES {
                let Some((fd, peer)) = self.try_accept()? else {
                    break;
                };
                let conn = self.adopt(fd);
                let handshake = match auth::Accepting::start(&conn) {
                    Ok(handshake) => handshake,
                    Err(e) => {
                        tracing::debug!("handshake with {peer:?} failed to start: {e}");
                        continue;
                    }
                };
                if h.pending.len() == MAX_PENDING_HANDSHAKES {
                    if let Some(oldest) = h.pending.pop_front() {
                        tracing::debug!(
                            "handshake with {:?} dropped: {MAX_PENDING_HANDSHAKES} under way",
                            oldest.peer
                        );
                    }
                }
                h.pending.push_back(Pending {
                    conn,
                    peer,
                    handshake,
                    deadline: deadline::after(self.handshake_timeout),
                    readable: false,
                });
            }

            // Advance every handshake that has news; drop the failed and the expired.
            let now = Instant::now();
            let mut i = 0;
            while i < h.pending.len() {
                let p = &mut h.pending[i];
                let outcome = if std::mem::take(&mut p.readable) {
                    p.handshake.advance(&p.conn, key, self.policy)
                } else {
                    Ok(false)
                };
                match outcome {
                    Ok(true) => {
                        let Some(done) = h.pending.remove(i) else {
                            break;
                        };
                        *self.last_accepted.lock().unwrap_or_else(|p| p.into_inner()) = done.peer;
                        return Ok(done.conn);
                    }
                    Ok(false) if p.deadline.is_some_and(|d| d <= now) => {
                        tracing::debug!("handshake with {:?} timed out", p.peer);
                        h.pending.remove(i);
                    }
                    Ok(false) => i += 1,
                    Err(e) => {
                        tracing::debug!("handshake with {:?} failed: {e}", p.peer);
                        h.pending.remove(i);
                    }
                }
            }

            // Sleep until a peer connects, a pending one speaks, a handshake expires,
            // or the caller's deadline.
            let left = deadline::remaining(deadline);
            if left == Some(Duration::ZERO) {
                return Err(Error::Timeout);
            }
            let first_expiry = h.pending.iter().filter_map(|p| p.deadline).min();
            let wait = match (left, deadline::remaining(first_expiry)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mut fds = Vec::with_capacity(h.pending.len() + 1);
            fds.push(self.as_fd());
            fds.extend(h.pending.iter().map(|p| p.conn.as_fd()));
            let ready = sysfd::poll_readable(&fds, wait)?;
            for (p, r) in h.pending.iter_mut().zip(ready.into_iter().skip(1)) {
                p.readable |= r;
            }
        }
    }

    /// One non-blocking accept: `None` when no peer is waiting.
    fn try_accept(&self) -> Result<Option<(OwnedFd, Option<Address>)>> {
        let r = match &self.socket {
            Socket::Unix(l) => l.accept().and_then(|(s, a)| {
                s.set_nonblocking(false)?;
                let peer = if let Some(p) = a.as_pathname() {
                    Some(Address::Unix(p.to_path_buf()))
                } else {
                    a.as_abstract_name().map(|n| Address::Abstract(n.to_vec()))
                };
                Ok((OwnedFd::from(s), peer))
            }),
            Socket::Tcp(l) => l.accept().and_then(|(s, a)| {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                Ok((OwnedFd::from(s), Some(Address::Tcp(a))))
            }),
        };
        match r {
            Ok(accepted) => Ok(Some(accepted)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }
}

/// A listener is ready for [`wait`](crate::wait) when a peer is waiting in its backlog;
/// with a key, [`Listener::accept`] may still wait for that peer's handshake.
impl Waitable for Listener {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, pid)) = self.unlink.take() {
            // A forked copy of the listener leaves the file to the process that made it.
            if pid == std::process::id() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Options for a [`Listener`]; made by [`Listener::builder`].
pub struct ListenerBuilder {
    address: Result<Address>,
    authkey: Option<Vec<u8>>,
    backlog: u32,
    handshake_timeout: Duration,
    policy: auth::Policy,
    multiproc_peer: bool,
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("address", &self.address)
            .field("authkey", &redacted(&self.authkey))
            .field("backlog", &self.backlog)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("require_sha256", &self.policy.require_sha256)
            .field("multiproc_peer", &self.multiproc_peer)
            .finish()
    }
}

impl ListenerBuilder {
    /// Requires every peer to prove it knows `key` (Python's `authkey=`); the peer's
    /// [`Client`] must be given the same key.
    ///
    /// ```
    /// let _listener = multiproc::Listener::builder("127.0.0.1:0").authkey(b"k").bind()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// How many connections the kernel queues before they are accepted (default
    /// [`DEFAULT_BACKLOG`]).
    ///
    /// ```
    /// let _listener = multiproc::Listener::builder("127.0.0.1:0").backlog(1).bind()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// How long an accepted peer has to complete the authkey handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s; Python has none). Only time spent inside
    /// [`Listener::accept`] counts.
    ///
    /// ```
    /// use std::time::Duration;
    /// let _listener = multiproc::Listener::builder("127.0.0.1:0")
    ///     .authkey(b"k")
    ///     .handshake_timeout(Duration::from_secs(2))
    ///     .bind()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// With `true`, peers must prove the key with HMAC-SHA256: the HMAC-MD5 answer of
    /// CPython 3.11 and older (and `{md5}`) is refused. Off by default, so that those
    /// Pythons can connect; our own [`Client`] always answers with SHA-256 here.
    ///
    /// ```
    /// let _listener = multiproc::Listener::builder("127.0.0.1:0")
    ///     .authkey(b"k")
    ///     .require_sha256(true)
    ///     .bind()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn require_sha256(mut self, yes: bool) -> Self {
        self.policy.require_sha256 = yes;
        self
    }

    /// With `true`, every peer is declared a multiproc process: over a Unix socket, the
    /// accepted connections send large
    /// [`send_bytes_mapped`](Connection::send_bytes_mapped) messages in sealed files, as
    /// a [`pipe`](crate::pipe) does (see
    /// [large messages](Connection#large-messages)). Off by default, since a Python peer
    /// cannot read such a message; no effect over TCP, which cannot carry the file.
    /// Receiving is the same either way.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("multiproc-doc-mp-{}", std::process::id()));
    /// let listener = multiproc::Listener::builder(&path).multiproc_peer(true).bind()?;
    /// let client = std::thread::spawn(move || -> multiproc::Result<bool> {
    ///     let conn = multiproc::Client::connect(&path)?;
    ///     Ok(conn.recv_bytes_mapped()?.is_mapped())
    /// });
    /// listener.accept()?.send_bytes_mapped(&vec![0u8; 1 << 20])?;
    /// assert!(client.join().unwrap()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn multiproc_peer(mut self, yes: bool) -> Self {
        self.multiproc_peer = yes;
        self
    }

    /// Binds and starts listening. A Unix path that exists already is an error
    /// (`AddrInUse`), as in Python.
    ///
    /// ```
    /// let l = multiproc::Listener::builder("127.0.0.1:0").bind()?;
    /// assert!(matches!(l.address(), multiproc::Address::Tcp(_)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn bind(self) -> Result<Listener> {
        let address = self.address?;
        let backlog = i32::try_from(self.backlog).unwrap_or(i32::MAX);
        let (socket, address, unlink) = match address {
            Address::Unix(path) => {
                let l = sysnet::unix_listener(UnixName::Path(&path), backlog)?;
                let unlink = Some((path.clone(), std::process::id()));
                (Socket::Unix(l), Address::Unix(path), unlink)
            }
            Address::Abstract(name) => {
                let l = sysnet::unix_listener(UnixName::Abstract(&name), backlog)?;
                (Socket::Unix(l), Address::Abstract(name), None)
            }
            Address::Tcp(a) => {
                let l = sysnet::tcp_listener(a, backlog)?;
                let bound = l.local_addr()?;
                (Socket::Tcp(l), Address::Tcp(bound), None)
            }
        };
        Ok(Listener {
            socket,
            address,
            authkey: self.authkey,
            handshake_timeout: self.handshake_timeout,
            policy: self.policy,
            multiproc_peer: self.multiproc_peer,
            unlink,
            last_accepted: Mutex::new(None),
            handshakes: Mutex::new(Some(Handshakes::default())),
            handshakes_back: Condvar::new(),
        })
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`), which may
/// also be a Python `Listener`.
///
/// ```
/// use multiproc::{Client, Listener};
/// let listener = Listener::bind("127.0.0.1:0")?;
/// let conn = Client::connect(listener.address())?;
/// conn.send_bytes(b"hello")?;
/// assert_eq!(listener.accept()?.recv_bytes()?, b"hello");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Connects to `address` without authentication, like Python's `Client(address)`.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("multiproc-doc-c-{}.sock", std::process::id()));
    /// let listener = multiproc::Listener::bind(path.as_path())?;
    /// let conn = multiproc::Client::connect(path.as_path())?;
    /// assert!(conn.writable());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(address: impl ToAddress) -> Result<Connection> {
        Client::builder(address).connect()
    }

    /// A builder for a connection with an authkey or a timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Client, Listener};
    /// let listener = Listener::builder("127.0.0.1:0").authkey(b"k").bind()?;
    /// let address = listener.address().clone();
    /// let t = std::thread::spawn(move || {
    ///     Client::builder(address).authkey(b"k").timeout(Duration::from_secs(30)).connect()
    /// });
    /// let server_side = listener.accept()?;
    /// let client_side = t.join().unwrap()?;
    /// client_side.send_bytes(b"authenticated")?;
    /// assert_eq!(server_side.recv_bytes()?, b"authenticated");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder(address: impl ToAddress) -> ClientBuilder {
        ClientBuilder {
            address: address.to_address(),
            authkey: None,
            timeout: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            policy: auth::Policy::default(),
            multiproc_peer: false,
        }
    }
}

/// Options for a client connection; made by [`Client::builder`].
pub struct ClientBuilder {
    address: Result<Address>,
    authkey: Option<Vec<u8>>,
    timeout: Option<Duration>,
    handshake_timeout: Duration,
    policy: auth::Policy,
    multiproc_peer: bool,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("authkey", &redacted(&self.authkey))
            .field("timeout", &self.timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("require_sha256", &self.policy.require_sha256)
            .field("multiproc_peer", &self.multiproc_peer)
            .finish()
    }
}

impl ClientBuilder {
    /// Proves knowledge of `key` to the listener and requires the same of it (Python's
    /// `authkey=`); the listener must have the same key.
    ///
    /// ```
    /// let b = multiproc::Client::builder("127.0.0.1:6000").authkey(b"secret");
    /// ```
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// Bounds the connect and the authkey handshake together; past it, [`Error::Timeout`].
    /// Without it the connect waits as long as the listener's backlog stays full, as
    /// Python's `Client` does; the handshake has its own
    /// [`handshake_timeout`](Self::handshake_timeout) either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Client::builder("127.0.0.1:6000").timeout(Duration::from_secs(5));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long the authkey handshake may take, counted from the connect (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s; Python's `Client` waits forever). A listener
    /// that stays silent, or takes longer than this to call `accept`, gives
    /// [`Error::Timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Client::builder("127.0.0.1:6000")
    ///     .authkey(b"k")
    ///     .handshake_timeout(Duration::from_secs(60));
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// With `true`, the listener must use HMAC-SHA256: a CPython 3.11 (or older)
    /// listener, whose challenge asks for HMAC-MD5, is refused with
    /// [`Error::AuthenticationFailed`] before anything is answered. Off by default.
    ///
    /// ```
    /// let b = multiproc::Client::builder("127.0.0.1:6000")
    ///     .authkey(b"k")
    ///     .require_sha256(true);
    /// ```
    pub fn require_sha256(mut self, yes: bool) -> Self {
        self.policy.require_sha256 = yes;
        self
    }

    /// With `true`, the listener is declared a multiproc process: over a Unix socket, the
    /// connection sends large
    /// [`send_bytes_mapped`](Connection::send_bytes_mapped) messages in sealed files, as
    /// a [`pipe`](crate::pipe) does (see
    /// [large messages](Connection#large-messages)). Off by default, since a Python
    /// listener cannot read such a message; no effect over TCP.
    ///
    /// ```
    /// let b = multiproc::Client::builder("/tmp/our-own-service.sock").multiproc_peer(true);
    /// ```
    pub fn multiproc_peer(mut self, yes: bool) -> Self {
        self.multiproc_peer = yes;
        self
    }

    /// Connects, then runs the authkey handshake when a key was given.
    ///
    /// A listener that refuses the key gives [`Error::AuthenticationFailed`]; nobody
    /// listening gives an [`Error::Io`] (`ConnectionRefused` or `NotFound`).
    ///
    /// ```
    /// let name = format!("\0multiproc-doc-nobody-{}", std::process::id());
    /// let r = multiproc::Client::builder(name).connect();
    /// assert!(matches!(r, Err(multiproc::Error::Io(_))));
    /// ```
    pub fn connect(self) -> Result<Connection> {
        let address = self.address?;
        let deadline = self.timeout.and_then(deadline::after);
        let fd: OwnedFd = match &address {
            Address::Unix(p) => {
                sysnet::unix_connect(UnixName::Path(p), deadline).map_err(timeout_as_error)?
            }
            Address::Abstract(n) => {
                sysnet::unix_connect(UnixName::Abstract(n), deadline).map_err(timeout_as_error)?
            }
            Address::Tcp(a) => {
                let stream = match deadline {
                    None => TcpStream::connect(a)?,
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(Error::Timeout);
                        }
                        TcpStream::connect_timeout(a, left).map_err(timeout_as_error)?
                    }
                };
                stream.set_nodelay(true)?;
                stream.into()
            }
        };
        let mut conn = Connection::from_socket(fd);
        conn.known_peer = self.multiproc_peer && !matches!(address, Address::Tcp(_));
        if let Some(key) = &self.authkey {
            let handshake_deadline = match (deadline, deadline::after(self.handshake_timeout)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            auth::connect_side(&conn, key, handshake_deadline, self.policy)?;
        }
        Ok(conn)
    }
}

//! The client side: links to managers, [`ProxyCore`] and its reference counting.
//!
//! A process keeps one [`Link`] per manager it talks to. The link's *anchor*
//! connection carries every request that changes a reference count (create, incref,
//! decref), so the server counts this process's references on that one connection and
//! drops them all when it closes, however the process ends. Calls go through a
//! connection per thread (as in Python), so threads never wait for each other's calls
//! and a blocking call (a lock, a queue `get`) holds up only its own thread.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Manager;
use super::mailbox::{self, Mailbox};
use super::protocol::{self, Request};
use super::served::CallError;
use crate::connection::{Address, Client, Connection};
use crate::error::{Error, Result};
use crate::wire::{codec, handles};

/// The largest request a server accepts by default
/// ([`ManagerBuilder::max_request_size`](super::ManagerBuilder::max_request_size)).
pub(crate) const DEFAULT_MAX_REQUEST: usize = 64 << 20;

/// The largest reply a client accepts (a whole list copied out, say): the server is
/// one the client chose, by its address and key, but its replies are bounded all the
/// same.
pub(crate) const MAX_REPLY: usize = 1 << 30;

/// How long dropping a proxy waits for the manager to count it: a drop must never wait
/// unbounded, even for a stopped manager. The link then gives up its anchor connection,
/// and with it the process's references.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a manager listens, in a form that travels inside an encoded proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireAddress {
    Unix(PathBuf),
    Abstract(Vec<u8>),
    Tcp(SocketAddr),
}

impl From<&Address> for WireAddress {
    fn from(a: &Address) -> WireAddress {
        match a {
            Address::Unix(p) => WireAddress::Unix(p.clone()),
            Address::Abstract(n) => WireAddress::Abstract(n.clone()),
            Address::Tcp(t) => WireAddress::Tcp(*t),
        }
    }
}

impl From<WireAddress> for Address {
    fn from(a: WireAddress) -> Address {
        match a {
            WireAddress::Unix(p) => Address::Unix(p),
            WireAddress::Abstract(n) => Address::Abstract(n),
            WireAddress::Tcp(t) => Address::Tcp(t),
        }
    }
}

/// This process's way to one manager.
pub(crate) struct Link {
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    /// The process that made the link: a forked child makes its own.
    pid: u32,
    /// The connection on which this process's references are counted; `None` once it
    /// failed (the manager is gone, or it stopped answering).
    anchor: Mutex<Option<Connection>>,
    /// The largest request the server accepts: a longer one is refused here, before
    /// it would cost the connection.
    max_request: usize,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Every link of this process, to share one per manager.
static LINKS: Mutex<Vec<Weak<Link>>> = Mutex::new(Vec::new());

/// A thread's connection to one manager: its link, the process that opened it, the
/// connection.
type ThreadConn = (Weak<Link>, u32, Rc<CallConn>);

thread_local! {
    /// This thread's connections: (link, pid of the process that opened it, connection).
    static CONNS: RefCell<Vec<ThreadConn>> = const { RefCell::new(Vec::new()) };
    /// Set while arguments of a manager request are encoded: a proxy inside them is on
    /// its way into the server, kept by the object named here if there is one (its
    /// link's address and its id; see [`ProxyCore`]'s `Serialize`).
    static INTO_SERVER: std::cell::Cell<Option<Holder>> = const { std::cell::Cell::new(None) };
    /// The head of the request being sent, reused.
    static HEAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens a connection to a manager and authenticates.
pub(crate) fn open(address: &Address, authkey: &[u8]) -> Result<Connection> {
    let conn = Client::builder(address.clone())
        .authkey(authkey)
        .connect()
        .map_err(|e| gone(address, e))?;
    conn.set_max_message_size(MAX_REPLY);
    Ok(conn)
}

/// A transport failure, told as the manager being unreachable.
fn gone(address: &Address, e: Error) -> Error {
    match e {
        Error::Closed => Error::PeerDied(format!("the manager at {address} closed the connection")),
        Error::Io(io) => {
            Error::PeerDied(format!("the manager at {address} cannot be reached: {io}"))
        }
        e => e,
    }
}

/// Sends `req` (with `fds`) and returns the reply: the value's bytes (after the tag),
/// or an error that leaves the connection usable (the call's own, or a request over
/// `limit` refused before anything is sent). The outer error is the transport's, after
/// which the connection is unusable.
fn round_trip(
    conn: &Connection,
    req: &Request<'_>,
    limit: usize,
    timeout: Option<Duration>,
) -> Result<Result<Vec<u8>>> {
    round_trip_with(conn, req, limit, timeout, &[])
}

fn round_trip_with(
    conn: &Connection,
    req: &Request<'_>,
    limit: usize,
    timeout: Option<Duration>,
    fds: &[BorrowedFd<'_>],
) -> Result<Result<Vec<u8>>> {
    let sent = with_parts(req, limit, |parts, _| conn.send_parts(parts, fds, false))?;
    if let Err(e) = sent {
        return Ok(Err(e));
    }
    let reply = match timeout {
        None => conn.recv_bytes()?,
        Some(t) => conn.recv_bytes_timeout(t)?,
    };
    read_reply(reply)
}

/// Runs `send` on the parts of `req` (its head, written into this thread's reused
/// buffer, and its tail) and their length in all; `Ok(Err(MessageTooLarge))`, with
/// nothing sent, when that is past `limit`.
fn with_parts(
    req: &Request<'_>,
    limit: usize,
    send: impl Fn(&[&[u8]; 2], usize) -> Result<()>,
) -> Result<Result<()>> {
    let run = |head: &mut Vec<u8>| {
        req.write_head(head);
        let len = head.len() + req.tail().len();
        if len > limit {
            return Ok(Err(Error::MessageTooLarge {
                len: len as u64,
                limit,
            }));
        }
        send(&[head, req.tail()], len).map(Ok)
    };
    // A proxy dropped while the thread's locals are torn down finds no reused buffer.
    HEAD.try_with(|h| run(&mut h.borrow_mut()))
        .unwrap_or_else(|_| run(&mut Vec::new()))
}

/// The value's bytes of a reply, or the call's error.
fn read_reply(mut reply: Vec<u8>) -> Result<Result<Vec<u8>>> {
    match reply.first() {
        Some(&protocol::OK) => {
            reply.remove(0);
            Ok(Ok(reply))
        }
        Some(&protocol::ERR) => {
            let e: CallError = codec::decode(&reply[1..], Vec::new())?;
            Ok(Err(e.into()))
        }
        _ => Err(Error::Decode("the manager sent a malformed reply".into())),
    }
}

/// A thread's connection for calls, with its mailbox when the manager is on this
/// machine.
pub(crate) struct CallConn {
    conn: Connection,
    mailbox: Option<Mailbox>,
    /// Calls (object and method, hashed) whose last reply took longer than any spin:
    /// a blocking `get` or `acquire`. Their waits sleep at once, leaving the CPU to
    /// the processes that will answer them (two CPUs are easily all taken).
    slow: RefCell<SlowCalls>,
}

/// A few calls known to be slow, the oldest forgotten first.
#[derive(Default)]
struct SlowCalls {
    keys: [u64; 8],
    next: usize,
}

impl SlowCalls {
    /// The key of a request: 0 for any but a call.
    fn key(req: &Request<'_>) -> u64 {
        let Request::Call { id, method, .. } = *req else {
            return 0;
        };
        // FNV-1a over the method name, mixed with the id; never 0 (an empty slot).
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in method.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h | 1
    }

    fn contains(&self, key: u64) -> bool {
        key != 0 && self.keys.contains(&key)
    }

    /// Records whether the call `key` was quick this time.
    fn record(&mut self, key: u64, quick: bool) {
        if key == 0 {
            return;
        }
        let at = self.keys.iter().position(|k| *k == key);
        match (at, quick) {
            (Some(i), true) => self.keys[i] = 0,
            (None, false) => {
                self.keys[self.next] = key;
                self.next = (self.next + 1) % self.keys.len();
            }
            _ => {}
        }
    }
}

impl CallConn {
    /// Opens a call connection, with a mailbox when `with_mailbox` and the manager is
    /// reached through a Unix socket (which carries its descriptor). A mailbox that
    /// cannot be made leaves the connection on the socket alone.
    fn open(address: &Address, authkey: &[u8], with_mailbox: bool) -> Result<CallConn> {
        let conn = open(address, authkey)?;
        let local = matches!(address, Address::Unix(_) | Address::Abstract(_));
        if !(with_mailbox && local) {
            return Ok(CallConn::plain(conn));
        }
        CallConn::with_mailbox(conn).map_err(|e| gone(address, e))
    }

    /// Gives the server on the other end of `conn` (a Unix socket) a mailbox; the
    /// error is the transport's.
    pub(crate) fn with_mailbox(conn: Connection) -> Result<CallConn> {
        let Ok(mailbox) = Mailbox::create() else {
            return Ok(CallConn::plain(conn));
        };
        match round_trip_with(&conn, &Request::Mailbox, usize::MAX, None, &[mailbox.fd()])? {
            Ok(_) => Ok(CallConn {
                conn,
                mailbox: Some(mailbox),
                slow: RefCell::default(),
            }),
            Err(_) => Ok(CallConn::plain(conn)),
        }
    }

    fn plain(conn: Connection) -> CallConn {
        CallConn {
            conn,
            mailbox: None,
            slow: RefCell::default(),
        }
    }

    /// Its socket.
    #[cfg(test)]
    pub(crate) fn socket(&self) -> &Connection {
        &self.conn
    }

    /// Its mailbox, if any.
    #[cfg(test)]
    pub(crate) fn mailbox(&self) -> Option<&Mailbox> {
        self.mailbox.as_ref()
    }

    /// [`round_trip`] through the mailbox, if any: a request that fits goes there,
    /// a longer one through the socket; the reply comes the way the server chose.
    pub(crate) fn round_trip(&self, req: &Request<'_>, limit: usize) -> Result<Result<Vec<u8>>> {
        let Some(mb) = &self.mailbox else {
            return round_trip(&self.conn, req, limit, None);
        };
        let sent = with_parts(req, limit, |parts, len| {
            if mailbox::fits(len) {
                if mb.post_data(parts, mailbox::REQUEST) {
                    return Ok(());
                }
            } else {
                // Tells a server that spins to look at the socket.
                mb.post(mailbox::REQUEST_ON_SOCKET);
            }
            self.conn.send_parts(parts, &[], false)
        })?;
        if let Err(e) = sent {
            return Ok(Err(e));
        }
        let key = SlowCalls::key(req);
        let spin = !self.slow.borrow().contains(key);
        let waited = mb.wait(spin, mailbox::reply_posted);
        let mut slept = None;
        let reply = match waited {
            Some(s) if mailbox::reply_in_area(s) => {
                let mut reply = Vec::new();
                if !mb.read_data(&mut reply, MAX_REPLY) {
                    return Err(Error::Decode(
                        "the manager wrote a malformed reply length".into(),
                    ));
                }
                reply
            }
            // Posted on the socket, or this side sleeps there (where a dead manager's
            // end of stream also shows).
            _ => {
                let t = Instant::now();
                let reply = loop {
                    match self.conn.recv_bytes_timeout(mailbox::RECHECK) {
                        Ok(r) => break r,
                        // A reply found in the mailbox after all: taken from there.
                        Err(Error::Timeout) if mailbox::reply_in_area(mb.state()) => {
                            let mut reply = Vec::new();
                            if !mb.read_data(&mut reply, MAX_REPLY) {
                                return Err(Error::Decode(
                                    "the manager wrote a malformed reply length".into(),
                                ));
                            }
                            break reply;
                        }
                        Err(Error::Timeout) => {}
                        Err(e) => return Err(e),
                    }
                };
                slept = Some(t.elapsed());
                reply
            }
        };
        // Slow: the reply kept this side asleep for longer than any spin lasts.
        let quick = slept.is_none_or(|t| t <= mailbox::SPIN_MAX);
        self.slow.borrow_mut().record(key, quick);
        read_reply(reply)
    }
}

/// Decodes a reply's value.
fn decode_reply<R: DeserializeOwned>(bytes: Vec<u8>) -> Result<R> {
    codec::decode_owned(bytes, 0, Vec::new())
}

impl Link {
    /// This process's link to the manager at `address`: an existing one, or a new one
    /// whose anchor connection is opened now.
    pub(crate) fn get(address: &Address, authkey: &[u8]) -> Result<Arc<Link>> {
        let pid = std::process::id();
        let mut links = LINKS.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|w| w.strong_count() > 0);
        for w in links.iter() {
            if let Some(l) = w.upgrade() {
                if l.pid == pid && l.address == *address && l.authkey == authkey && l.alive() {
                    return Ok(l);
                }
            }
        }
        let anchor = open(address, authkey)?;
        let max_request = match round_trip(&anchor, &Request::Limits, usize::MAX, None) {
            Ok(Ok(bytes)) => decode_reply::<u64>(bytes)?,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(gone(address, e)),
        };
        let link = Arc::new(Link {
            address: address.clone(),
            authkey: authkey.to_vec(),
            pid,
            anchor: Mutex::new(Some(anchor)),
            max_request: usize::try_from(max_request).unwrap_or(usize::MAX),
        });
        links.push(Arc::downgrade(&link));
        Ok(link)
    }

    /// Whether the anchor connection still looks open: between requests nothing is
    /// owed to it, so a readable anchor has reached end of stream (the server is gone).
    fn alive(&self) -> bool {
        let anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        anchor
            .as_ref()
            .is_some_and(|c| matches!(c.poll(Some(Duration::ZERO)), Ok(false)))
    }

    /// A request that changes this process's references, on the anchor connection.
    pub(crate) fn anchored(&self, req: &Request<'_>) -> Result<Vec<u8>> {
        self.anchored_within(req, None)
    }

    /// [`anchored`](Self::anchored), giving up after `timeout`.
    pub(crate) fn anchored_within(
        &self,
        req: &Request<'_>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>> {
        if self.pid != std::process::id() {
            return Err(Error::state(
                "a manager link made before fork cannot count references in the child",
            ));
        }
        let mut anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        let conn = anchor
            .as_ref()
            .ok_or_else(|| Error::PeerDied(format!("the manager at {} is gone", self.address)))?;
        match round_trip(conn, req, self.max_request, timeout) {
            Ok(r) => r,
            Err(e) => {
                *anchor = None;
                Err(gone(&self.address, e))
            }
        }
    }

    /// Runs a request on this thread's connection to the manager.
    pub(crate) fn request(self: &Arc<Link>, req: &Request<'_>) -> Result<Vec<u8>> {
        let pid = std::process::id();
        // Called while the thread's locals are torn down (from a drop), a request goes
        // on a connection of its own.
        let found = CONNS
            .try_with(|c| {
                let mut conns = c.borrow_mut();
                conns.retain(|(l, p, _)| l.strong_count() > 0 && *p == pid);
                conns
                    .iter()
                    .find(|(l, _, _)| std::ptr::eq(l.as_ptr(), Arc::as_ptr(self)))
                    .map(|(_, _, conn)| conn.clone())
            })
            .ok()
            .flatten();
        let conn = match found {
            Some(c) => c,
            None => {
                // A connection of its own for a thread being torn down keeps no mailbox.
                let kept = CONNS.try_with(|_| ()).is_ok();
                let conn = Rc::new(CallConn::open(&self.address, &self.authkey, kept)?);
                let _ = CONNS.try_with(|c| {
                    c.borrow_mut()
                        .push((Arc::downgrade(self), pid, conn.clone()))
                });
                conn
            }
        };
        match conn.round_trip(req, self.max_request) {
            Ok(r) => r,
            Err(e) => {
                let _ =
                    CONNS.try_with(|c| c.borrow_mut().retain(|(_, _, k)| !Rc::ptr_eq(k, &conn)));
                Err(gone(&self.address, e))
            }
        }
    }
}

/// A connection to one object of one manager: what every typed proxy wraps.
///
/// Clones share one reference of this process to the object; the server frees the
/// object when no process (and no value held by the manager) refers to it. A
/// `ProxyCore` travels inside values (process arguments, pipes, queues, values held by
/// the manager): it carries its manager's address and key, and the receiving process
/// connects on arrival. A proxy whose manager is gone answers every call with
/// [`Error::PeerDied`] at once.
#[derive(Clone)]
pub struct ProxyCore {
    held: Arc<Held>,
}

struct Held {
    link: Arc<Link>,
    id: u64,
    typeid: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        // A copy inherited through fork was never counted; the manager may be gone.
        if self.link.pid == std::process::id() {
            let _ = self
                .link
                .anchored_within(&Request::DecRef { id: self.id }, Some(DROP_TIMEOUT));
        }
    }
}

impl fmt::Debug for ProxyCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCore")
            .field("typeid", &self.held.typeid)
            .field("id", &self.held.id)
            .field("address", &self.held.link.address)
            .finish()
    }
}

/// The object a value on its way into the server goes to: the address of its link and
/// its id (0 for a value no object keeps, or one made by the request).
#[derive(Clone, Copy)]
struct Holder(usize, u64);

/// Encodes `value` as arguments of a manager request: proxies inside it are on their
/// way into the server, kept as long as it runs.
pub(crate) fn encode_args<A: Serialize + ?Sized>(value: &A) -> Result<Vec<u8>> {
    encode_into_server(value, Holder(0, 0))
}

/// Encodes `value` as arguments of a call of `holder`'s object, which may keep it: a
/// proxy inside it (of the same manager) keeps its object alive as long as the holder
/// lives.
pub(crate) fn encode_args_for<A: Serialize + ?Sized>(
    value: &A,
    holder: &ProxyCore,
) -> Result<Vec<u8>> {
    encode_into_server(
        value,
        Holder(Arc::as_ptr(&holder.held.link) as usize, holder.held.id),
    )
}

fn encode_into_server<A: Serialize + ?Sized>(value: &A, holder: Holder) -> Result<Vec<u8>> {
    struct Reset(Option<Holder>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = INTO_SERVER.try_with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(
        INTO_SERVER
            .try_with(|c| c.replace(Some(holder)))
            .unwrap_or(None),
    );
    codec::encode_plain(value)
}

static NEXT_NONCE: AtomicU64 = AtomicU64::new(0);

/// A fresh name component, unique in this process.
pub(crate) fn nonce() -> u64 {
    NEXT_NONCE.fetch_add(1, Ordering::Relaxed)
}

impl ProxyCore {
    /// Asks `manager` to construct an object of `typeid` with constructor `ctor` and
    /// `args` (a builtin type ignores `ctor`); the new proxy holds its one reference.
    ///
    /// ```
    /// use multiproc::{Manager, ProxyCore};
    /// let m = Manager::start()?;
    /// let d = ProxyCore::create(&m, "dict", "", &())?;
    /// assert_eq!(d.typeid(), "dict");
    /// assert_eq!(d.call::<_, u64>("len", &())?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create<A: Serialize + ?Sized>(
        manager: &Manager,
        typeid: &str,
        ctor: &str,
        args: &A,
    ) -> Result<ProxyCore> {
        ProxyCore::create_raw(manager, typeid, ctor, &encode_args(args)?)
    }

    /// [`create`](Self::create) with arguments encoded already.
    pub(crate) fn create_raw(
        manager: &Manager,
        typeid: &str,
        ctor: &str,
        args: &[u8],
    ) -> Result<ProxyCore> {
        let link = manager.link.clone();
        let reply = link.anchored(&Request::Create { typeid, ctor, args })?;
        let id: u64 = decode_reply(reply)?;
        Ok(ProxyCore::adopt(link, id, typeid.to_string()))
    }

    /// A proxy for a reference the caller already holds.
    pub(crate) fn adopt(link: Arc<Link>, id: u64, typeid: String) -> ProxyCore {
        ProxyCore {
            held: Arc::new(Held { link, id, typeid }),
        }
    }

    /// Calls `method`: the reply decoded as `R`, or the call's error as the crate's
    /// [`Error`]. Safe from many threads at once: each thread has its own connection
    /// to the manager, as in Python. A request longer than the server accepts is
    /// refused with [`Error::MessageTooLarge`] before it is sent; replies may be up to
    /// 1 GiB.
    ///
    /// ```
    /// use multiproc::{Manager, ProxyCore};
    /// let m = Manager::start()?;
    /// let l = ProxyCore::create(&m, "list", "", &())?;
    /// assert_eq!(l.call::<_, u64>("len", &())?, 0);
    /// assert!(matches!(
    ///     l.call::<_, u64>("no_such_method", &()),
    ///     Err(multiproc::Error::InvalidArgument(_))
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R> {
        let args = encode_args_for(args, self)?;
        self.call_raw(method, &args).and_then(decode_reply)
    }

    /// Calls `method` with arguments already encoded; the reply's bytes.
    pub(crate) fn call_raw(&self, method: &str, args: &[u8]) -> Result<Vec<u8>> {
        self.held.link.request(&Request::Call {
            id: self.held.id,
            method,
            args,
        })
    }

    /// The name the server knows the object's type by (Python's `typeid`).
    pub fn typeid(&self) -> &str {
        &self.held.typeid
    }

    /// The object's id in its manager.
    pub(crate) fn id(&self) -> u64 {
        self.held.id
    }
}

/// A proxy in wire form.
#[derive(Serialize, Deserialize)]
struct WireProxy {
    address: WireAddress,
    authkey: Vec<u8>,
    id: u64,
    typeid: String,
    /// Whether the receiver takes over the reference that travels with it.
    adopt: bool,
}

/// Encoding a proxy gives the encoded form a reference of its own, so that the object
/// lives until the receiver has counted its own (the sender may drop its proxy at
/// once). A proxy on its way to another process is *in transit*: its receiver takes
/// that reference over. A proxy inside a value a managed object keeps (a list in a
/// dict) may be read any number of times: each reader counts a reference of its own,
/// and the one of the stored form lasts as long as the object keeping it (or the
/// manager, for a value given to a constructor).
impl Serialize for ProxyCore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let into_server = INTO_SERVER.try_with(std::cell::Cell::get).unwrap_or(None);
        // Only an object of the same manager can keep this one alive.
        let holder = match into_server {
            Some(Holder(link, id)) if link == Arc::as_ptr(&self.held.link) as usize => id,
            _ => 0,
        };
        // The second encoding of a large message repeats the first one's references.
        if !handles::is_repeat() {
            self.held
                .link
                .anchored(&Request::Detached {
                    id: self.held.id,
                    transit: into_server.is_none(),
                    holder,
                })
                .map_err(|e| S::Error::custom(format!("cannot send a proxy: {e}")))?;
        }
        WireProxy {
            address: (&self.held.link.address).into(),
            authkey: self.held.link.authkey.clone(),
            id: self.held.id,
            typeid: self.held.typeid.clone(),
            adopt: into_server.is_none(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProxyCore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ProxyCore, D::Error> {
        let w = WireProxy::deserialize(d)?;
        let address: Address = w.address.into();
        let link = Link::get(&address, &w.authkey)
            .map_err(|e| D::Error::custom(format!("cannot reach the proxy's manager: {e}")))?;
        link.anchored(&Request::IncRef {
            id: w.id,
            adopt: w.adopt,
        })
        .map_err(|e| D::Error::custom(format!("cannot count a received proxy: {e}")))?;
        Ok(ProxyCore::adopt(link, w.id, w.typeid))
    }
}

/// A typed proxy: what `#[multiproc::proxy]` generates and every builtin proxy is.
pub trait Proxy: Sized {
    /// The type id of the objects it reaches.
    const TYPEID: &'static str;
    /// Wraps a core (whose type id the caller has checked).
    fn from_core(core: ProxyCore) -> Self;
    /// The core it wraps.
    fn core(&self) -> &ProxyCore;
}

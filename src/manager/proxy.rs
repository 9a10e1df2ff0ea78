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
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Manager;
use super::protocol::{self, Request};
use super::served::CallError;
use crate::connection::{Address, Client, Connection};
use crate::error::{Error, Result};
use crate::wire::{codec, handles};

/// The largest reply a client accepts by default, and the largest request a server
/// accepts by default ([`ManagerBuilder::max_request_size`](super::ManagerBuilder::max_request_size)).
pub(crate) const DEFAULT_MAX_REQUEST: usize = 64 << 20;

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
type ThreadConn = (Weak<Link>, u32, Rc<Connection>);

thread_local! {
    /// This thread's connections: (link, pid of the process that opened it, connection).
    static CONNS: RefCell<Vec<ThreadConn>> = const { RefCell::new(Vec::new()) };
    /// Set while arguments of a manager request are encoded: a proxy inside them is on
    /// its way into the server (see [`ProxyCore`]'s `Serialize`).
    static INTO_SERVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The head of the request being sent, reused.
    static HEAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens a connection to a manager and authenticates.
pub(crate) fn open(address: &Address, authkey: &[u8]) -> Result<Connection> {
    let conn = Client::builder(address.clone())
        .authkey(authkey)
        .connect()
        .map_err(|e| gone(address, e))?;
    conn.set_max_message_size(DEFAULT_MAX_REQUEST);
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

/// Sends `req` and returns the reply: the value's bytes (after the tag) or the call's
/// error. The outer error is the transport's, after which the connection is unusable.
fn round_trip(
    conn: &Connection,
    req: &Request<'_>,
    timeout: Option<Duration>,
) -> Result<std::result::Result<Vec<u8>, CallError>> {
    HEAD.with(|h| {
        let mut head = h.borrow_mut();
        req.write_head(&mut head);
        conn.send_parts(&[&head, req.tail()], &[], false)
    })?;
    let mut reply = match timeout {
        None => conn.recv_bytes()?,
        Some(t) => conn.recv_bytes_timeout(t)?,
    };
    match reply.first() {
        Some(&protocol::OK) => {
            reply.remove(0);
            Ok(Ok(reply))
        }
        Some(&protocol::ERR) => Ok(Err(codec::decode(&reply[1..], Vec::new())?)),
        _ => Err(Error::Decode("the manager sent a malformed reply".into())),
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
        let link = Arc::new(Link {
            address: address.clone(),
            authkey: authkey.to_vec(),
            pid,
            anchor: Mutex::new(Some(anchor)),
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
        match round_trip(conn, req, timeout) {
            Ok(r) => r.map_err(Error::from),
            Err(e) => {
                *anchor = None;
                Err(gone(&self.address, e))
            }
        }
    }

    /// Runs a request on this thread's connection to the manager.
    pub(crate) fn request(self: &Arc<Link>, req: &Request<'_>) -> Result<Vec<u8>> {
        let pid = std::process::id();
        let found = CONNS.with(|c| {
            let mut conns = c.borrow_mut();
            conns.retain(|(l, p, _)| l.strong_count() > 0 && *p == pid);
            conns
                .iter()
                .find(|(l, _, _)| std::ptr::eq(l.as_ptr(), Arc::as_ptr(self)))
                .map(|(_, _, conn)| conn.clone())
        });
        let conn = match found {
            Some(c) => c,
            None => {
                let conn = Rc::new(open(&self.address, &self.authkey)?);
                CONNS.with(|c| {
                    c.borrow_mut()
                        .push((Arc::downgrade(self), pid, conn.clone()))
                });
                conn
            }
        };
        match round_trip(&conn, req, None) {
            Ok(r) => r.map_err(Error::from),
            Err(e) => {
                CONNS.with(|c| c.borrow_mut().retain(|(_, _, k)| !Rc::ptr_eq(k, &conn)));
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

/// Encodes `value` as arguments of a manager request: proxies inside it are on their
/// way into the server.
pub(crate) fn encode_args<A: Serialize + ?Sized>(value: &A) -> Result<Vec<u8>> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            INTO_SERVER.set(self.0);
        }
    }
    let _reset = Reset(INTO_SERVER.replace(true));
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
    /// to the manager, as in Python.
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
        let args = encode_args(args)?;
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
/// and the one of the stored form lasts as long as the manager.
impl Serialize for ProxyCore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let into_server = INTO_SERVER.get();
        // The second encoding of a large message repeats the first one's references.
        if !handles::is_repeat() {
            self.held
                .link
                .anchored(&Request::Detached {
                    id: self.held.id,
                    transit: !into_server,
                })
                .map_err(|e| S::Error::custom(format!("cannot send a proxy: {e}")))?;
        }
        WireProxy {
            address: (&self.held.link.address).into(),
            authkey: self.held.link.authkey.clone(),
            id: self.held.id,
            typeid: self.held.typeid.clone(),
            adopt: !into_server,
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

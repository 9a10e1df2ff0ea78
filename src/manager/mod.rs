//! Managers: objects held by a server process, reached through typed proxies (Python's
//! `multiprocessing.managers`).
//!
//! [`Manager::start`] starts a server process (under any start method: the server is a
//! [`Process`](crate::Process) like any other) and returns a handle that makes objects
//! in it: [`dict`](Manager::dict), [`list`](Manager::list),
//! [`namespace`](Manager::namespace), [`value`](Manager::value),
//! [`array`](Manager::array), and user types registered with
//! [`ManagerBuilder::register`]. Each comes back as a typed proxy ([`DictProxy`],
//! [`ListProxy`], …) whose methods are requests to the server, one message each way.
//! Proxies travel in process arguments, through pipes and queues, and inside values
//! the manager holds (a dict of lists); the object lives while any of them refers to
//! it.
//!
//! A manager may also serve on a TCP address with a key
//! ([`ManagerBuilder::address`], [`ManagerBuilder::serve_forever`]), for programs that
//! know only the address and the key ([`Manager::connect`]), and expose objects by
//! name ([`ManagerBuilder::expose`], [`Manager::get`]).
//!
//! ```
//! use multiproc::Manager;
//!
//! fn worker(d: multiproc::DictProxy<String, i64>) {
//!     d.set(&"answer".to_string(), &42).unwrap();
//! }
//!
//! let manager = Manager::start()?;
//! let d = manager.dict::<String, i64>()?;
//! let mut p = multiproc::Process::new(worker, d.clone());
//! p.start()?;
//! p.join()?;
//! assert_eq!(d.get(&"answer".to_string())?, Some(42));
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # What is safe to send
//!
//! A connection to a manager is authenticated with its key (CPython's HMAC challenge)
//! before the server reads anything from it. Every request is one message of at most
//! [`max_request_size`](ManagerBuilder::max_request_size) bytes (64 MiB by default): a
//! longer length prefix closes the connection before anything is allocated for it. A
//! request names a type id and a method name; the server runs only the builtin types'
//! methods and those of types registered with [`ManagerBuilder::register`] (whose code
//! is in the server's own binary), and decodes arguments with serde, which never runs
//! code. A malformed request gets an error and the connection stays usable; a call that
//! panics fails with [`Error::Panicked`](crate::Error::Panicked) and the server
//! carries on.
//!
//! # When a process dies
//!
//! - **The manager dies** (killed, or shut down): every connection to it reaches end of
//!   stream at once, so a call in progress and every later call of any proxy fails with
//!   [`Error::PeerDied`](crate::Error::PeerDied), without waiting.
//! - **A client dies** (or closes its connection), even in the middle of a call: the
//!   server drops the references its proxies held, frees the objects nobody else refers
//!   to, and tells every object the client called (`Served::client_gone`), so that a
//!   lock or semaphore it held through a proxy is released for the others. Other
//!   clients are served throughout, each on its own thread.
//! - **The process that started the manager** shuts it down when the [`Manager`] is
//!   dropped (it asks, waits briefly, then terminates and finally kills the server); the
//!   server is a daemon process, so it ends with its creator even when the creator is
//!   killed. It ignores SIGINT, as CPython's does: Ctrl-C in a terminal reaches the
//!   whole process group, and the program decides what it means. A manager reached
//!   with [`Manager::connect`] is left running.
//!
//! # References
//!
//! The clones of a proxy in one process share one reference. Encoding a proxy (to send
//! it) adds a reference that travels with the bytes; the receiving process takes it
//! over. A proxy given to a managed object (a list stored in a dict) keeps its object
//! alive as long as that object lives: freeing the dict frees the lists nobody else
//! refers to. Overwriting or removing the stored proxy does not let go of it (the
//! server keeps only bytes and cannot tell), nor do two objects that keep each other
//! free each other; each process reading a stored proxy back counts a reference of its
//! own. A proxy given to a constructor (`dict_from`, `list_from`, `value`), or encoded
//! and never received (a message never read), keeps its object until the manager ends.

mod builtin;
mod mailbox;
mod protocol;
mod proxy;
mod remote;
mod served;
mod server;
mod sync_objects;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use self::builtin::{ArrayProxy, DictProxy, Key, ListProxy, NamespaceProxy, ValueProxy};
pub use self::proxy::{Proxy, ProxyCore};
pub use self::served::{
    CallCx, CallError, ClientId, Registered, RemoteFault, Served, decode_args, encode_reply,
};
pub use self::sync_objects::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, ConditionProxyGuard, EventProxy,
    JoinableQueueProxy, LockProxy, LockProxyGuard, ProxyAcquireError, ProxyAcquireResult,
    QueueProxy, RLockProxy, SemaphoreProxy, SemaphoreProxyGuard,
};

use self::protocol::Request;
use self::proxy::{Link, WireAddress};
use self::server::{Config, Exposed, ServerArgs};
use crate::connection::{Address, ToAddress, pipe};
use crate::error::{Error, Result};
use crate::process::{Process, StartMethod};
use crate::sys::image;

/// How long a starting server may take to report its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `shutdown` waits for the server to end before terminating it, then before
/// killing it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A manager: a server process holding shared objects, and the handle that makes them
/// (Python's `SyncManager`, and `BaseManager` through [`Manager::builder`]).
///
/// Dropping a `Manager` that this process started shuts the server down, as leaving
/// Python's `with Manager() as m:` does: it asks the server to stop, waits briefly,
/// then terminates and at last kills it; it never waits unbounded. A manager reached
/// with [`connect`](Manager::connect), or dropped in another process (a forked copy),
/// is left running.
///
/// When the manager dies (killed, or shut down), every call of every proxy fails at
/// once with [`Error::PeerDied`](crate::Error::PeerDied). When a client dies, even in
/// the middle of a call, the server drops its references and tells every object it
/// called ([`Served::client_gone`]), so that a lock it held through a proxy is released;
/// other clients are served throughout.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let l = manager.list::<i32>()?;
/// l.append(&1)?;
/// assert_eq!(l.to_vec()?, vec![1]);
/// manager.shutdown()?;
/// assert!(l.len().is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Manager {
    pub(crate) link: Arc<Link>,
    server: Option<Process>,
    creator: u32,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.link.address)
            .field("server_pid", &self.server.as_ref().and_then(Process::pid))
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Starts a manager server process with the default options: a Unix socket of the
    /// abstract namespace, a random key, the default start method.
    pub fn start() -> Result<Manager> {
        Manager::builder().start()
    }

    /// A builder for a manager with registered types, an address, a key, a start method
    /// (Python's `BaseManager(address, authkey)` and `register`).
    ///
    /// ```
    /// let m = multiproc::Manager::builder()
    ///     .address("127.0.0.1:0")
    ///     .authkey(b"secret")
    ///     .start()?;
    /// assert!(matches!(m.address(), multiproc::Address::Tcp(_)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The address the server listens on (with a port chosen by the system when `0`
    /// was asked for).
    pub fn address(&self) -> &Address {
        &self.link.address
    }

    /// The key clients must know.
    pub fn authkey(&self) -> &[u8] {
        &self.link.authkey
    }

    /// The server's process id, when this handle started it.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(Process::pid)
    }

    /// The number of objects the server holds (Python's `_number_of_objects`): an
    /// object is freed when no proxy refers to it any more.
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<i32, i32>()?;
    /// assert_eq!(m.number_of_objects()?, 1);
    /// drop(d);
    /// assert_eq!(m.number_of_objects()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn number_of_objects(&self) -> Result<usize> {
        Ok(self.counts(0)?.1 as usize)
    }

    /// References the server counts for `proxy`'s object (0 once it is freed), and the
    /// number of objects it holds.
    pub(crate) fn counts(&self, id: u64) -> Result<(u64, u64)> {
        let reply = self.link.request(&Request::Count { id })?;
        crate::wire::codec::decode(&reply, Vec::new())
    }

    /// The number of references the server counts for the object `proxy` reaches:
    /// one per process holding a proxy, one per encoded proxy not yet received, one per
    /// stored copy inside a managed value; 0 once it is freed.
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<i32>()?;
    /// let l2 = l.clone();
    /// assert_eq!(m.refcount(&l)?, 1);
    /// drop(l2);
    /// assert_eq!(m.refcount(&l)?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn refcount<P: Proxy>(&self, proxy: &P) -> Result<u64> {
        Ok(self.counts(proxy.core().id())?.0)
    }

    /// Stops the server: at once for a manager this handle started (as dropping it
    /// does, but reporting errors); a manager reached with
    /// [`connect`](Manager::connect) is asked to stop, as any client holding the key
    /// may ask (Python's server offers `shutdown` to every client).
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let asked = self
            .link
            .anchored_within(&Request::Shutdown, Some(STOP_GRACE))
            .map(drop);
        let Some(mut p) = self.server.take() else {
            return asked;
        };
        if p.join_timeout(STOP_GRACE)? {
            return Ok(());
        }
        let _ = p.terminate();
        if p.join_timeout(STOP_GRACE)? {
            return Ok(());
        }
        let _ = p.kill();
        p.join_timeout(STOP_GRACE)?;
        asked
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.server.is_some() && self.creator == std::process::id() {
            let _ = self.stop();
        }
    }
}

/// Options of a [`Manager`]: Python's `BaseManager(address, authkey)` with `register`.
///
/// Errors (an address that does not parse, arguments that do not encode) surface at
/// [`start`](Self::start) or [`serve_forever`](Self::serve_forever).
#[derive(Default)]
pub struct ManagerBuilder {
    address: Option<Result<Address>>,
    authkey: Option<Vec<u8>>,
    method: Option<StartMethod>,
    registry: Vec<(String, u64)>,
    exposed: Vec<Result<Exposed>>,
    max_request: Option<usize>,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "<redacted>"))
            .field("start_method", &self.method)
            .field(
                "registered",
                &self.registry.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// Where the server listens: a TCP address (`"127.0.0.1:50000"`, port `0` for any),
    /// a Unix socket path, or an abstract name. By default an abstract Unix socket
    /// with a random name, reachable from this machine only.
    pub fn address(mut self, address: impl ToAddress) -> Self {
        self.address = Some(address.to_address());
        self
    }

    /// The key a client must prove it knows (CPython's HMAC challenge). By default 32
    /// random bytes, read back with [`Manager::authkey`].
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// The start method of the server process (by default the program's default).
    ///
    /// ```
    /// use multiproc::{Manager, StartMethod};
    /// let m = Manager::builder().start_method(StartMethod::Spawn).start()?;
    /// m.list::<u8>()?.append(&1)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The largest request the server accepts, in bytes (default 64 MiB). A proxy
    /// refuses a longer call with [`Error::MessageTooLarge`](crate::Error::MessageTooLarge)
    /// before sending it; a longer message from elsewhere closes its connection before
    /// anything is allocated for it.
    ///
    /// ```
    /// let m = multiproc::Manager::builder().max_request_size(1024).start()?;
    /// let l = m.list::<Vec<u8>>()?;
    /// l.append(&vec![0; 100])?;
    /// assert!(matches!(
    ///     l.append(&vec![0; 2000]),
    ///     Err(multiproc::Error::MessageTooLarge { .. })
    /// ));
    /// assert_eq!(l.len()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request = Some(bytes);
        self
    }

    /// Makes `T` constructible in the server (Python's `register(typeid, callable)`).
    /// `#[multiproc::proxy]` writes `T`'s [`Registered`] impl and its typed proxy.
    /// The server finds `T`'s code in its own binary, so this works under every start
    /// method. [`Registered`] shows an impl written by hand.
    pub fn register<T: Registered>(mut self) -> Self {
        let offset = image::entry_offset(server::construct_entry::<T>());
        self.registry.retain(|(t, _)| t != T::TYPEID);
        self.registry.push((T::TYPEID.to_string(), offset));
        self
    }

    fn config(&mut self) -> Result<Config> {
        let exposed = std::mem::take(&mut self.exposed)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(Config {
            registry: self.registry.clone(),
            exposed,
            max_request: self.max_request.unwrap_or(proxy::DEFAULT_MAX_REQUEST) as u64,
        })
    }

    fn key(&self) -> Result<Vec<u8>> {
        match &self.authkey {
            Some(k) => Ok(k.clone()),
            None => {
                let mut k = vec![0u8; 32];
                crate::sys::net::random_bytes(&mut k)?;
                Ok(k)
            }
        }
    }

    /// Starts the server process and connects to it.
    pub fn start(mut self) -> Result<Manager> {
        let config = self.config()?;
        let authkey = self.key()?;
        let address = match self.address.take() {
            Some(a) => a?,
            None => {
                let mut r = [0u8; 8];
                crate::sys::net::random_bytes(&mut r)?;
                Address::Abstract(
                    format!(
                        "multiproc-manager-{}-{}-{:016x}",
                        std::process::id(),
                        proxy::nonce(),
                        u64::from_le_bytes(r)
                    )
                    .into_bytes(),
                )
            }
        };
        let (here, there) = pipe(true)?;
        let mut p = Process::new(
            server::server_main,
            ServerArgs {
                address: WireAddress::from(&address),
                authkey: authkey.clone(),
                config,
                report: there,
            },
        )
        .name("SyncManager")
        .daemon(true);
        if let Some(m) = self.method {
            p = p.start_method(m);
        }
        p.start()?;
        let reported = here.recv_timeout::<std::result::Result<WireAddress, String>>(START_TIMEOUT);
        let address: Address = match reported {
            Ok(Ok(a)) => a.into(),
            Ok(Err(why)) => {
                let _ = p.join_timeout(STOP_GRACE);
                return Err(Error::Bootstrap(format!(
                    "the manager could not start: {why}"
                )));
            }
            Err(e) => {
                let _ = p.kill();
                let _ = p.join_timeout(STOP_GRACE);
                return Err(Error::Bootstrap(format!("the manager did not start: {e}")));
            }
        };
        let link = match Link::get(&address, &authkey) {
            Ok(l) => l,
            Err(e) => {
                let _ = p.kill();
                let _ = p.join_timeout(STOP_GRACE);
                return Err(e);
            }
        };
        Ok(Manager {
            link,
            server: Some(p),
            creator: std::process::id(),
        })
    }
}

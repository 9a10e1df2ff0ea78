//! Remote use: a server in this process ([`ManagerBuilder::serve_forever`]), a
//! connection to a running manager by address and key ([`Manager::connect`]), and
//! objects exposed by name (Python's `register('get_queue', callable=lambda: q)`).

use serde::Serialize;

use super::protocol::Request;
use super::proxy::{Link, Proxy, ProxyCore, encode_args};
use super::server::{Exposed, Server};
use super::{Manager, ManagerBuilder};
use crate::connection::{Listener, ToAddress};
use crate::error::{Error, Result};
use crate::wire::codec;

impl Manager {
    /// Connects to a running manager that knows `authkey` (Python's
    /// `BaseManager(address, authkey).connect()`). Dropping the handle leaves the
    /// manager running.
    ///
    /// A wrong key fails with [`Error::AuthenticationFailed`], nobody listening with
    /// [`Error::PeerDied`].
    ///
    /// ```
    /// use multiproc::Manager;
    /// let served = Manager::builder().address("127.0.0.1:0").authkey(b"abc").start()?;
    /// let m = Manager::connect(served.address(), b"abc")?;
    /// let d = m.dict::<i32, i32>()?;
    /// d.set(&1, &2)?;
    /// assert!(Manager::connect(served.address(), b"wrong").is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(address: impl ToAddress, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        let address = address.to_address()?;
        let link = Link::get(&address, authkey.as_ref())?;
        Ok(Manager {
            link,
            server: None,
            creator: std::process::id(),
        })
    }

    /// The object the manager exposes under `name`, as a `P`
    /// ([`ManagerBuilder::expose`], [`Manager::expose`]); [`Error::InvalidArgument`]
    /// when nothing is exposed under that name or the object is not a `P`.
    ///
    /// ```
    /// use multiproc::{ListProxy, Manager};
    /// let m = Manager::builder().expose::<ListProxy<i32>, _>("jobs", "", &()).start()?;
    /// let jobs: ListProxy<i32> = m.get("jobs")?;
    /// jobs.append(&7)?;
    /// let again: ListProxy<i32> = m.get("jobs")?;
    /// assert_eq!(again.to_vec()?, vec![7]);
    /// assert!(m.get::<ListProxy<i32>>("nothing").is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get<P: Proxy>(&self, name: &str) -> Result<P> {
        let reply = self.link.anchored(&Request::Named { name })?;
        let (id, typeid): (u64, String) = codec::decode(&reply, Vec::new())?;
        // The reference is ours from here on: the core lets go of it if the type is wrong.
        let core = ProxyCore::adopt(self.link.clone(), id, typeid);
        if core.typeid() != P::TYPEID {
            return Err(Error::InvalidArgument(format!(
                "{name:?} is a {}, not a {}",
                core.typeid(),
                P::TYPEID
            )));
        }
        Ok(P::from_core(core))
    }

    /// Exposes the object `proxy` reaches under `name`, for programs that know only
    /// the address and the key ([`get`](Manager::get)); the name keeps the object
    /// alive, and replaces what it named before.
    ///
    /// ```
    /// use multiproc::{Manager, NamespaceProxy};
    /// let m = Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("ready", &true)?;
    /// m.expose("state", &ns)?;
    /// drop(ns);
    /// let ns: NamespaceProxy = m.get("state")?;
    /// assert_eq!(ns.get::<bool>("ready")?, Some(true));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn expose<P: Proxy>(&self, name: &str, proxy: &P) -> Result<()> {
        self.link
            .anchored(&Request::Expose {
                id: proxy.core().id(),
                name,
            })
            .map(drop)
    }
}

impl ManagerBuilder {
    /// Creates an object of `P`'s type when the server starts and exposes it under
    /// `name` (Python's `register(name, callable=lambda: obj)`): `ctor` and `args` are
    /// those of [`ProxyCore::create`] (a builtin type ignores `ctor`; a registered one
    /// names its constructor). Clients reach it with [`Manager::get`].
    ///
    /// ```
    /// use multiproc::{Manager, ValueProxy};
    /// let m = Manager::builder().expose::<ValueProxy<u32>, _>("counter", "", &0u32).start()?;
    /// let c: ValueProxy<u32> = m.get("counter")?;
    /// c.update(|n| n + 1)?;
    /// assert_eq!(c.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn expose<P: Proxy, A: Serialize + ?Sized>(
        mut self,
        name: &str,
        ctor: &str,
        args: &A,
    ) -> Self {
        let exposed = encode_args(args).map(|args| Exposed {
            name: name.to_string(),
            typeid: P::TYPEID.to_string(),
            ctor: ctor.to_string(),
            args,
        });
        self.exposed.push(exposed);
        self
    }

    /// Serves in this process until a client asks it to stop (Python's
    /// `manager.get_server().serve_forever()`), on the builder's address with its key
    /// (a TCP address needs one: [`authkey`](Self::authkey)).
    ///
    /// ```no_run
    /// multiproc::Manager::builder()
    ///     .address("0.0.0.0:50000")
    ///     .authkey(b"abracadabra")
    ///     .serve_forever()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn serve_forever(mut self) -> Result<()> {
        let config = self.config()?;
        let authkey = self.key()?;
        let address = match self.address.take() {
            Some(a) => a?,
            None => {
                return Err(Error::InvalidArgument(
                    "serve_forever needs an address for clients to find".into(),
                ));
            }
        };
        if self.authkey.is_none() {
            return Err(Error::InvalidArgument(
                "serve_forever needs a key for clients to prove".into(),
            ));
        }
        let listener = Listener::builder(address).authkey(&authkey).bind()?;
        let server = Server::new(&config)?;
        server.serve(listener);
        Ok(())
    }
}

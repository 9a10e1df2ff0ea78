//! The server: an accept loop on a [`Listener`] with the manager's key, a thread per
//! client connection, and the table of objects with their reference counts.
//!
//! Requests are parsed by hand from a message whose size the connection bounds, so a
//! client can make the server allocate no more than that; a malformed request gets an
//! error reply and the connection stays open, a message that breaks the framing closes
//! the connection. A client names code only through a type id (builtin or
//! registered) and a method name that the object's `call` matches.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::builtin;
use super::mailbox::{self, Mailbox};
use super::protocol::{self, Request};
use super::proxy::{MAX_REPLY, WireAddress};
use super::served::{CallCx, CallError, ClientId, Registered, Served, encode_reply};
use crate::connection::{Connection, Listener};
use crate::error::{Error, Result};
use crate::process::panic_parts;
use crate::sys::image::{self, EntryContext, EntryRecord};

/// What a registered type's constructor entry is handed, and where it leaves the
/// object.
pub(crate) struct ConstructCx {
    ctor: String,
    out: RefCell<Option<std::result::Result<Arc<dyn Served>, CallError>>>,
}

impl EntryContext for ConstructCx {
    const KIND: u64 = u64::from_le_bytes(*b"mgrtype\0");
}

/// The entry constructing a `T` in the server: a record of this binary, found by its
/// offset, so a spawned server runs only constructors its binary has.
pub(crate) fn construct_entry<T: Registered>() -> &'static EntryRecord<ConstructCx> {
    const { &EntryRecord::new(run_construct::<T>) }
}

fn run_construct<T: Registered>(args: Vec<u8>, _fds: Vec<OwnedFd>, cx: &ConstructCx) -> i32 {
    let made = catch_unwind(AssertUnwindSafe(|| T::construct(&cx.ctor, &args)))
        .unwrap_or_else(|p| Err(panicked(p)));
    let ok = made.is_ok();
    *cx.out.borrow_mut() = Some(made.map(|t| Arc::new(Mutexed(Mutex::new(t))) as Arc<dyn Served>));
    i32::from(!ok)
}

fn panicked(p: Box<dyn std::any::Any + Send>) -> CallError {
    let (message, location) = panic_parts(p);
    CallError::Panicked { message, location }
}

/// A registered type in the server: one call at a time.
struct Mutexed<T>(Mutex<T>);

impl<T: Registered> Served for Mutexed<T> {
    fn call(
        &self,
        method: &str,
        args: &[u8],
        _cx: &CallCx<'_>,
    ) -> std::result::Result<Vec<u8>, CallError> {
        // A call that panicked left the value as it was then: the next one sees it, as
        // the next call of a Python method would.
        let mut value = self.0.lock().unwrap_or_else(|p| p.into_inner());
        value.dispatch(method, args)
    }
}

/// An object created when the server starts, exposed under a name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Exposed {
    pub(crate) name: String,
    pub(crate) typeid: String,
    pub(crate) ctor: String,
    pub(crate) args: Vec<u8>,
}

/// How a server is set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Config {
    /// Registered types: type id and the offset of its constructor entry.
    pub(crate) registry: Vec<(String, u64)>,
    pub(crate) exposed: Vec<Exposed>,
    pub(crate) max_request: u64,
}

/// What a server process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    pub(crate) address: WireAddress,
    pub(crate) authkey: Vec<u8>,
    pub(crate) config: Config,
    /// Where the server reports the address it listens on, or why it could not.
    pub(crate) report: Connection,
}

/// The server process's target.
pub(crate) fn server_main(args: ServerArgs) {
    let ServerArgs {
        address,
        authkey,
        config,
        report,
    } = args;
    crate::sys::proc::ignore_sigint();
    let started = Listener::builder(crate::connection::Address::from(address))
        .authkey(&authkey)
        .bind()
        .and_then(|l| Server::new(&config).map(|s| (l, s)));
    match started {
        Ok((listener, server)) => {
            let sent: std::result::Result<WireAddress, String> = Ok(listener.address().into());
            if report.send(&sent).is_err() {
                return;
            }
            drop(report);
            // The process ends as soon as a client asks, without waiting for the
            // accept loop's next look at the flag.
            let s = server.clone();
            let accepting = std::thread::Builder::new()
                .name("multiproc-manager-accept".into())
                .spawn(move || s.serve(listener));
            match accepting {
                Ok(_) => server.wait_stopped(),
                Err(e) => tracing::warn!("manager: no thread to accept clients: {e}"),
            }
        }
        Err(e) => {
            let sent: std::result::Result<WireAddress, String> = Err(e.to_string());
            let _ = report.send(&sent);
        }
    }
}

type Construct = image::EntryFn<ConstructCx>;

struct Obj {
    served: Arc<dyn Served>,
    typeid: String,
    /// Every reference: counted per client, plus the detached ones.
    refs: u64,
    /// Detached references of proxies in transit, which a receiver may take over.
    transit: u64,
    /// References to other objects whose proxies this one was given to keep (a list
    /// in a dict): let go of when this one is freed.
    keeps: Vec<u64>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    objects: HashMap<u64, Obj>,
    named: HashMap<String, u64>,
}

impl Table {
    fn insert(&mut self, served: Arc<dyn Served>, typeid: &str) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.objects.insert(
            id,
            Obj {
                served,
                typeid: typeid.to_string(),
                refs: 1,
                transit: 0,
                keeps: Vec::new(),
            },
        );
        id
    }

    /// Lets go of one reference to `id`, and of the references a freed object kept;
    /// the objects freed, dropped by the caller once the table's lock is released (a
    /// drop may take time).
    fn release(&mut self, id: u64, freed: &mut Vec<Arc<dyn Served>>) {
        let mut pending = vec![id];
        while let Some(id) = pending.pop() {
            let Some(obj) = self.objects.get_mut(&id) else {
                continue;
            };
            obj.refs = obj.refs.saturating_sub(1);
            obj.transit = obj.transit.min(obj.refs);
            if obj.refs == 0 {
                if let Some(o) = self.objects.remove(&id) {
                    pending.extend(o.keeps);
                    freed.push(o.served);
                }
                self.named.retain(|_, named| *named != id);
            }
        }
    }
}

/// A manager's server.
pub(crate) struct Server {
    table: Mutex<Table>,
    registry: HashMap<String, Construct>,
    next_client: AtomicU64,
    /// Bumped whenever an object is freed: connections then forget the objects they
    /// looked up, so none lives on in a cache.
    freed: AtomicU64,
    max_request: usize,
    stop: Mutex<bool>,
    stopped: Condvar,
    /// A descriptor of each open client connection, to end them all when the server
    /// stops (a server inside a program that carries on must not leave them served).
    clients: Mutex<HashMap<u64, OwnedFd>>,
}

fn no_object(id: u64) -> CallError {
    CallError::Failed(super::served::RemoteFault::InvalidState(format!(
        "the manager holds no object {id} (it was freed, or never existed)"
    )))
}

impl Server {
    pub(crate) fn new(config: &Config) -> Result<Arc<Server>> {
        let mut registry = HashMap::new();
        for (typeid, offset) in &config.registry {
            let entry = image::entry_at::<ConstructCx>(*offset).ok_or_else(|| {
                Error::Bootstrap(format!(
                    "type {typeid:?} names no constructor of this program"
                ))
            })?;
            registry.insert(typeid.clone(), entry);
        }
        let server = Arc::new(Server {
            table: Mutex::new(Table::default()),
            registry,
            next_client: AtomicU64::new(1),
            freed: AtomicU64::new(0),
            max_request: usize::try_from(config.max_request).unwrap_or(usize::MAX),
            stop: Mutex::new(false),
            stopped: Condvar::new(),
            clients: Mutex::new(HashMap::new()),
        });
        for e in &config.exposed {
            let served = server.construct(&e.typeid, &e.ctor, &e.args).map_err(|c| {
                Error::InvalidArgument(format!("cannot make {:?}: {}", e.name, Error::from(c)))
            })?;
            let mut t = server.table.lock().unwrap_or_else(|p| p.into_inner());
            let id = t.insert(served, &e.typeid);
            t.named.insert(e.name.clone(), id);
        }
        Ok(server)
    }

    fn construct(
        &self,
        typeid: &str,
        ctor: &str,
        args: &[u8],
    ) -> std::result::Result<Arc<dyn Served>, CallError> {
        if let Some(made) = catch_unwind(AssertUnwindSafe(|| builtin::builtin(typeid, args)))
            .unwrap_or_else(|p| Some(Err(panicked(p))))
        {
            return made;
        }
        let entry = self
            .registry
            .get(typeid)
            .ok_or_else(|| CallError::NoSuchMethod {
                typeid: typeid.to_string(),
                method: ctor.to_string(),
            })?;
        let cx = ConstructCx {
            ctor: ctor.to_string(),
            out: RefCell::new(None),
        };
        entry(args.to_vec(), Vec::new(), &cx);
        cx.out.into_inner().unwrap_or_else(|| {
            Err(CallError::BadArguments(
                "the constructor gave nothing".into(),
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts clients until a shutdown request; each gets a thread.
    pub(crate) fn serve(self: &Arc<Server>, listener: Listener) {
        loop {
            if *self.stop.lock().unwrap_or_else(|p| p.into_inner()) {
                let clients =
                    std::mem::take(&mut *self.clients.lock().unwrap_or_else(|p| p.into_inner()));
                for fd in clients.values() {
                    crate::sys::net::shutdown_both(fd.as_fd());
                }
                return;
            }
            match listener.accept_timeout(Duration::from_millis(200)) {
                Ok(conn) => {
                    conn.set_max_message_size(self.max_request);
                    let server = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("multiproc-manager-client".into())
                        .spawn(move || server.client(conn));
                    if let Err(e) = spawned {
                        tracing::warn!("manager: no thread for a client: {e}");
                    }
                }
                Err(Error::Timeout) => {}
                Err(e) => {
                    tracing::warn!("manager: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Waits until a client asks the server to stop.
    fn wait_stopped(&self) {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        while !*stop {
            stop = self.stopped.wait(stop).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Serves one client connection until it closes.
    fn client(self: Arc<Server>, conn: Connection) {
        let mut state = ClientState {
            id: ClientId(self.next_client.fetch_add(1, Ordering::Relaxed)),
            refs: HashMap::new(),
            called: HashSet::new(),
            cache: HashMap::new(),
            freed: self.freed.load(Ordering::Relaxed),
            mailbox: None,
        };
        /// Takes the connection off the list however the thread ends: a descriptor
        /// left there would keep the socket open after its thread is gone.
        struct Listed<'a>(&'a Server, u64);
        impl Drop for Listed<'_> {
            fn drop(&mut self) {
                self.0
                    .clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.1);
            }
        }
        if let Ok(fd) = conn.as_fd().try_clone_to_owned() {
            self.clients
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(state.id.0, fd);
        }
        let listed = Listed(&self, state.id.0);
        let mut reply = Vec::with_capacity(256);
        let mut body = Vec::new();
        'serve: loop {
            // Where the request is, and so where its reply goes: a mailbox set up by an
            // earlier request of this connection, or the socket.
            let in_mailbox = match &state.mailbox {
                Some(mb) => match mb.wait(true, mailbox::request_posted) {
                    Some(s) if mailbox::request_in_area(s) => {
                        Some(mb.read_data(&mut body, self.max_request))
                    }
                    _ => None,
                },
                None => None,
            };
            let had_mailbox = state.mailbox.is_some();
            let mut fds = Vec::new();
            let parsed = match in_mailbox {
                Some(true) => Request::parse(&body),
                // A length past the area or the limit: malformed.
                Some(false) => None,
                // A closed connection, a message past the limit (refused before any
                // allocation) or a broken frame: the connection ends.
                None => loop {
                    let deadline = state
                        .mailbox
                        .as_ref()
                        .and_then(|_| crate::deadline::after(mailbox::RECHECK));
                    match conn.recv_raw(deadline) {
                        Ok((b, f)) => {
                            body = b;
                            fds = f;
                            break Request::parse(&body);
                        }
                        // A request found in the mailbox after all: taken from there.
                        Err(Error::Timeout) => match &state.mailbox {
                            Some(mb) if mailbox::request_in_area(mb.state()) => {
                                break if mb.read_data(&mut body, self.max_request) {
                                    Request::parse(&body)
                                } else {
                                    None
                                };
                            }
                            _ => {}
                        },
                        Err(_) => break 'serve,
                    }
                },
            };
            reply.clear();
            let stop = match parsed {
                // A panic outside an object's call (a drop of a freed object, say) fails
                // this request alone: the connection's references are still let go of
                // when it ends.
                Some(req) => catch_unwind(AssertUnwindSafe(|| {
                    self.handle(&req, &mut state, &conn, fds, &mut reply)
                }))
                .unwrap_or_else(|p| {
                    error_reply(&mut reply, &panicked(p));
                    false
                }),
                None => {
                    error_reply(
                        &mut reply,
                        &CallError::BadArguments("malformed request".into()),
                    );
                    false
                }
            };
            if reply.len() > MAX_REPLY {
                // The limit holds for requests; a reply may be longer, up to what a
                // client accepts.
                let n = reply.len();
                error_reply(
                    &mut reply,
                    &CallError::Failed(super::served::RemoteFault::InvalidState(format!(
                        "a reply of {n} bytes is longer than a client accepts ({MAX_REPLY})"
                    ))),
                );
            }
            // The reply goes where the request came from's mailbox, if it fits and the
            // client still spins; else through the socket.
            let mailbox = state.mailbox.as_ref().filter(|_| had_mailbox);
            let posted = match mailbox {
                Some(mb) if mailbox::fits(reply.len()) => mb.post_data(&[&reply], mailbox::REPLY),
                Some(mb) => {
                    // Tells a client that spins to look at the socket.
                    mb.post(mailbox::REPLY_ON_SOCKET);
                    false
                }
                None => false,
            };
            let sent = if posted {
                Ok(())
            } else {
                if reply.len() > self.max_request {
                    conn.set_max_message_size(MAX_REPLY);
                }
                let sent = conn.send_bytes(&reply);
                conn.set_max_message_size(self.max_request);
                sent
            };
            // An idle connection keeps no large buffer.
            if reply.capacity() > 1 << 20 {
                reply = Vec::with_capacity(256);
            }
            if body.capacity() > 1 << 20 {
                body = Vec::new();
            }
            if sent.is_err() {
                break;
            }
            if stop {
                *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.stopped.notify_all();
            }
        }
        drop(listed);
        self.client_ended(state);
    }

    /// Lets go of a gone client's references and tells the objects it called.
    fn client_ended(&self, state: ClientState) {
        let mut freed = Vec::new();
        let mut gone = Vec::new();
        {
            let mut t = self.lock();
            for (id, n) in &state.refs {
                for _ in 0..*n {
                    t.release(*id, &mut freed);
                }
            }
            for id in &state.called {
                if let Some(o) = t.objects.get(id) {
                    gone.push(o.served.clone());
                }
            }
        }
        let client = state.id;
        drop(state);
        if !freed.is_empty() {
            self.freed.fetch_add(1, Ordering::Relaxed);
        }
        for o in gone {
            let _ = catch_unwind(AssertUnwindSafe(|| o.client_gone(client)));
        }
        // An object's drop may panic; the server carries on.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(freed)));
    }

    /// Answers one request into `reply`; `true` when it asks the server to stop.
    fn handle(
        &self,
        req: &Request<'_>,
        state: &mut ClientState,
        conn: &Connection,
        mut fds: Vec<OwnedFd>,
        reply: &mut Vec<u8>,
    ) -> bool {
        let outcome: std::result::Result<Vec<u8>, CallError> = match *req {
            Request::Call { id, method, args } => {
                let served = match self.lookup(id, state) {
                    Some(s) => s,
                    None => {
                        error_reply(reply, &no_object(id));
                        return false;
                    }
                };
                let cx = CallCx {
                    client: state.id,
                    conn: conn.as_fd(),
                };
                let r = catch_unwind(AssertUnwindSafe(|| served.call(method, args, &cx)))
                    .unwrap_or_else(|p| Err(panicked(p)));
                match r {
                    Ok(bytes) => {
                        ok_reply(reply, &bytes);
                        return false;
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Create { typeid, ctor, args } => {
                self.construct(typeid, ctor, args).and_then(|served| {
                    let id = self.lock().insert(served, typeid);
                    *state.refs.entry(id).or_default() += 1;
                    encode_reply(&id)
                })
            }
            Request::IncRef { id, adopt } => {
                let mut t = self.lock();
                match t.objects.get_mut(&id) {
                    Some(o) => {
                        if adopt && o.transit > 0 {
                            o.transit -= 1;
                        } else {
                            o.refs += 1;
                        }
                        *state.refs.entry(id).or_default() += 1;
                        encode_reply(&())
                    }
                    None => Err(no_object(id)),
                }
            }
            Request::DecRef { id } => {
                let held = state.refs.get_mut(&id);
                match held {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        if *n == 0 {
                            state.refs.remove(&id);
                        }
                        let mut freed = Vec::new();
                        self.lock().release(id, &mut freed);
                        if !freed.is_empty() {
                            self.freed.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(freed);
                        encode_reply(&())
                    }
                    // Only references this connection holds can be let go of.
                    _ => Err(no_object(id)),
                }
            }
            Request::Detached {
                id,
                transit,
                holder,
            } => {
                let mut t = self.lock();
                match t.objects.get_mut(&id) {
                    Some(o) => {
                        o.refs += 1;
                        if transit {
                            o.transit += 1;
                        }
                        // Kept by the object the value goes to, when it is known and
                        // alive; else for as long as the server runs.
                        if let Some(h) = t.objects.get_mut(&holder).filter(|_| holder != id) {
                            h.keeps.push(id);
                        }
                        encode_reply(&())
                    }
                    None => Err(no_object(id)),
                }
            }
            Request::Named { name } => {
                let mut t = self.lock();
                match t.named.get(name).copied() {
                    Some(id) => {
                        let typeid = t.objects.get_mut(&id).map(|o| {
                            o.refs += 1;
                            o.typeid.clone()
                        });
                        match typeid {
                            Some(typeid) => {
                                *state.refs.entry(id).or_default() += 1;
                                encode_reply(&(id, typeid))
                            }
                            None => Err(no_object(id)),
                        }
                    }
                    None => Err(CallError::Failed(
                        super::served::RemoteFault::InvalidArgument(format!(
                            "the manager exposes nothing under {name:?}"
                        )),
                    )),
                }
            }
            Request::Expose { id, name } => {
                let mut t = self.lock();
                match t.objects.get_mut(&id) {
                    Some(o) => {
                        o.refs += 1;
                        let old = t.named.insert(name.to_string(), id);
                        let mut freed = Vec::new();
                        if let Some(old) = old {
                            t.release(old, &mut freed);
                        }
                        drop(t);
                        if !freed.is_empty() {
                            self.freed.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(freed);
                        encode_reply(&())
                    }
                    None => Err(no_object(id)),
                }
            }
            Request::Count { id } => {
                let t = self.lock();
                let refs = t.objects.get(&id).map_or(0, |o| o.refs);
                encode_reply(&(refs, t.objects.len() as u64))
            }
            Request::Shutdown => {
                ok_reply(reply, &[]);
                return true;
            }
            Request::Limits => encode_reply(&(self.max_request as u64)),
            Request::Mailbox => match (fds.pop(), fds.is_empty(), &state.mailbox) {
                (Some(fd), true, None) => match Mailbox::attach(fd) {
                    Ok(mb) => {
                        state.mailbox = Some(mb);
                        encode_reply(&())
                    }
                    Err(e) => Err(CallError::Failed(
                        super::served::RemoteFault::InvalidArgument(format!("not a mailbox: {e}")),
                    )),
                },
                _ => Err(CallError::Failed(
                    super::served::RemoteFault::InvalidArgument(
                        "a mailbox comes once per connection, as one descriptor".into(),
                    ),
                )),
            },
        };
        match outcome {
            Ok(bytes) => ok_reply(reply, &bytes),
            Err(e) => error_reply(reply, &e),
        }
        false
    }

    /// The object `id`, from this connection's cache while no object was freed since.
    fn lookup(&self, id: u64, state: &mut ClientState) -> Option<Arc<dyn Served>> {
        let freed = self.freed.load(Ordering::Relaxed);
        if freed != state.freed {
            state.cache.clear();
            state.freed = freed;
        }
        if let Some(s) = state.cache.get(&id).and_then(Weak::upgrade) {
            return Some(s);
        }
        let served = self.lock().objects.get(&id)?.served.clone();
        state.called.insert(id);
        state.cache.insert(id, Arc::downgrade(&served));
        Some(served)
    }
}

struct ClientState {
    id: ClientId,
    /// References this connection holds, per object.
    refs: HashMap<u64, u64>,
    /// Objects this connection called, told when it goes.
    called: HashSet<u64>,
    /// Objects looked up, to skip the table's lock on the next call. Weak: a freed
    /// object is dropped when the table lets go of it, not when this connection next
    /// looks.
    cache: HashMap<u64, Weak<dyn Served>>,
    freed: u64,
    /// The mailbox this connection's client gave, once it did.
    mailbox: Option<Mailbox>,
}

fn error_reply(out: &mut Vec<u8>, e: &CallError) {
    out.clear();
    out.push(protocol::ERR);
    // A CallError holds strings and options: its encoding cannot fail.
    if let Ok(bytes) = encode_reply(e) {
        out.extend_from_slice(&bytes);
    }
}

fn ok_reply(out: &mut Vec<u8>, value: &[u8]) {
    out.clear();
    out.push(protocol::OK);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::super::proxy::CallConn;
    use super::*;

    /// Records who called it and who went.
    struct Witness {
        called: Mutex<Vec<ClientId>>,
        gone: Mutex<mpsc::Sender<ClientId>>,
        saw_gone: Mutex<Option<bool>>,
    }

    impl Served for Witness {
        fn call(
            &self,
            method: &str,
            _args: &[u8],
            cx: &CallCx<'_>,
        ) -> std::result::Result<Vec<u8>, CallError> {
            self.called.lock().unwrap().push(cx.client());
            match method {
                "gone?" => encode_reply(&cx.client_gone()),
                "wait_gone" => {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !cx.client_gone() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let gone = cx.client_gone();
                    *self.saw_gone.lock().unwrap() = Some(gone);
                    encode_reply(&gone)
                }
                "echo" => Ok(_args.to_vec()),
                _ => Err(CallError::NoSuchMethod {
                    typeid: "Witness".into(),
                    method: method.into(),
                }),
            }
        }
        fn client_gone(&self, client: ClientId) {
            let _ = self.gone.lock().unwrap().send(client);
        }
    }

    /// A server holding a witness; its id, and where it tells of gone clients.
    fn witness_server() -> (Arc<Server>, Arc<Witness>, u64, mpsc::Receiver<ClientId>) {
        let server = Server::new(&Config {
            registry: Vec::new(),
            exposed: Vec::new(),
            max_request: 1 << 20,
        })
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let witness = Arc::new(Witness {
            called: Mutex::new(Vec::new()),
            gone: Mutex::new(tx),
            saw_gone: Mutex::new(None),
        });
        let id = server.lock().insert(witness.clone(), "Witness");
        (server, witness, id, rx)
    }

    /// A client connection with a mailbox, served by a thread of `server`.
    fn mailbox_client(server: &Arc<Server>) -> (CallConn, std::thread::JoinHandle<()>) {
        let (client, served) = crate::connection::pipe(true).unwrap();
        let s = server.clone();
        let t = std::thread::spawn(move || s.client(served));
        let cc = CallConn::with_mailbox(client).unwrap();
        assert!(cc.mailbox().is_some(), "the server took the mailbox");
        (cc, t)
    }

    fn call_req<'a>(id: u64, method: &'a str, args: &'a [u8]) -> Request<'a> {
        Request::Call { id, method, args }
    }

    /// Waits (polling) until the state of `mb` is one `want` accepts.
    fn poll_state(mb: &Mailbox, want: impl Fn(u32) -> bool) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = mb.state();
            if want(s) {
                return s;
            }
            assert!(Instant::now() < deadline, "state {s} for a minute");
            std::thread::yield_now();
        }
    }

    #[test]
    fn calls_with_a_mailbox_go_through_it_and_leave_the_socket_unused() {
        let (server, _witness, id, rx) = witness_server();
        let (cc, t) = mailbox_client(&server);
        // On a busy machine a client may sleep for many replies (and they come through
        // the socket): calls go on until some came through the mailbox.
        let mut through_mailbox = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while through_mailbox < 100 && Instant::now() < deadline {
            let r = cc.round_trip(&call_req(id, "gone?", &[]), usize::MAX);
            assert_eq!(r.unwrap().unwrap(), [0], "not gone");
            if mailbox::reply_in_area(cc.mailbox().unwrap().state()) {
                through_mailbox += 1;
            }
            assert!(!cc.socket().poll(Some(Duration::ZERO)).unwrap());
        }
        // Every reply that the client did not sleep for came through the mailbox.
        assert!(through_mailbox > 0, "no reply came through the mailbox");
        // An error reply comes the same way.
        let r = cc
            .round_trip(&call_req(id + 1, "x", &[]), usize::MAX)
            .unwrap();
        assert!(matches!(r, Err(Error::InvalidState(_))), "{r:?}");
        drop(cc);
        t.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn requests_and_replies_longer_than_the_mailbox_go_through_the_socket() {
        let (server, _witness, id, _rx) = witness_server();
        let (cc, t) = mailbox_client(&server);
        let long: Vec<u8> = (0..mailbox::DATA as u32 + 1000).map(|i| i as u8).collect();
        for _ in 0..20 {
            let r = cc.round_trip(&call_req(id, "echo", &long), usize::MAX);
            assert_eq!(r.unwrap().unwrap(), long);
            assert!(!mailbox::reply_in_area(cc.mailbox().unwrap().state()));
            // A short one after it may take the mailbox again.
            let r = cc.round_trip(&call_req(id, "echo", b"short"), usize::MAX);
            assert_eq!(r.unwrap().unwrap(), b"short");
        }
        drop(cc);
        t.join().unwrap();
    }

    /// Puts garbage in the mailbox as a request (`write` fills it) and returns the
    /// server's reply from the mailbox. The state word is stored outright, as a
    /// misbehaving client would: a server that spins sees it at once, one asleep in the
    /// socket at its next look at the mailbox.
    fn garbage_request(cc: &CallConn, id: u64, write: impl Fn(&Mailbox)) -> Vec<u8> {
        let mb = cc.mailbox().unwrap();
        let r = cc.round_trip(&call_req(id, "gone?", &[]), usize::MAX);
        assert_eq!(r.unwrap().unwrap(), [0]);
        write(mb);
        mb.scribble_state(mailbox::REQUEST);
        poll_state(mb, mailbox::reply_in_area);
        let mut out = Vec::new();
        assert!(mb.read_data(&mut out, usize::MAX));
        out
    }

    #[test]
    fn garbage_in_a_mailbox_gets_error_replies_and_the_server_keeps_serving() {
        let (server, _witness, id, rx) = witness_server();
        let (cc, t) = mailbox_client(&server);
        // Lengths past the area, and garbage bytes within it.
        for len in [u32::MAX, mailbox::DATA as u32 + 1, 1 << 31] {
            let reply = garbage_request(&cc, id, |mb| mb.scribble_length(len));
            assert_eq!(reply[0], protocol::ERR, "length {len}");
        }
        let reply = garbage_request(&cc, id, |mb| {
            mb.post_data(&[&[0xff; 40]], 99);
        });
        assert_eq!(reply[0], protocol::ERR);
        // A state the protocol does not know is no request: the server waits on.
        cc.mailbox().unwrap().scribble_state(99);
        std::thread::sleep(Duration::from_millis(20));
        let r = cc.round_trip(&call_req(id, "gone?", &[]), usize::MAX);
        assert_eq!(r.unwrap().unwrap(), [0]);
        drop(cc);
        t.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_server_that_dies_while_its_client_waits_fails_the_call() {
        let (client, served) = crate::connection::pipe(true).unwrap();
        let t = std::thread::spawn(move || {
            let (body, mut fds) = served.recv_raw(None).unwrap();
            assert_eq!(Request::parse(&body), Some(Request::Mailbox));
            let mb = Mailbox::attach(fds.pop().unwrap()).unwrap();
            served.send_bytes(&[protocol::OK]).unwrap();
            // The request arrives, in the mailbox; no answer comes.
            poll_state(&mb, mailbox::request_posted);
            std::thread::sleep(Duration::from_millis(100));
            drop(served);
        });
        let cc = CallConn::with_mailbox(client).unwrap();
        let r = cc.round_trip(&call_req(1, "get", &[]), usize::MAX);
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        t.join().unwrap();
    }

    #[test]
    fn a_client_that_closes_mid_call_through_its_mailbox_is_seen_by_the_call() {
        let (server, witness, id, rx) = witness_server();
        let (cc, t) = mailbox_client(&server);
        let mut head = Vec::new();
        call_req(id, "wait_gone", &[]).write_head(&mut head);
        if !cc.mailbox().unwrap().post_data(&[&head], mailbox::REQUEST) {
            // The server sleeps in the socket: the request goes there.
            cc.socket().send_bytes(&head).unwrap();
        }
        // Gone mid-call: the call notices, ends, and the object is told.
        std::thread::sleep(Duration::from_millis(20));
        drop(cc);
        t.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
        assert_eq!(*witness.saw_gone.lock().unwrap(), Some(true));
    }

    #[test]
    fn a_client_that_closes_while_its_server_thread_waits_ends_that_thread() {
        let (server, _witness, id, rx) = witness_server();
        let (cc, t) = mailbox_client(&server);
        let r = cc.round_trip(&call_req(id, "gone?", &[]), usize::MAX);
        assert_eq!(r.unwrap().unwrap(), [0]);
        std::thread::sleep(Duration::from_millis(100));
        drop(cc);
        t.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
    }

    fn call(conn: &Connection, id: u64, method: &str) -> Vec<u8> {
        let mut head = Vec::new();
        Request::Call {
            id,
            method,
            args: &[],
        }
        .write_head(&mut head);
        conn.send_bytes(&head).unwrap();
        conn.recv_bytes().unwrap()
    }

    #[test]
    fn a_client_that_closes_is_reported_to_every_object_it_called_once() {
        let (server, witness, id, rx) = witness_server();
        let (client, served) = crate::connection::pipe(true).unwrap();
        let s = server.clone();
        let t = std::thread::spawn(move || s.client(served));
        let reply = call(&client, id, "gone?");
        assert_eq!(
            reply,
            [protocol::OK, 0],
            "the client is there during its call"
        );
        call(&client, id, "gone?");
        assert_eq!(
            call(&client, id + 1, "x")[0],
            protocol::ERR,
            "no such object"
        );
        drop(client);
        t.join().unwrap();
        let gone = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let called = witness.called.lock().unwrap().clone();
        assert_eq!(called, [gone, gone], "the same client called and went");
        assert!(rx.try_recv().is_err(), "told once");
        // The table still holds the object: its reference is the table's own.
        assert!(server.lock().objects.contains_key(&id));
    }

    #[test]
    fn a_call_sees_its_client_close_while_it_runs() {
        let server = Server::new(&Config {
            registry: Vec::new(),
            exposed: Vec::new(),
            max_request: 1 << 20,
        })
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let witness = Arc::new(Witness {
            called: Mutex::new(Vec::new()),
            gone: Mutex::new(tx),
            saw_gone: Mutex::new(None),
        });
        let id = server.lock().insert(witness.clone(), "Witness");
        let (client, served) = crate::connection::pipe(true).unwrap();
        let s = server.clone();
        let t = std::thread::spawn(move || s.client(served));
        let mut head = Vec::new();
        Request::Call {
            id,
            method: "wait_gone",
            args: &[],
        }
        .write_head(&mut head);
        client.send_bytes(&head).unwrap();
        // Gone mid-call: the call notices, ends, and the object is told.
        drop(client);
        t.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
        assert_eq!(*witness.saw_gone.lock().unwrap(), Some(true));
    }
}

//! Managers: dict, list, Namespace, Value and Array proxies, proxies passed to
//! children and nested in managed values, reference counts, shutdown, a registered
//! type, remote use with a key, and faults (hostile bytes, a 4 GiB length prefix, a
//! killed manager, clients that vanish).
//!
//! The behaviours follow CPython's `Lib/test/_test_multiprocessing.py` manager cases
//! (`_TestContainers`, `_TestManagerRestart`, `_TestRemoteManager`, `test_mymanager`),
//! each named in a comment. Timing bounds: a call to a SIGKILLed manager fails within
//! 1 s; everything else waits at most `common::LONG`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{KillOnDrop, LONG, METHODS, join_bounded, wait_gone};
use multiproc::{
    ArrayProxy, CallError, Client, DictProxy, Error, Key, ListProxy, Manager, NamespaceProxy,
    Process, Proxy, ProxyCore, Registered, StartMethod, ValueProxy, decode_args, encode_reply,
};

// --- dict, list, Namespace, Value, Array (_TestContainers) --------------------------

// _TestContainers.test_dict
#[test]
fn dict_methods_behave_as_pythons() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, i32>().unwrap();
    let k = |s: &str| s.to_string();
    for (i, name) in ["c", "a", "b"].iter().enumerate() {
        d.set(&k(name), &(i as i32)).unwrap();
    }
    // Insertion order, as Python's dict keeps it.
    assert_eq!(d.keys().unwrap(), vec![k("c"), k("a"), k("b")]);
    assert_eq!(d.values().unwrap(), vec![0, 1, 2]);
    assert_eq!(d.items().unwrap()[1], (k("a"), 1));
    assert_eq!(d.len().unwrap(), 3);
    assert_eq!(d.get(&k("a")).unwrap(), Some(1));
    assert_eq!(d.get(&k("zz")).unwrap(), None);
    assert!(d.contains(&k("b")).unwrap());
    assert_eq!(d.insert(&k("a"), &10).unwrap(), Some(1));
    assert_eq!(d.setdefault(&k("a"), &99).unwrap(), 10);
    assert_eq!(d.setdefault(&k("d"), &4).unwrap(), 4);
    assert_eq!(d.pop(&k("c")).unwrap(), Some(0));
    assert_eq!(d.pop(&k("c")).unwrap(), None);
    assert_eq!(d.popitem().unwrap(), Some((k("d"), 4)));
    d.update([(&k("x"), &7), (&k("y"), &8)]).unwrap();
    let copy: HashMap<String, i32> = d.copy().unwrap();
    let expected: HashMap<String, i32> =
        [(k("a"), 10), (k("b"), 2), (k("x"), 7), (k("y"), 8)].into();
    assert_eq!(copy, expected);
    let sorted: BTreeMap<String, i32> = d.copy().unwrap();
    assert_eq!(sorted.keys().next().unwrap(), "a");
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.popitem().unwrap(), None);
    let from = m.dict_from([(1u8, 'x'), (2, 'y')]).unwrap();
    assert_eq!(from.items().unwrap(), vec![(1, 'x'), (2, 'y')]);
}

// _TestContainers.test_list
#[test]
fn list_methods_behave_as_pythons() {
    let m = Manager::start().unwrap();
    let l = m.list_from(&[5, 1, 4]).unwrap();
    l.append(&2).unwrap();
    l.extend(&[9, 1]).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![5, 1, 4, 2, 9, 1]);
    assert_eq!(l.get(2).unwrap(), 4);
    l.set(2, &40).unwrap();
    assert_eq!(l.count(&1).unwrap(), 2);
    assert_eq!(l.index(&40).unwrap(), 2);
    assert!(matches!(l.index(&77), Err(Error::InvalidArgument(_))));
    l.remove(&1).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![5, 40, 2, 9, 1]);
    assert!(matches!(l.remove(&77), Err(Error::InvalidArgument(_))));
    l.insert(0, &0).unwrap();
    l.insert(1000, &100).unwrap(); // clamped to the end, as Python's insert
    assert_eq!(l.pop().unwrap(), 100);
    assert_eq!(l.pop_at(0).unwrap(), 0);
    l.reverse().unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![1, 9, 2, 40, 5]);
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![1, 2, 5, 9, 40]);
    l.sort_by(|a, b| b.cmp(a)).unwrap();
    assert_eq!(l.slice(1, 3).unwrap(), vec![9, 5]);
    assert_eq!(l.slice(3, 100).unwrap(), vec![2, 1]);
    assert!(matches!(l.get(5), Err(Error::InvalidArgument(_))));
    assert!(matches!(l.set(5, &0), Err(Error::InvalidArgument(_))));
    l.clear().unwrap();
    assert!(matches!(l.pop(), Err(Error::InvalidArgument(_))));
    assert!(l.is_empty().unwrap());
}

// _TestContainers.test_namespace
#[test]
fn namespace_fields_are_set_read_and_deleted() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("name", "Bob").unwrap();
    ns.set("job", &"Builder".to_string()).unwrap();
    ns.set("age", &42u32).unwrap();
    assert_eq!(ns.get::<String>("name").unwrap().as_deref(), Some("Bob"));
    assert_eq!(ns.get::<u32>("age").unwrap(), Some(42));
    assert_eq!(ns.get::<u32>("nobody").unwrap(), None);
    // A field read as another type: a decode error, not a wrong value.
    assert!(matches!(ns.get::<[u64; 8]>("name"), Err(Error::Decode(_))));
    assert_eq!(ns.names().unwrap(), ["age", "job", "name"]);
    assert!(ns.del("job").unwrap());
    assert!(!ns.del("job").unwrap());
    assert_eq!(ns.names().unwrap(), ["age", "name"]);
}

fn add_one_hundred(v: ValueProxy<u64>) {
    for _ in 0..100 {
        v.update(|x| x + 1).unwrap();
    }
}

// _TestContainers (Value, Array)
#[test]
fn value_updates_from_three_processes_lose_no_increment() {
    let m = Manager::start().unwrap();
    let v = m.value(&0u64).unwrap();
    let mut ps: Vec<Process> = (0..3)
        .map(|_| {
            let mut p = Process::new(add_one_hundred, v.clone());
            p.start().unwrap();
            p
        })
        .collect();
    for p in &mut ps {
        join_bounded(p, "incrementer");
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(v.get().unwrap(), 300);
    v.set(&7).unwrap();
    assert_eq!(v.get().unwrap(), 7);
}

#[test]
fn an_array_keeps_its_length() {
    let m = Manager::start().unwrap();
    let a: ArrayProxy<i16> = m.array(&[1, 2, 3]).unwrap();
    a.set(0, &-1).unwrap();
    a.set_slice(1, &[20, 30]).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![-1, 20, 30]);
    assert_eq!(a.get(2).unwrap(), 30);
    assert_eq!(a.len().unwrap(), 3);
    assert!(a.set_slice(2, &[0, 0]).is_err());
    assert!(a.get(3).is_err());
    // An Array does not grow: a list method on it is refused by the server.
    let as_list = ProxyCore::create(&m, "Array", "", &()).unwrap();
    assert!(matches!(
        as_list.call::<_, ()>("append", &()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_dict_with_int_str_and_float_keys_keeps_them_apart() {
    let m = Manager::start().unwrap();
    let d = m.dict::<Key, i32>().unwrap();
    d.set(&Key::Int(1), &1).unwrap();
    d.set(&Key::from("1"), &2).unwrap();
    d.set(&Key::Float(1.5), &3).unwrap();
    d.set(&Key::Float(f64::NAN), &4).unwrap();
    assert_eq!(d.len().unwrap(), 4);
    assert_eq!(d.get(&1.into()).unwrap(), Some(1));
    assert_eq!(d.get(&"1".into()).unwrap(), Some(2));
    assert_eq!(d.get(&1.5.into()).unwrap(), Some(3));
    assert_eq!(d.get(&Key::Float(f64::NAN)).unwrap(), Some(4));
    assert_eq!(d.get(&Key::Float(1.0)).unwrap(), None);
    let shown: Vec<String> = d.keys().unwrap().iter().map(Key::to_string).collect();
    assert_eq!(shown, ["1", "'1'", "1.5", "NaN"]);
}

// --- proxies in children, nested proxies (test_list_proxy_in_list, test_dict_proxy_nested)

fn write_from_child((d, l, i): (DictProxy<u32, String>, ListProxy<u32>, u32)) {
    d.set(&i, &format!("child {i}")).unwrap();
    l.append(&i).unwrap();
}

#[test]
fn proxies_passed_to_children_reach_the_same_objects() {
    for method in METHODS {
        let m = Manager::builder().start_method(method).start().unwrap();
        let d = m.dict::<u32, String>().unwrap();
        let l = m.list::<u32>().unwrap();
        let mut ps: Vec<Process> = (0..3)
            .map(|i| {
                let mut p =
                    Process::new(write_from_child, (d.clone(), l.clone(), i)).start_method(method);
                p.start().unwrap();
                p
            })
            .collect();
        for p in &mut ps {
            join_bounded(p, "writer");
            assert_eq!(p.exitcode(), Some(0), "{method:?}");
        }
        let mut got = l.to_vec().unwrap();
        got.sort();
        assert_eq!(got, vec![0, 1, 2], "{method:?}");
        assert_eq!(d.get(&2).unwrap().as_deref(), Some("child 2"), "{method:?}");
        // Every child's reference went with it: the parent's alone remain.
        assert_eq!(m.refcount(&d).unwrap(), 1, "{method:?}");
        assert_eq!(m.refcount(&l).unwrap(), 1, "{method:?}");
    }
}

fn append_through_nested(d: DictProxy<String, ListProxy<i32>>) {
    let inner = d.get(&"xs".to_string()).unwrap().unwrap();
    inner.append(&3).unwrap();
}

#[test]
fn a_dict_of_lists_holds_live_proxies() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, ListProxy<i32>>().unwrap();
    let xs = m.list_from(&[1, 2]).unwrap();
    d.set(&"xs".to_string(), &xs).unwrap();
    drop(xs);
    // The stored proxy keeps the list alive, and each read reaches it.
    d.get(&"xs".to_string())
        .unwrap()
        .unwrap()
        .append(&0)
        .unwrap();
    let mut p = Process::new(append_through_nested, d.clone());
    p.start().unwrap();
    join_bounded(&mut p, "nested writer");
    assert_eq!(p.exitcode(), Some(0));
    let inner = d.get(&"xs".to_string()).unwrap().unwrap();
    assert_eq!(inner.to_vec().unwrap(), vec![1, 2, 0, 3]);
    // A list holding a list (test_list_proxy_in_list).
    let outer = m.list::<ListProxy<i32>>().unwrap();
    outer.append(&inner).unwrap();
    outer.get(0).unwrap().append(&4).unwrap();
    assert_eq!(inner.len().unwrap(), 5);
    // A proxy received as the wrong type is refused.
    let wrong = m.dict::<String, NamespaceProxy>().unwrap();
    wrong
        .set(&"n".to_string(), &m.namespace().unwrap())
        .unwrap();
    let as_list: DictProxy<String, ListProxy<i32>> = DictProxy::from_core(wrong.core().clone());
    assert!(matches!(
        as_list.get(&"n".to_string()),
        Err(Error::Decode(_))
    ));
}

// --- references -------------------------------------------------------------------

fn hold_and_exit(_l: ListProxy<i32>) {}

#[test]
fn an_object_is_freed_when_its_last_proxy_goes() {
    let m = Manager::start().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 0);
    let l = m.list::<i32>().unwrap();
    let d = m.dict::<i32, i32>().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 2);
    let l2 = l.clone();
    drop(l);
    assert_eq!(
        m.number_of_objects().unwrap(),
        2,
        "a clone still refers to it"
    );
    // Sent to a child, which takes the travelling reference over and exits.
    let mut p = Process::new(hold_and_exit, l2.clone());
    p.start().unwrap();
    join_bounded(&mut p, "holder");
    assert_eq!(m.refcount(&l2).unwrap(), 1);
    drop(l2);
    assert_eq!(m.number_of_objects().unwrap(), 1, "the list is freed");
    drop(d);
    assert_eq!(m.number_of_objects().unwrap(), 0, "the dict is freed");
}

fn hold_forever(l: ListProxy<i32>) {
    l.append(&1).unwrap();
    std::thread::sleep(LONG);
}

#[test]
fn a_sigkilled_client_lets_go_of_its_references() {
    let m = Manager::start().unwrap();
    let l = m.list::<i32>().unwrap();
    let mut p = KillOnDrop(Process::new(hold_forever, l.clone()));
    p.0.start().unwrap();
    let deadline = Instant::now() + LONG;
    while l.len().unwrap() == 0 {
        assert!(Instant::now() < deadline, "the child never appended");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.refcount(&l).unwrap(), 2);
    p.0.kill().unwrap();
    p.0.join().unwrap();
    let deadline = Instant::now() + LONG;
    while m.refcount(&l).unwrap() != 1 {
        assert!(
            Instant::now() < deadline,
            "the killed child's reference stayed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --- shutdown (_TestManagerRestart) -------------------------------------------------

#[test]
fn shutdown_makes_every_proxy_fail_at_once() {
    let m = Manager::start().unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<i32, i32>().unwrap();
    d.set(&1, &1).unwrap();
    m.shutdown().unwrap();
    assert!(wait_gone(pid, LONG));
    let t = Instant::now();
    assert!(matches!(d.get(&1), Err(Error::PeerDied(_))));
    assert!(matches!(d.len(), Err(Error::PeerDied(_))));
    assert!(t.elapsed() < LONG);
}

#[test]
fn dropping_a_started_manager_ends_its_server_and_spares_a_connected_one() {
    let served = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(b"key")
        .start()
        .unwrap();
    let server_pid = served.pid().unwrap();
    let other = Manager::connect(served.address(), b"key").unwrap();
    let d = other.dict::<i32, i32>().unwrap();
    drop(other);
    d.set(&1, &2).unwrap();
    assert_eq!(
        d.get(&1).unwrap(),
        Some(2),
        "a connected handle's drop spares the server"
    );
    drop(served);
    assert!(
        wait_gone(server_pid, LONG),
        "dropping the starter ends the server"
    );
    assert!(d.get(&1).is_err());
}

// --- a registered type (test_mymanager) -------------------------------------------

struct Counter {
    n: i64,
}

impl Registered for Counter {
    const TYPEID: &'static str = "Counter";

    fn construct(ctor: &str, args: &[u8]) -> Result<Self, CallError> {
        match ctor {
            "new" => {
                let (n,): (i64,) = decode_args(args)?;
                Ok(Counter { n })
            }
            _ => Err(CallError::NoSuchMethod {
                typeid: "Counter".into(),
                method: ctor.into(),
            }),
        }
    }

    fn dispatch(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, CallError> {
        match method {
            "add" => {
                let (x,): (i64,) = decode_args(args)?;
                self.n += x;
                encode_reply(&self.n)
            }
            "boom" => panic!("the counter exploded"),
            "refuse" => Err(Error::Full.into()),
            "fail" => Err(Error::Closed.into()),
            _ => Err(CallError::NoSuchMethod {
                typeid: "Counter".into(),
                method: method.into(),
            }),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct CounterProxy(ProxyCore);

impl Proxy for CounterProxy {
    const TYPEID: &'static str = "Counter";
    fn from_core(core: ProxyCore) -> Self {
        CounterProxy(core)
    }
    fn core(&self) -> &ProxyCore {
        &self.0
    }
}

#[test]
fn a_registered_type_is_constructed_and_called_in_a_spawned_server() {
    let m = Manager::builder()
        .register::<Counter>()
        .start_method(StartMethod::Spawn)
        .start()
        .unwrap();
    let c = CounterProxy(ProxyCore::create(&m, "Counter", "new", &(5i64,)).unwrap());
    assert_eq!(c.0.call::<_, i64>("add", &(3i64,)).unwrap(), 8);
    assert!(matches!(
        c.0.call::<_, i64>("boom", &()),
        Err(Error::Panicked { message, .. }) if message == "the counter exploded"
    ));
    // The server carries on, with the value as the panic left it.
    assert_eq!(c.0.call::<_, i64>("add", &(1i64,)).unwrap(), 9);
    assert!(matches!(c.0.call::<_, ()>("refuse", &()), Err(Error::Full)));
    assert!(matches!(
        c.0.call::<_, ()>("fail", &()),
        Err(Error::Remote(_))
    ));
    assert!(matches!(
        c.0.call::<_, ()>("nothing", &()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.0.call::<_, i64>("add", &("text",)),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        ProxyCore::create(&m, "Counter", "nope", &()),
        Err(Error::InvalidArgument(_))
    ));
    // A type nobody registered cannot be made: nothing a client sends picks other code.
    assert!(matches!(
        ProxyCore::create(&m, "std::process::Command", "new", &("sh",)),
        Err(Error::InvalidArgument(_))
    ));
}

// --- remote use (_TestRemoteManager) ----------------------------------------------

fn remote_client((address, key): (String, Vec<u8>)) -> Result<(), String> {
    let m = Manager::connect(address.as_str(), &key).map_err(|e| e.to_string())?;
    let jobs: ListProxy<String> = m.get("jobs").map_err(|e| e.to_string())?;
    jobs.append(&"from afar".to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn a_tcp_manager_serves_a_program_that_knows_only_address_and_key() {
    let m = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(b"abracadabra")
        .expose::<ListProxy<String>, _>("jobs", "", &())
        .start()
        .unwrap();
    let address = m.address().to_string();
    let mut p = Process::new(remote_client, (address, b"abracadabra".to_vec()))
        .start_method(StartMethod::Spawn);
    p.start().unwrap();
    join_bounded(&mut p, "remote client");
    assert_eq!(p.exitcode(), Some(0));
    let jobs: ListProxy<String> = m.get("jobs").unwrap();
    assert_eq!(jobs.to_vec().unwrap(), ["from afar"]);
}

#[test]
fn a_wrong_key_or_no_key_is_refused_on_both_sides() {
    let m = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(b"right")
        .start()
        .unwrap();
    // Client side: a wrong or empty key fails the handshake.
    assert!(matches!(
        Manager::connect(m.address(), b"wrong"),
        Err(Error::AuthenticationFailed)
    ));
    assert!(matches!(
        Manager::connect(m.address(), b""),
        Err(Error::AuthenticationFailed)
    ));
    // Server side: a client without a key that sends a well-formed request gets no
    // answer but the challenge, and the request is never run.
    let mut create = vec![2u8];
    for s in ["dict", ""] {
        create.extend_from_slice(&(s.len() as u32).to_le_bytes());
        create.extend_from_slice(s.as_bytes());
    }
    let raw = Client::connect(m.address()).unwrap();
    raw.send_bytes(&create).unwrap();
    let first = raw.recv_bytes_timeout(LONG).unwrap();
    assert!(first.starts_with(b"#CHALLENGE#"));
    assert_eq!(raw.recv_bytes_timeout(LONG).unwrap(), b"#FAILURE#");
    assert!(matches!(
        raw.recv_bytes_timeout(LONG),
        Err(Error::Closed | Error::Io(_))
    ));
    assert_eq!(m.number_of_objects().unwrap(), 0);
    // The right key works.
    let ok = Manager::connect(m.address(), b"right").unwrap();
    ok.dict::<i32, i32>().unwrap().set(&1, &1).unwrap();
}

#[test]
fn serve_forever_serves_until_a_client_asks_it_to_stop() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    let server = {
        let address = address.clone();
        std::thread::spawn(move || {
            Manager::builder()
                .address(address.as_str())
                .authkey(b"k")
                .expose::<NamespaceProxy, _>("state", "", &())
                .serve_forever()
        })
    };
    let deadline = Instant::now() + LONG;
    let m = loop {
        match Manager::connect(address.as_str(), b"k") {
            Ok(m) => break m,
            Err(e) => {
                assert!(Instant::now() < deadline, "the server never listened: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let ns: NamespaceProxy = m.get("state").unwrap();
    ns.set("x", &1).unwrap();
    assert!(
        m.get::<ListProxy<i32>>("state").is_err(),
        "a name of another type"
    );
    m.shutdown().unwrap();
    server.join().unwrap().unwrap();
    assert!(Manager::connect(address.as_str(), b"k").is_err());
}

// --- faults -----------------------------------------------------------------------

/// A thread using `d` as a well-behaved client until `stop`: every answer checked;
/// the number of rounds it completed.
fn well_behaved(d: DictProxy<u64, u64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            d.set(&(i % 16), &i).unwrap();
            assert_eq!(d.get(&(i % 16)).unwrap(), Some(i));
            i += 1;
        }
        i
    })
}

/// A small xorshift generator: reproducible bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Writes raw bytes to a connection's socket, outside its framing.
fn write_raw(conn: &multiproc::Connection, bytes: &[u8]) {
    let mut f = std::fs::File::from(conn.as_fd().try_clone_to_owned().unwrap());
    let _ = f.write_all(bytes);
}

#[test]
fn ten_thousand_hostile_byte_strings_do_not_stop_the_manager() {
    let m = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(b"key")
        .start()
        .unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let good = well_behaved(d.clone(), stop.clone());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let authed = || {
        Client::builder(m.address())
            .authkey(b"key")
            .connect()
            .unwrap()
    };
    let mut conn = authed();
    for i in 0..10_000 {
        match i % 10 {
            // Before the handshake: random bytes, then gone.
            0 => {
                let raw = Client::connect(m.address()).unwrap();
                write_raw(&raw, &rng.bytes(64));
            }
            // After it: a truncated frame (a length, fewer bytes), then gone.
            1 => {
                let c = authed();
                let body = rng.bytes(40);
                let mut framed = ((body.len() + 10) as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&body);
                write_raw(&c, &framed);
            }
            // Raw bytes that break the framing: the server closes this connection.
            2 => {
                let c = authed();
                write_raw(&c, &rng.bytes(64));
            }
            // Well-framed random requests: each answered, the connection kept. A
            // lone shutdown tag is the one request a key holder may use to stop the
            // server, so it is left out.
            _ => {
                let mut body = rng.bytes(48);
                if body == [9] {
                    body.push(0);
                }
                conn.send_bytes(&body).unwrap();
                if conn.recv_bytes_timeout(LONG).is_err() {
                    conn = authed();
                }
            }
        }
    }
    assert!(m.pid().is_some_and(|pid| !wait_gone(pid, Duration::ZERO)));
    stop.store(true, Ordering::Relaxed);
    let rounds = good.join().expect("the well-behaved client failed");
    assert!(rounds > 0);
    assert_eq!(d.len().unwrap(), 16);
}

/// The peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_four_gib_length_prefix_is_refused_without_allocating() {
    let m = Manager::start().unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    d.set(&1, &1).unwrap();
    let before = peak_rss_kib(pid);
    let c = Client::builder(m.address())
        .authkey(m.authkey())
        .connect()
        .unwrap();
    // CPython's long form: -1, then an 8-byte length (4 GiB).
    let mut header = (-1i32).to_be_bytes().to_vec();
    header.extend_from_slice(&(4u64 << 30).to_be_bytes());
    write_raw(&c, &header);
    write_raw(&c, &[0u8; 4096]);
    // The server closes the connection instead of reading on.
    assert!(matches!(
        c.recv_bytes_timeout(LONG),
        Err(Error::Closed | Error::Io(_))
    ));
    let after = peak_rss_kib(pid);
    assert!(
        after < before + (256 << 10),
        "peak memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(d.get(&1).unwrap(), Some(1));
}

#[test]
fn a_manager_sigkilled_under_a_client_fails_its_calls_within_a_second() {
    let m = Manager::start().unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let failed_at = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let client = {
        let failed_at = failed_at.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            loop {
                if let Err(e) = d.set(&(i % 8), &i) {
                    failed_at.store(started.elapsed().as_micros() as u64, Ordering::SeqCst);
                    return e;
                }
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let killed_at = started.elapsed();
    common::kill_pid(pid);
    let e = client.join().unwrap();
    assert!(matches!(e, Error::PeerDied(_)), "{e:?}");
    let waited = Duration::from_micros(failed_at.load(Ordering::SeqCst)).saturating_sub(killed_at);
    assert!(
        waited < Duration::from_secs(1),
        "the client waited {waited:?}"
    );
    drop(m); // the server is gone: dropping the handle must not wait for it
}

fn half_a_request_then_wait((address, key): (String, Vec<u8>)) {
    let c = Client::builder(address.as_str())
        .authkey(&key)
        .connect()
        .unwrap();
    // A frame announcing 100 bytes, with 10 of them.
    let mut framed = 100u32.to_be_bytes().to_vec();
    framed.extend_from_slice(&[1u8; 10]);
    write_raw(&c, &framed);
    println!("sent");
    std::thread::sleep(LONG);
}

#[test]
fn a_client_that_vanishes_mid_request_does_not_disturb_others() {
    let m = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(b"k")
        .start()
        .unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let good = well_behaved(d.clone(), stop.clone());
    let mut vanishing = Vec::new();
    for _ in 0..3 {
        let mut p = KillOnDrop(Process::new(
            half_a_request_then_wait,
            (m.address().to_string(), b"k".to_vec()),
        ));
        p.0.start().unwrap();
        vanishing.push(p);
    }
    std::thread::sleep(Duration::from_millis(300));
    for p in &mut vanishing {
        p.0.kill().unwrap();
        p.0.join().unwrap();
    }
    // Served throughout, and after.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    assert!(good.join().expect("the well-behaved client failed") > 0);
    d.set(&100, &100).unwrap();
    assert_eq!(d.get(&100).unwrap(), Some(100));
}

#[test]
fn a_request_over_the_size_limit_closes_only_its_connection() {
    let m = Manager::builder().max_request_size(4096).start().unwrap();
    let d = m.dict::<u64, Vec<u8>>().unwrap();
    d.set(&1, &vec![7; 1000]).unwrap();
    let big = Client::builder(m.address())
        .authkey(m.authkey())
        .connect()
        .unwrap();
    big.send_bytes(&vec![1u8; 8192]).unwrap();
    assert!(matches!(
        big.recv_bytes_timeout(LONG),
        Err(Error::Closed | Error::Io(_))
    ));
    // Through a proxy: the call fails, and the proxy carries on with the next one.
    assert!(d.set(&2, &vec![7; 8192]).is_err());
    assert_eq!(d.get(&1).unwrap(), Some(vec![7; 1000]));
    assert_eq!(d.len().unwrap(), 1);
}

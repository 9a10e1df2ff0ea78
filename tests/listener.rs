//! `Listener` and `Client`: Rust with Rust over Unix paths, abstract names and TCP,
//! with and without an authkey; refusals of wrong keys, silent peers and garbage; and
//! the same handshake against the real CPython 3.11 in both roles.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::LONG;
use multiproc::{Address, Client, Connection, Error, Listener};

const KEY: &[u8] = b"the shared secret";

fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("multiproc-listener-{}.sock", unique()))
}

fn abstract_name() -> Address {
    Address::Abstract(format!("multiproc-listener-{}", unique()).into_bytes())
}

/// Accepts one peer on `listener` while a thread connects with `key`, then checks
/// messages both ways.
fn round_trip(listener: &Listener, key: Option<&'static [u8]>) {
    let address = listener.address().clone();
    let client = thread::spawn(move || -> multiproc::Result<Vec<u8>> {
        let mut b = Client::builder(&address).timeout(LONG);
        if let Some(k) = key {
            b = b.authkey(k);
        }
        let conn = b.connect()?;
        conn.send_bytes(b"from the client")?;
        let reply = conn.recv_bytes_timeout(LONG)?;
        conn.send_bytes(&[7u8; 100_000])?;
        Ok(reply)
    });
    let conn = listener.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"from the client");
    conn.send_bytes(b"from the listener").unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), vec![7u8; 100_000]);
    assert_eq!(client.join().unwrap().unwrap(), b"from the listener");
}

#[test]
fn unix_path_without_and_with_key_and_file_removed_on_drop() {
    let path = socket_path();
    let listener = Listener::bind(path.as_path()).unwrap();
    assert_eq!(listener.address(), &Address::Unix(path.clone()));
    assert!(path.exists());
    round_trip(&listener, None);
    drop(listener);
    assert!(
        !path.exists(),
        "the socket file is removed with the listener"
    );

    let listener = Listener::builder(path.as_path())
        .authkey(KEY)
        .bind()
        .unwrap();
    round_trip(&listener, Some(KEY));
    listener.close();
    assert!(!path.exists());
}

#[test]
fn bind_to_an_existing_path_fails_and_leaves_it() {
    let path = socket_path();
    let first = Listener::bind(path.as_path()).unwrap();
    let second = Listener::bind(path.as_path());
    assert!(matches!(second, Err(Error::Io(_))), "{second:?}");
    assert!(
        path.exists(),
        "a failed bind does not remove another's socket"
    );
    round_trip(&first, None);
}

#[test]
fn abstract_name_without_and_with_key() {
    let address = abstract_name();
    let listener = Listener::bind(&address).unwrap();
    assert_eq!(listener.address(), &address);
    round_trip(&listener, None);
    drop(listener);

    let address = abstract_name();
    let listener = Listener::builder(&address).authkey(KEY).bind().unwrap();
    round_trip(&listener, Some(KEY));
}

#[test]
fn tcp_loopback_without_and_with_key() {
    let listener = Listener::bind("127.0.0.1:0").unwrap();
    let Address::Tcp(bound) = listener.address() else {
        panic!("not TCP: {:?}", listener.address())
    };
    assert_ne!(bound.port(), 0, "the real port is reported");
    round_trip(&listener, None);
    assert!(matches!(listener.last_accepted(), Some(Address::Tcp(a)) if a.ip().is_loopback()));

    let listener = Listener::builder(("127.0.0.1", 0))
        .authkey(KEY)
        .backlog(4)
        .bind()
        .unwrap();
    round_trip(&listener, Some(KEY));
}

#[test]
fn several_clients_one_after_another() {
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    for _ in 0..3 {
        round_trip(&listener, Some(KEY));
    }
}

#[test]
fn addresses_parse_as_python_writes_them() {
    assert_eq!(
        "/tmp/x.sock".parse::<Address>().unwrap(),
        Address::Unix("/tmp/x.sock".into())
    );
    assert_eq!(
        "relative.sock".parse::<Address>().unwrap(),
        Address::Unix("relative.sock".into())
    );
    assert_eq!(
        "\0name".parse::<Address>().unwrap(),
        Address::Abstract(b"name".to_vec())
    );
    assert_eq!(
        "[::1]:6000".parse::<Address>().unwrap(),
        Address::Tcp("[::1]:6000".parse().unwrap())
    );
    assert_eq!(
        "localhost:6000".parse::<Address>().unwrap(),
        Address::Tcp("127.0.0.1:6000".parse().unwrap())
    );
    assert!("".parse::<Address>().is_err());
    assert_eq!(Address::Abstract(b"a b".to_vec()).to_string(), "\\0a b");
}

/// Calls `accept` in short slices (handshakes advance only inside it) until `done()`,
/// for at most [`LONG`]; no slice may hand out a connection.
fn refuse_until(listener: &Listener, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LONG, "the refused peer never finished");
        match listener.accept_timeout(Duration::from_millis(50)) {
            Err(Error::Timeout) => {}
            other => panic!("a peer that should be refused was accepted: {other:?}"),
        }
    }
}

#[test]
fn accept_timeout_without_a_peer() {
    let listener = Listener::bind("127.0.0.1:0").unwrap();
    let r = listener.accept_timeout(Duration::from_millis(50));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
}

#[test]
fn nobody_listening_is_an_io_error() {
    let r = Client::connect(abstract_name());
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
    let r = Client::connect(socket_path().as_path());
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
}

#[test]
fn wrong_key_is_refused_on_both_sides() {
    for address in [
        Address::Tcp("127.0.0.1:0".parse().unwrap()),
        abstract_name(),
    ] {
        let listener = Listener::builder(address).authkey(KEY).bind().unwrap();
        let address = listener.address().clone();
        let client = thread::spawn(move || {
            Client::builder(address)
                .authkey(b"not the key")
                .timeout(LONG)
                .connect()
        });
        // The listener refuses it: no connection comes out of `accept`.
        refuse_until(&listener, || client.is_finished());
        let client = client.join().unwrap();
        assert!(
            matches!(client, Err(Error::AuthenticationFailed)),
            "{client:?}"
        );
        // The listener stays usable for a peer with the right key.
        round_trip(&listener, Some(KEY));
    }
}

#[test]
fn client_without_key_is_refused_before_its_request_is_read() {
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || -> multiproc::Result<Vec<Vec<u8>>> {
        let conn = Client::builder(address).timeout(LONG).connect()?;
        conn.send_bytes(b"GET /secrets")?;
        let mut got = Vec::new();
        loop {
            match conn.recv_bytes_timeout(LONG) {
                Ok(m) => got.push(m),
                Err(Error::Closed) => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    });
    refuse_until(&listener, || client.is_finished());
    let got = client.join().unwrap().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with(b"#CHALLENGE#{sha256}"));
    assert_eq!(got[0].len(), b"#CHALLENGE#{sha256}".len() + 40);
    assert_eq!(got[1], b"#FAILURE#");
}

#[test]
fn client_with_key_refuses_a_listener_without_one() {
    // A client that wants authentication cannot get it from a listener without a key:
    // the listener's first message is no challenge.
    let r = connect_to_fake_server(b"hello, no key here".to_vec());
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
}

#[test]
fn a_silent_peer_is_closed_after_the_handshake_deadline() {
    let listener = Listener::builder(abstract_name())
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(300))
        .bind()
        .unwrap();
    let Address::Abstract(name) = listener.address().clone() else {
        unreachable!()
    };
    let mut raw = {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        UnixStream::connect_addr(&a).unwrap()
    };
    // The peer reads the challenge, says nothing, and sees the listener close.
    let peer = thread::spawn(move || {
        raw.set_read_timeout(Some(LONG)).unwrap();
        let mut got = Vec::new();
        raw.read_to_end(&mut got).map(|_| got)
    });
    refuse_until(&listener, || peer.is_finished());
    let got = peer
        .join()
        .unwrap()
        .expect("end of stream, not a read timeout");
    assert!(got.starts_with(b"\0\0\0\x3b#CHALLENGE#{sha256}"), "{got:?}");
    assert_eq!(got.len(), 4 + 59, "only the challenge: {got:?}");
    round_trip(&listener, Some(KEY));
}

#[test]
fn client_timeout_bounds_a_silent_listener() {
    // A listener without a key never sends a challenge; the client's timeout ends the wait.
    let listener = Listener::bind("127.0.0.1:0").unwrap();
    let r = Client::builder(listener.address())
        .authkey(KEY)
        .timeout(Duration::from_millis(300))
        .connect();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
}

/// A raw TCP peer of a listener with a key sends `send` and half-closes; the listener
/// must refuse it (close it, hand out nothing) well before its handshake deadline, and
/// then still serve a good peer. Returns what the raw peer received.
fn refuse_raw_peer(send: &'static [u8]) -> Vec<u8> {
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .handshake_timeout(LONG)
        .bind()
        .unwrap();
    let Address::Tcp(a) = *listener.address() else {
        unreachable!()
    };
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(send).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // Drain until the listener closes, so the peer never resets the connection early.
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    refuse_until(&listener, || peer.is_finished());
    round_trip(&listener, Some(KEY));
    peer.join().unwrap()
}

#[test]
fn garbage_peers_are_refused_and_closed() {
    // A frame announcing an 8-byte length far over the handshake's limit.
    refuse_raw_peer(b"\xff\xff\xff\xff\x00\x00\x01\x00\x00\x00\x00\x00");
    // A well-framed answer that is no digest: told so.
    let got = refuse_raw_peer(b"\x00\x00\x00\x05hello");
    assert!(got.ends_with(b"#FAILURE#"), "{got:?}");
    // A digest of the right shape and the wrong value.
    let got = refuse_raw_peer(b"\x00\x00\x00\x10AAAAAAAAAAAAAAAA");
    assert!(got.ends_with(b"#FAILURE#"), "{got:?}");
    // Half a frame, then the peer leaves.
    refuse_raw_peer(b"\x00\x00\x00\x40abc");
    // Nothing at all, then the peer leaves.
    refuse_raw_peer(b"");
}

/// A listener without a key plays a hostile server: it sends `first` to a client with a
/// key (then closes); returns what the client's `connect` says.
fn connect_to_fake_server(first: Vec<u8>) -> multiproc::Result<Connection> {
    let listener = Listener::bind("127.0.0.1:0").unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        Client::builder(address)
            .authkey(KEY)
            .timeout(LONG)
            .connect()
    });
    let conn = listener.accept_timeout(LONG).unwrap();
    if !first.is_empty() {
        conn.send_bytes(&first).unwrap();
    }
    drop(conn);
    client.join().unwrap()
}

#[test]
fn hostile_servers_get_typed_errors() {
    let long = [b"#CHALLENGE#".as_slice(), &[1u8; 300]].concat();
    let r = connect_to_fake_server(long);
    assert!(matches!(r, Err(Error::MessageTooLarge { .. })), "{r:?}");
    let sha512 = [b"#CHALLENGE#{sha512}".as_slice(), &[1u8; 40]].concat();
    let r = connect_to_fake_server(sha512);
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    let short = b"#CHALLENGE#abc".to_vec();
    let r = connect_to_fake_server(short);
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    let r = connect_to_fake_server(b"not a challenge at all".to_vec());
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    // A valid challenge, then the server leaves before judging the answer.
    let legacy = [b"#CHALLENGE#".as_slice(), &[9u8; 20]].concat();
    let r = connect_to_fake_server(legacy);
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    let r = connect_to_fake_server(Vec::new());
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
}

// ---- against the real CPython ----

/// A python3 child killed and reaped when dropped (failure paths included).
struct Python {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Python {
    /// Runs `script` with `args`; stdout lines arrive on a channel.
    fn run(script: &str, args: &[&str]) -> Python {
        // The child ends itself after two minutes whatever happens.
        let script = format!("import signal; signal.alarm(120)\n{script}");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Python { child, lines }
    }

    /// A line if python has printed one.
    fn try_line(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(LONG)
            .expect("a line from python within the timeout")
    }

    /// Waits for the child to exit by itself; true when it exited with status 0.
    fn finish(mut self) -> bool {
        let deadline = Instant::now() + LONG;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python listener on the address in argv[1] ("tcp" for 127.0.0.1 with port 0, else a
/// path), with the authkey in argv[2]; it prints its address, then serves one client.
const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
from multiprocessing import AuthenticationError
addr = ('127.0.0.1', 0) if sys.argv[1] == 'tcp' else sys.argv[1]
with Listener(addr, authkey=sys.argv[2].encode()) as l:
    a = l.address
    print(a[1] if isinstance(a, tuple) else a, flush=True)
    try:
        c = l.accept()
    except AuthenticationError as e:
        print('AUTH-FAILED', flush=True)
        sys.exit(0)
    print('ACCEPTED', flush=True)
    m = c.recv_bytes()
    c.send_bytes(m[::-1])
    c.send_bytes(b'hello from python ' + bytes(str(len(m)), 'ascii'))
    assert c.recv_bytes() == b'bye'
    c.close()
"#;

/// A Python client of the address in argv[1] ("tcp:PORT" or a path), authkey argv[2].
const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
a = sys.argv[1]
addr = ('127.0.0.1', int(a[4:])) if a.startswith('tcp:') else a
try:
    c = Client(addr, authkey=sys.argv[2].encode())
except AuthenticationError:
    print('AUTH-FAILED', flush=True)
    sys.exit(0)
print('CONNECTED', flush=True)
c.send_bytes(b'hello from python')
m = c.recv_bytes()
c.send_bytes(m[::-1])
assert c.recv_bytes() == b'bye'
c.close()
"#;

fn key_str() -> &'static str {
    std::str::from_utf8(KEY).unwrap()
}

#[test]
fn cpython_listener_and_rust_client() {
    let path = socket_path();
    for where_ in ["tcp", path.to_str().unwrap()] {
        let py = Python::run(PY_LISTENER, &[where_, key_str()]);
        let printed = py.line();
        let address: Address = if where_ == "tcp" {
            Address::tcp("127.0.0.1", printed.parse().unwrap()).unwrap()
        } else {
            assert_eq!(printed, where_);
            Address::Unix(path.clone())
        };
        let conn = Client::builder(address)
            .authkey(KEY)
            .timeout(LONG)
            .connect()
            .unwrap();
        assert_eq!(py.line(), "ACCEPTED");
        conn.send_bytes(b"from rust").unwrap();
        assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"tsur morf");
        assert_eq!(
            conn.recv_bytes_timeout(LONG).unwrap(),
            b"hello from python 9"
        );
        conn.send_bytes(b"bye").unwrap();
        assert!(py.finish(), "python ({where_}) exited with an error");
    }
    assert!(!path.exists(), "python removed its socket file");
}

#[test]
fn rust_listener_and_cpython_client() {
    let tcp = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    let path = socket_path();
    let unix = Listener::builder(path.as_path())
        .authkey(KEY)
        .bind()
        .unwrap();
    let Address::Tcp(a) = tcp.address() else {
        unreachable!()
    };
    for (listener, arg) in [
        (&tcp, format!("tcp:{}", a.port())),
        (&unix, path.to_str().unwrap().to_string()),
    ] {
        let py = Python::run(PY_CLIENT, &[&arg, key_str()]);
        let conn = listener.accept_timeout(LONG).unwrap();
        assert_eq!(py.line(), "CONNECTED");
        assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"hello from python");
        conn.send_bytes(b"from rust").unwrap();
        assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"tsur morf");
        conn.send_bytes(b"bye").unwrap();
        assert!(py.finish(), "python ({arg}) exited with an error");
    }
}

#[test]
fn cpython_and_rust_refuse_each_others_wrong_key() {
    // Python listens, Rust connects with another key.
    let py = Python::run(PY_LISTENER, &["tcp", key_str()]);
    let port: u16 = py.line().parse().unwrap();
    let r = Client::builder(("127.0.0.1", port))
        .authkey(b"wrong key")
        .timeout(LONG)
        .connect();
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    assert_eq!(py.line(), "AUTH-FAILED");
    assert!(py.finish());

    // Rust listens, Python connects with another key.
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    let Address::Tcp(a) = listener.address() else {
        unreachable!()
    };
    let py = Python::run(PY_CLIENT, &[&format!("tcp:{}", a.port()), "wrong key"]);
    let mut said = None;
    refuse_until(&listener, || {
        said = py.try_line();
        said.is_some()
    });
    assert_eq!(said.as_deref(), Some("AUTH-FAILED"));
    assert!(py.finish());
}

#[test]
fn duration_max_timeouts_on_listener_and_client_mean_no_deadline() {
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .handshake_timeout(Duration::MAX)
        .bind()
        .unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || -> multiproc::Result<Vec<u8>> {
        let conn = Client::builder(address)
            .authkey(KEY)
            .timeout(Duration::MAX)
            .connect()?;
        conn.send_bytes(b"no deadline")?;
        conn.recv_bytes_timeout(Duration::MAX)
    });
    let conn = listener.accept_timeout(Duration::MAX).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"no deadline");
    conn.send_bytes(b"ok").unwrap();
    assert_eq!(client.join().unwrap().unwrap(), b"ok");
}

#[test]
fn a_handle_sent_over_tcp_is_refused_at_send_and_the_connection_stays_usable() {
    let listener = Listener::bind("127.0.0.1:0").unwrap();
    let client = Client::builder(listener.address())
        .timeout(LONG)
        .connect()
        .unwrap();
    let server = listener.accept_timeout(LONG).unwrap();
    // A connection inside a message: the kernel would drop its descriptor silently.
    let (one_end, _other_end) = multiproc::pipe(true).unwrap();
    match client.send(&("take this", &one_end)) {
        Err(Error::Encode(m)) => assert!(m.contains("TCP"), "{m}"),
        other => panic!("sending a connection over TCP gave {other:?}"),
    }
    // A lock, from the other side.
    let lock = multiproc::Lock::new().unwrap();
    let r = server.send(&lock);
    assert!(matches!(r, Err(Error::Encode(_))), "{r:?}");
    // Nothing of the refused messages was written: plain values still flow both ways.
    assert!(!server.poll(Some(Duration::from_millis(50))).unwrap());
    client.send(&"plain".to_string()).unwrap();
    assert_eq!(server.recv_timeout::<String>(LONG).unwrap(), "plain");
    server.send(&42u64).unwrap();
    assert_eq!(client.recv_timeout::<u64>(LONG).unwrap(), 42);
}

/// Connects a raw TCP peer that will say nothing.
fn silent_peer(listener: &Listener) -> TcpStream {
    let Address::Tcp(a) = *listener.address() else {
        unreachable!()
    };
    TcpStream::connect(a).unwrap()
}

/// Silent peers connect first (one stops half-way into a frame), then a good client;
/// returns how long after the good client's connect `accept` handed it out.
fn good_client_delay_behind_silent_ones() -> Duration {
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    let silent = silent_peer(&listener);
    let mut half = silent_peer(&listener);
    half.write_all(b"\x00\x00\x00\x40abc").unwrap();
    let address = listener.address().clone();
    let good = thread::spawn(move || {
        // Let `accept` take in the silent peers before this one connects.
        thread::sleep(Duration::from_millis(200));
        let connected = Instant::now();
        let conn = Client::builder(address)
            .authkey(KEY)
            .timeout(Duration::from_secs(20))
            .connect();
        (connected, conn)
    });
    let r = listener.accept_timeout(LONG);
    let accepted = Instant::now();
    let (connected, conn) = good.join().unwrap();
    let conn = conn.expect("the good client completes its handshake");
    let server_side = r.expect("accept returns the good client");
    conn.send_bytes(b"first").unwrap();
    assert_eq!(server_side.recv_bytes_timeout(LONG).unwrap(), b"first");
    drop((silent, half));
    accepted.saturating_duration_since(connected)
}

#[test]
fn a_silent_client_connected_first_does_not_delay_a_good_clients_accept() {
    // The bound is 100 ms from the good client's connect to `accept` returning it. A
    // loaded machine can stall any thread for a while, so the scenario gets three tries;
    // a silent peer that held `accept` up would fail every one (by seconds).
    let mut delays = Vec::new();
    for _ in 0..3 {
        let delay = good_client_delay_behind_silent_ones();
        if delay < Duration::from_millis(100) {
            return;
        }
        delays.push(delay);
    }
    panic!("the good client waited behind silent ones: {delays:?}");
}

#[test]
fn a_flood_of_silent_clients_is_bounded_and_closed_with_the_listener() {
    const FLOOD: usize = 100;
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .handshake_timeout(LONG)
        .backlog(FLOOD as u32 + 8)
        .bind()
        .unwrap();
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| silent_peer(&listener)).collect();
    round_trip(&listener, Some(KEY));
    // Peers beyond the bound pushed the oldest out: each of those saw its connection end.
    let closed = |flood: &[TcpStream]| {
        flood
            .iter()
            .filter(|s| {
                let mut s: &TcpStream = s;
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 256];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                        Err(_) => return true,
                    }
                }
            })
            .count()
    };
    let start = Instant::now();
    let mut seen = closed(&flood);
    while seen < FLOOD - multiproc::MAX_PENDING_HANDSHAKES && start.elapsed() < LONG {
        thread::sleep(Duration::from_millis(20));
        seen = closed(&flood);
    }
    assert!(
        seen >= FLOOD - multiproc::MAX_PENDING_HANDSHAKES,
        "only {seen} of {FLOOD} silent peers were let go"
    );
    assert!(
        seen < FLOOD,
        "the peers within the bound are still being heard"
    );
    // Closing the listener ends every handshake in progress.
    listener.close();
    let start = Instant::now();
    while closed(&flood) < FLOOD {
        assert!(start.elapsed() < LONG, "a handshake outlived its listener");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_gives_up_on_a_silent_listener_at_its_handshake_timeout() {
    // A plain TCP socket that lets clients connect (its backlog) and never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let r = Client::builder(silent.local_addr().unwrap())
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(300))
        .connect();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < LONG);
}

#[test]
fn a_client_with_no_timeout_set_gives_up_on_a_silent_listener_after_the_default() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let start = Instant::now();
        let r = Client::builder(address).authkey(KEY).connect();
        let _ = tx.send((r, start.elapsed()));
    });
    let (r, took) = rx
        .recv_timeout(multiproc::DEFAULT_HANDSHAKE_TIMEOUT + LONG)
        .expect("the client gave up by itself");
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took >= multiproc::DEFAULT_HANDSHAKE_TIMEOUT, "{took:?}");
    drop(silent);
}

#[test]
fn listener_and_client_requiring_sha256_speak_with_each_other() {
    let listener = Listener::builder(abstract_name())
        .authkey(KEY)
        .require_sha256(true)
        .bind()
        .unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        Client::builder(address)
            .authkey(KEY)
            .require_sha256(true)
            .timeout(LONG)
            .connect()
    });
    let server_side = listener.accept_timeout(LONG).unwrap();
    let client_side = client.join().unwrap().unwrap();
    client_side.send_bytes(b"sha256 only").unwrap();
    assert_eq!(
        server_side.recv_bytes_timeout(LONG).unwrap(),
        b"sha256 only"
    );
}

#[test]
fn a_listener_requiring_sha256_refuses_cpython_3_11_which_it_accepts_by_default() {
    let strict = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .require_sha256(true)
        .bind()
        .unwrap();
    let Address::Tcp(a) = strict.address() else {
        unreachable!()
    };
    // CPython 3.11 answers every challenge with HMAC-MD5.
    let py = Python::run(PY_CLIENT, &[&format!("tcp:{}", a.port()), key_str()]);
    let mut said = None;
    refuse_until(&strict, || {
        said = py.try_line();
        said.is_some()
    });
    assert_eq!(said.as_deref(), Some("AUTH-FAILED"));
    assert!(py.finish());

    // The default listener takes the same client.
    let default = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    let Address::Tcp(a) = default.address() else {
        unreachable!()
    };
    let py = Python::run(PY_CLIENT, &[&format!("tcp:{}", a.port()), key_str()]);
    let conn = default.accept_timeout(LONG).unwrap();
    assert_eq!(py.line(), "CONNECTED");
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"hello from python");
    conn.send_bytes(b"abc").unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"cba");
    conn.send_bytes(b"bye").unwrap();
    assert!(py.finish());
}

#[test]
fn a_client_requiring_sha256_refuses_a_cpython_3_11_listener_which_it_accepts_by_default() {
    // CPython 3.11 challenges with 20 bytes and no digest name: HMAC-MD5.
    let py = Python::run(PY_LISTENER, &["tcp", key_str()]);
    let port: u16 = py.line().parse().unwrap();
    let r = Client::builder(("127.0.0.1", port))
        .authkey(KEY)
        .require_sha256(true)
        .timeout(LONG)
        .connect();
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    drop(py);

    let py = Python::run(PY_LISTENER, &["tcp", key_str()]);
    let port: u16 = py.line().parse().unwrap();
    let conn = Client::builder(("127.0.0.1", port))
        .authkey(KEY)
        .timeout(LONG)
        .connect()
        .unwrap();
    assert_eq!(py.line(), "ACCEPTED");
    conn.send_bytes(b"abc").unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"cba");
    assert_eq!(
        conn.recv_bytes_timeout(LONG).unwrap(),
        b"hello from python 3"
    );
    conn.send_bytes(b"bye").unwrap();
    assert!(py.finish());
}

#[test]
fn two_threads_accept_on_one_listener_and_a_timed_one_keeps_its_timeout() {
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    thread::scope(|s| {
        // One thread waits without a limit while it drives the handshakes…
        let untimed = s.spawn(|| listener.accept());
        thread::sleep(Duration::from_millis(100));
        // …and another's timeout still holds.
        let start = Instant::now();
        let r = listener.accept_timeout(Duration::from_millis(200));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(start.elapsed() < LONG);
        // Two clients: each accepting thread gets one.
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let address = listener.address().clone();
                s.spawn(move || {
                    Client::builder(address)
                        .authkey(KEY)
                        .timeout(LONG)
                        .connect()
                })
            })
            .collect();
        let timed = listener.accept_timeout(LONG).unwrap();
        let untimed = untimed.join().unwrap().unwrap();
        let clients: Vec<Connection> = clients
            .into_iter()
            .map(|c| c.join().unwrap().unwrap())
            .collect();
        for (n, c) in clients.iter().enumerate() {
            c.send(&(n as u8)).unwrap();
        }
        let mut got = [
            timed.recv_timeout::<u8>(LONG).unwrap(),
            untimed.recv_timeout::<u8>(LONG).unwrap(),
        ];
        got.sort();
        assert_eq!(got, [0, 1]);
    });
}

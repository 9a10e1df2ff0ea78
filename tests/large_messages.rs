//! Large messages: exact round trips at the edges of the out-of-band size and far above
//! it, on every transport (a pipe, process arguments and results, Listener/Client over a
//! Unix socket and over TCP); the out-of-band path only where both ends are multiproc;
//! hostile out-of-band frames refused with the receiver still usable; and no descriptor
//! or mapping left behind.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;

use common::{LONG, METHODS, open_fds};
use multiproc::{
    Client, Connection, Error, LARGE_MESSAGE_THRESHOLD as T, Listener, get_context, pipe,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The tests of this file run one at a time: they count this process's descriptors and
/// mappings, and a GiB each is enough memory at once.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sizes at the edges of the out-of-band path, and one large one.
const SIZES: [usize; 6] = [0, 1, T - 1, T, T + 1, 64 << 20];

const GIB: usize = 1 << 30;

/// Bytes that differ from one position to the next within each 4 KiB, and from one
/// 4 KiB block to the next, and from one size to the next (built by block copies, so a
/// GiB takes little time in a debug build).
fn pattern(len: usize) -> Vec<u8> {
    const BLOCK: usize = 4096;
    let table: Vec<u8> = (0..256 * BLOCK)
        .map(|i| ((i % BLOCK).wrapping_mul(31) ^ (i / BLOCK).wrapping_mul(97)) as u8)
        .collect();
    let mut v = Vec::with_capacity(len);
    let mut c = 0usize;
    while v.len() < len {
        let k = (c.wrapping_mul(7) ^ len) % 256;
        let take = BLOCK.min(len - v.len());
        v.extend_from_slice(&table[k * BLOCK..k * BLOCK + take]);
        c += 1;
    }
    v
}

/// A byte buffer encoded as one run of bytes (what `serde_bytes` does).
#[derive(Debug, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Whether this machine has room for messages of a GiB (each test holds a few copies).
fn room_for_a_gib(test: &str) -> bool {
    let available_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let room = available_kib >= 6 << 20;
    if !room {
        println!(
            "{test}: 1 GiB case skipped: MemAvailable is {} MiB, below 6 GiB",
            available_kib >> 10
        );
    }
    room
}

/// Echoes every message back the way most likely to map it, until the peer closes.
fn echo(conn: Connection) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while let Ok(m) = conn.recv_bytes_mapped() {
            conn.send_bytes_mapped(&m).unwrap();
        }
    })
}

/// Sends each size to an echoing peer and checks every byte that comes back, as bytes
/// and as a value; `mapped` says whether large ones must come back out of band.
fn exchange(conn: &Connection, sizes: &[usize], mapped: bool) {
    for &n in sizes {
        let msg = pattern(n);
        conn.send_bytes(&msg).unwrap();
        assert!(
            conn.recv_bytes_timeout(LONG).unwrap() == msg,
            "send_bytes {n}"
        );
        conn.send_bytes_mapped(&msg).unwrap();
        let back = conn.recv_bytes_mapped_timeout(LONG).unwrap();
        assert_eq!(back.is_mapped(), mapped && n >= T, "send_bytes_mapped {n}");
        assert!(back[..] == msg[..], "send_bytes_mapped {n}");
        drop(back);
        // The echo returns the value's bytes as they came: they decode as the value.
        let blob = Blob(msg);
        conn.send(&blob).unwrap();
        assert!(
            conn.recv_timeout::<Blob>(LONG).unwrap() == blob,
            "send value {n}"
        );
    }
}

#[test]
fn pipe_round_trips_every_size_exactly_and_maps_large_ones() {
    let _serial = serial();
    let (a, b) = pipe(true).unwrap();
    let echoing = echo(b);
    exchange(&a, &SIZES, true);
    drop(a);
    echoing.join().unwrap();
    if room_for_a_gib("pipe") {
        // A fresh pair, both ends allowed a GiB.
        let (a, b) = pipe(true).unwrap();
        a.set_max_message_size(2 * GIB);
        b.set_max_message_size(2 * GIB);
        let echoing = echo(b);
        exchange(&a, &[GIB], true);
        drop(a);
        echoing.join().unwrap();
    }
}

fn echo_blob(b: Blob) -> Blob {
    b
}

#[test]
fn process_arguments_and_results_round_trip_every_size_under_every_start_method() {
    let _serial = serial();
    for method in METHODS {
        let ctx = get_context(method);
        let sizes: &[usize] = if method == multiproc::StartMethod::Spawn {
            &SIZES
        } else {
            &[T - 1, T, 64 << 20]
        };
        for &n in sizes {
            let blob = Blob(pattern(n));
            let got = ctx.spawn(echo_blob, blob).unwrap().join().unwrap();
            assert!(got == Blob(pattern(n)), "{method}: {n} bytes");
        }
    }
}

#[test]
fn a_gib_argument_and_a_gib_result_round_trip_exactly_past_the_connection_default_limit() {
    let _serial = serial();
    if !room_for_a_gib("process arguments and results") {
        return;
    }
    const { assert!(GIB > multiproc::DEFAULT_MAX_MESSAGE_SIZE) };
    let got = multiproc::spawn(echo_blob, Blob(pattern(GIB)))
        .unwrap()
        .join()
        .unwrap();
    assert!(got == Blob(pattern(GIB)), "1 GiB through a child");
}

/// Accepts one peer of `listener` while this thread connects, then runs `exchange`
/// against an echo: the out-of-band path is never used, either way.
fn over_listener(listener: Listener, sizes: &'static [usize], limit: Option<usize>) {
    over_listener_declared(listener, sizes, limit, false, false);
}

/// [`over_listener`] with the client declaring its listener multiproc (`declared`), and
/// whether large messages must then come back mapped.
fn over_listener_declared(
    listener: Listener,
    sizes: &'static [usize],
    limit: Option<usize>,
    declared: bool,
    mapped: bool,
) {
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        Client::builder(&address)
            .multiproc_peer(declared)
            .connect()
            .unwrap()
    });
    let server = listener.accept_timeout(LONG).unwrap();
    let client = client.join().unwrap();
    if let Some(l) = limit {
        server.set_max_message_size(l);
        client.set_max_message_size(l);
    }
    let echoing = echo(server);
    exchange(&client, sizes, mapped);
    drop(client);
    echoing.join().unwrap();
}

#[test]
fn listener_and_client_declared_multiproc_map_large_messages_over_unix_only() {
    let _serial = serial();
    let path = std::env::temp_dir().join(format!(
        "multiproc-large-{}-{}.sock",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let unix = Listener::builder(path.as_path())
        .multiproc_peer(true)
        .bind()
        .unwrap();
    over_listener_declared(unix, &SIZES, None, true, true);
    // TCP cannot carry the file: the declaration changes nothing there.
    let tcp = Listener::builder("127.0.0.1:0")
        .multiproc_peer(true)
        .bind()
        .unwrap();
    over_listener_declared(tcp, &SIZES, None, true, false);
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

#[test]
fn listener_over_unix_socket_round_trips_every_size_in_the_stream() {
    let _serial = serial();
    let path = std::env::temp_dir().join(format!(
        "multiproc-large-{}-{}.sock",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    over_listener(Listener::bind(path.as_path()).unwrap(), &SIZES, None);
    if room_for_a_gib("unix listener") {
        let path = path.with_extension("gib.sock");
        over_listener(
            Listener::bind(path.as_path()).unwrap(),
            &[GIB],
            Some(2 * GIB),
        );
    }
}

#[test]
fn listener_over_tcp_round_trips_every_size_in_the_stream() {
    let _serial = serial();
    over_listener(Listener::bind("127.0.0.1:0").unwrap(), &SIZES, None);
    if room_for_a_gib("tcp listener") {
        over_listener(
            Listener::bind("127.0.0.1:0").unwrap(),
            &[GIB],
            Some(2 * GIB),
        );
    }
}

/// Reads one frame as CPython does, from a plain socket.
fn read_plain_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let len = i32::from_be_bytes(h);
    assert!(len >= 0, "header {len} is not CPython framing");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).unwrap();
    body
}

#[test]
fn from_socket_never_sends_out_of_band_so_a_plain_reader_gets_normal_frames() {
    let _serial = serial();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    let msg = pattern(4 << 20);
    let sender = thread::spawn(move || {
        conn.send_bytes(&msg).unwrap();
        conn.send_bytes_mapped(&msg).unwrap();
        conn.send(&Blob(msg)).unwrap();
    });
    assert!(read_plain_frame(&mut theirs) == pattern(4 << 20));
    assert!(read_plain_frame(&mut theirs) == pattern(4 << 20));
    let value = read_plain_frame(&mut theirs);
    assert!(value[value.len() - (4 << 20)..] == pattern(4 << 20)[..]);
    sender.join().unwrap();
}

// ---- hostile peers ----

const MARK: i32 = -2;

/// Sends an out-of-band header claiming `len` bytes, with `fds` attached.
fn send_header(s: &UnixStream, len: u64, fds: &[std::os::fd::BorrowedFd<'_>]) {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&MARK.to_be_bytes());
    h[4..].copy_from_slice(&len.to_be_bytes());
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(anc.push(rustix::net::SendAncillaryMessage::ScmRights(fds)));
    }
    let n = rustix::net::sendmsg(
        s,
        &[std::io::IoSlice::new(&h)],
        &mut anc,
        rustix::net::SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, 12);
}

/// A memfd holding `data`, with `seals` added.
fn memfd(data: &[u8], seals: rustix::fs::SealFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "hostile",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(data).unwrap();
    let fd = OwnedFd::from(f);
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

/// Sends an ordinary frame, as CPython would.
fn send_plain(s: &mut UnixStream, body: &[u8]) {
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// After a refused frame the receiver reads the next message as usual.
fn still_works(conn: &Connection, raw: &mut UnixStream, what: &str) {
    send_plain(raw, b"next");
    assert_eq!(
        conn.recv_bytes_timeout(LONG).unwrap(),
        b"next",
        "after {what}"
    );
}

#[test]
fn hostile_out_of_band_frames_are_refused_and_the_receiver_keeps_working() {
    let _serial = serial();
    use rustix::fs::SealFlags as S;
    let all = S::SHRINK | S::GROW | S::WRITE | S::SEAL;
    let (ours, mut raw) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    conn.set_max_message_size(1 << 20);
    let data = pattern(300_000);
    let before = open_fds();

    // A sound one first: the path works on a plain Unix-socket connection.
    let good = memfd(&data, all);
    send_header(&raw, data.len() as u64, &[good.as_fd()]);
    drop(good);
    let got = conn.recv_bytes_mapped_timeout(LONG).unwrap();
    assert!(got.is_mapped() && got[..] == data[..]);
    drop(got);

    // Cut after writing (what a sender that truncates before sealing leaves): the file
    // is smaller than the header claims.
    let cut = memfd(&data, S::empty());
    rustix::fs::ftruncate(&cut, 1000).unwrap();
    rustix::fs::fcntl_add_seals(&cut, all).unwrap();
    send_header(&raw, data.len() as u64, &[cut.as_fd()]);
    drop(cut);
    let e = conn.recv_bytes_mapped_timeout(LONG).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "truncated: {e:?}");
    still_works(&conn, &mut raw, "a truncated file");

    // Not sealed at all: the sender could still cut it under a mapping.
    let unsealed = memfd(&data, S::empty());
    send_header(&raw, data.len() as u64, &[unsealed.as_fd()]);
    let e = conn.recv_bytes_mapped_timeout(LONG).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "unsealed: {e:?}");
    // Truncating it now harms no one: nothing of it is mapped.
    rustix::fs::ftruncate(&unsealed, 0).unwrap();
    drop(unsealed);
    still_works(&conn, &mut raw, "an unsealed file");

    // Sealed against resizing but not against writing.
    let writable = memfd(&data, S::SHRINK | S::GROW | S::SEAL);
    send_header(&raw, data.len() as u64, &[writable.as_fd()]);
    drop(writable);
    let e = conn.recv_timeout::<Blob>(LONG).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "writable: {e:?}");
    still_works(&conn, &mut raw, "a writable file");

    // A length above the receiver's limit: refused before anything is looked at.
    let big = memfd(&data, all);
    send_header(&raw, 2 << 20, &[big.as_fd()]);
    drop(big);
    let e = conn.recv_bytes_timeout(LONG).unwrap_err();
    assert!(
        matches!(e, Error::MessageTooLarge { len, limit } if len == 2 << 20 && limit == 1 << 20),
        "too large: {e:?}"
    );
    still_works(&conn, &mut raw, "a length above the limit");

    // No descriptor at all.
    send_header(&raw, data.len() as u64, &[]);
    let e = conn.recv_bytes_timeout(LONG).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "no descriptor: {e:?}");
    still_works(&conn, &mut raw, "no descriptor");

    // Two descriptors for a byte message.
    let one = memfd(&data, all);
    let two = memfd(&data, all);
    send_header(&raw, data.len() as u64, &[one.as_fd(), two.as_fd()]);
    drop((one, two));
    let e = conn.recv_bytes_timeout(LONG).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "two descriptors: {e:?}");
    still_works(&conn, &mut raw, "two descriptors");

    // Not a file: a socket.
    let (sock, _other) = UnixStream::pair().unwrap();
    send_header(&raw, data.len() as u64, &[sock.as_fd()]);
    drop(sock);
    let e = conn.recv_bytes_timeout(LONG).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "a socket: {e:?}");
    still_works(&conn, &mut raw, "a socket");

    drop(_other);
    assert_eq!(open_fds(), before, "descriptors left behind");
}

// ---- leaks ----

/// Lines of /proc/self/maps: all of them, and those of memfds.
fn maps_lines() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    (
        maps.lines().count(),
        maps.lines().filter(|l| l.contains("/memfd:")).count(),
    )
}

#[test]
fn a_thousand_large_messages_leave_no_descriptor_or_mapping_behind() {
    let _serial = serial();
    let (a, b) = pipe(true).unwrap();
    let msg = pattern(T + 1);
    let blob = Blob(msg.clone());
    // Warm up: the allocator's own mappings settle.
    a.send_bytes_mapped(&msg).unwrap();
    drop(b.recv_bytes_mapped_timeout(LONG).unwrap());
    let fds = open_fds();
    let maps = maps_lines();
    for i in 0..1000 {
        a.send_bytes_mapped(&msg).unwrap();
        let m = b.recv_bytes_mapped_timeout(LONG).unwrap();
        assert!(m.is_mapped() && m.len() == msg.len(), "message {i}");
        drop(m);
        if i % 10 == 0 {
            // A large value streams through the socket: it is sent while it is read.
            thread::scope(|s| {
                s.spawn(|| a.send(&blob).unwrap());
                assert!(b.recv_timeout::<Blob>(LONG).unwrap() == blob);
            });
            a.send_bytes_mapped(&msg).unwrap();
            assert!(b.recv_bytes_timeout(LONG).unwrap() == msg);
        }
    }
    // A receive that times out holds nothing either.
    assert!(matches!(
        b.recv_bytes_mapped_timeout(std::time::Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    assert_eq!(open_fds(), fds, "descriptors left behind");
    let after = maps_lines();
    assert_eq!(after.1, maps.1, "memfd mappings left behind");
    // The allocator may add or merge a region or two; a leak would add a thousand.
    assert!(
        after.0 <= maps.0 + 4,
        "mappings: {maps:?} before, {after:?} after 1,000 large messages"
    );
}

// ---- sealing while moved between CPUs ----

#[test]
fn large_mapped_bodies_sent_by_a_thread_moved_between_cpus_never_fail_and_arrive_exactly() {
    let _serial = serial();
    let cpus = rustix::thread::sched_getaffinity(None).unwrap();
    let mine: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| cpus.is_set(c))
        .collect();
    if mine.len() < 2 {
        println!("skipped: one CPU only");
        return;
    }
    let (a, b) = pipe(true).unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        while let Ok(m) = b.recv_bytes_mapped_timeout(LONG) {
            got.push(m.into_vec());
        }
        got
    });
    let tid = std::sync::Arc::new(AtomicU32::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Moves the sender from one CPU to the other all the time: written pages are left
    // in the batch of a CPU the sender no longer runs on when it seals.
    let mover = {
        let (tid, stop) = (tid.clone(), stop.clone());
        let mine = mine.clone();
        thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = tid.load(Ordering::Relaxed);
                if t != 0 {
                    let mut one = rustix::thread::CpuSet::new();
                    one.set(mine[k % 2]);
                    let pid = rustix::process::Pid::from_raw(t as i32);
                    let _ = rustix::thread::sched_setaffinity(pid, &one);
                    k += 1;
                }
                thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let sender = {
        let tid = tid.clone();
        thread::spawn(move || {
            tid.store(
                rustix::thread::gettid().as_raw_nonzero().get() as u32,
                Ordering::Relaxed,
            );
            let mut sent = Vec::new();
            for i in 0..30 {
                let msg = pattern((4 << 20) + i);
                a.send_bytes_mapped(&msg)
                    .unwrap_or_else(|e| panic!("message {i}: {e}"));
                sent.push(msg);
            }
            sent
        })
    };
    let sent = sender.join();
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
    let sent = sent.unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(g == s, "message {i} differs");
    }
}

// ---- values encoded twice ----

/// Bytes whose `Serialize` writes one byte fewer, or more, every second time it runs.
struct Flaky {
    calls: AtomicU32,
    bytes: Vec<u8>,
    longer: bool,
}

impl Serialize for Flaky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
            return s.serialize_bytes(&self.bytes);
        }
        if self.longer {
            s.serialize_bytes(&[&self.bytes[..], &[1]].concat())
        } else {
            s.serialize_bytes(&self.bytes[1..])
        }
    }
}

#[test]
fn a_large_value_encoding_differently_the_second_time_is_an_encode_error_and_stops_the_end_sending()
{
    let _serial = serial();
    for longer in [false, true] {
        let (a, b) = pipe(true).unwrap();
        let reader = thread::spawn(move || b.recv_bytes_timeout(LONG).map(|v| v.len()));
        let flaky = Flaky {
            calls: AtomicU32::new(0),
            bytes: pattern(4 * T),
            longer,
        };
        match a.send(&flaky) {
            Err(Error::Encode(m)) => assert!(m.contains("not deterministic"), "{m}"),
            other => panic!("longer {longer}: {other:?}"),
        }
        // Part of a message is in the stream: nothing more can be framed after it.
        match a.send(&1u8) {
            Err(Error::Encode(m)) => assert!(m.contains("lost its framing"), "{m}"),
            other => panic!("longer {longer}: {other:?}"),
        }
        drop(a);
        // The receiver sees a message cut short, not a wrong value.
        assert!(matches!(reader.join().unwrap(), Err(Error::Decode(_))));
    }
}

/// A large value whose `Serialize` panics when it runs the second time (after the header
/// went out).
struct PanicsTheSecondTime {
    calls: AtomicU32,
    bytes: Vec<u8>,
}

impl Serialize for PanicsTheSecondTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.calls.fetch_add(1, Ordering::Relaxed) == 1 {
            panic!("this value cannot be encoded twice");
        }
        s.serialize_bytes(&self.bytes)
    }
}

#[test]
fn a_large_value_whose_serialize_panics_midway_stops_the_end_sending() {
    let _serial = serial();
    let (a, b) = pipe(true).unwrap();
    let reader = thread::spawn(move || b.recv_bytes_timeout(LONG).map(|v| v.len()));
    let value = PanicsTheSecondTime {
        calls: AtomicU32::new(0),
        bytes: pattern(4 * T),
    };
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.send(&value)));
    assert!(sent.is_err(), "the value's panic reaches the caller");
    // The header is in the stream, its body is not: nothing more can be framed after it.
    match a.send(&1u8) {
        Err(Error::Encode(m)) => assert!(m.contains("lost its framing"), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(a);
    assert!(matches!(reader.join().unwrap(), Err(Error::Decode(_))));
}

//! Frames are byte-compatible with CPython's `multiprocessing.connection`: a Rust
//! `Connection` and a Python `Connection` on the two ends of one socket exchange
//! `send_bytes`/`recv_bytes` messages in both directions.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use multiproc::Connection;

/// Python echoes every message reversed, then sends a greeting of its own and exits
/// when the Rust side closes.
const ECHO: &str = r#"
from multiprocessing.connection import Connection
c = Connection(0)
c.send_bytes(b"hello from python")
while True:
    try:
        b = c.recv_bytes()
    except EOFError:
        break
    c.send_bytes(b[::-1])
"#;

/// Starts Python running [`ECHO`] on one end of a socketpair; returns it and the other
/// end, its greeting read.
fn python_echo() -> (std::process::Child, Connection) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let py = Command::new("python3")
        .arg("-c")
        .arg(ECHO)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .expect("python3 is installed");
    let conn = Connection::from_socket(OwnedFd::from(ours));
    let first = conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(first, b"hello from python");
    (py, conn)
}

#[test]
fn rust_and_cpython_exchange_messages() {
    let (mut py, conn) = python_echo();
    // Sizes around the interesting edges: empty, small, one page, several pages.
    for size in [0usize, 1, 8, 4096, 65_537, 1 << 20] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        conn.send_bytes(&msg).unwrap();
        let back = conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
        let mut expected = msg.clone();
        expected.reverse();
        assert_eq!(back, expected, "size {size}");
    }
    drop(conn);
    let status = py.wait().unwrap();
    assert!(status.success(), "python exited with {status}");
}

#[test]
fn rust_and_cpython_exchange_large_messages_in_plain_frames() {
    // Large messages from a `Connection::from_socket` must come in CPython's framing.
    let (mut py, conn) = python_echo();
    let t = multiproc::LARGE_MESSAGE_THRESHOLD;
    for size in [t - 1, t, t + 1, 64 << 20] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut expected = msg.clone();
        expected.reverse();
        // Both ways of sending bytes reach Python as ordinary frames.
        conn.send_bytes(&msg).unwrap();
        let back = conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
        assert!(back == expected, "send_bytes, size {size}");
        conn.send_bytes_mapped(&msg).unwrap();
        let back = conn
            .recv_bytes_mapped_timeout(Duration::from_secs(60))
            .unwrap();
        assert!(!back.is_mapped(), "size {size}");
        assert!(back[..] == expected[..], "send_bytes_mapped, size {size}");
    }
    drop(conn);
    let status = py.wait().unwrap();
    assert!(status.success(), "python exited with {status}");
}

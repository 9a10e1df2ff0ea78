//! A listener with a key leaves no descriptor and no thread behind: the peers whose
//! handshakes were still running when it closed are let go with it.
//!
//! This file holds exactly one test, so that no other test of the same process opens
//! descriptors or threads while it counts.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::LONG;
use multiproc::{Address, Client, Listener};

const KEY: &[u8] = b"leak check";

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn closing_a_listener_with_handshakes_under_way_leaves_no_descriptor_or_thread() {
    let fds_before = common::open_fds();
    let threads_before = threads();
    let listener = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .bind()
        .unwrap();
    let Address::Tcp(a) = *listener.address() else {
        unreachable!()
    };
    let silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(a).unwrap()).collect();
    let address = listener.address().clone();
    let good = std::thread::spawn(move || {
        Client::builder(address)
            .authkey(KEY)
            .timeout(LONG)
            .connect()
    });
    let server_side = listener.accept_timeout(LONG).unwrap();
    let client_side = good.join().unwrap().unwrap();
    client_side.send_bytes(b"in").unwrap();
    assert_eq!(server_side.recv_bytes_timeout(LONG).unwrap(), b"in");
    // The silent peers' handshakes are still under way; closing ends them.
    listener.close();
    for mut s in silent {
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("the listener's side closed, not a read timeout");
    }
    drop((server_side, client_side));
    // Threads that ended may take a moment to leave /proc.
    let start = Instant::now();
    while threads() != threads_before && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(threads(), threads_before, "a thread outlived the listener");
    assert_eq!(
        common::open_fds(),
        fds_before,
        "a descriptor outlived the listener"
    );
}

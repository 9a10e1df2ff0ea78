//! Connections: passed to children, sent inside messages, raw bytes, polling, `wait`,
//! one-way pipes, size limits, and what a dead peer or corrupt bytes turn into.

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::{
    CLEAN_METHODS, KillOnDrop, LONG, METHODS, assert_idle_while_blocked, cpu_while_blocked,
    join_bounded,
};
use multiproc::{Connection, Error, Process, StartMethod, pipe, wait};

const FOREVER: Duration = Duration::from_secs(600);

/// Doubles every number it receives until told to stop. (Not until end of stream: a
/// forked child inherits the parent's end of the pipe too, so it would never see one.)
fn doubler(conn: Connection) {
    while let Ok(Some(n)) = conn.recv::<Option<u64>>() {
        conn.send(&(n * 2)).unwrap();
    }
}

/// Receives a greeting together with a connection, and answers on that connection.
fn answer_on_the_received_connection(conn: Connection) {
    let (greeting, reply): (String, Connection) = conn.recv().unwrap();
    reply.send(&format!("{greeting}, back")).unwrap();
}

/// Makes a pipe of its own and sends one end back inside a message.
fn send_back_a_new_connection(conn: Connection) {
    let (mine, yours) = pipe(true).unwrap();
    conn.send(&("take this", yours)).unwrap();
    let n: u32 = mine.recv().unwrap();
    mine.send(&(n + 1)).unwrap();
}

fn ready_then_sleep(conn: Connection) {
    conn.send(&std::process::id()).unwrap();
    thread::sleep(FOREVER);
}

/// Echoes raw messages reversed until the other end closes.
fn reverse_bytes(conn: Connection) {
    while let Ok(mut b) = conn.recv_bytes() {
        b.reverse();
        conn.send_bytes(&b).unwrap();
    }
}

fn noop(_: ()) {}

#[test]
fn a_receiver_blocked_for_seconds_uses_almost_no_cpu() {
    let (receiver, sender) = pipe(true).unwrap();
    let blocked = cpu_while_blocked(
        move || assert_eq!(receiver.recv_bytes().unwrap(), b"late"),
        || sender.send_bytes(b"late").unwrap(),
    );
    assert_idle_while_blocked("Connection::recv_bytes", blocked);
}

#[test]
fn a_connection_passed_to_a_child_works_both_ways() {
    for method in METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(doubler, there).start_method(method);
        p.start().unwrap();
        for n in [0u64, 1, 21, u32::MAX as u64] {
            here.send(&Some(n)).unwrap();
            let got = here.recv_timeout::<u64>(LONG);
            assert_eq!(got.unwrap(), n * 2, "{method}");
        }
        here.send(&None::<u64>).unwrap();
        join_bounded(&mut p, method.as_str());
        assert_eq!(p.exitcode(), Some(0), "{method}");
    }
}

#[test]
fn a_connection_sent_inside_a_message_is_usable_by_the_receiver() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(answer_on_the_received_connection, there).start_method(method);
        p.start().unwrap();
        let (reply_here, reply_there) = pipe(true).unwrap();
        here.send(&("hello".to_string(), reply_there)).unwrap();
        let got = reply_here.recv_timeout::<String>(LONG);
        join_bounded(&mut p, method.as_str());
        assert_eq!(got.unwrap(), "hello, back", "{method}");
    }
}

#[test]
fn a_connection_made_in_a_child_can_be_sent_to_the_parent() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(send_back_a_new_connection, there).start_method(method);
        p.start().unwrap();
        let received = here.recv_timeout::<(String, Connection)>(LONG);
        let answer = received.and_then(|(label, conn)| {
            assert_eq!(label, "take this");
            conn.send(&41u32)?;
            conn.recv_timeout::<u32>(LONG)
        });
        join_bounded(&mut p, method.as_str());
        assert_eq!(answer.unwrap(), 42, "{method}");
    }
}

#[test]
fn a_connection_sent_within_one_process_keeps_working() {
    let (a, b) = pipe(true).unwrap();
    let (x, y) = pipe(false).unwrap();
    a.send(&(7u8, y)).unwrap();
    let (seven, y2): (u8, Connection) = b.recv_timeout(LONG).unwrap();
    assert_eq!(seven, 7);
    // The one-way direction travels with it.
    assert!(y2.writable() && !y2.readable());
    y2.send(&"through the copy").unwrap();
    assert_eq!(x.recv_timeout::<String>(LONG).unwrap(), "through the copy");
}

#[test]
fn recv_gives_closed_when_the_peer_is_killed() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(ready_then_sleep, there).start_method(method);
        p.start().unwrap();
        let mut guard = KillOnDrop(p);
        here.recv_timeout::<u32>(LONG).unwrap();
        guard.0.kill().unwrap();
        join_bounded(&mut guard.0, method.as_str());
        let r = here.recv_timeout::<u32>(LONG);
        assert!(matches!(r, Err(Error::Closed)), "{method}: got {r:?}");
        let r = here.recv_bytes_timeout(LONG);
        assert!(
            matches!(r, Err(Error::Closed)),
            "{method}: again, got {r:?}"
        );
    }
}

#[test]
fn recv_gives_closed_after_the_peer_closes() {
    let (a, b) = pipe(true).unwrap();
    b.send(&1u8).unwrap();
    b.close();
    // What was sent before the close is still delivered, then end of stream.
    assert_eq!(a.recv_timeout::<u8>(LONG).unwrap(), 1);
    assert!(matches!(a.recv::<u8>(), Err(Error::Closed)));
    assert!(matches!(a.send(&2u8), Err(Error::Closed)));
}

#[test]
fn send_bytes_and_recv_bytes_carry_messages_exactly() {
    let (a, b) = pipe(true).unwrap();
    for size in [0usize, 1, 3, 4, 5, 255, 4096, 65_537] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let sender = {
            let a = a.try_clone().unwrap();
            let msg = msg.clone();
            thread::spawn(move || a.send_bytes(&msg).unwrap())
        };
        let got = b.recv_bytes_timeout(LONG).unwrap();
        sender.join().unwrap();
        assert_eq!(got, msg, "size {size}");
    }
}

#[test]
fn send_bytes_and_recv_bytes_across_processes() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut p = Process::new(reverse_bytes, there).start_method(method);
        p.start().unwrap();
        for size in [0usize, 1, 1000, 1 << 20] {
            let msg: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let writer = {
                let here = here.try_clone().unwrap();
                let msg = msg.clone();
                thread::spawn(move || here.send_bytes(&msg))
            };
            let back = here.recv_bytes_timeout(LONG);
            writer.join().unwrap().unwrap();
            let mut expected = msg;
            expected.reverse();
            assert_eq!(back.unwrap(), expected, "{method}: size {size}");
        }
        drop(here);
        join_bounded(&mut p, method.as_str());
    }
}

#[test]
fn recv_bytes_into_a_short_buffer_gives_the_whole_message() {
    let (a, b) = pipe(true).unwrap();
    let long: Vec<u8> = (0..100u8).collect();
    a.send_bytes(&long).unwrap();
    a.send_bytes(b"next").unwrap();
    let mut small = [0u8; 10];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort { message }) => assert_eq!(message, long),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // The stream is still in step: the next message comes whole.
    let mut buf = [0u8; 10];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"next");
    // A message of exactly the buffer's size fits.
    a.send_bytes(&[9u8; 10]).unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 10);
    assert_eq!(buf, [9u8; 10]);
}

#[test]
fn poll_reports_readiness_within_its_timeout() {
    let (a, b) = pipe(true).unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    assert!(!b.poll(Some(Duration::from_millis(100))).unwrap());
    let sender = {
        let a = a.try_clone().unwrap();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            a.send(&5u8).unwrap();
        })
    };
    assert!(
        b.poll(Some(LONG)).unwrap(),
        "poll timed out with a message coming"
    );
    sender.join().unwrap();
    // Polling does not consume.
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert!(b.poll(None).unwrap());
    assert_eq!(b.recv_timeout::<u8>(LONG).unwrap(), 5);
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    // End of stream counts as ready: the next recv will not block.
    drop(a);
    assert!(b.poll(Some(LONG)).unwrap());
    assert!(matches!(b.recv::<u8>(), Err(Error::Closed)));
}

#[test]
fn wait_over_connections() {
    let (a, b) = pipe(true).unwrap();
    let (c, d) = pipe(true).unwrap();
    assert!(
        wait(&[&a, &c], Some(Duration::from_millis(100)))
            .unwrap()
            .is_empty()
    );
    d.send(&1u8).unwrap();
    assert_eq!(wait(&[&a, &c], Some(LONG)).unwrap(), vec![1]);
    b.send(&2u8).unwrap();
    assert_eq!(wait(&[&a, &c], None).unwrap(), vec![0, 1]);
    assert_eq!(a.recv::<u8>().unwrap(), 2);
    assert_eq!(wait(&[&a, &c], Some(LONG)).unwrap(), vec![1]);
}

#[test]
fn wait_over_process_sentinels_and_connections() {
    for method in CLEAN_METHODS {
        let (here, there) = pipe(true).unwrap();
        let mut sleeper = Process::new(ready_then_sleep, there).start_method(method);
        sleeper.start().unwrap();
        let mut sleeper = KillOnDrop(sleeper);
        let pid = here.recv_timeout::<u32>(LONG).unwrap();
        assert_eq!(Some(pid), sleeper.0.pid());

        let mut quick = Process::new(noop, ()).start_method(method);
        quick.start().unwrap();
        let (idle, _idle_peer) = pipe(true).unwrap();
        let ready = wait(&[&sleeper.0, &quick, &idle], Some(LONG)).unwrap();
        assert_eq!(ready, vec![1], "{method}: only the quick child has ended");
        join_bounded(&mut quick, method.as_str());

        assert!(
            wait(&[&sleeper.0], Some(Duration::from_millis(100)))
                .unwrap()
                .is_empty(),
            "{method}: a running child is not ready"
        );
        sleeper.0.kill().unwrap();
        let ready = wait(&[&sleeper.0, &idle], Some(LONG)).unwrap();
        assert_eq!(ready, vec![0], "{method}: the killed child is ready");
        join_bounded(&mut sleeper.0, method.as_str());
        assert_eq!(sleeper.0.exitcode(), Some(-9));
    }
}

#[test]
fn wait_on_an_unstarted_process_is_an_error() {
    let p = Process::new(noop, ());
    assert!(wait(&[&p], Some(Duration::ZERO)).is_err());
}

#[test]
fn one_way_pipes_refuse_the_wrong_direction() {
    let (reader, writer) = pipe(false).unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(writer.writable() && !writer.readable());
    assert!(matches!(reader.send(&1u8), Err(Error::InvalidState(_))));
    assert!(matches!(
        reader.send_bytes(b"x"),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(writer.recv::<u8>(), Err(Error::InvalidState(_))));
    assert!(matches!(writer.recv_bytes(), Err(Error::InvalidState(_))));
    assert!(matches!(
        writer.recv_bytes_into(&mut [0u8; 4]),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(
        writer.poll(Some(Duration::ZERO)),
        Err(Error::InvalidState(_))
    ));
    // The right direction works.
    writer.send(&3u8).unwrap();
    assert_eq!(reader.recv_timeout::<u8>(LONG).unwrap(), 3);
}

#[test]
fn one_way_pipes_keep_their_direction_in_a_child() {
    let (reader, writer) = pipe(false).unwrap();
    fn try_to_read(w: Connection) -> (bool, bool) {
        let refused = matches!(w.recv::<u8>(), Err(Error::InvalidState(_)));
        (refused, w.send(&9u8).is_ok())
    }
    let h = multiproc::get_context(StartMethod::Forkserver)
        .spawn(try_to_read, writer)
        .unwrap();
    assert_eq!(h.join().unwrap(), (true, true));
    assert_eq!(reader.recv_timeout::<u8>(LONG).unwrap(), 9);
}

#[test]
fn sending_more_than_the_limit_is_refused() {
    let (a, b) = pipe(true).unwrap();
    a.set_max_message_size(16);
    assert_eq!(a.max_message_size(), 16);
    match a.send_bytes(&[0u8; 32]) {
        Err(Error::MessageTooLarge { len, limit }) => {
            assert_eq!(len, 32);
            assert_eq!(limit, 16);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert!(matches!(
        a.send(&vec![1u8; 64]),
        Err(Error::MessageTooLarge { .. })
    ));
    // Nothing was written: the peer sees only what fits.
    a.send_bytes(&[7u8; 16]).unwrap();
    assert_eq!(b.recv_bytes_timeout(LONG).unwrap(), vec![7u8; 16]);
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

#[test]
fn receiving_more_than_the_limit_is_refused() {
    let (a, b) = pipe(true).unwrap();
    b.set_max_message_size(16);
    a.send_bytes(&[0u8; 32]).unwrap();
    match b.recv_bytes_timeout(LONG) {
        Err(Error::MessageTooLarge { len, limit }) => {
            assert_eq!(len, 32);
            assert_eq!(limit, 16);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // Typed receives honour the limit too.
    let (c, d) = pipe(true).unwrap();
    d.set_max_message_size(8);
    c.send(&"a string longer than eight bytes").unwrap();
    assert!(matches!(
        d.recv_timeout::<String>(LONG),
        Err(Error::MessageTooLarge { .. })
    ));
}

#[test]
fn an_oversized_length_is_refused_before_the_body_arrives() {
    // The writer stays open and never sends the body: a reader that trusted the length
    // would wait (or allocate 2 GiB) here.
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    conn.set_max_message_size(1024);
    raw.write_all(&0x7fff_ffffu32.to_be_bytes()).unwrap();
    match conn.recv_bytes_timeout(LONG) {
        Err(Error::MessageTooLarge { len, limit }) => {
            assert_eq!(len, 0x7fff_ffff);
            assert_eq!(limit, 1024);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // The long form (-1 then 8 bytes) too.
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    raw.write_all(&(-1i32).to_be_bytes()).unwrap();
    raw.write_all(&(1u64 << 40).to_be_bytes()).unwrap();
    assert!(matches!(
        conn.recv_bytes_timeout(LONG),
        Err(Error::MessageTooLarge { len, .. }) if len == 1 << 40
    ));
}

/// Writes `bytes` into a fresh socket, closes the writer, and returns the reading end.
fn connection_fed_with(bytes: &[u8]) -> Connection {
    let (mut raw, ours) = UnixStream::pair().unwrap();
    raw.write_all(bytes).unwrap();
    drop(raw);
    Connection::from_socket(OwnedFd::from(ours))
}

#[test]
fn a_negative_length_is_a_decode_error() {
    let conn = connection_fed_with(&[0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4]);
    assert!(matches!(
        conn.recv_bytes_timeout(LONG),
        Err(Error::Decode(_))
    ));
    // The stream lost its framing: later reads fail too, they do not return garbage.
    assert!(conn.recv_bytes_timeout(LONG).is_err());
}

#[test]
fn a_truncated_frame_is_a_decode_error() {
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1u8; 10]);
    let conn = connection_fed_with(&bytes);
    assert!(matches!(
        conn.recv_bytes_timeout(LONG),
        Err(Error::Decode(_))
    ));
    // A header cut short as well.
    let conn = connection_fed_with(&[0, 0]);
    assert!(matches!(
        conn.recv_bytes_timeout(LONG),
        Err(Error::Decode(_))
    ));
    // recv_bytes_into meets the same end.
    let conn = connection_fed_with(&bytes);
    assert!(matches!(
        conn.recv_bytes_into(&mut [0u8; 200]),
        Err(Error::Decode(_))
    ));
}

#[test]
fn a_truncated_frame_with_the_writer_open_times_out() {
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    raw.write_all(&100u32.to_be_bytes()).unwrap();
    raw.write_all(&[1u8; 10]).unwrap();
    let r = conn.recv_bytes_timeout(Duration::from_millis(300));
    assert!(matches!(r, Err(Error::Timeout)), "got {r:?}");
    drop(raw);
}

#[test]
fn a_timeout_inside_a_header_does_not_desynchronise_the_stream() {
    // A 65,536-byte message whose header arrives in two parts, with a receive timing out
    // in between. Its body starts with bytes that, read from the wrong offset, form the
    // frame [0, 0, 0, 3] "bad": a reader that forgot the two header bytes it consumed
    // returns a message that was never sent.
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    let mut body = vec![0u8, 3, b'b', b'a', b'd'];
    body.resize(65_536, 7);
    let mut bytes = frame(&body);
    bytes.extend_from_slice(&frame(b"second"));

    raw.write_all(&bytes[..2]).unwrap();
    let r = conn.recv_bytes_timeout(Duration::from_millis(200));
    assert!(matches!(r, Err(Error::Timeout)), "got {r:?}");
    let writer = thread::spawn(move || {
        raw.write_all(&bytes[2..]).unwrap();
        drop(raw);
    });
    let next = conn.recv_bytes_timeout(LONG);
    writer.join().unwrap();
    match next {
        // Resuming the frame is best; refusing to read on is acceptable.
        Ok(msg) => {
            assert_eq!(msg, body, "a different message came out of the stream");
            assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"second");
        }
        Err(Error::Decode(_)) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// CPython's framing: a 4-byte big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn a_timeout_inside_a_body_leaves_no_wrong_message() {
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let conn = Connection::from_socket(OwnedFd::from(ours));
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let mut bytes = frame(&body);
    bytes.extend_from_slice(&frame(b"second"));
    raw.write_all(&bytes[..500]).unwrap();
    let r = conn.recv_bytes_timeout(Duration::from_millis(200));
    assert!(matches!(r, Err(Error::Timeout)), "got {r:?}");
    raw.write_all(&bytes[500..]).unwrap();
    drop(raw);
    match conn.recv_bytes_timeout(LONG) {
        Ok(msg) => {
            assert_eq!(msg, body, "a different message came out of the stream");
            assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"second");
        }
        Err(Error::Decode(_)) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn garbage_in_a_valid_frame_is_a_decode_error_for_typed_receives() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Typed {
        name: String,
        values: Vec<u64>,
    }
    // A string length far beyond the body.
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    body.extend_from_slice(b"abc");
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let conn = connection_fed_with(&bytes);
    let r = conn.recv_timeout::<Typed>(LONG);
    assert!(matches!(r, Err(Error::Decode(_))), "got {r:?}");

    // Invalid UTF-8 in a string.
    let body = [2u8, 0xc3, 0x28];
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let conn = connection_fed_with(&bytes);
    assert!(matches!(
        conn.recv_timeout::<String>(LONG),
        Err(Error::Decode(_))
    ));

    // Trailing bytes after a complete value.
    let body = [1u8, 2, 3];
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let conn = connection_fed_with(&bytes);
    assert!(matches!(
        conn.recv_timeout::<u8>(LONG),
        Err(Error::Decode(_))
    ));
}

#[test]
fn a_message_naming_a_connection_it_did_not_carry_is_a_decode_error() {
    // The body of a (Connection) value is an index into the message's descriptors; this
    // frame carries none.
    let body = [0u8, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x01];
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let conn = connection_fed_with(&bytes);
    let r = conn.recv_timeout::<Connection>(LONG);
    assert!(matches!(r, Err(Error::Decode(_))), "got {r:?}");
}

#[test]
fn a_duration_max_timeout_means_no_deadline_instead_of_a_panic() {
    let (a, b) = pipe(true).unwrap();
    // Ready at once.
    b.send(&7u32).unwrap();
    assert!(a.poll(Some(Duration::MAX)).unwrap());
    assert_eq!(wait(&[&a], Some(Duration::MAX)).unwrap(), vec![0]);
    assert_eq!(a.recv_timeout::<u32>(Duration::MAX).unwrap(), 7);
    b.send_bytes(b"x").unwrap();
    assert_eq!(a.recv_bytes_timeout(Duration::MAX).unwrap(), b"x");
    // Ready only later: every form waits for it.
    let sender = {
        let b = b.try_clone().unwrap();
        thread::spawn(move || {
            for n in 0..4u32 {
                thread::sleep(Duration::from_millis(50));
                b.send(&n).unwrap();
            }
        })
    };
    assert!(a.poll(Some(Duration::MAX)).unwrap());
    assert_eq!(a.recv::<u32>().unwrap(), 0);
    assert_eq!(wait(&[&a], Some(Duration::MAX)).unwrap(), vec![0]);
    assert_eq!(a.recv::<u32>().unwrap(), 1);
    assert_eq!(a.recv_timeout::<u32>(Duration::MAX).unwrap(), 2);
    // postcard writes a small u32 as one byte.
    assert_eq!(a.recv_bytes_timeout(Duration::MAX).unwrap(), vec![3u8]);
    sender.join().unwrap();
}

#[test]
fn a_value_with_more_handles_than_one_message_holds_is_refused_and_the_pipe_stays_usable() {
    let (a, b) = pipe(true).unwrap();
    let too_many: Vec<multiproc::Lock> = (0..=multiproc::MAX_HANDLES_PER_MESSAGE)
        .map(|_| multiproc::Lock::new().unwrap())
        .collect();
    match a.send(&too_many) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("at most 64"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let fits = &too_many[..multiproc::MAX_HANDLES_PER_MESSAGE];
    a.send(fits).unwrap();
    assert_eq!(b.recv::<Vec<multiproc::Lock>>().unwrap().len(), fits.len());
    a.send(&7u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 7);
}

/// In a process of its own (it lowers its descriptor limit): receives a message holding
/// a handle while no descriptor is free, then the next message. Says what it got.
fn receive_a_handle_with_no_descriptor_free(_: ()) -> (String, String) {
    let (a, b) = pipe(true).unwrap();
    let (c, _d) = pipe(true).unwrap();
    a.send(&c).unwrap();
    a.send(&5u32).unwrap();
    let used_up = common::DescriptorsUsedUp::leaving(0);
    let first = b.recv::<Connection>().map(|_| ());
    drop(used_up);
    let first = match first {
        Err(Error::Io(e)) if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => {
            "out of descriptors".to_string()
        }
        other => format!("{other:?}"),
    };
    (first, format!("{:?}", b.recv_timeout::<u32>(LONG)))
}

#[test]
fn a_message_whose_handles_find_no_free_descriptor_is_refused_alone_and_the_next_one_arrives() {
    let mut h = multiproc::get_context(StartMethod::Spawn)
        .spawn(receive_a_handle_with_no_descriptor_free, ())
        .unwrap();
    let (first, second) = h.join_timeout(LONG).unwrap();
    assert_eq!(first, "out of descriptors");
    assert_eq!(second, "Ok(5)");
}

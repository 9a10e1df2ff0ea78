//! Nothing from outside turns a program into a child: a bootstrap marker whose
//! descriptor is a standard stream, a pipe, or a socket that does not come from the
//! program's own parent is ignored, and `main` runs as usual.
//!
//! Each test runs this test binary again (its `main` is the test harness) with a marker
//! set, asking it for the single test `victim_main_ran`, and checks that the harness ran
//! it. Every run ends by itself: the harness runs one short test and exits.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};

use multiproc::{StartMethod, get_context};

const SPAWN_MARKER: &str = "MULTIPROC_SPAWN_FD";
const SERVER_MARKER: &str = "MULTIPROC_FORKSERVER_FD";
const MAIN_RAN: &str = "victim main ran";

/// What the re-executed harness runs: its output proves that `main` ran.
#[test]
fn victim_main_ran() {
    println!("{MAIN_RAN}");
}

fn double(x: u32) -> u32 {
    x * 2
}

/// Real children still start in this binary, which also links the crate's load hook
/// into it (a binary that never creates processes has no hook to fool).
#[test]
fn a_real_parent_still_starts_children() {
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let h = get_context(method).spawn(double, 21).unwrap();
        assert_eq!(h.join().unwrap(), 42, "{method}");
    }
}

fn victim(command: &mut Command) -> Output {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the test binary again")
}

fn harness_args() -> [&'static str; 4] {
    [
        "--exact",
        "victim_main_ran",
        "--nocapture",
        "--test-threads=1",
    ]
}

fn assert_main_ran(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(MAIN_RAN),
        "{what}: main did not run (status {:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A frame as a multiproc parent would send one (4-byte big-endian length, then the
/// body), with a body no parent would write.
fn crafted_frame() -> Vec<u8> {
    let body = [0xffu8; 32];
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn a_marker_naming_a_standard_stream_is_ignored_and_main_runs() {
    let exe = std::env::current_exe().unwrap();
    // Markers as a real parent writes them (the descriptor, then the parent's pid: this
    // process is the program's parent here), and the bare number of older versions.
    let me = std::process::id();
    for (marker, fd) in [(SPAWN_MARKER, 0), (SERVER_MARKER, 1), (SPAWN_MARKER, 2)] {
        for value in [format!("{fd},{me}"), format!("{fd}")] {
            let out = victim(
                Command::new(&exe)
                    .args(harness_args())
                    .env(marker, &value)
                    .stdin(Stdio::piped()),
            );
            assert_main_ran(&out, &format!("{marker}={value}"));
        }
    }
}

#[test]
fn a_marker_naming_a_pipe_or_a_file_is_ignored_and_main_runs() {
    let exe = std::env::current_exe().unwrap();
    // The shell puts a pipe (its stdin) or a file at descriptor 3 of the program, and
    // names itself as the parent in the marker, as a real parent names itself.
    for (marker, redirect) in [
        (SPAWN_MARKER, "3<&0"),
        (SERVER_MARKER, "3<&0"),
        (SPAWN_MARKER, "3</dev/null"),
    ] {
        let script = format!("{marker}=3,$$ exec \"$@\" {redirect} </dev/null");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .arg(&exe)
            .args(harness_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Something that looks like a task is waiting in the pipe.
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&crafted_frame());
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_main_ran(&out, &format!("{marker}=3,<shell> with {redirect}"));
    }
}

#[test]
fn a_crafted_frame_on_a_socket_from_another_process_is_ignored_and_main_runs() {
    let exe = std::env::current_exe().unwrap();
    for marker in [SPAWN_MARKER, SERVER_MARKER] {
        // This process makes the socket pair; the program's parent is the shell, which
        // forks it (the command is not the shell's last) and names itself in the marker,
        // as a real parent would. The socket's peer is not the program's parent.
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.write_all(&crafted_frame()).unwrap();
        let out = victim(
            Command::new("sh")
                .arg("-c")
                .arg(format!("{marker}=3,$$ \"$@\" 3<&0 </dev/null; exit $?"))
                .arg("sh")
                .arg(&exe)
                .args(harness_args())
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs))),
        );
        assert_main_ran(&out, &format!("{marker}=3,<shell> on a foreign socket"));
        drop(ours);
    }
}

#[test]
fn a_socket_from_a_live_process_that_is_named_but_not_the_parent_is_ignored_and_main_runs() {
    let exe = std::env::current_exe().unwrap();
    let me = std::process::id();
    for marker in [SPAWN_MARKER, SERVER_MARKER] {
        // This process makes the socket pair and is named in the marker; it is alive, but
        // the program's parent is the shell that forks it.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let out = victim(
            Command::new("sh")
                .arg("-c")
                .arg("\"$@\" 3<&0 </dev/null; exit $?")
                .arg("sh")
                .arg(&exe)
                .args(harness_args())
                .env(marker, format!("3,{me}"))
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs))),
        );
        assert_main_ran(&out, &format!("{marker}=3,<live maker, not the parent>"));
        drop(ours);
    }
}

#[test]
fn a_listening_socket_made_by_the_parent_is_ignored_and_main_runs() {
    let exe = std::env::current_exe().unwrap();
    let me = std::process::id();
    let dir = std::env::temp_dir().join(format!("multiproc-listen-{me}"));
    let _ = std::fs::remove_file(&dir);
    for marker in [SPAWN_MARKER, SERVER_MARKER] {
        // This process listens and is the program's parent (the shell execs it in place);
        // a listening socket carries its creator's credentials but is no channel.
        let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let out = victim(
            Command::new("sh")
                .arg("-c")
                .arg("exec \"$@\" 3<&0 </dev/null")
                .arg("sh")
                .arg(&exe)
                .args(harness_args())
                .env(marker, format!("3,{me}"))
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener))),
        );
        let _ = std::fs::remove_file(&dir);
        assert_main_ran(&out, &format!("{marker}=3,<parent> on a listening socket"));
    }
}

//! What children inherit: a descriptor the program did not mark close-on-exec reaches
//! neither a spawned child nor a fork-server child (nor the fork server itself), as
//! Python's spawn and forkserver close everything they do not pass.
//!
//! The test runs this test binary again through a shell that gives it a pipe's write end
//! at descriptor 9 without close-on-exec (what a careless `pipe()` in a program
//! leaves), with only the inner test selected. The inner test starts children and asks
//! each whether it holds that pipe. The outer test also reads the pipe to its end: end
//! of stream comes once the inner program has exited, which proves no child of it kept
//! a copy. Every run ends by itself: the children return at once.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use multiproc::{StartMethod, get_context};

const LEAK_FD: u32 = 9;
const INNER_ENV: &str = "MULTIPROC_TEST_LEAKED_PIPE";

/// What descriptor `fd` of this process points to, if it is open.
fn target_of(fd: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|t| t.display().to_string())
}

fn holds(pipe: String) -> bool {
    target_of(LEAK_FD).as_deref() == Some(pipe.as_str())
}

fn sleep_then_report(pipe: String) -> bool {
    // Lives a little, so that a leaked copy would still be open when the inner program
    // exits and the outer test would not see end of stream.
    std::thread::sleep(Duration::from_secs(3));
    holds(pipe)
}

/// The inner half: runs only when the outer test starts this binary with the pipe.
#[test]
fn inner_children_do_not_hold_the_leaked_pipe() {
    if std::env::var_os(INNER_ENV).is_none() {
        return;
    }
    let pipe = target_of(LEAK_FD).expect("the shell put the pipe at descriptor 9");
    assert!(pipe.starts_with("pipe:"), "descriptor 9 is {pipe}");
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let h = get_context(method).spawn(holds, pipe.clone()).unwrap();
        assert!(
            !h.join().unwrap(),
            "{method}: the child inherited a descriptor that was not passed"
        );
    }
    // Children still running when the program ends (joined at its exit) and the fork
    // server (which outlives that join) must not hold it either: the outer test waits
    // for end of stream.
    let _late = get_context(StartMethod::Forkserver)
        .spawn(sleep_then_report, pipe.clone())
        .unwrap();
    let _late_spawn = get_context(StartMethod::Spawn)
        .spawn(sleep_then_report, pipe)
        .unwrap();
}

#[test]
fn a_descriptor_without_close_on_exec_is_not_inherited_by_spawn_or_forkserver_children() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec \"$@\" {LEAK_FD}>&1 >/dev/null"))
        .arg("sh")
        .arg(&exe)
        .args([
            "--exact",
            "inner_children_do_not_hold_the_leaked_pipe",
            "--test-threads=1",
        ])
        .env(INNER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "the inner test failed:\n{stderr}");
    // The inner program has exited; only a leaked copy in one of its children (or its
    // fork server) could keep the pipe open now. A reader thread reports end of stream.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_ok(),
        "the pipe did not reach end of stream after its writer exited: a child kept a copy"
    );
}

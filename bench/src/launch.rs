//! Subprocesses with a time bound: a launcher such as `mpirun` and everything it starts
//! are ended when their time is up, so that a run that hangs leaves nothing behind.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::BenchResult;

/// How long a process that was asked to stop (SIGTERM) has before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// How long the output of a process that has exited may take to arrive.
const DRAIN: Duration = Duration::from_secs(10);

/// What a process printed.
#[derive(Debug)]
pub struct Output {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// The last `n` lines of `text`, for an error message.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` (standard input empty, both outputs captured) and waits at most `timeout`
/// for it to exit with status 0. When the time is up, it and every process it started
/// are stopped: SIGTERM first (a launcher then stops what it launched), SIGKILL for
/// whatever is left after [`GRACE`].
pub fn run(cmd: &mut Command, timeout: Duration) -> BenchResult<Output> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = match wait_until(&mut child, Instant::now().checked_add(timeout)) {
        Ok(Some(status)) => status,
        Ok(None) => {
            stop(&mut child);
            return Err(format!(
                "{what} did not finish within {} s: stopped",
                timeout.as_secs()
            )
            .into());
        }
        Err(e) => {
            stop(&mut child);
            return Err(format!("cannot wait for {what}: {e}").into());
        }
    };
    let output = Output {
        stdout: stdout
            .recv_timeout(DRAIN)
            .map_err(|_| format!("{what}'s output stays open after it exited"))?,
        stderr: stderr.recv_timeout(DRAIN).unwrap_or_default(),
    };
    if !status.success() {
        return Err(format!(
            "{what} exited with {status}; its last lines:\n{}",
            tail(&format!("{}{}", output.stdout, output.stderr), 20)
        )
        .into());
    }
    Ok(output)
}

/// Reads `pipe` to its end on a thread of its own; the text arrives on the receiver.
fn collect(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Waits for `child` until `deadline` (`None`: no deadline); `None` when it passed first.
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> BenchResult<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops `child` and every process it started (found through `/proc` before the
/// signals, while they are still its descendants), then reaps `child`.
fn stop(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let family = descendants(pid);
    signal(pid, libc::SIGTERM);
    let exited = matches!(
        wait_until(child, Instant::now().checked_add(GRACE)),
        Ok(Some(_))
    );
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    for proc in family {
        // Only a process that is still the one seen before (same start time).
        if start_time(proc.pid) == Some(proc.started) {
            signal(proc.pid, libc::SIGKILL);
        }
    }
}

/// A process, and when it started (so that a later pid of the same number is not taken
/// for it).
struct Proc {
    pid: i32,
    started: u64,
}

/// Every descendant of `pid`, from `/proc/<pid>/task/<tid>/children`.
fn descendants(pid: i32) -> Vec<Proc> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path().join("children");
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for c in text
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                if let Some(started) = start_time(c) {
                    found.push(Proc { pid: c, started });
                    todo.push(c);
                }
            }
        }
    }
    found
}

/// When process `pid` started (field 22 of `/proc/<pid>/stat`, in clock ticks since
/// boot); `None` when there is no such process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count the fields after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: sends a signal to a process this harness started (directly or through a
    // launcher), identified by pid while it is known to be that process.
    unsafe { libc::kill(pid, sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failure_come_back() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        let e = run(
            Command::new("sh").args(["-c", "echo why; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert!(e.to_string().contains("why"), "{e}");
    }

    #[test]
    fn a_hanging_process_and_its_children_are_stopped_at_the_timeout() {
        // Both ignore SIGTERM (an ignored signal stays ignored across exec), so the
        // SIGKILL path runs for the shell and for its child.
        let file = std::env::temp_dir().join(format!("launch-test-{}", std::process::id()));
        let script = format!(
            "trap '' TERM; sleep 60 & echo $! > {}; wait",
            file.display()
        );
        let started = Instant::now();
        let e = run(
            Command::new("sh").args(["-c", &script]),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let pid: i32 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        // Gone, or a zombie waiting for a reaper that is not this process.
        let ends = Instant::now();
        while alive(pid) {
            assert!(ends.elapsed() < Duration::from_secs(10), "{pid} still runs");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `pid` exists and is not a zombie.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            after.split_whitespace().next() != Some("Z")
        })
    }

    #[test]
    fn start_time_of_this_process_is_known() {
        assert!(start_time(std::process::id() as i32).is_some());
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}

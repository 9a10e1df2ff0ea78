//! The pool on the ranks of an MPI job (feature `mpi`). Each test runs this test binary
//! again under `mpirun -n 3 --oversubscribe`, with only itself selected: rank 0 runs the
//! test's body (a pool built with `.mpi()`), ranks 1 and 2 serve as its workers from the
//! load-time hook, never running the test harness. The outer run checks that `mpirun`
//! ended as the test expects and that the body reached its end. Without `mpirun` on the
//! machine, each test says so and passes without checking anything.
//!
//! Covered: every behaviour of `common::pool_behaviours` (the local pool's tests run the
//! same functions: `map`, `imap`, `imap_unordered`, callbacks, panics, the executor);
//! and here, what only ranks have: tasks on ranks 1 and 2 only, callbacks on rank 0, a
//! task over its timeout, a worker rank killed mid-job or exiting inside a task, ranks
//! of another build, the initializer, `terminate`, `close` and `join`, a local pool
//! inside a rank, workers spawned under `mpirun -n 1` (every shared behaviour and a task
//! timeout again), a pool never dropped at exit, the program's own messages on the world
//! communicator with the pool's tags. With no launcher (this binary run as a plain
//! program, see [`alone`]): MPI started by the pool, two spawned workers, every shared
//! behaviour, a task timeout, local pools after MPI is up, no process left behind, a pool
//! never dropped, a worker killed mid-job (the program ends, saying why); a program that
//! started MPI itself, and a local pool's worker, refused with the reason. Timing: every `mpirun` and plain run is bounded by [`MPIRUN_LIMIT`];
//! the timeout test checks only that the calls end well before the overdue task would
//! (3 s of its 4).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pool_behaviours::{sleep_ms, square};
use multiproc::{Error, Pool};

/// The longest an `mpirun` of one test may take before the test fails.
const MPIRUN_LIMIT: Duration = Duration::from_secs(120);

/// What a body prints last, to show the outer run that it got there.
const DONE: &str = "mpi-test-body-done";

/// This process's rank when it runs inside an MPI job.
fn rank() -> Option<String> {
    std::env::var("OMPI_COMM_WORLD_RANK")
        .or_else(|_| std::env::var("PMI_RANK"))
        .ok()
}

/// Whether `mpirun` can be found.
fn have_mpirun() -> bool {
    Command::new("mpirun")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How `mpirun -n 3` ran this binary with only the test `name` selected: its exit
/// success, and its output. `None` when `mpirun` is missing.
fn mpirun(name: &str) -> Option<(bool, String)> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let exe = exe.to_string_lossy();
    mpirun_with(
        name,
        &[
            "-n",
            "3",
            &exe,
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ],
    )
}

/// How `mpirun` ran with `args` after its own flags. `None` when `mpirun` is missing.
fn mpirun_with(name: &str, args: &[&str]) -> Option<(bool, String)> {
    mpirun_flags(name, true, args)
}

/// [`mpirun_with`], with `--oversubscribe` only when `oversubscribe`.
fn mpirun_flags(name: &str, oversubscribe: bool, args: &[&str]) -> Option<(bool, String)> {
    if !have_mpirun() {
        eprintln!("mpirun not found: {name} is not checked (install openmpi-bin)");
        return None;
    }
    let mut cmd = Command::new("mpirun");
    if oversubscribe {
        cmd.arg("--oversubscribe");
    }
    // CI runs as root, which Open MPI refuses unless told.
    if rustix::process::geteuid().is_root() {
        cmd.arg("--allow-run-as-root");
    }
    cmd.args(args)
        // No kernel-assisted copies between ranks: containers often forbid ptrace.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("mpirun starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(MPIRUN_LIMIT) {
        Ok(out) => out.expect("mpirun's output"),
        Err(_) => {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("a pid"),
                rustix::process::Signal::KILL,
            );
            panic!("mpirun for {name} ran over {MPIRUN_LIMIT:?}");
        }
    };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// Runs `body` on rank 0 of an MPI job of three ranks, or launches that job and checks
/// that it succeeded and got to the body's end.
fn on_three_ranks(name: &str, body: fn()) {
    if rank().is_some() {
        body();
        println!("{DONE}");
        return;
    }
    if let Some((ok, text)) = mpirun(name) {
        assert!(ok && text.contains(DONE), "{name} under mpirun:\n{text}");
    }
}

/// The rank and the host a task ran on.
fn where_run(x: u64) -> (u64, String, String) {
    std::thread::sleep(Duration::from_millis(5));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    (x, rank().unwrap_or_default(), host.trim().to_string())
}

fn boom(x: u64) -> u64 {
    if x == 3 {
        panic!("boom at {x}");
    }
    x
}

fn own_pid(_: ()) -> u32 {
    std::process::id()
}

fn map_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    assert_eq!(pool.processes(), 2);
    assert_eq!(
        pool.map(square, 0..1000u64).unwrap(),
        (0..1000u64).map(|x| x * x).collect::<Vec<_>>()
    );
    let ran = pool.map_chunked(where_run, 0..40u64, 1).unwrap();
    assert_eq!(
        ran.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    let ranks: BTreeSet<&str> = ran.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        ranks,
        BTreeSet::from(["1", "2"]),
        "tasks run on the worker ranks only"
    );
}

#[test]
fn map_gives_results_in_order_and_runs_tasks_on_the_worker_ranks() {
    on_three_ranks(
        "map_gives_results_in_order_and_runs_tasks_on_the_worker_ranks",
        map_body,
    );
}

fn callbacks_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    let (tx, rx) = mpsc::channel();
    let me = std::process::id();
    let ok = {
        let tx = tx.clone();
        pool.apply_async_with(
            square,
            9,
            move |v: &u64| tx.send(Ok((*v, std::process::id()))).unwrap(),
            |_: &Error| panic!("no error expected"),
        )
        .unwrap()
    };
    let failed = pool
        .apply_async_with(
            boom,
            3,
            |_: &u64| panic!("no value expected"),
            move |e: &Error| tx.send(Err((e.to_string(), std::process::id()))).unwrap(),
        )
        .unwrap();
    assert_eq!(ok.get().unwrap(), 81);
    assert!(matches!(failed.get(), Err(Error::Panicked { .. })));
    let mut got: Vec<_> = rx.iter().take(2).collect();
    got.sort_by_key(|r| r.is_err());
    assert_eq!(got[0], Ok((81, me)), "the callback runs on rank 0");
    match &got[1] {
        Err((text, pid)) => {
            assert!(text.contains("boom at 3"), "{text}");
            assert_eq!(*pid, me, "the error callback runs on rank 0");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_ne!(pool.apply(own_pid, ()).unwrap(), me);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn apply_async_callbacks_run_on_rank_0_with_the_value_or_the_error() {
    on_three_ranks(
        "apply_async_callbacks_run_on_rank_0_with_the_value_or_the_error",
        callbacks_body,
    );
}

fn timeout_body() {
    let pool = Pool::builder()
        .mpi()
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let late = pool.apply_async(sleep_ms, 4000).unwrap();
    // Some of these wait behind the late task on its rank, until it goes over its time.
    let short: Vec<_> = (0..6)
        .map(|_| pool.apply_async(sleep_ms, 10).unwrap())
        .collect();
    assert!(matches!(late.get(), Err(Error::Timeout)));
    for s in short {
        assert_eq!(s.get().unwrap(), 10);
    }
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "the overdue task, or those behind it, ended only after {:?}",
        started.elapsed()
    );
    // The other rank serves meanwhile.
    assert_eq!(pool.map(square, 0..8u64).unwrap()[7], 49);
    // Once its task has ended, the overdue rank serves again.
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(started.elapsed()));
    let ran = pool.map_chunked(where_run, 0..40u64, 1).unwrap();
    let ranks: BTreeSet<&str> = ran.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(ranks, BTreeSet::from(["1", "2"]));
}

#[test]
fn a_task_over_its_timeout_fails_with_timeout_and_the_pool_goes_on() {
    on_three_ranks(
        "a_task_over_its_timeout_fails_with_timeout_and_the_pool_goes_on",
        timeout_body,
    );
}

fn killed_rank_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    let pids: BTreeSet<u32> = pool
        .map_chunked(own_pid, vec![(); 8], 1)
        .unwrap()
        .into_iter()
        .collect();
    let running = pool
        .map_async_chunked(sleep_ms, vec![200u64; 40], 1)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let victim = *pids.iter().next().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // Either the call fails, or MPI ends the job first: it never succeeds or hangs.
    let outcome = running.get();
    println!("after the kill: {outcome:?}");
    assert!(outcome.is_err());
}

#[test]
fn a_worker_rank_killed_mid_job_ends_the_job_instead_of_hanging() {
    if rank().is_some() {
        killed_rank_body();
        println!("{DONE}");
        return;
    }
    let started = Instant::now();
    if let Some((ok, text)) = mpirun("a_worker_rank_killed_mid_job_ends_the_job_instead_of_hanging")
    {
        assert!(!ok, "the job must fail once a rank is killed:\n{text}");
        assert!(
            !text.contains(DONE),
            "the map succeeded without a rank:\n{text}"
        );
        // The job ended (bounded by MPIRUN_LIMIT in `mpirun`).
        eprintln!("the job ended {:?} after it started", started.elapsed());
    }
}

/// Set (to a token of the run) in the environment of this binary run with no launcher:
/// the selected test runs its body, as a program of its own that starts MPI itself.
const ALONE_VAR: &str = "MULTIPROC_TEST_MPI_ALONE";

/// How long the processes of a run with no launcher (its spawned workers, Open MPI's
/// daemon) may outlive it.
const LEFTOVER_LIMIT: Duration = Duration::from_secs(10);

/// The processes, zombies aside, whose environment holds `var=token`: a program run with
/// it and whatever it started.
fn processes_with(var: &str, token: &str) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| common::proc_state(*pid).is_some_and(|s| s != 'Z'))
        .filter(|pid| has_in_environment(*pid, var, token))
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

/// Whether process `pid` holds `var=token` in its environment.
fn has_in_environment(pid: u32, var: &str, token: &str) -> bool {
    let needle = format!("{var}={token}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
}

/// Runs this binary with no MPI launcher, with only the test `name` selected and none of
/// a launcher's variables: its exit success and output, once no process it started is
/// left (the test fails if one still runs [`LEFTOVER_LIMIT`] after it exited). `None`
/// without Open MPI (`mpirun`) on the machine.
fn run_alone(name: &str) -> Option<(bool, String)> {
    if !have_mpirun() {
        eprintln!("mpirun not found: {name} is not checked (install openmpi-bin)");
        return None;
    }
    let token = format!("{}-{}", std::process::id(), name);
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    for (var, _) in std::env::vars_os() {
        let launcher = ["OMPI_", "PMI_", "PMIX_", "PRTE_"]
            .iter()
            .any(|p| var.to_string_lossy().starts_with(p));
        if launcher {
            cmd.env_remove(var);
        }
    }
    // What this machine needs of Open MPI, said by the caller, never by the library: no
    // kernel-assisted copies (containers forbid ptrace), and leave to run as root.
    cmd.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    if rustix::process::geteuid().is_root() {
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    cmd.env(ALONE_VAR, &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("the test binary starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(MPIRUN_LIMIT) {
        Ok(out) => out.expect("the program's output"),
        Err(_) => {
            common::kill_pid(pid);
            panic!("{name} with no launcher ran over {MPIRUN_LIMIT:?}");
        }
    };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exited = Instant::now();
    let mut left = processes_with(ALONE_VAR, &token);
    while !left.is_empty() && exited.elapsed() < LEFTOVER_LIMIT {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_with(ALONE_VAR, &token);
    }
    for (pid, _) in &left {
        common::kill_pid(*pid);
    }
    assert!(
        left.is_empty(),
        "{name}: processes still running {LEFTOVER_LIMIT:?} after the program exited: \
         {left:?}\n{text}"
    );
    Some((out.status.success(), text))
}

/// Runs `body` in this binary started with no launcher, or starts it so and checks that
/// it exited 0, got to the body's end, and left no process behind.
fn alone(name: &str, body: fn()) {
    if std::env::var_os(ALONE_VAR).is_some() {
        body();
        println!("{DONE}");
        return;
    }
    if rank().is_some() {
        return;
    }
    if let Some((ok, text)) = run_alone(name) {
        assert!(
            ok && text.contains(DONE),
            "{name} with no launcher:\n{text}"
        );
        // Open MPI's warning about a fork after MPI_Init.
        assert!(!text.contains("\"fork()\""), "{name}:\n{text}");
        for line in text
            .lines()
            .filter_map(|l| l.find("figure: ").map(|at| &l[at..]))
        {
            eprintln!("{line}");
        }
    }
}

fn alone_body() {
    let token = std::env::var(ALONE_VAR).expect("the run's token");
    let started = Instant::now();
    let pool = Pool::builder().mpi().processes(2).build().unwrap();
    let built = started.elapsed();
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    println!(
        "figure: a pool with no launcher: built in {built:?}, first result after {:?}",
        started.elapsed()
    );
    let pids = spawned_workers_serve_like_local_ones(pool);
    // The workers carry the run's token, by which the outer check finds any left.
    for pid in &pids {
        assert!(
            has_in_environment(*pid, ALONE_VAR, &token),
            "worker {pid} lacks the token"
        );
    }
    // Local processes after MPI is up, forked or started afresh, make no MPI call.
    for method in [
        multiproc::StartMethod::Fork,
        multiproc::StartMethod::Forkserver,
    ] {
        let local = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        assert_eq!(local.map(square, 0..10u64).unwrap()[9], 81);
        let why = local.apply(pool_in_a_child, ()).unwrap();
        assert!(why.contains("never starts MPI"), "{why}");
    }
}

#[test]
fn with_no_launcher_the_pool_starts_mpi_and_spawns_its_workers_and_leaves_none_behind() {
    alone(
        "with_no_launcher_the_pool_starts_mpi_and_spawns_its_workers_and_leaves_none_behind",
        alone_body,
    );
}

/// A pool that is never dropped in a program run with no launcher.
static LEAKED_ALONE: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();

fn leaked_alone_body() {
    let pool = LEAKED_ALONE.get_or_init(|| Pool::builder().mpi().processes(2).build().unwrap());
    assert_eq!(pool.map(square, 0..100u64).unwrap()[99], 9801);
    // Tasks still in flight as the program ends.
    drop(
        pool.map_async_chunked(sleep_ms, vec![20u64; 20], 1)
            .unwrap(),
    );
}

#[test]
fn with_no_launcher_a_pool_never_dropped_still_lets_the_program_end_cleanly() {
    alone(
        "with_no_launcher_a_pool_never_dropped_still_lets_the_program_end_cleanly",
        leaked_alone_body,
    );
}

fn own_init_body() {
    let universe = mpi::initialize().expect("MPI starts");
    match Pool::builder().mpi().processes(2).build() {
        Err(Error::InvalidState(why)) => {
            assert!(why.contains("mpi::initialize"), "{why}");
            assert!(why.contains("build the pool first"), "{why}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(universe);
}

#[test]
fn a_program_that_started_mpi_itself_is_told_to_build_the_pool_first() {
    alone(
        "a_program_that_started_mpi_itself_is_told_to_build_the_pool_first",
        own_init_body,
    );
}

fn pool_in_a_child(_: ()) -> String {
    match Pool::builder().mpi().processes(2).build() {
        Err(Error::InvalidState(why)) => why,
        Err(e) => format!("another error: {e}"),
        Ok(_) => "built".into(),
    }
}

#[test]
fn a_local_pools_worker_never_starts_mpi_and_says_why() {
    if rank().is_some() || std::env::var_os(ALONE_VAR).is_some() {
        return;
    }
    let local = Pool::new(1).unwrap();
    let why = local.apply(pool_in_a_child, ()).unwrap();
    assert!(why.contains("never starts MPI"), "{why}");
}

/// A task that runs a local pool of two processes inside its rank: the squares, and the
/// pids that computed them.
fn local_pool_in_a_rank(n: u64) -> (Vec<u64>, Vec<u32>, u32) {
    let local = Pool::new(2).unwrap();
    let squares = local.map(square, 0..n).unwrap();
    let pids = local.map_chunked(own_pid, vec![(); 8], 1).unwrap();
    (squares, pids, std::process::id())
}

fn hybrid_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    let out = pool
        .map_chunked(local_pool_in_a_rank, [100u64, 50], 1)
        .unwrap();
    for (n, (squares, pids, rank_pid)) in [100u64, 50].into_iter().zip(out) {
        assert_eq!(squares, (0..n).map(|x| x * x).collect::<Vec<_>>());
        assert!(
            !pids.contains(&rank_pid),
            "the local pool's workers are new processes"
        );
    }
}

#[test]
fn a_rank_runs_a_local_pool_of_its_own_inside_a_task() {
    on_three_ranks(
        "a_rank_runs_a_local_pool_of_its_own_inside_a_task",
        hybrid_body,
    );
}

fn other_build_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    for _ in 0..2 {
        let text = match pool.apply(square, 3) {
            Err(Error::Decode(why) | Error::InvalidState(why)) => why,
            other => panic!("a rank of another build ran a task: {other:?}"),
        };
        assert!(text.contains("another build"), "{text}");
    }
}

/// The offset of the GNU build id in an executable's bytes, found by its note header.
fn build_id_at(bytes: &[u8]) -> Option<usize> {
    let header: Vec<u8> = [4u32, 20, 3]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .chain(*b"GNU\0")
        .collect();
    bytes
        .windows(header.len())
        .position(|w| w == header)
        .map(|at| at + header.len())
}

#[test]
fn ranks_of_another_build_run_no_task_and_say_why() {
    let name = "ranks_of_another_build_run_no_task_and_say_why";
    if rank().is_some() {
        other_build_body();
        println!("{DONE}");
        return;
    }
    if !have_mpirun() {
        eprintln!("mpirun not found: {name} is not checked (install openmpi-bin)");
        return;
    }
    // The same program with one byte of its build id changed: another build, as far as
    // any rank can tell, whose code is the same.
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut bytes = std::fs::read(&exe).expect("the test binary");
    let Some(at) = build_id_at(&bytes) else {
        eprintln!("the test binary has no GNU build id: {name} is not checked");
        return;
    };
    bytes[at] ^= 0xff;
    let dir = std::env::temp_dir().join(format!("multiproc-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("other-build");
    std::fs::write(&other, &bytes).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (exe, other_path) = (exe.to_string_lossy(), other.to_string_lossy());
    let flags = ["--exact", name, "--nocapture", "--test-threads=1"];
    let mut args = vec!["-n", "1", &exe];
    args.extend(flags);
    args.extend([":", "-n", "2", &other_path]);
    args.extend(flags);
    let outcome = mpirun_with(name, &args);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some((ok, text)) = outcome {
        assert!(ok && text.contains(DONE), "{name} under mpirun:\n{text}");
    }
}

static TAG: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn set_tag(tag: String) {
    *TAG.lock().unwrap() = Some(tag);
}

fn read_tag(_: u64) -> Option<String> {
    TAG.lock().unwrap().clone()
}

fn failing_init(_: ()) {
    panic!("no setup on this rank");
}

fn init_with_a_queue(_: multiproc::Queue<u32>) {}

fn initializer_body() {
    let pool = Pool::builder()
        .mpi()
        .initializer(set_tag, "ready".to_string())
        .build()
        .unwrap();
    let tags = pool.map_chunked(read_tag, 0..8u64, 1).unwrap();
    assert!(
        tags.iter().all(|t| t.as_deref() == Some("ready")),
        "{tags:?}"
    );
    drop(pool);
    let broken = Pool::builder()
        .mpi()
        .initializer(failing_init, ())
        .build()
        .unwrap();
    match broken.apply(square, 2) {
        Err(Error::InvalidState(why)) => assert!(why.contains("no setup on this rank"), "{why}"),
        other => panic!("expected the initializer's failure, got {other:?}"),
    }
    drop(broken);
    let queue = multiproc::Queue::<u32>::new().unwrap();
    match Pool::builder()
        .mpi()
        .initializer(init_with_a_queue, queue)
        .build()
    {
        Err(Error::InvalidState(why)) => assert!(why.contains("handles"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_initializer_runs_on_each_rank_and_its_failure_fails_the_tasks() {
    on_three_ranks(
        "the_initializer_runs_on_each_rank_and_its_failure_fails_the_tasks",
        initializer_body,
    );
}

fn terminate_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    let long = pool
        .map_async_chunked(sleep_ms, vec![300u64; 20], 1)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    pool.terminate();
    assert!(matches!(long.get(), Err(Error::Cancelled)));
    pool.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "terminate waited {:?} for the ranks",
        started.elapsed()
    );
    assert!(
        pool.apply(square, 2).is_err(),
        "a terminated pool takes no task"
    );
    drop(pool);
    // The ranks serve the next pool once they finish what they ran.
    let next = Pool::builder().mpi().build().unwrap();
    assert_eq!(next.map(square, 0..10u64).unwrap()[9], 81);
    next.close();
    next.join().unwrap();
}

#[test]
fn terminate_cancels_the_tasks_at_once_and_the_ranks_serve_the_next_pool() {
    on_three_ranks(
        "terminate_cancels_the_tasks_at_once_and_the_ranks_serve_the_next_pool",
        terminate_body,
    );
}

fn close_join_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    let results: Vec<_> = (0..6u64)
        .map(|i| pool.apply_async(sleep_ms, 50 + i).unwrap())
        .collect();
    pool.close();
    assert!(
        pool.apply(square, 1).is_err(),
        "a closed pool takes no task"
    );
    pool.join().unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert!(r.ready(), "join returned before task {i} was done");
        assert_eq!(r.get().unwrap(), 50 + i as u64);
    }
    match Pool::builder().mpi().build() {
        Ok(again) => assert_eq!(again.apply(square, 4).unwrap(), 16),
        Err(e) => panic!("a pool after a joined one: {e}"),
    }
}

#[test]
fn close_then_join_completes_the_submitted_tasks() {
    on_three_ranks(
        "close_then_join_completes_the_submitted_tasks",
        close_join_body,
    );
}

/// Checks a pool of two spawned workers (with no launcher, or under `mpirun -n 1`): the
/// tasks run on both and never in this process, every shared behaviour holds, later
/// pools use the same workers, and a task over its time fails with `Timeout` while the
/// pool goes on. The workers' pids.
fn spawned_workers_serve_like_local_ones(pool: Pool) -> BTreeSet<u32> {
    assert_eq!(pool.processes(), 2);
    let me = std::process::id();
    let pids: BTreeSet<u32> = pool
        .map_chunked(own_pid, vec![(); 40], 1)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(pids.len(), 2, "both spawned workers took tasks: {pids:?}");
    assert!(!pids.contains(&me), "no task ran in the program's process");
    assert_eq!(
        pool.map(square, 0..100u64).unwrap(),
        (0..100u64).map(|x| x * x).collect::<Vec<_>>()
    );
    assert!(matches!(pool.apply(boom, 3), Err(Error::Panicked { .. })));
    drop(pool);
    common::pool_behaviours::all(&|| Pool::builder().mpi());
    // The workers are spawned once: a later pool uses the same ones.
    let again = Pool::builder().mpi().build().unwrap();
    let later: BTreeSet<u32> = again
        .map_chunked(own_pid, vec![(); 40], 1)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(later, pids);
    drop(again);
    let timed = Pool::builder()
        .mpi()
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let asked = Instant::now();
    assert!(matches!(timed.apply(sleep_ms, 3000), Err(Error::Timeout)));
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "the timeout came only after {:?}",
        asked.elapsed()
    );
    assert_eq!(timed.apply(square, 12).unwrap(), 144);
    pids
}

/// `mpirun`'s arguments for one rank running this binary with only the test `name`.
fn one_rank_of<'a>(exe: &'a str, name: &'a str) -> [&'a str; 7] {
    [
        "-n",
        "1",
        exe,
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]
}

fn spawned_body() {
    spawned_workers_serve_like_local_ones(Pool::builder().mpi().processes(2).build().unwrap());
}

#[test]
fn under_mpirun_n_1_the_pool_spawns_its_workers() {
    let name = "under_mpirun_n_1_the_pool_spawns_its_workers";
    if rank().is_some() {
        spawned_body();
        println!("{DONE}");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let exe = exe.to_string_lossy();
    let args = one_rank_of(&exe, name);
    if let Some((ok, text)) = mpirun_with(name, &args) {
        assert!(ok && text.contains(DONE), "{name} under mpirun:\n{text}");
    }
}

#[test]
fn the_local_pool_behaviours_hold_on_the_ranks() {
    on_three_ranks("the_local_pool_behaviours_hold_on_the_ranks", || {
        common::pool_behaviours::all(&|| Pool::builder().mpi())
    });
}

/// A pool that is never dropped: its threads still run when the program exits.
static LEAKED: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();

fn leaked_pool_body() {
    let pool = LEAKED.get_or_init(|| Pool::builder().mpi().build().unwrap());
    assert_eq!(pool.map(square, 0..100u64).unwrap()[99], 9801);
    // Tasks still in flight as the program ends.
    drop(
        pool.map_async_chunked(sleep_ms, vec![20u64; 20], 1)
            .unwrap(),
    );
}

#[test]
fn a_pool_never_dropped_still_lets_the_job_end_cleanly() {
    on_three_ranks(
        "a_pool_never_dropped_still_lets_the_job_end_cleanly",
        leaked_pool_body,
    );
}

fn exit_rank(code: i32) -> u64 {
    std::process::exit(code);
}

fn exiting_task_body() {
    let pool = Pool::builder().mpi().build().unwrap();
    // Either the call fails, or MPI ends the job first: it never succeeds or hangs.
    let outcome = pool.apply(exit_rank, 3);
    println!("after the exit: {outcome:?}");
    assert!(outcome.is_err());
}

#[test]
fn a_task_that_exits_its_rank_ends_the_job_instead_of_hanging() {
    let name = "a_task_that_exits_its_rank_ends_the_job_instead_of_hanging";
    if rank().is_some() {
        exiting_task_body();
        println!("{DONE}");
        return;
    }
    if let Some((ok, text)) = mpirun(name) {
        assert!(!ok, "the job must fail once a rank exits mid-task:\n{text}");
        assert!(
            !text.contains(DONE),
            "the call succeeded without its rank:\n{text}"
        );
    }
}

/// The tags the pool's messages carry (on a communicator of their own).
const POOL_TAGS: [i32; 4] = [0x6d70, 0x6d71, 0x6d72, 0x6d73];

/// A task that sends rank 0 a message of the program's own on the world communicator,
/// with the tag of the pool's reports.
fn tell_rank_0_on_world(x: u64) -> u64 {
    use mpi::point_to_point::Destination;
    use mpi::topology::Communicator;
    let world = mpi::topology::SimpleCommunicator::world();
    world
        .process_at_rank(0)
        .send_with_tag(&x.to_le_bytes()[..], POOL_TAGS[1]);
    x
}

/// The next message on the world communicator with `tag`, from rank `from` (any rank
/// when `None`), waiting at most 10 s.
fn own_message(tag: i32, from: Option<i32>) -> Option<(Vec<u8>, i32)> {
    use mpi::point_to_point::{MatchedReceiveVec, Source};
    use mpi::topology::Communicator;
    let world = mpi::topology::SimpleCommunicator::world();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let probed = match from {
            Some(r) => world
                .process_at_rank(r)
                .immediate_matched_probe_with_tag(tag),
            None => world.any_process().immediate_matched_probe_with_tag(tag),
        };
        if let Some(probed) = probed {
            let from = probed.1.source_rank();
            return Some((probed.matched_receive_vec::<u8>().0, from));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn own_world_traffic_body() {
    use mpi::point_to_point::Destination;
    use mpi::topology::Communicator;
    let world = mpi::topology::SimpleCommunicator::world();
    // Rank 0's own messages to itself, one with each of the pool's tags, waiting while
    // a pool runs.
    for tag in POOL_TAGS {
        world
            .process_at_rank(0)
            .send_with_tag(&format!("own message {tag}").into_bytes()[..], tag);
    }
    let pool = Pool::builder().mpi().build().unwrap();
    assert_eq!(
        pool.map(square, 0..500u64).unwrap(),
        (0..500u64).map(|x| x * x).collect::<Vec<_>>()
    );
    // The ranks' own messages to rank 0, sent while the pool's reports come in.
    assert_eq!(
        pool.map_chunked(tell_rank_0_on_world, 0..6u64, 1).unwrap(),
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    drop(pool);
    for tag in POOL_TAGS {
        let (bytes, from) = own_message(tag, Some(0)).unwrap_or_else(|| {
            panic!("rank 0's own message with tag {tag:#x} was taken by the pool")
        });
        assert_eq!(
            (bytes, from),
            (format!("own message {tag}").into_bytes(), 0)
        );
    }
    let mut told: Vec<u64> = (0..6)
        .map(|_| {
            let (bytes, from) = own_message(POOL_TAGS[1], None)
                .expect("a task's own message to rank 0 was taken by the pool");
            assert!(from == 1 || from == 2, "from rank {from}");
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        })
        .collect();
    told.sort_unstable();
    assert_eq!(told, (0..6).collect::<Vec<_>>());
}

#[test]
fn the_programs_own_messages_on_the_world_with_the_pools_tags_leave_the_pool_alone() {
    on_three_ranks(
        "the_programs_own_messages_on_the_world_with_the_pools_tags_leave_the_pool_alone",
        own_world_traffic_body,
    );
}

#[test]
fn a_job_whose_program_builds_no_pool_ends_cleanly() {
    // The worker ranks wait for rank 0 to complete the pool's communicator, which only
    // its exit handler does here.
    on_three_ranks("a_job_whose_program_builds_no_pool_ends_cleanly", || {
        assert_eq!((0..10u64).map(square).sum::<u64>(), 285);
    });
}

#[test]
fn with_no_launcher_a_worker_killed_mid_job_ends_the_program_instead_of_hanging() {
    let name = "with_no_launcher_a_worker_killed_mid_job_ends_the_program_instead_of_hanging";
    if std::env::var_os(ALONE_VAR).is_some() {
        killed_rank_body();
        println!("{DONE}");
        return;
    }
    if rank().is_some() {
        return;
    }
    let started = Instant::now();
    if let Some((ok, text)) = run_alone(name) {
        assert!(
            !ok,
            "the program must fail once a worker is killed:\n{text}"
        );
        assert!(
            !text.contains(DONE),
            "the map succeeded without a worker:\n{text}"
        );
        assert!(
            text.contains("died; ending the program"),
            "the program did not say why it ended:\n{text}"
        );
        eprintln!("the program ended {:?} after it started", started.elapsed());
    }
}

fn too_many_body() {
    let asked = multiproc::cpu_count() + 1;
    let outcome = Pool::builder().mpi().processes(asked).build();
    // Never reached: the failed spawn ends the job.
    println!("{DONE}: {:?}", outcome.map(|p| p.processes()));
}

#[test]
fn under_mpirun_n_1_more_workers_than_slots_ends_the_job_saying_what_to_try() {
    let name = "under_mpirun_n_1_more_workers_than_slots_ends_the_job_saying_what_to_try";
    if rank().is_some() {
        too_many_body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let exe = exe.to_string_lossy();
    let args = one_rank_of(&exe, name);
    if let Some((ok, text)) = mpirun_flags(name, false, &args) {
        assert!(!ok, "{name}: the job went on after a failed spawn:\n{text}");
        assert!(!text.contains(DONE), "{name}:\n{text}");
        assert!(
            text.contains("cannot spawn") && text.contains("processes(n)"),
            "{name}: no word on what to try:\n{text}"
        );
    }
}

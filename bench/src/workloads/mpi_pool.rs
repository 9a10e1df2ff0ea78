//! The MPI pool (feature `mpi`) against mpi4py.futures, both under
//! `mpirun -n 3 --oversubscribe`: rank 0 times, ranks 1 and 2 serve as the two workers.
//!
//! An MPI job's ranks are started by `mpirun`, so the harness cannot measure in its own
//! process: for each repetition it runs itself under `mpirun` with [`RANK0_ARG`] (rank 0
//! runs `main`, which measures one row and prints one JSON line; the other ranks serve
//! from the crate's load-time hook and never reach `main`), then
//! `python3 -m mpi4py.futures python/bench_mpi4py.py` the same way, the two in turn,
//! the first of them alternating from one repetition to the next. Each launch measures a
//! few samples after an untimed warm-up; a row's figure is the median of every sample.

use std::process::ExitCode;

use super::Figures;
use crate::{BenchResult, Settings};

/// The peer of the CPU row: a local `Pool::new(2)` in the same process, timed in the same
/// launch, in turn with the MPI pool.
pub const LOCAL_POOL: &str = "local_pool";

/// The peer of every MPI row: mpi4py.futures' `MPIPoolExecutor`.
#[cfg(feature = "mpi")]
const MPI4PY: &str = "mpi4py";

/// The hidden first argument: this process is rank 0 of an MPI job started by the
/// harness, and measures the row named next.
const RANK0_ARG: &str = "--mpi-rank0";

/// How to get the MPI rows when this build cannot run them.
#[cfg(not(feature = "mpi"))]
const NEEDS_FEATURE: &str = "built without the feature `mpi`; \
     `cargo run --release -p multiproc-bench --features mpi` measures them";

/// Why the MPI rows cannot be measured by this build on this machine (`None`: they can).
#[cfg(not(feature = "mpi"))]
pub fn unavailable() -> Option<String> {
    Some(NEEDS_FEATURE.to_string())
}

/// Why the MPI rows cannot be measured by this build on this machine (`None`: they can).
#[cfg(feature = "mpi")]
pub fn unavailable() -> Option<String> {
    run::unavailable()
}

/// When the arguments (after the program's name) start with [`RANK0_ARG`], measures as
/// rank 0 and returns the exit code; `None` for an ordinary run of the harness.
pub fn rank0(args: &[String]) -> Option<ExitCode> {
    if args.first().map(String::as_str) != Some(RANK0_ARG) {
        return None;
    }
    Some(rank0_exit(&args[1..]))
}

#[cfg(not(feature = "mpi"))]
fn rank0_exit(_: &[String]) -> ExitCode {
    eprintln!("{RANK0_ARG}: {NEEDS_FEATURE}");
    ExitCode::from(2)
}

#[cfg(feature = "mpi")]
fn rank0_exit(args: &[String]) -> ExitCode {
    match rank0::measure(args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rank 0: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mpi_pool_map_chunk1`: microseconds per item of `map_chunked(identity, 0..20,000, 1)`
/// on an MPI pool of 2 ranks; mpi4py: `MPIPoolExecutor.map(identity, range(20_000),
/// chunksize=1)`.
pub fn map_chunk1(s: &Settings) -> BenchResult<Figures> {
    measure_row(s, "mpi_pool_map_chunk1", "us", (2, 3))
}

/// `mpi_pool_map_large`: MB/s of `map_chunked(weigh, 200 Vec<u8> of 1 MiB, 1)`, each task
/// answering with the length and the last byte; mpi4py: `map(weigh, 200 bytes of 1 MiB,
/// chunksize=1)`.
pub fn map_large(s: &Settings) -> BenchResult<Figures> {
    measure_row(s, "mpi_pool_map_large", "MB/s", (3, 5))
}

/// `mpi_pool_cpu_speedup`: the serial time of `pool_cpu_speedup`'s job over its time on an
/// MPI pool of 2 ranks (two chunks of one task), with a local `Pool::new(2)`'s speedup
/// over the same serial time, timed right before or after it in the same launch; mpi4py:
/// the job in Python, serial over `map(sum_part, halves, chunksize=1)`.
pub fn cpu_speedup(s: &Settings) -> BenchResult<Figures> {
    measure_row(s, "mpi_pool_cpu_speedup", "x", (3, 5))
}

#[cfg(not(feature = "mpi"))]
fn measure_row(_: &Settings, _: &str, _: &str, _: (usize, usize)) -> BenchResult<Figures> {
    Err(NEEDS_FEATURE.into())
}

#[cfg(feature = "mpi")]
fn measure_row(
    s: &Settings,
    name: &'static str,
    unit: &'static str,
    per_launch: (usize, usize),
) -> BenchResult<Figures> {
    run::measure_row(s, name, unit, s.pick(per_launch.0, per_launch.1))
}

/// What one launch measured: its samples, and the local pool's on the CPU row.
#[cfg(any(feature = "mpi", test))]
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Launched {
    workload: String,
    unit: String,
    samples: Vec<f64>,
    #[serde(default)]
    local_pool: Vec<f64>,
}

#[cfg(any(feature = "mpi", test))]
impl Launched {
    /// The launch's line for `name` in `stdout` (JSON; other lines are ignored), checked:
    /// `unit`, and `samples` samples (of the local pool's too, when `local`).
    fn find(
        stdout: &str,
        name: &str,
        unit: &str,
        samples: usize,
        local: bool,
    ) -> BenchResult<Launched> {
        let mut found = None;
        for line in stdout.lines().map(str::trim) {
            if line.starts_with('{') {
                let l: Launched = serde_json::from_str(line)?;
                if l.workload == name {
                    found = Some(l);
                }
            }
        }
        let l = found.ok_or_else(|| format!("no line for {name} in the output"))?;
        if l.unit != unit {
            return Err(format!("{name}: measured in {}, not {unit}", l.unit).into());
        }
        let locals = if local { samples } else { 0 };
        if l.samples.len() != samples || l.local_pool.len() != locals {
            return Err(format!(
                "{name}: {} samples (local pool: {}) instead of {samples} ({locals})",
                l.samples.len(),
                l.local_pool.len()
            )
            .into());
        }
        if l.samples
            .iter()
            .chain(&l.local_pool)
            .any(|v| !v.is_finite() || *v <= 0.0)
        {
            return Err(format!("{name}: a sample is not a positive number").into());
        }
        Ok(l)
    }
}

/// The harness's side: launches, their timeouts, medians.
#[cfg(feature = "mpi")]
mod run {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::Duration;

    use super::{LOCAL_POOL, Launched, MPI4PY, RANK0_ARG};
    use crate::launch;
    use crate::measure::median;
    use crate::workloads::Figures;
    use crate::{BenchResult, Settings};

    /// Ranks of every launch: rank 0 and two workers.
    const RANKS: &str = "3";

    /// The longest a launch may take (mpi4py's 20,000 tasks take about 5 s a sample on an
    /// idle machine).
    const LAUNCH_TIMEOUT: Duration = Duration::from_secs(300);

    /// The longest `mpirun --version` or the import of mpi4py may take.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

    /// Containers forbid the kernel-assisted copies (CMA) of Open MPI's shared-memory
    /// transport; this turns them off unless the caller chose otherwise.
    const SINGLE_COPY: &str = "OMPI_MCA_btl_vader_single_copy_mechanism";

    /// The interpreter: `$PYTHON`, else `python3` (as for CPython).
    fn python() -> String {
        std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
    }

    /// `python/bench_mpi4py.py`, next to this crate's manifest.
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/bench_mpi4py.py")
    }

    /// `mpirun -n 3 --oversubscribe`, with `--allow-run-as-root` as root.
    pub(super) fn mpirun() -> Command {
        let mut cmd = Command::new("mpirun");
        cmd.args(["-n", RANKS, "--oversubscribe"]);
        // SAFETY: geteuid takes nothing and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--allow-run-as-root");
        }
        if std::env::var_os(SINGLE_COPY).is_none() {
            cmd.env(SINGLE_COPY, "none");
        }
        cmd
    }

    /// Whether `mpirun` runs here; asked once.
    pub fn unavailable() -> Option<String> {
        static WHY: OnceLock<Option<String>> = OnceLock::new();
        WHY.get_or_init(|| {
            let probe = launch::run(Command::new("mpirun").arg("--version"), PROBE_TIMEOUT);
            probe.err().map(|e| {
                format!(
                    "`mpirun --version` failed ({}); install Open MPI \
                     (`apt-get install openmpi-bin libopenmpi-dev libclang-dev`)",
                    launch::tail(&e.to_string(), 1)
                )
            })
        })
        .clone()
    }

    /// mpi4py's version, when the interpreter has it; asked once, saying what it found.
    fn mpi4py() -> Option<&'static str> {
        static VERSION: OnceLock<Option<String>> = OnceLock::new();
        VERSION
            .get_or_init(|| {
                let probe = launch::run(
                    Command::new(python()).args([
                        "-c",
                        "import mpi4py, mpi4py.futures; print(mpi4py.__version__)",
                    ]),
                    PROBE_TIMEOUT,
                );
                match probe {
                    Ok(out) => {
                        let version = out.stdout.trim().to_string();
                        eprintln!("mpi4py {version} ({})", python());
                        Some(version)
                    }
                    Err(e) => {
                        eprintln!(
                            "mpi4py cannot be imported by {} ({}): the mpi4py column is \
                             left empty; `pip install mpi4py` adds it",
                            python(),
                            launch::tail(&e.to_string(), 1)
                        );
                        None
                    }
                }
            })
            .as_deref()
    }

    /// One launch of this binary as rank 0 of `mpirun`.
    fn launch_multiproc(
        s: &Settings,
        name: &str,
        unit: &str,
        samples: usize,
    ) -> BenchResult<Launched> {
        let exe = std::env::current_exe()?;
        let mut cmd = mpirun();
        cmd.arg(exe)
            .args([RANK0_ARG, name, "--samples", &samples.to_string()]);
        if s.quick {
            cmd.arg("--quick");
        }
        let out = launch::run(&mut cmd, LAUNCH_TIMEOUT)?;
        let local = name == "mpi_pool_cpu_speedup";
        Launched::find(&out.stdout, name, unit, samples, local)
    }

    /// One launch of the mpi4py script under `mpirun`.
    fn launch_mpi4py(
        s: &Settings,
        name: &str,
        unit: &str,
        samples: usize,
    ) -> BenchResult<Launched> {
        let mut cmd = mpirun();
        cmd.arg(python())
            .args(["-m", "mpi4py.futures"])
            .arg(script())
            .args(["--workload", name, "--samples", &samples.to_string()]);
        if s.quick {
            cmd.arg("--quick");
        }
        let out = launch::run(&mut cmd, LAUNCH_TIMEOUT)?;
        Launched::find(&out.stdout, name, unit, samples, false)
    }

    /// Samples for the progress lines.
    fn show(samples: &[f64]) -> String {
        let v: Vec<String> = samples
            .iter()
            .map(|&x| format!("{}", crate::report::round_sig(x, 3)))
            .collect();
        v.join(" ")
    }

    /// Measures row `name` in `s.pick(2, 3)` repetitions of a multiproc launch and an
    /// mpi4py launch, in turn, each measuring `per_launch` samples.
    pub fn measure_row(
        s: &Settings,
        name: &'static str,
        unit: &'static str,
        per_launch: usize,
    ) -> BenchResult<Figures> {
        let version = mpi4py();
        let rounds = s.pick(2, 3);
        let (mut ours, mut local, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            for turn in 0..2 {
                let mpi4py_now = (round + turn) % 2 == 1;
                if mpi4py_now {
                    if version.is_some() {
                        let l = launch_mpi4py(s, name, unit, per_launch)
                            .map_err(|e| format!("mpi4py.futures: {e}"))?;
                        eprintln!("  mpi4py.futures: {}", show(&l.samples));
                        theirs.extend(l.samples);
                    }
                } else {
                    let l = launch_multiproc(s, name, unit, per_launch)?;
                    if l.local_pool.is_empty() {
                        eprintln!("  multiproc: {}", show(&l.samples));
                    } else {
                        eprintln!(
                            "  multiproc: {} (local pool: {})",
                            show(&l.samples),
                            show(&l.local_pool)
                        );
                    }
                    ours.extend(l.samples);
                    local.extend(l.local_pool);
                }
            }
        }
        let mut peers = vec![(MPI4PY, version.map(|_| median(&theirs)))];
        let mut paired = Vec::new();
        if !local.is_empty() {
            peers.push((LOCAL_POOL, Some(median(&local))));
            // The pools of a sample ran back to back over the same serial time.
            let gains: Vec<f64> = ours.iter().zip(&local).map(|(m, l)| m / l).collect();
            paired.push((LOCAL_POOL, median(&gains)));
        }
        Ok(Figures {
            multiproc: median(&ours),
            limit: None,
            floor: None,
            peers,
            paired,
        })
    }
}

/// Rank 0's side: one row measured on the MPI pool of the job this process is rank 0 of.
#[cfg(feature = "mpi")]
mod rank0 {
    use std::time::Instant;

    use multiproc::Pool;

    use super::Launched;
    use crate::BenchResult;
    use crate::workloads::pool::{ANSWER_TIMEOUT, WORKERS, multiproc_map, serial, split_time};

    /// Tasks of the chunk-of-one row.
    const CHUNK1_TASKS: u64 = 20_000;

    /// Arguments of the large row, and the size of each.
    const LARGE_ITEMS: usize = 200;
    const LARGE_SIZE: usize = 1 << 20;

    /// The task of the large row: the argument's length and last byte.
    fn weigh(v: Vec<u8>) -> (u64, u8) {
        (v.len() as u64, v.last().copied().unwrap_or(0))
    }

    /// The large row's arguments: item `i` is [`LARGE_SIZE`] bytes of `i % 251`.
    fn large_args() -> Vec<Vec<u8>> {
        (0..LARGE_ITEMS)
            .map(|i| vec![(i % 251) as u8; LARGE_SIZE])
            .collect()
    }

    /// One `map` of `weigh` over a copy of `args` (made before the clock starts), one
    /// task per chunk, checked: MB/s of arguments.
    fn map_large_once(pool: &Pool, args: &[Vec<u8>]) -> BenchResult<f64> {
        let batch = args.to_vec();
        let started = Instant::now();
        let got = pool
            .map_async_chunked(weigh, batch, 1)?
            .get_timeout(ANSWER_TIMEOUT)?;
        let elapsed = started.elapsed();
        if got.len() != args.len() {
            return Err(format!("{} results for {} arguments", got.len(), args.len()).into());
        }
        for (i, (g, a)) in got.iter().zip(args).enumerate() {
            if *g != (a.len() as u64, a[a.len() - 1]) {
                return Err(format!("argument {i} came back as {g:?}").into());
            }
        }
        let bytes: usize = args.iter().map(Vec::len).sum();
        Ok(bytes as f64 / 1e6 / elapsed.as_secs_f64())
    }

    /// The rows rank 0 measures.
    enum Row {
        Chunk1,
        Large,
        Cpu,
    }

    /// Parses `NAME --samples K [--quick]`, measures, and returns the JSON line.
    pub fn measure(args: &[String]) -> BenchResult<String> {
        let mut it = args.iter();
        let name = it.next().ok_or("no workload named")?.clone();
        let mut samples = 0usize;
        let mut quick = false;
        while let Some(a) = it.next() {
            match a.as_str() {
                "--samples" => samples = it.next().ok_or("--samples needs a count")?.parse()?,
                "--quick" => quick = true,
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        if samples == 0 {
            return Err("--samples needs a count above 0".into());
        }
        let (row, unit) = match name.as_str() {
            "mpi_pool_map_chunk1" => (Row::Chunk1, "us"),
            "mpi_pool_map_large" => (Row::Large, "MB/s"),
            "mpi_pool_cpu_speedup" => (Row::Cpu, "x"),
            other => return Err(format!("no MPI workload named {other:?}").into()),
        };
        let pool = Pool::builder().mpi().build()?;
        if pool.processes() != WORKERS {
            return Err(format!(
                "the MPI pool has {} worker ranks, not {WORKERS}: run with mpirun -n {}",
                pool.processes(),
                WORKERS + 1
            )
            .into());
        }
        let mut out = Launched {
            workload: name.clone(),
            unit: unit.to_string(),
            samples: Vec::with_capacity(samples),
            local_pool: Vec::new(),
        };
        match row {
            Row::Chunk1 => {
                multiproc_map(&pool, CHUNK1_TASKS / 10, Some(1))?;
                for _ in 0..samples {
                    out.samples
                        .push(multiproc_map(&pool, CHUNK1_TASKS, Some(1))?);
                }
            }
            Row::Large => {
                let args = large_args();
                map_large_once(&pool, &args[..LARGE_ITEMS / 10])?;
                for _ in 0..samples {
                    out.samples.push(map_large_once(&pool, &args)?);
                }
            }
            Row::Cpu => {
                // As `pool_cpu_speedup`.
                let n = if quick { 40_000_000 } else { 100_000_000 };
                let local = Pool::new(WORKERS)?;
                for p in [&pool, &local] {
                    let (expected, _) = serial(n / 10);
                    split_time(p, n / 10, expected)?;
                }
                for k in 0..samples {
                    // One serial time for both pools, which run in turn (the first
                    // alternating), so that drift touches both alike.
                    let (expected, alone) = serial(n);
                    let (mpi, here) = if k % 2 == 0 {
                        let mpi = split_time(&pool, n, expected)?;
                        (mpi, split_time(&local, n, expected)?)
                    } else {
                        let here = split_time(&local, n, expected)?;
                        (split_time(&pool, n, expected)?, here)
                    };
                    out.samples.push(alone.as_secs_f64() / mpi.as_secs_f64());
                    out.local_pool
                        .push(alone.as_secs_f64() / here.as_secs_f64());
                }
            }
        }
        Ok(serde_json::to_string(&out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_line_is_found_and_checked() {
        let out = "noise\n{\"workload\": \"w\", \"unit\": \"us\", \"samples\": [1.5, 2.0]}\n";
        let l = Launched::find(out, "w", "us", 2, false).unwrap();
        assert_eq!(l.samples, vec![1.5, 2.0]);
        assert!(Launched::find(out, "w", "MB/s", 2, false).is_err());
        assert!(Launched::find(out, "w", "us", 3, false).is_err());
        assert!(Launched::find(out, "w", "us", 2, true).is_err());
        assert!(Launched::find(out, "other", "us", 2, false).is_err());
        let bad =
            "{\"workload\": \"w\", \"unit\": \"x\", \"samples\": [0.0], \"local_pool\": [1.0]}";
        assert!(Launched::find(bad, "w", "x", 1, true).is_err());
        let ok =
            "{\"workload\": \"w\", \"unit\": \"x\", \"samples\": [1.9], \"local_pool\": [1.8]}";
        assert_eq!(
            Launched::find(ok, "w", "x", 1, true).unwrap().local_pool,
            vec![1.8]
        );
    }

    /// A job whose ranks hang is stopped at its timeout, ranks included.
    #[cfg(feature = "mpi")]
    #[test]
    fn a_hanging_mpi_job_is_stopped_with_its_ranks_at_the_timeout() {
        use std::time::{Duration, Instant};
        if run::unavailable().is_some() {
            eprintln!("skipped: no mpirun");
            return;
        }
        let file = std::env::temp_dir().join(format!("mpi-hang-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut cmd = run::mpirun();
        cmd.args([
            "sh",
            "-c",
            &format!("echo $$ >> {}; sleep 60", file.display()),
        ]);
        let started = Instant::now();
        let e = crate::launch::run(&mut cmd, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let pids: Vec<i32> = std::fs::read_to_string(&file)
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let _ = std::fs::remove_file(&file);
        assert_eq!(pids.len(), 3, "{pids:?}");
        let ends = Instant::now();
        while let Some(p) = pids.iter().find(|&&p| running(p)) {
            assert!(
                ends.elapsed() < Duration::from_secs(10),
                "rank {p} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `pid` exists and is not a zombie.
    #[cfg(feature = "mpi")]
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            after.split_whitespace().next() != Some("Z")
        })
    }

    #[test]
    fn the_rank0_argument_is_hidden_from_ordinary_runs() {
        assert!(rank0(&["--quick".to_string()]).is_none());
        assert!(rank0(&[]).is_none());
    }
}

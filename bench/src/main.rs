//! Benchmarks multiproc against CPython's `multiprocessing`, the Rust peers (procspawn,
//! ipc-channel) and the bare-syscall limit, all measured in the same run; with the feature
//! `mpi`, the MPI pool against mpi4py.futures too.
//!
//! ```text
//! cargo run --release -p multiproc-bench [--features mpi] -- [--quick] [--only NAME,...] [--no-cpython]
//! ```
//!
//! Prints a table of medians, a table of ratios with the goals, then one JSON line per
//! workload.

mod cpython;
#[cfg(any(feature = "mpi", test))]
mod launch;
mod limits;
mod measure;
mod report;
mod workloads;

use std::process::ExitCode;

use workloads::{MPI_WORKLOADS, Row, WORKLOADS, mpi_pool};

/// Errors of the harness: any error, with a message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How the run was asked for.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Few repetitions: the whole run takes well under three minutes.
    pub quick: bool,
    /// Run the CPython script too.
    pub cpython: bool,
    /// Only these workloads (all when empty).
    pub only: Vec<String>,
}

impl Settings {
    /// `quick` in a quick run, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    fn from_args(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
        let mut s = Settings {
            cpython: true,
            ..Settings::default()
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => s.quick = true,
                "--full" => s.quick = false,
                "--no-cpython" => s.cpython = false,
                "--only" => {
                    let list = args.next().ok_or("--only needs a list of workloads")?;
                    s.only.extend(list.split(',').map(str::to_string));
                }
                "-h" | "--help" => return Err(usage()),
                other => return Err(format!("unknown argument {other:?}\n{}", usage())),
            }
        }
        for name in &s.only {
            if !workloads::all().any(|w| w.name == name) {
                return Err(format!("no workload named {name:?}\n{}", usage()));
            }
        }
        Ok(s)
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

fn usage() -> String {
    let names: Vec<&str> = workloads::all().map(|w| w.name).collect();
    format!(
        "usage: multiproc-bench [--quick | --full] [--only NAME,...] [--no-cpython]\n\
         workloads: {}\n\
         (the mpi_pool_* rows need the feature `mpi`, `mpirun` and mpi4py)\n\
         environment: PYTHON chooses the interpreter (default python3)",
        names.join(", ")
    )
}

fn main() -> ExitCode {
    if std::env::var_os(limits::EXIT_AT_ONCE_ENV).is_some() {
        std::process::exit(0);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Rank 0 of an MPI job started by this harness: it measures one MPI row.
    if let Some(code) = mpi_pool::rank0(&args) {
        return code;
    }
    // A procspawn child runs its task here and exits; multiproc's children never reach `main`.
    procspawn::init();

    let settings = match Settings::from_args(args.into_iter()) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "multiproc-bench: {} run, {} CPUs",
        settings.pick("quick", "full"),
        multiproc::cpu_count()
    );

    let mut rows = Vec::new();
    let mut failed = false;
    for w in WORKLOADS.iter().filter(|w| settings.wants(w.name)) {
        eprintln!("measuring {} ({})", w.name, w.what);
        let figures = match (w.measure)(&settings) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("  {}: failed: {e}", w.name);
                failed = true;
                continue;
            }
        };
        let cpython = if settings.cpython {
            eprintln!("  CPython");
            match cpython::measure(&settings, w.name, w.unit) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("  {}: CPython failed: {e}", w.name);
                    failed = true;
                    None
                }
            }
        } else {
            None
        };
        rows.push(Row {
            workload: w,
            figures,
            cpython,
        });
    }

    let mpi_rows: Vec<_> = MPI_WORKLOADS
        .iter()
        .filter(|w| settings.wants(w.name))
        .collect();
    if !mpi_rows.is_empty() {
        let names: Vec<&str> = mpi_rows.iter().map(|w| w.name).collect();
        match mpi_pool::unavailable() {
            Some(why) => eprintln!("skipping the MPI rows ({}): {why}", names.join(", ")),
            None => {
                for w in mpi_rows {
                    eprintln!("measuring {} ({})", w.name, w.what);
                    match (w.measure)(&settings) {
                        Ok(figures) => rows.push(Row {
                            workload: w,
                            figures,
                            cpython: None,
                        }),
                        Err(e) => {
                            eprintln!("  {}: failed: {e}", w.name);
                            failed = true;
                        }
                    }
                }
            }
        }
    }

    println!("Medians (unit per operation; lower is better for \"lower\")");
    print!("{}", report::figures_table(&rows));
    println!();
    println!("Ratios (multiproc/limit: times the bare limit; others: times faster than them)");
    print!("{}", report::ratios_table(&rows));
    println!();
    for row in &rows {
        println!("{}", report::json_line(row));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        Settings::from_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn parses_arguments() {
        let s = parse(&["--quick", "--only", "pipe_rtt_bytes,start_join_fork"]).unwrap();
        assert!(s.quick && s.cpython);
        assert!(s.wants("pipe_rtt_bytes") && !s.wants("start_join_spawn"));
        assert!(!parse(&["--full", "--no-cpython"]).unwrap().cpython);
        assert!(parse(&["--only", "nothing"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        let s = parse(&["--only", "mpi_pool_map_chunk1"]).unwrap();
        assert!(s.wants("mpi_pool_map_chunk1") && !s.wants("pool_map_chunk1"));
    }
}

//! The S12 and S16 workloads on a pool whose workers are MPI processes:
//!
//! ```text
//! cargo build --features mpi --example mpi_pool
//! mpirun -n 3 --oversubscribe target/debug/examples/mpi_pool
//! ```
//!
//! Rank 0 runs `main`; ranks 1 and 2 serve as the pool's workers before their `main`
//! would run. It also runs with no launcher at all:
//!
//! ```text
//! cargo run --features mpi --example mpi_pool
//! ```
//!
//! The pool then starts MPI itself and spawns one worker per CPU running this same
//! program (as under `mpirun -n 1`); the ranks printed are then the workers' own ranks
//! among the spawned workers (0 and up), the pids telling them from `main`'s process. In a
//! container, Open MPI may need `OMPI_MCA_btl_vader_single_copy_mechanism=none`.
//!
//! The only line that differs from the local examples is the pool's construction:
//! `Pool::builder().mpi().build()` instead of `Pool::new(3)`. Each task returns the
//! rank and the host it ran on, which `main` prints.
//!
//! S12 (seed 001) hashes this crate's source files with 64-bit FNV-1a, one file per task,
//! a missing file standing for the address that cannot be scraped (its task returns its
//! failure as a value); the hashes are checked against the same computed serially.
//! S16 (seed 003) is `map(job, range(10))`, one `apply_async(job, 3).get()`, and ten
//! `apply_async` results gathered. On several machines, every host needs the same
//! binary at the same path, and S12 needs the sources there too.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use multiproc::Pool;

/// Where a task ran: its rank in the MPI job, its process and its host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct Place {
    rank: String,
    pid: u32,
    host: String,
}

impl Place {
    fn here() -> Place {
        let rank = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
            .iter()
            .find_map(|v| std::env::var(v).ok())
            .unwrap_or_else(|| "?".into());
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Place {
            rank,
            pid: std::process::id(),
            host: host.trim().to_string(),
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} (pid {}) on {}", self.rank, self.pid, self.host)
    }
}

/// 64-bit FNV-1a: each byte is XORed in, then the hash is multiplied by the FNV prime.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The hash and length of a file's contents, or why it cannot be read.
fn hash_file(path: &Path) -> Result<(u64, usize), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    Ok((fnv1a(&bytes), bytes.len()))
}

/// S12's `scrape(url)`: one file's hash and length, and where it was computed.
fn scrape(path: PathBuf) -> (Result<(u64, usize), String>, Place) {
    (hash_file(&path), Place::here())
}

/// S16's `job(x)`: `x * x`, and where it ran.
fn job(x: u64) -> (u64, Place) {
    (x * x, Place::here())
}

/// The inputs: `src/*.rs`, `src/*/mod.rs`, sorted, and a file that does not exist.
fn inputs(src: &Path) -> multiproc::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(src)? {
        let path = entry?.path();
        let module = path.join("mod.rs");
        if module.is_file() {
            files.push(module);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files.push(src.join("no_such_file.rs"));
    Ok(files)
}

fn s12(pool: &Pool) -> multiproc::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = inputs(&root.join("src"))?;
    println!("S12: map over {} files", files.len());
    let results = pool.map(scrape, files.clone())?;
    let mut places = BTreeSet::new();
    let mut agree = 0;
    for (path, (result, place)) in files.iter().zip(&results) {
        let name = path.strip_prefix(root).unwrap_or(path).display();
        let same = *result == hash_file(path);
        agree += usize::from(same);
        let check = if same { "= serial" } else { "DIFFERS" };
        match result {
            Ok((hash, len)) => println!("  {name:<26} {place}  {hash:016x} {len:>6} bytes {check}"),
            Err(e) => println!("  {name:<26} {place}  not hashed: {e} {check}"),
        }
        places.insert(place.clone());
    }
    println!(
        "S12: {agree} of {} as computed serially; {} ranks took part",
        files.len(),
        places.len()
    );
    Ok(())
}

fn s16(pool: &Pool) -> multiproc::Result<()> {
    let res = pool.map(job, 0..10)?;
    println!("S16 map: {:?}", res.iter().map(|r| r.0).collect::<Vec<_>>());
    let (value, place) = pool.apply_async(job, 3)?.get()?;
    println!("S16 apply_async(job, 3): {value} ({place})");
    let multi_res = (0..10)
        .map(|i| pool.apply_async(job, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for res in multi_res {
        let (value, place) = res.get()?;
        println!("  {value:>2} by {place}");
    }
    Ok(())
}

pub fn main() -> multiproc::Result<()> {
    let pool = Pool::builder().mpi().build()?;
    println!(
        "{}: an MPI pool of {} worker ranks",
        Place::here(),
        pool.processes()
    );
    s12(&pool)?;
    s16(&pool)?;
    pool.close();
    pool.join()
}

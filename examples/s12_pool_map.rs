//! S12 (seed 001): `Pool.map` over a list of inputs.
//!
//! The tutorial's `scrape(url)` opens each of four URLs on a `Pool(3)`, and prints
//! whether it could; one of the addresses does not exist. There is no network here, so
//! the inputs are files, this crate's own sources (`src/*.rs` and each module's
//! `mod.rs`), and the work is reading each one and hashing its bytes (64-bit FNV-1a,
//! written out below). A name that does not exist stands in for the URL that cannot be
//! scraped: its task fails on its own, as `scrape` catches its error, and the others
//! go on.
//!
//! `map` hands the list to the workers in chunks and returns one result per input, in
//! the order of the inputs, whichever worker did it. Each result carries the pid of
//! the worker that computed it; the parent prints them in order, counts how many
//! workers took part, and checks every hash against the same hashes computed here
//! serially. A task returns its failure as a value (`Result<_, String>`), as `scrape`
//! prints it instead of raising: had it panicked, `map` would return that error and no
//! results.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use multiproc::Pool;

/// What a worker found for one file.
type Hashed = Result<(u32, u64, usize), String>;

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

/// The tutorial's `scrape(url)`: one input's work, run in a worker, which returns its
/// pid with the hash and length.
fn scrape(path: PathBuf) -> Hashed {
    hash_file(&path).map(|(hash, len)| (std::process::id(), hash, len))
}

/// The inputs: `src/*.rs`, `src/*/mod.rs`, sorted, and a file that does not exist.
fn inputs(src: &Path) -> multiproc::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(src)? {
        let path = entry?.path();
        if path.is_dir() {
            let module = path.join("mod.rs");
            if module.is_file() {
                files.push(module);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files.push(src.join("no_such_file.rs"));
    Ok(files)
}

pub fn main() -> multiproc::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = inputs(&root.join("src"))?;
    let pool = Pool::new(3)?;
    println!(
        "Pool(3), workers {:?}; map over {} files",
        pool.pids(),
        files.len()
    );
    let results: Vec<Hashed> = pool.map(scrape, files.clone())?;
    pool.close();
    pool.join()?;

    let mut workers = BTreeSet::new();
    let mut agree = 0;
    for (path, result) in files.iter().zip(&results) {
        let name = path.strip_prefix(root).unwrap_or(path).display();
        let serial = hash_file(path);
        let check = match (result, &serial) {
            (Ok((_, hash, len)), Ok(s)) if (*hash, *len) == *s => "= serial",
            (Err(e), Err(s)) if e == s => "= serial",
            _ => "DIFFERS from serial",
        };
        if check == "= serial" {
            agree += 1;
        }
        match result {
            Ok((pid, hash, len)) => {
                workers.insert(*pid);
                println!("{name:<26} worker {pid}  {hash:016x}  {len:>6} bytes  {check}");
            }
            Err(e) => println!("{name:<26} not hashed: {e}  {check}"),
        }
    }
    println!(
        "{} of {} results as computed serially; {} workers took part: {workers:?}",
        agree,
        files.len(),
        workers.len()
    );
    println!("Main process finished");
    Ok(())
}

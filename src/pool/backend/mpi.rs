//! The MPI backend: a pool whose workers are the other ranks of the MPI job this
//! process is rank 0 of (Python's `mpi4py.futures`).
//!
//! Started as `mpirun -n N prog`, every rank runs the crate's load-time hook before
//! `main`. The hook calls `MPI_Init` only when the launcher's variables say the process
//! is a rank of a job, and then asks MPI itself which rank it is: rank 0 goes on to
//! `main`; every other rank serves as a worker until rank 0 exits, and never runs `main`.
//! What a worker rank runs is named exactly as for a local worker, by the offset of an
//! entry record of this binary (`call::run` checks it): nothing received can make a rank
//! run code other than the crate's own entries.
//!
//! The pool's messages travel on a communicator of their own, a duplicate of the world
//! communicator that every rank starts making in the hook and completes at first use
//! (see `on_load`), so that the program's own messages on the world never meet them.
//!
//! Started as `mpirun -n 1 prog`, rank 0 has no other rank: its first MPI pool spawns
//! workers running this same program (`MPI_Comm_spawn`), whose hook finds the parent
//! communicator and serves it the same way.
//!
//! Started with no launcher (`./prog`), the hook does nothing; the first MPI pool
//! starts MPI itself (`MPI_Init_thread` with `MPI_THREAD_MULTIPLE`, once per process:
//! an Open MPI "singleton"), registers the same exit handler as rank 0 of a launched
//! job, and spawns its workers as above, asking MPI to place them even beyond the
//! cores (`map_by` `:OVERSUBSCRIBE` on the spawn; a singleton counts one slot). It
//! refuses, with the reason, where MPI must not start: in a process this crate started
//! or one forked from a process running MPI (see `world`), and in a program that
//! initialized MPI itself, whose own `Universe` would finalize MPI before the workers
//! could be stopped. With no launcher to end the program when a worker dies, the pool
//! watches the workers' pids ([`WATCHED`]) and ends it itself.
//!
//! Rank 0 gives each rank a few jobs at a time ([`IN_FLIGHT`]), one message per chunk of
//! tasks (the same header and encoded chunk as a local worker's order), and each rank
//! answers with the same report a local worker puts on its queue, so that outcomes,
//! errors and panics decode exactly as the local pool's. Sends from rank 0 go through a
//! thread per rank, so that a large chunk on its way to a busy rank never holds up the
//! handler thread, which receives every report and watches the time of each job. Both
//! sides receive into the memory of messages they are done with ([`Spares`]).
//!
//! A rank cannot be killed alone (MPI ends the whole job when one of its processes
//! dies), so a job over the task timeout fails with `Error::Timeout` while its rank
//! finishes it: the rank takes no new job until it reports, the jobs it held and had not
//! started go to the others (it is told to drop them), and its late outcome is ignored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Message, Source, Status};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Jobs, Outcome, Sink};
use crate::error::{Error, Result};
use crate::pool::call::{self, CallCtx, Failure};
use crate::pool::worker::{Report, SharedInit};
use crate::sys::mpi::{self as sysmpi, Comm, Duplicating, SharedComm};
use crate::sys::{image, proc as sysproc};
use crate::wire::codec;

/// Jobs a rank holds at most: one running, the others waiting in its inbox, so that it
/// never waits for rank 0 between two of them.
const IN_FLIGHT: usize = 4;

/// The tag of rank 0's orders to a worker rank. The tags stay under 32,767, the least
/// upper bound the MPI standard guarantees (some libraries allow no more).
const TAG_ORDER: i32 = 0x6d70;

/// The tag of a worker rank's reports to rank 0.
const TAG_REPORT: i32 = 0x6d71;

/// The tag of a worker rank's last word: it has stopped.
const TAG_ENDED: i32 = 0x6d72;

/// The tag of a worker rank's refusal to serve (its text follows): it runs another
/// build of the program than rank 0, whose entry offsets mean nothing to it.
const TAG_REFUSED: i32 = 0x6d73;

/// The tag of a spawned worker's first word: its pid.
const TAG_PID: i32 = 0x6d74;

/// How often the handler looks at the time of the jobs when no report comes.
const TICK: Duration = Duration::from_millis(10);

/// How long rank 0, as it exits, waits for the worker ranks to finish what they run.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// Launcher variables of an MPI job: Open MPI's, and the PMI ones that MPICH's Hydra and
/// Slurm's `srun` set. They only decide whether `MPI_Init` is called; MPI says the rank.
const LAUNCH_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"];

/// The header of what rank 0 tells a worker rank; a `Run` order's encoded chunk of
/// arguments, or an `Init` order's encoded argument, follows it to the end of the
/// message.
#[derive(Debug, Serialize, Deserialize)]
enum Order {
    /// Rank 0's build (see `image::code_identity`): a rank of another build runs nothing.
    Hello { identity: [u8; 32] },
    /// Run the entry at `entry` on the chunk that follows.
    Run { job: u64, entry: u64 },
    /// Run the initializer at `entry` on the argument that follows.
    Init { entry: u64 },
    /// Drop these jobs if they have not started.
    Cancel { jobs: Vec<u64> },
    /// Rank 0 is exiting: finish.
    Stop,
}

/// This process's place in the MPI job, when the hook found one.
struct World {
    rank: i32,
    threading: Threading,
    /// Started by the first MPI pool, with no launcher: the program is a job of its
    /// own.
    singleton: bool,
    /// The process that started MPI: a child forked from it inherits this record, not
    /// MPI.
    pid: u32,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// How rank 0 reaches its workers: the job's other ranks (on a duplicate of the world
/// communicator), or the workers it spawned.
static LINK: OnceLock<SharedComm> = OnceLock::new();

/// The duplicate of the world communicator that the pools' messages travel on, from the
/// load-time hook until its first use completes it (see `on_load`).
static DUPLICATING: Mutex<Option<Duplicating>> = Mutex::new(None);

/// How long rank 0 waits for the other ranks to complete the duplicate of the world
/// communicator: they start it before `main`, so only a rank that runs another program
/// (one that never does) keeps it waiting.
const DUP_WAIT: Duration = Duration::from_secs(60);

/// Whether this process has started MPI itself, with no launcher (see `world`): what
/// a later MPI pool is told instead, once it has.
static SINGLETON: Mutex<Option<String>> = Mutex::new(None);

/// The spawned workers of a program started with no launcher, by rank, with their
/// pids: no launcher ends the program when one dies, so the pool watches them.
static WATCHED: OnceLock<Vec<(i32, u32)>> = OnceLock::new();

/// The first watched worker (see [`WATCHED`]) that has died and is not in `ended`.
fn dead_worker(ended: &HashSet<i32>) -> Option<(i32, u32)> {
    WATCHED
        .get()?
        .iter()
        .find(|(rank, pid)| !ended.contains(rank) && sysproc::has_ended(*pid))
        .copied()
}

/// Ends the program as a launcher ends a job that loses a process: a worker died,
/// and the pool's MPI link cannot serve nor stop cleanly without it.
fn end_for_dead_worker(rank: i32, pid: u32) -> ! {
    eprintln!(
        "multiproc: the spawned MPI worker {rank} (pid {pid}) died; ending the program, as \
         MPI ends a job that loses a process"
    );
    SimpleCommunicator::world().abort(1)
}

/// Held while workers are being spawned: one set of them per process.
static SPAWNING: Mutex<()> = Mutex::new(());

/// Rank 0's handle on MPI, finalized as the process exits.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

/// The `Stop` order, encoded before `main`: the encoder's thread-local state is gone by
/// the time exit handlers run.
static STOP: OnceLock<Vec<u8>> = OnceLock::new();

/// Whether the pools' threads may still call MPI: false once rank 0's exit handler has
/// taken it over to stop the workers and finalize (a pool never dropped still has its
/// threads then, and an MPI call after `MPI_Finalize` crashes the process).
static MPI_OPEN: RwLock<bool> = RwLock::new(true);

/// Runs `f`, which calls MPI, unless the exit handler has taken MPI over: `None` then.
fn while_open<R>(f: impl FnOnce() -> R) -> Option<R> {
    let open = MPI_OPEN.read().unwrap_or_else(|e| e.into_inner());
    (*open).then(f)
}

/// One MPI pool at a time owns the worker ranks.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Job ids over every MPI pool of the process: the late report of an earlier pool's job
/// never passes for one of a later pool.
static NEXT_JOB: AtomicU64 = AtomicU64::new(0);

image::load_hook! {
    /// Turns the ranks 1 and up of an MPI job into workers before `main`.
    static ON_LOAD = on_load;
}

fn on_load() {
    if image::secure_execution()
        || crate::process::started_as_child()
        || !LAUNCH_VARS.iter().any(|v| std::env::var_os(v).is_some())
    {
        return;
    }
    // Rank 0's pool sends from several threads.
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Multiple) else {
        return;
    };
    let world = universe.world();
    // Started by a rank 0's `MPI_Comm_spawn`: every one of these is a worker.
    if let Some(parent) = world.parent() {
        serve(universe, Comm::Spawned(parent));
    }
    let (rank, size) = (world.rank(), world.size());
    // The pools' messages travel on a duplicate of the world communicator, so that the
    // program's own messages on the world, whatever their tags, never meet them. It is
    // started here, by every rank before anything else can make a collective call on
    // the world (the calls must come in the same order on every rank), but not waited
    // for: `MPI_Comm_dup` would block each rank until all have reached it, and a rank
    // running another program, which never does, would hang rank 0 before `main`,
    // where nothing can say why. `MPI_Comm_idup` instead completes at first use: a
    // worker rank's, before it serves; rank 0's, when its first pool starts (or as it
    // exits), bounded by `DUP_WAIT`, with an error rather than a hang.
    let dup = (size > 1)
        .then(|| Duplicating::start(&world, threading))
        .flatten();
    if rank != 0 {
        match dup {
            Some(dup) => {
                // As long as rank 0 takes: nothing closes MPI on a worker rank, so the
                // duplicate is always complete (the world is only the type's fallback).
                match complete(dup, || false) {
                    Ok(comm) => serve(universe, Comm::World(comm)),
                    Err(_) => serve(universe, Comm::World(world)),
                }
            }
            None => serve(universe, Comm::World(world)),
        }
    }
    *DUPLICATING.lock().unwrap_or_else(|e| e.into_inner()) = dup;
    let world = World {
        rank,
        threading,
        singleton: false,
        pid: std::process::id(),
    };
    become_rank_0(universe, world);
}

/// Keeps `universe` until the process exits, when the exit handler stops the workers
/// and finalizes MPI: this process runs the MPI pools.
fn become_rank_0(universe: Universe, world: World) {
    let stop = message(&Order::Stop, &[]);
    *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(universe);
    // MPI is finalized when the process exits, however `main` ends, and the workers
    // are stopped first.
    sysproc::at_exit(stop_workers);
    if let Ok(stop) = stop {
        let _ = STOP.set(stop);
    }
    let _ = WORLD.set(world);
}

/// This process's place in an MPI job: the one the load-time hook found, else a job of
/// its own, started now with `MPI_Init_thread` (a singleton, as Open MPI calls it),
/// once per process; the error says why there can be none.
fn world() -> Result<&'static World> {
    let mine = |world: &'static World| {
        if world.pid == std::process::id() {
            Ok(world)
        } else {
            Err(Error::state(
                "a process forked from one that runs MPI cannot use MPI: build the MPI \
                 pool in the program's own process",
            ))
        }
    };
    // First, and before the lock, which a forked child may have inherited held.
    if crate::process::started_as_child() || crate::process::parent_process().is_some() {
        return Err(Error::state(
            "a process started by this crate (a local pool's worker, a `Process`) never \
             starts MPI: build the MPI pool in the program's own process",
        ));
    }
    if let Some(world) = WORLD.get() {
        return mine(world);
    }
    let mut tried = SINGLETON.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(world) = WORLD.get() {
        return mine(world);
    }
    if let Some(why) = &*tried {
        return Err(Error::state(why.clone()));
    }
    if mpi::environment::is_initialized() || mpi::environment::is_finalized() {
        return Err(Error::state(
            "the program started MPI itself (`mpi::initialize`) before its first MPI \
             pool, and would finalize it before the pool could stop its workers: build \
             the pool first (it starts MPI, with MPI_THREAD_MULTIPLE), then reach MPI \
             with `mpi::topology::SimpleCommunicator::world()`; or start the program \
             with `mpirun`",
        ));
    }
    if LAUNCH_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        // The hook did not start MPI though a launcher started the program.
        return Err(Error::state(
            "this process has an MPI launcher's variables but is no rank of its job \
             (started by a rank with `std::process::Command`?): it never starts MPI \
             (clear the OMPI_*, PMI_* and PMIX_* variables to run it as a program of \
             its own)",
        ));
    }
    if image::secure_execution() {
        return Err(Error::state(
            "a program running with raised privileges (setuid) does not start MPI",
        ));
    }
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Multiple) else {
        let why = "MPI could not be started in this process (MPI_Init_thread)".to_string();
        *tried = Some(why.clone());
        return Err(Error::state(why));
    };
    *tried = Some("MPI was started in this process already".into());
    let rank = universe.world().rank();
    become_rank_0(
        universe,
        World {
            rank,
            threading,
            singleton: true,
            pid: std::process::id(),
        },
    );
    WORLD
        .get()
        .ok_or_else(|| Error::state("the MPI job started is not recorded"))
}

/// Waits after the `idle`-th look that found nothing: a yield at first, then sleeps
/// growing to 1 ms, so that an idle rank leaves its core to the busy ones.
fn pause(idle: &mut u32) {
    *idle = idle.saturating_add(1);
    match *idle {
        0..=200 => thread::yield_now(),
        n => thread::sleep(Duration::from_micros(u64::from(n.min(1000)))),
    }
}

/// Completes the duplicate of a communicator, waiting as [`next_message`] does; the
/// duplicate still on its way once `give_up` says so, or MPI is closing.
fn complete(
    mut dup: Duplicating,
    mut give_up: impl FnMut() -> bool,
) -> std::result::Result<SimpleCommunicator, Duplicating> {
    let mut idle = 0u32;
    loop {
        let open = MPI_OPEN.read().unwrap_or_else(|e| e.into_inner());
        if !*open {
            return Err(dup);
        }
        dup = match dup.test() {
            Ok(comm) => return Ok(comm),
            Err(dup) => dup,
        };
        drop(open);
        if give_up() {
            return Err(dup);
        }
        pause(&mut idle);
    }
}

/// The link to the job's other ranks, completing the duplicate of the world
/// communicator started before `main` if it is not yet; `None` when the job has no
/// other rank.
fn link_to_ranks() -> Option<Result<&'static SharedComm>> {
    let mut pending = DUPLICATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(link) = LINK.get() {
        return Some(Ok(link));
    }
    let dup = pending.take()?;
    let deadline = crate::deadline::after(DUP_WAIT);
    let over = || crate::deadline::remaining(deadline).is_some_and(|d| d.is_zero());
    match complete(dup, over) {
        Ok(comm) => {
            let link = SharedComm::new(Comm::World(comm), Threading::Multiple)?;
            let _ = LINK.set(link);
            LINK.get().map(Ok)
        }
        Err(dup) => {
            // Tried again by the next pool, or completed by the exit handler.
            *pending = Some(dup);
            Some(Err(Error::state(format!(
                "the other ranks of the MPI job did not join the pool's communicator \
                 within {DUP_WAIT:?}: every rank must run this same program"
            ))))
        }
    }
}

/// Waits for the next message with `tag` from `source`: spinning briefly, then sleeping
/// in growing steps, so that an idle rank leaves its core to the busy ones. `None` once
/// `give_up` says so (checked between steps), or MPI is closing. The message comes in
/// memory from `spares`.
fn next_message(
    source: &impl Source,
    tag: i32,
    spares: &Spares,
    mut give_up: impl FnMut() -> bool,
) -> Option<(Vec<u8>, i32)> {
    let mut idle = 0u32;
    loop {
        let probe = || {
            source
                .immediate_matched_probe_with_tag(tag)
                .map(|p| receive(p, spares))
        };
        match while_open(probe) {
            Some(Some(message)) => return Some(message),
            Some(None) => {}
            None => return None,
        }
        if give_up() {
            return None;
        }
        pause(&mut idle);
    }
}

/// Receives a probed message into memory from `spares`: its bytes and the rank it
/// came from.
fn receive(probed: (Message, Status), spares: &Spares) -> (Vec<u8>, i32) {
    let len = usize::try_from(probed.1.count(u8::equivalent_datatype())).unwrap_or(0);
    let mut buf = spares.take(len);
    let from = sysmpi::receive_into(probed, &mut buf);
    (buf, from)
}

/// The most bytes of buffers [`Spares`] keeps.
const SPARE_BYTES: usize = 64 << 20;

/// The most buffers [`Spares`] keeps.
const SPARE_COUNT: usize = 8;

/// Buffers of messages done with, whose memory takes the next messages: a large
/// argument or result then arrives in memory already mapped, instead of fresh pages
/// (a page fault per 4 KiB) for each message.
struct Spares(Mutex<Vec<Vec<u8>>>);

impl Spares {
    const fn new() -> Spares {
        Spares(Mutex::new(Vec::new()))
    }

    /// A buffer for a message of `len` bytes: one kept that is large enough, else any
    /// (replaced by a larger one as the message comes in), else none yet.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kept.iter().position(|b| b.capacity() >= len) {
            Some(i) => kept.swap_remove(i),
            None => kept.pop().unwrap_or_default(),
        }
    }

    /// Keeps `buf`'s memory, within [`SPARE_COUNT`] and [`SPARE_BYTES`].
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: usize = kept.iter().map(Vec::capacity).sum();
        if kept.len() < SPARE_COUNT && bytes.saturating_add(buf.capacity()) <= SPARE_BYTES {
            kept.push(buf);
        }
    }
}

/// Rank 0's spare buffers for reports: an outcome gives its report's memory back once
/// decoded (see `Outcome::recycle`).
static REPORT_SPARES: Spares = Spares::new();

fn recycle_report(buf: Vec<u8>) {
    REPORT_SPARES.give(buf);
}

/// The most bytes one message holds: MPI counts elements in a C `int`.
const MAX_MESSAGE: usize = i32::MAX as usize;

/// A message: `body`, then `head` encoded, then the head's length (4 bytes,
/// little-endian). The body stays where it is: a large chunk or outcome is sent from the
/// memory it was encoded in, never copied to be joined to its header. `Error::Encode`
/// when the whole would be longer than one MPI message can be.
fn seal<T: Serialize>(head: &T, mut body: Vec<u8>) -> Result<Vec<u8>> {
    let h = codec::encode_plain(head)?;
    let len = u32::try_from(h.len()).map_err(|_| Error::Encode("a header over 4 GiB".into()))?;
    if body.len().saturating_add(h.len() + 4) > MAX_MESSAGE {
        return Err(Error::Encode(format!(
            "{} bytes do not fit in one MPI message (at most {MAX_MESSAGE})",
            body.len()
        )));
    }
    body.extend_from_slice(&h);
    body.extend_from_slice(&len.to_le_bytes());
    Ok(body)
}

/// [`seal`] for a body that is not already a vector of its own.
fn message<T: Serialize>(head: &T, body: &[u8]) -> Result<Vec<u8>> {
    seal(head, body.to_vec())
}

/// The header of a message, and where it starts (the length of the body before it).
fn head_of<T: DeserializeOwned>(m: &[u8]) -> Result<(T, usize)> {
    let short = || Error::Decode("an MPI message shorter than its header says".into());
    let len_at = m.len().checked_sub(4).ok_or_else(short)?;
    let len: [u8; 4] = m
        .get(len_at..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(short)?;
    let start = len_at
        .checked_sub(u32::from_le_bytes(len) as usize)
        .ok_or_else(short)?;
    let (head, _) = codec::decode_prefix::<T>(m.get(start..len_at).ok_or_else(short)?)?;
    Ok((head, start))
}

/// Takes a message apart: its header, and its body (the message, cut short).
fn open<T: DeserializeOwned>(mut m: Vec<u8>) -> Result<(T, Vec<u8>)> {
    let (head, start) = head_of(&m)?;
    m.truncate(start);
    Ok((head, m))
}

/// A worker rank's whole life: orders from rank 0, in the order sent, until `Stop`.
fn serve(universe: Universe, comm: Comm) -> ! {
    crate::process::install_panic_hook();
    let me = u64::try_from(universe.world().rank()).unwrap_or(0);
    let root = comm.process_at_rank(0);
    let ctx = CallCtx::keeping_messages();
    // The memory of messages done with, for the next ones.
    let spares = Spares::new();
    // Why this rank runs nothing: its build is not rank 0's.
    let mut foreign: Option<String> = None;
    let mut inbox: VecDeque<Vec<u8>> = VecDeque::new();
    if matches!(comm, Comm::Spawned(_)) {
        // Its parent watches it by this (see `WATCHED`).
        root.send_with_tag(&std::process::id().to_le_bytes()[..], TAG_PID);
    }
    // Sends a report; the message, for its memory to serve the next outcome.
    let report = |head: &Report, body: Vec<u8>| -> Option<Vec<u8>> {
        let m = seal(head, body).or_else(|e| match head {
            // An outcome too large for one message: its job fails, rather than rank 0
            // waiting for it forever.
            Report::Done { worker, job, .. } => message(
                &Report::Done {
                    worker: *worker,
                    job: *job,
                    outcome: Err(Failure::Codec(format!("cannot send the outcome: {e}"))),
                },
                &[],
            ),
            _ => Err(e),
        });
        let m = m.ok()?;
        root.send_with_tag(&m[..], TAG_REPORT);
        Some(m)
    };
    loop {
        // Everything that came, so that a `Cancel` is seen before the jobs it names run.
        while let Some(probed) = root.immediate_matched_probe_with_tag(TAG_ORDER) {
            inbox.push_back(receive(probed, &spares).0);
        }
        drop_cancelled(&mut inbox);
        let Some(m) = inbox.pop_front() else {
            if let Some((m, _)) = next_message(&root, TAG_ORDER, &spares, || false) {
                inbox.push_back(m);
            }
            continue;
        };
        // The memory of each message goes back to `spares` once its order is done.
        match open::<Order>(m) {
            Ok((Order::Hello { identity }, m)) => {
                spares.give(m);
                foreign = (identity != image::code_identity()).then(|| {
                    format!(
                        "MPI rank {me} runs another build of the program than rank 0: every \
                         rank must run the same binary"
                    )
                });
                if let Some(why) = &foreign {
                    root.send_with_tag(why.as_bytes(), TAG_REFUSED);
                }
            }
            Ok((Order::Run { job, .. }, _)) if foreign.is_some() => {
                let why = foreign.clone().unwrap_or_default();
                report(
                    &Report::Done {
                        worker: me,
                        job,
                        outcome: Err(Failure::Codec(why)),
                    },
                    Vec::new(),
                );
            }
            Ok((Order::Init { .. }, _)) if foreign.is_some() => {}
            Ok((Order::Run { job, entry }, args)) => {
                let outcome = call::run(entry, args, 0, Vec::new(), &ctx);
                // The chunk's message, unless an argument kept its memory.
                if let Some(m) = ctx.take_message() {
                    spares.give(m);
                }
                let body = match outcome {
                    Ok(()) => std::mem::take(&mut *ctx.out.borrow_mut()),
                    Err(_) => Vec::new(),
                };
                let head = Report::Done {
                    worker: me,
                    job,
                    outcome,
                };
                if let Some(mut sent) = report(&head, body) {
                    // Its memory takes the next outcome (`call` encodes into it).
                    sent.clear();
                    *ctx.out.borrow_mut() = sent;
                }
            }
            Ok((Order::Init { entry }, argument)) => {
                let failure = match call::run(entry, argument, 0, Vec::new(), &ctx) {
                    Ok(()) => {
                        match codec::decode::<std::result::Result<(), Failure>>(
                            &ctx.out.borrow(),
                            Vec::new(),
                        ) {
                            Ok(Ok(())) => None,
                            Ok(Err(f)) => Some(f),
                            Err(e) => Some(Failure::Codec(e.to_string())),
                        }
                    }
                    Err(f) => Some(f),
                };
                if let Some(failure) = failure {
                    report(
                        &Report::InitFailed {
                            worker: me,
                            failure,
                        },
                        Vec::new(),
                    );
                }
            }
            Ok((Order::Cancel { .. }, m)) => spares.give(m),
            Ok((Order::Stop, _)) => {
                root.send_with_tag(&[0u8][..], TAG_ENDED);
                break;
            }
            // A damaged order: its job fails when rank 0 gives up on it.
            Err(_) => {}
        }
    }
    // MPI_Finalize: every rank's, before any leaves, or the launcher takes the job for
    // failed.
    if matches!(comm, Comm::Spawned(_)) {
        crate::sys::mpi::finalize_spawned(universe);
    } else {
        drop(universe);
    }
    sysproc::exit_now(0)
}

/// Removes the `Cancel` orders from the inbox, and the jobs they name.
fn drop_cancelled(inbox: &mut VecDeque<Vec<u8>>) {
    let mut cancelled = HashSet::new();
    inbox.retain(|m| match head_of::<Order>(m) {
        Ok((Order::Cancel { jobs }, _)) => {
            cancelled.extend(jobs);
            false
        }
        _ => true,
    });
    if cancelled.is_empty() {
        return;
    }
    inbox.retain(|m| {
        !matches!(head_of::<Order>(m),
            Ok((Order::Run { job, .. }, _)) if cancelled.contains(&job))
    });
}

/// Rank 0 exits: every worker rank is told to stop, and MPI is finalized once they all
/// have (a report they were still sending is taken and dropped).
extern "C" fn stop_workers() {
    let Some(universe) = UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let Some(stop) = STOP.get() else {
        return;
    };
    let deadline = crate::deadline::after(STOP_WAIT);
    let over = || crate::deadline::remaining(deadline).is_some_and(|d| d.is_zero());
    // MPI is this thread's alone from here: a pool still alive waits for no call of its
    // own to finish (a send to a busy rank ends when the rank takes its orders again).
    loop {
        match MPI_OPEN.try_write() {
            Ok(mut open) => {
                *open = false;
                break;
            }
            Err(std::sync::TryLockError::Poisoned(e)) => {
                *e.into_inner() = false;
                break;
            }
            Err(std::sync::TryLockError::WouldBlock) if over() => {
                eprintln!("multiproc: an MPI send still blocked at exit; aborting the job");
                universe.world().abort(1);
            }
            Err(std::sync::TryLockError::WouldBlock) => thread::sleep(Duration::from_millis(1)),
        }
    }
    // No pool has used the worker ranks: they wait for the duplicate of the world
    // communicator to complete before they listen for orders on it. (A pool starting
    // meanwhile has given it back: it stops waiting once MPI is closed.)
    let pending = DUPLICATING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut dup) = pending {
        loop {
            dup = match dup.test() {
                Ok(comm) => {
                    if let Some(link) = SharedComm::new(Comm::World(comm), Threading::Multiple) {
                        let _ = LINK.set(link);
                    }
                    break;
                }
                Err(_) if over() => {
                    eprintln!(
                        "multiproc: the MPI worker ranks did not join the pool's \
                         communicator; aborting the job"
                    );
                    universe.world().abort(1);
                }
                Err(dup) => dup,
            };
            thread::sleep(Duration::from_millis(1));
        }
    }
    let Some(link) = LINK.get() else {
        return;
    };
    let comm = link.comm();
    for r in comm.workers() {
        comm.process_at_rank(r).send_with_tag(&stop[..], TAG_ORDER);
    }
    let mut ended = HashSet::new();
    let any = comm.any_process();
    // Nothing here decodes: no thread-local state is left to do it with.
    while ended.len() < comm.workers().len() {
        match any.immediate_matched_probe() {
            Some(probed) => {
                let (tag, from) = (probed.1.tag(), probed.1.source_rank());
                // A report still on its way is taken, so that its rank can go on to stop.
                drop(receive(probed, &REPORT_SPARES));
                if tag == TAG_ENDED {
                    ended.insert(from);
                }
            }
            // A dead worker never says it ended (its last word, sent before it exits,
            // would be there to probe by now).
            None if dead_worker(&ended).is_some() && any.immediate_probe().is_none() => {
                if let Some((rank, pid)) = dead_worker(&ended) {
                    end_for_dead_worker(rank, pid);
                }
            }
            None if over() => {
                // A rank still runs a task that does not end: the job cannot end cleanly.
                let left = comm.workers().len() - ended.len();
                eprintln!(
                    "multiproc: {left} MPI worker rank(s) still busy {STOP_WAIT:?} after \
                     the program ended; aborting the job"
                );
                universe.world().abort(1);
            }
            None => thread::sleep(Duration::from_millis(1)),
        }
    }
    drop(universe);
}

/// Starts `n` workers (the job's free slots, or this machine's CPUs, when `None`) with
/// `MPI_Comm_spawn`, once per process: the link to them. In a job of its own (no
/// launcher), the program asks MPI to place them even where there are more processes
/// than cores, as a local pool would: the count is the program's choice.
fn spawn_workers(n: Option<usize>, singleton: bool) -> Result<&'static SharedComm> {
    let _one = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(link) = LINK.get() {
        return Ok(link);
    }
    let slots = UNIVERSE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(Universe::size)
        .filter(|s| *s > 1)
        .map(|s| s - 1);
    let n = n.or(slots).unwrap_or_else(crate::process::cpu_count).max(1);
    let count = i32::try_from(n).map_err(|_| Error::state("too many MPI workers asked for"))?;
    // The workers run this same program: its load-time hook makes them serve.
    let exe = std::env::current_exe()?;
    let info: &[(&str, &str)] = if singleton {
        &[("map_by", ":OVERSUBSCRIBE")]
    } else {
        &[]
    };
    let inter = sysmpi::spawn(&exe, count, info).map_err(|e| {
        let hint = if singleton {
            "; as root, Open MPI needs OMPI_ALLOW_RUN_AS_ROOT=1 and \
             OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 in the environment; or start the program \
             with `mpirun -n N`, whose other ranks serve"
        } else {
            "; ask for fewer with `processes(n)`, or start the program with \
             `mpirun -n 1 --oversubscribe`, or with `mpirun -n N`, whose other ranks serve"
        };
        format!("cannot spawn {n} MPI worker(s): {e}{hint}")
    });
    let inter = match inter {
        Ok(inter) => inter,
        Err(why) if singleton => return Err(Error::state(why)),
        Err(why) => {
            // Open MPI's `mpirun` does not end once a spawn of its job has failed, even
            // after every process has: the job is ended here, as MPI's own error
            // handler would have, but saying what to try.
            eprintln!("multiproc: {why}; ending the MPI job");
            SimpleCommunicator::world().abort(1)
        }
    };
    let link = SharedComm::new(Comm::Spawned(inter), Threading::Multiple)
        .ok_or_else(|| Error::state("the spawned MPI workers cannot be shared"))?;
    let _ = LINK.set(link);
    let link = LINK
        .get()
        .ok_or_else(|| Error::state("the spawned MPI workers are not recorded"))?;
    // Each worker's pid, its first word (it has initialized MPI: the spawn waited).
    let any = link.comm().any_process();
    let deadline = crate::deadline::after(DUP_WAIT);
    let over = || crate::deadline::remaining(deadline).is_some_and(|d| d.is_zero());
    let spares = Spares::new();
    let mut pids = Vec::new();
    while pids.len() < link.comm().workers().len() {
        let Some((m, from)) = next_message(&any, TAG_PID, &spares, over) else {
            break;
        };
        if let Ok(pid) = <[u8; 4]>::try_from(&m[..]) {
            pids.push((from, u32::from_le_bytes(pid)));
        }
    }
    if singleton {
        let _ = WATCHED.set(pids);
    }
    Ok(link)
}

/// How an MPI pool runs.
pub(crate) struct Spec {
    /// The most worker ranks to use; all of them when `None`.
    pub(crate) ranks: Option<usize>,
    pub(crate) initializer: Option<SharedInit>,
    /// A job running longer than this fails with `Error::Timeout`.
    pub(crate) task_timeout: Option<Duration>,
}

/// What a rank runs for a job: its `Run` order, sealed once, so that the same message
/// goes to whichever rank runs it.
pub(crate) type Work = Arc<Vec<u8>>;

struct Rank {
    rank: i32,
    /// Jobs given to it that it has not reported on, in the order given.
    holding: VecDeque<u64>,
    /// Since when the first job it holds has been its current one.
    running_since: Instant,
    /// It runs a job that went over its time; it gets nothing more until it reports.
    overdue: bool,
}

/// The ranks, kept with the jobs under one lock.
pub(crate) struct Ranks {
    ranks: Vec<Rank>,
    /// The handler thread has ended.
    stopped: bool,
}

type State = super::State<Ranks, Work>;

/// The MPI pool's side on rank 0.
pub(crate) struct Core {
    link: &'static SharedComm,
    task_timeout: Option<Duration>,
    /// The jobs, and the ranks with them.
    pub(crate) jobs: Arc<Jobs<Ranks, Work>>,
    /// A sending thread per rank, by rank.
    senders: Mutex<HashMap<i32, Sender<Arc<Vec<u8>>>>>,
}

impl Core {
    /// Takes the worker ranks and starts the pool's threads; the core and the number of
    /// ranks it uses.
    pub(crate) fn start(spec: Spec) -> Result<(Arc<Core>, usize)> {
        // Keeps the hook in every program that builds an MPI pool.
        std::hint::black_box(ON_LOAD);
        let world = world()?;
        if world.rank != 0 {
            return Err(Error::state("only rank 0 of an MPI job runs an MPI pool"));
        }
        if world.threading != Threading::Multiple {
            return Err(Error::state(
                "the MPI library does not support threads (MPI_THREAD_MULTIPLE), which \
                 the MPI pool needs",
            ));
        }
        let init = match &spec.initializer {
            Some(i) if !i.0.fds.is_empty() => {
                return Err(Error::state(
                    "an MPI pool's initializer cannot take handles (queues, locks): they \
                     do not cross machines",
                ));
            }
            Some(i) => Some(Arc::new(message(
                &Order::Init { entry: i.0.entry },
                &i.0.bytes,
            )?)),
            None => None,
        };
        let link = match link_to_ranks() {
            Some(link) => link?,
            None => spawn_workers(spec.ranks, world.singleton)?,
        };
        let available = link.comm().workers().len();
        let used = spec.ranks.map_or(available, |n| n.min(available));
        if IN_USE
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::state(
                "the MPI worker ranks serve another pool: one MPI pool at a time",
            ));
        }
        let ranks: Vec<i32> = link.comm().workers().take(used).collect();
        let own = Ranks {
            ranks: ranks
                .iter()
                .map(|&rank| Rank {
                    rank,
                    holding: VecDeque::new(),
                    running_since: Instant::now(),
                    overdue: false,
                })
                .collect(),
            stopped: false,
        };
        let started = Jobs::start(own, "multiproc-mpi-callbacks").and_then(|jobs| {
            let core = Arc::new(Core {
                link,
                task_timeout: spec.task_timeout,
                jobs,
                senders: Mutex::new(HashMap::new()),
            });
            core.start_threads(&ranks, init)?;
            Ok(core)
        });
        let core = match started {
            Ok(core) => core,
            Err(e) => {
                IN_USE.store(false, Ordering::Release);
                return Err(e);
            }
        };
        Ok((core, used))
    }

    fn start_threads(self: &Arc<Self>, ranks: &[i32], init: Option<Arc<Vec<u8>>>) -> Result<()> {
        let hello = Arc::new(message(
            &Order::Hello {
                identity: image::code_identity(),
            },
            &[],
        )?);
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        for &rank in ranks {
            let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>();
            let link = self.link;
            thread::Builder::new()
                .name(format!("multiproc-mpi-send-{rank}"))
                .spawn(move || {
                    let to = link.comm().process_at_rank(rank);
                    for m in rx {
                        if while_open(|| to.send_with_tag(&m[..], TAG_ORDER)).is_none() {
                            return;
                        }
                    }
                })?;
            // Rank 0's build, then the initializer: a rank runs its orders in the order
            // sent.
            let _ = tx.send(hello.clone());
            if let Some(init) = &init {
                let _ = tx.send(init.clone());
            }
            senders.insert(rank, tx);
        }
        drop(senders);
        let handler = self.clone();
        thread::Builder::new()
            .name("multiproc-mpi-handler".into())
            .spawn(move || handler.handle())?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.jobs.lock()
    }

    fn send(&self, rank: i32, m: Arc<Vec<u8>>) -> bool {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.get(&rank).is_some_and(|tx| tx.send(m).is_ok())
    }

    /// Adds a job; its id. `Err` once the pool is closed or broken.
    pub(crate) fn submit(
        &self,
        entry: u64,
        args: Vec<u8>,
        sink: Sink,
        callback: bool,
    ) -> Result<u64> {
        // Sealed before the lock is taken: the header goes after the chunk, in the
        // room its vector has.
        let id = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
        let order = Arc::new(seal(&Order::Run { job: id, entry }, args)?);
        let mut st = self.lock();
        st.book.add(id, order, sink, callback)?;
        self.dispatch(&mut st);
        Ok(id)
    }

    /// Gives pending jobs to ranks with room, the least busy first.
    fn dispatch(&self, st: &mut State) {
        let State { book, own } = st;
        while let Some((id, order)) = book.next_pending() {
            let Some(r) = own
                .ranks
                .iter_mut()
                .filter(|r| !r.overdue && r.holding.len() < IN_FLIGHT)
                .min_by_key(|r| r.holding.len())
            else {
                return;
            };
            let m = order.clone();
            let rank = r.rank;
            if r.holding.is_empty() {
                r.running_since = Instant::now();
            }
            r.holding.push_back(id);
            book.taken();
            if !self.send(rank, m) {
                // Its sending thread is gone: the pool is ending.
                book.finish(id, Err(Error::Cancelled));
            }
        }
    }

    /// The handler thread: reports, timeouts and dispatch, until the pool ends.
    fn handle(self: Arc<Self>) {
        let any = self.link.comm().any_process();
        let mut last_check = Instant::now();
        let next = |tag| {
            while_open(|| {
                any.immediate_matched_probe_with_tag(tag)
                    .map(|p| receive(p, &REPORT_SPARES))
            })
            .flatten()
        };
        loop {
            let report = next_message(&any, TAG_REPORT, &REPORT_SPARES, || {
                last_check.elapsed() >= TICK
            });
            if !*MPI_OPEN.read().unwrap_or_else(|e| e.into_inner()) {
                // The program is exiting with this pool alive: it ends as if terminated.
                self.terminate();
            }
            let mut st = self.lock();
            if let Some((m, from)) = report {
                self.take_report(&mut st, m, from);
                while let Some((m, from)) = next(TAG_REPORT) {
                    self.take_report(&mut st, m, from);
                }
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                if let Some((rank, pid)) = dead_worker(&HashSet::new()) {
                    end_for_dead_worker(rank, pid);
                }
                self.check_time(&mut st);
                while let Some((why, _)) = next(TAG_REFUSED) {
                    st.book
                        .break_pool(String::from_utf8_lossy(&why).into_owned());
                }
            }
            self.dispatch(&mut st);
            let stop = st.book.terminated || (st.book.closed && st.book.is_empty());
            self.jobs.release(st);
            if stop {
                // The sending threads end once their orders are out.
                self.senders
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                self.jobs.stop_callbacks();
                // The ranks are free before `join` returns: a new pool may take them.
                IN_USE.store(false, Ordering::Release);
                self.lock().own.stopped = true;
                self.jobs.notify();
                return;
            }
        }
    }

    /// Takes in one report from rank `from` (state locked).
    fn take_report(&self, st: &mut State, m: Vec<u8>, from: i32) {
        let Ok((report, body)) = open::<Report>(m) else {
            return;
        };
        match report {
            Report::Done { job, outcome, .. } => {
                if let Some(r) = st.own.ranks.iter_mut().find(|r| r.rank == from) {
                    if r.holding.front() == Some(&job) {
                        r.running_since = Instant::now();
                        r.overdue = false;
                    }
                    r.holding.retain(|j| *j != job);
                }
                let outcome = match outcome {
                    Ok(()) => Ok(Outcome {
                        report: body,
                        start: 0,
                        recycle: Some(recycle_report),
                    }),
                    Err(failure) => {
                        REPORT_SPARES.give(body);
                        Err(Error::from(failure))
                    }
                };
                st.book.finish(job, outcome);
            }
            Report::InitFailed { failure, .. } => {
                let why = format!("its initializer failed: {}", Error::from(failure));
                st.book.break_pool(why);
            }
            Report::Retiring { .. } | Report::Ended { .. } => {}
        }
    }

    /// Fails the jobs over their time: the rank keeps running its own (it cannot be
    /// stopped alone), and the jobs it had not started go to the other ranks.
    fn check_time(&self, st: &mut State) {
        let Some(limit) = self.task_timeout else {
            return;
        };
        let mut lapsed = Vec::new();
        for r in st.own.ranks.iter_mut() {
            if r.overdue || r.running_since.elapsed() <= limit {
                continue;
            }
            let Some(&first) = r.holding.front() else {
                continue;
            };
            r.overdue = true;
            let waiting: Vec<u64> = r.holding.drain(1..).collect();
            lapsed.push((r.rank, first, waiting));
        }
        for (rank, first, waiting) in lapsed {
            st.book.finish(first, Err(Error::Timeout));
            if waiting.is_empty() {
                continue;
            }
            if let Ok(m) = message(
                &Order::Cancel {
                    jobs: waiting.clone(),
                },
                &[],
            ) {
                self.send(rank, Arc::new(m));
            }
            for id in waiting.into_iter().rev() {
                st.book.requeue(id);
            }
        }
    }

    /// Stops at once: every job not done fails with `Error::Cancelled`, and the ranks
    /// drop the jobs they hold and have not started (one running goes on to its end,
    /// its outcome ignored).
    pub(crate) fn terminate(&self) {
        let mut st = self.lock();
        st.book.terminate();
        let held: Vec<(i32, Vec<u64>)> = st
            .own
            .ranks
            .iter_mut()
            .filter(|r| !r.holding.is_empty())
            .map(|r| (r.rank, r.holding.drain(..).collect()))
            .collect();
        for (rank, jobs) in held {
            if let Ok(m) = message(&Order::Cancel { jobs }, &[]) {
                self.send(rank, Arc::new(m));
            }
        }
        self.jobs.release(st);
    }

    /// Waits until the pool has ended (after `close` or `terminate`): every job done and
    /// every callback run.
    pub(crate) fn join(&self) -> Result<()> {
        self.jobs.join(|own| own.stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_to_its_header_and_body() {
        let m = seal(&Order::Run { job: 7, entry: 99 }, b"chunk bytes".to_vec()).unwrap();
        let (head, body) = open::<Order>(m).unwrap();
        assert!(matches!(head, Order::Run { job: 7, entry: 99 }));
        assert_eq!(body, b"chunk bytes");
        let (head, body) = open::<Order>(message(&Order::Stop, &[]).unwrap()).unwrap();
        assert!(matches!(head, Order::Stop));
        assert!(body.is_empty());
    }

    #[test]
    fn a_message_with_a_corrupt_or_missing_trailer_is_a_decode_error() {
        let good = seal(&Order::Run { job: 1, entry: 2 }, vec![5; 64]).unwrap();
        let n = good.len();
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), vec![1, 2, 3], good[..n - 1].to_vec()];
        // Header lengths past the message, and one that puts the header inside the body.
        for len in [u32::MAX, n as u32, (n - 3) as u32, 1] {
            let mut m = good.clone();
            m[n - 4..].copy_from_slice(&len.to_le_bytes());
            cases.push(m);
        }
        for m in cases {
            let len = m.len();
            assert!(
                matches!(open::<Order>(m), Err(Error::Decode(_))),
                "a message of {len} bytes"
            );
        }
    }

    #[test]
    fn a_body_too_long_for_one_mpi_message_is_an_encode_error() {
        // Zeroed memory of this size is mapped on first touch, and the check comes
        // before any byte is written.
        let body = vec![0u8; MAX_MESSAGE];
        assert!(matches!(
            seal(&Order::Run { job: 1, entry: 2 }, body),
            Err(Error::Encode(_))
        ));
    }
}

//! What passes between a parent and a new child: the [`Task`] it is told, the entries
//! that run a target, and the [`Outcome`] it reports back.
//!
//! An entry is a monomorphised function, one per target type, reached through its
//! [`EntryRecord`]: a compile-time record that the child finds by offset and checks
//! before anything is called (see `sys::image`).

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{ExitCode, Termination};
use std::sync::Once;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connection::{Connection, MappedBytes};
use crate::process::target::{Run, Target};
use crate::sys::image::{self, EntryRecord, ExeId};
use crate::wire::codec;

/// Environment marker of a spawned child; its value names the bootstrap descriptor.
pub(crate) const SPAWN_ENV: &str = "MULTIPROC_SPAWN_FD";
/// Environment marker of the fork server; its value names its socket's descriptor.
pub(crate) const FORKSERVER_ENV: &str = "MULTIPROC_FORKSERVER_FD";

/// An entry of this binary, as the parent names it.
pub(crate) type Entry = &'static EntryRecord<Connection>;

/// A new process's entry is handed the channel to its parent.
impl image::EntryContext for Connection {
    const KIND: u64 = u64::from_le_bytes(*b"process\0");
}

/// Everything a child needs to become the requested process.
#[derive(Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) exe: ExeId,
    pub(crate) entry: u64,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) identity: Vec<u32>,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    /// Last: large arguments are then the run of bytes that ends the message, which the
    /// decoded task keeps in the buffer it was received into.
    pub(crate) args: Vec<u8>,
}

/// What a child reports when its target ends.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    /// The target returned this value.
    Returned(R),
    /// The target panicked.
    Panicked {
        message: String,
        location: Option<String>,
    },
    /// The target never ran.
    Failed(String),
}

impl<R> Outcome<R> {
    fn exitcode(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked { .. } | Outcome::Failed(_) => 1,
        }
    }
}

/// The channel between a parent and a child it started, on either side. Arguments and
/// results are the program's own data, so no size limit applies beyond memory: a body's
/// buffer takes memory only as its bytes arrive, and a length the allocator cannot
/// serve is an error.
pub(crate) fn process_channel(fd: OwnedFd) -> Connection {
    let conn = Connection::new(fd, true, true);
    conn.set_max_message_size(usize::MAX);
    conn
}

/// Sends `outcome` to the parent; returns the exit code that goes with it.
pub(crate) fn report<R: Serialize>(conn: &Connection, outcome: Outcome<R>) -> i32 {
    let code = outcome.exitcode();
    if let Err(e) = conn.send(&outcome) {
        // The result itself may be what failed to encode: say so instead.
        if matches!(e, crate::Error::Encode(_)) {
            let _ = conn.send(&Outcome::<()>::Failed(format!(
                "cannot encode the result: {e}"
            )));
            return 1;
        }
    }
    code
}

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records where a panic happened, then lets the previous hook print it as usual.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let loc = info.location().map(|l| l.to_string());
            PANIC_LOCATION.with(|p| *p.borrow_mut() = loc);
            previous(info);
        }));
    });
}

fn panic_outcome<R>(payload: Box<dyn std::any::Any + Send>) -> Outcome<R> {
    let (message, location) = panic_parts(payload);
    Outcome::Panicked { message, location }
}

/// A caught panic's message, and where it happened when the hook of
/// [`install_panic_hook`] saw it.
pub(crate) fn panic_parts(payload: Box<dyn std::any::Any + Send>) -> (String, Option<String>) {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let location = PANIC_LOCATION.with(|p| p.borrow_mut().take());
    (message, location)
}

fn decode_args<A: DeserializeOwned>(args: Vec<u8>, fds: Vec<OwnedFd>) -> Result<A, String> {
    codec::decode_owned(args, 0, fds).map_err(|e| format!("cannot decode the arguments: {e}"))
}

/// The exit status a `main` returning `r` would have (`Err` prints itself and is 1).
fn status_of<R: Termination>(r: R) -> i32 {
    let code = r.report();
    if code == ExitCode::SUCCESS {
        return 0;
    }
    // ExitCode keeps its number private; find it among the 8-bit statuses.
    (1..=255u8)
        .find(|n| code == ExitCode::from(*n))
        .map_or(1, i32::from)
}

/// The entry for `Process::new`: the target's value decides the exit code, as `main`'s does.
pub(crate) fn discard_entry<F, A, R>() -> Entry
where
    F: Target<A, R>,
    A: DeserializeOwned + 'static,
    R: Termination + 'static,
{
    const { &EntryRecord::new(entry_discard::<F, A, R>) }
}

/// The entry for `spawn`: the target's value goes back to the parent.
pub(crate) fn return_entry<F, A, R>() -> Entry
where
    F: Target<A, R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    const { &EntryRecord::new(entry_return::<F, A, R>) }
}

/// The entry for `Process::from_run`: the object travels as the argument and runs itself.
pub(crate) fn run_entry<T: Run>() -> Entry {
    const { &EntryRecord::new(entry_run::<T>) }
}

fn entry_discard<F, A, R>(args: Vec<u8>, fds: Vec<OwnedFd>, conn: &Connection) -> i32
where
    F: Target<A, R>,
    A: DeserializeOwned,
    R: Termination,
{
    let a: A = match decode_args(args, fds) {
        Ok(a) => a,
        Err(msg) => return report(conn, Outcome::<()>::Failed(msg)),
    };
    let f = image::summon::<F>();
    match catch_unwind(AssertUnwindSafe(move || status_of(f(a)))) {
        Ok(status) => {
            report(conn, Outcome::Returned(()));
            status
        }
        Err(p) => report(conn, panic_outcome::<()>(p)),
    }
}

fn entry_return<F, A, R>(args: Vec<u8>, fds: Vec<OwnedFd>, conn: &Connection) -> i32
where
    F: Target<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let a: A = match decode_args(args, fds) {
        Ok(a) => a,
        Err(msg) => return report(conn, Outcome::<()>::Failed(msg)),
    };
    let f = image::summon::<F>();
    match catch_unwind(AssertUnwindSafe(move || f(a))) {
        Ok(r) => report(conn, Outcome::Returned(r)),
        Err(p) => report(conn, panic_outcome::<()>(p)),
    }
}

fn entry_run<T: Run>(args: Vec<u8>, fds: Vec<OwnedFd>, conn: &Connection) -> i32 {
    let obj: T = match decode_args(args, fds) {
        Ok(o) => o,
        Err(msg) => return report(conn, Outcome::<()>::Failed(msg)),
    };
    match catch_unwind(AssertUnwindSafe(move || obj.run())) {
        Ok(()) => report(conn, Outcome::Returned(())),
        Err(p) => report(conn, panic_outcome::<()>(p)),
    }
}

/// Sends a request (a task, whose body is `body` then `rest`) with any number of
/// descriptors: the first frame carries the count, the body and as many descriptors as
/// one message can; further empty frames carry the rest (one message holds at most
/// `MAX_FDS_PER_MESSAGE`).
pub(crate) fn send_request(
    conn: &Connection,
    body: &[u8],
    rest: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> crate::Result<()> {
    let count = u32::try_from(fds.len())
        .map_err(|_| crate::Error::InvalidArgument("too many handles in one task".into()))?;
    let mut chunks = fds.chunks(crate::sys::fd::MAX_FDS_PER_MESSAGE);
    // Through the socket, where the child's copy out runs while this one copies in.
    conn.send_parts(
        &[&count.to_le_bytes(), body, rest],
        chunks.next().unwrap_or(&[]),
        false,
    )?;
    for chunk in chunks {
        conn.send_raw(&[], chunk)?;
    }
    Ok(())
}

/// A request's body as received (in the buffer it was read into, or the mapping of a
/// file from a peer that sent one).
pub(crate) struct Request(MappedBytes);

impl Request {
    /// Decodes the body [`send_request`] was given; a long run of bytes ending it stays
    /// in the buffer it was received into (see `codec::decode_owned`).
    pub(crate) fn decode<T: DeserializeOwned>(self) -> crate::Result<T> {
        self.0.decode_after(4)
    }
}

/// Receives what [`send_request`] sent: the body and all its descriptors.
pub(crate) fn recv_request(
    conn: &Connection,
    deadline: Option<std::time::Instant>,
) -> crate::Result<(Request, Vec<OwnedFd>)> {
    let (first, mut fds) = conn.recv_mapped(deadline)?;
    let Some(count) = first.get(..4) else {
        return Err(crate::Error::Decode("request without its header".into()));
    };
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    while fds.len() < count {
        let (rest, more) = conn.recv_raw(deadline)?;
        if !rest.is_empty() || more.is_empty() {
            return Err(crate::Error::Decode(
                "request continued with something else than its handles".into(),
            ));
        }
        fds.extend(more);
    }
    if fds.len() != count {
        return Err(crate::Error::Decode(
            "request carried more handles than it announced".into(),
        ));
    }
    Ok((Request(first), fds))
}

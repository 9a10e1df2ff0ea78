//! Unlinks the named segments a process created once that process is gone, even when it
//! was killed (Python's `multiprocessing.resource_tracker`).
//!
//! On the first named segment a process creates, it starts one helper process (with
//! `spawn`, so it holds nothing of its creator but one end of a connection). Every name
//! the process creates is registered with the helper before `create` returns, and is
//! unregistered when the process unlinks it. When the connection reaches end of stream
//! (the creator exited, normally or not), the helper unlinks every name still registered
//! and exits. Each name is registered with the identity (device and inode) of the file
//! created under it, and is unlinked only while it still names that file: a segment that
//! someone else created under the same name after ours was removed is not ours to remove.
//!
//! The helper leaves its creator's session and standard streams, so a Ctrl-C in the
//! terminal, which stops the creator, does not stop the cleanup. A child created with
//! `fork` inherits its parent's end of the connection (the kernel gives it every open
//! descriptor): the helper then also waits for that child before it cleans up. A child
//! that creates named segments itself starts a helper of its own.

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connection::{Connection, pipe};
use crate::error::{Error, Result};
use crate::process::{Process, StartMethod};
use crate::sys::forklocal::ForkLocal;
use crate::sys::proc as sysproc;
use crate::sys::shm::{FileId, Region, detach_helper_process};

/// How long a registration may wait for the helper's answer (it answers in microseconds;
/// this only bounds a helper that was stopped).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

const ACK: u8 = 0x5a;

#[derive(Serialize, Deserialize)]
enum Request {
    /// Unlink these names, while they name these files, when the connection ends;
    /// answered with [`ACK`].
    Register(Vec<(String, FileId)>),
    /// Forget this name (it was unlinked, or its owner keeps it); not answered.
    Unregister(String),
}

struct Helper {
    conn: Connection,
    process: Process,
}

impl Helper {
    fn start() -> Result<Helper> {
        let (conn, theirs) = pipe(true)?;
        let mut process = Process::new(run, theirs)
            .name("multiproc-shm-tracker")
            .start_method(StartMethod::Spawn);
        process.start_detached()?;
        Ok(Helper { conn, process })
    }

    fn register(&self, names: Vec<(String, FileId)>) -> Result<()> {
        self.conn.send(&Request::Register(names))?;
        match self.conn.recv_timeout::<u8>(ACK_TIMEOUT)? {
            ACK => Ok(()),
            other => Err(Error::Decode(format!(
                "unexpected answer {other} from the shared-memory tracker"
            ))),
        }
    }

    /// Stops a helper that failed us. It is killed first: closing the connection of a
    /// live helper would make it unlink names that are still in use.
    fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.join_timeout(ACK_TIMEOUT);
    }
}

struct State {
    helper: Option<Helper>,
    /// Every name registered, to hand to a new helper if one has to be started again.
    names: BTreeMap<String, FileId>,
}

static STATE: ForkLocal<State> = ForkLocal::new(|| State {
    helper: None,
    names: BTreeMap::new(),
});

/// The process whose state [`STATE`] holds (0: none yet); with [`BUSY`] while it is
/// being set up.
static OWNER: AtomicU32 = AtomicU32::new(0);
const BUSY: u32 = 1 << 31;

/// The tracker state of this process. State inherited through a `fork` (from however
/// the fork was made) belongs to the parent: the child starts afresh, leaving the
/// inherited state untouched (its lock may be held by a thread that does not exist here).
fn state() -> MutexGuard<'static, State> {
    let me = sysproc::getpid();
    loop {
        let seen = OWNER.load(Ordering::Acquire);
        if seen == me {
            return STATE.lock();
        }
        if seen == me | BUSY {
            std::thread::yield_now();
            continue;
        }
        if OWNER
            .compare_exchange(seen, me | BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            STATE.reset_after_fork();
            OWNER.store(me, Ordering::Release);
            return STATE.lock();
        }
    }
}

/// Registers `name`, the file `id`, for cleanup after this process ends; returns once
/// the helper has recorded it (starting the helper if needed).
pub(crate) fn register(name: &str, id: FileId) -> Result<()> {
    let mut st = state();
    st.names.insert(name.to_string(), id);
    let mut outcome = Err(Error::Closed);
    for _ in 0..2 {
        let fresh = st.helper.is_none();
        if fresh {
            match Helper::start() {
                Ok(h) => st.helper = Some(h),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let names = if fresh {
            st.names.iter().map(|(n, id)| (n.clone(), *id)).collect()
        } else {
            vec![(name.to_string(), id)]
        };
        let Some(helper) = &st.helper else { break };
        outcome = helper.register(names);
        if outcome.is_ok() {
            break;
        }
        // The helper died or hangs: replace it, handing every name to the new one.
        if let Some(h) = st.helper.take() {
            h.stop();
        }
    }
    if outcome.is_err() {
        st.names.remove(name);
    }
    outcome
}

/// Forgets `name`: it was unlinked, or it must outlive this process.
pub(crate) fn unregister(name: &str) {
    let mut st = state();
    if st.names.remove(name).is_none() {
        return;
    }
    let failed = st
        .helper
        .as_ref()
        .is_some_and(|h| h.conn.send(&Request::Unregister(name.to_string())).is_err());
    if failed && let Some(h) = st.helper.take() {
        h.stop();
    }
}

/// The helper process.
fn run(conn: Connection) {
    detach_helper_process();
    let mut names = BTreeMap::new();
    loop {
        match conn.recv::<Request>() {
            Ok(Request::Register(list)) => {
                names.extend(list);
                if conn.send(&ACK).is_err() {
                    break;
                }
            }
            Ok(Request::Unregister(name)) => {
                names.remove(&name);
            }
            // End of stream: the creator (and every process sharing its end) is gone.
            Err(_) => break,
        }
    }
    for (name, id) in &names {
        let _ = Region::unlink_if(name, *id);
    }
}

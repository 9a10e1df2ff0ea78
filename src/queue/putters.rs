//! Who could still put: a table, in the queue's segment, of the processes that hold
//! handles, so that a consumer of an empty queue can tell that nothing will ever come.
//!
//! Each process that holds handles has a slot: its pid, start time and PID namespace,
//! the number of its open handles, and the number of handles it sent in messages that
//! have not been received yet (a handle on its way to a child must count, or a parent
//! that sends the queue and closes its own handle would find no producer left before
//! the child has started). A consumer counts a slot as a producer unless its counts are
//! zero or its process is *known* to be dead; "unknown" (another PID namespace, `/proc`
//! unreadable) counts as alive.
//!
//! Slots are claimed with a compare-and-swap of the owner word, which moves through a
//! `CLAIMING` state while the claimer writes the rest; a slot whose process is known to
//! be dead is taken over the same way. A process that finds no slot counts its handles
//! in `untracked`, and then consumers never conclude that no producer is left.
//!
//! A handle sent in a message that is never received (its receiver died first) keeps
//! counting until its sender dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::ring::PUTTERS_AT;
use crate::sys::liveness::{self, Identity, Owner, Watch};
use crate::sys::shm::Region;

const SLOTS: usize = 256;
const SLOT_BYTES: usize = 32;
// A slot: owner (pid << 32 | generation), open handles, handles in flight, start time,
// namespace.
const OWNER: usize = 0;
const HANDLES: usize = 8;
const IN_FLIGHT: usize = 12;
const START: usize = 16;
const NS: usize = 24;
const UNTRACKED_AT: usize = PUTTERS_AT + SLOTS * SLOT_BYTES;

/// The pid field of a slot being claimed (no pid is that large).
const CLAIMING: u32 = u32::MAX;

fn pid_of(owner: u64) -> u32 {
    (owner >> 32) as u32
}

/// Where a handle counts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// In slot `index`, owned as `owner` (the owner word when it was claimed).
    Slot { index: usize, owner: u64 },
    /// In the `untracked` count.
    Untracked,
}

/// The table of a queue's segment.
#[derive(Clone, Debug)]
pub(crate) struct Putters {
    region: Arc<Region>,
}

impl Putters {
    /// The table of `region` (a queue's segment, checked by `Ring::attach`).
    pub(crate) fn new(region: Arc<Region>) -> Putters {
        Putters { region }
    }

    fn u64_at(&self, i: usize, field: usize) -> &AtomicU64 {
        self.region.atomic_u64(PUTTERS_AT + i * SLOT_BYTES + field)
    }

    fn u32_at(&self, i: usize, field: usize) -> &AtomicU32 {
        &self
            .region
            .atomics::<1>(PUTTERS_AT + i * SLOT_BYTES + field)[0]
    }

    fn untracked(&self) -> &AtomicU32 {
        &self.region.atomics::<1>(UNTRACKED_AT)[0]
    }

    fn identity(&self, i: usize, owner: u64) -> Identity {
        let pid = pid_of(owner);
        Identity {
            tid: pid,
            pid,
            start: self.u64_at(i, START).load(Ordering::Acquire),
            ns: self.u32_at(i, NS).load(Ordering::Acquire),
        }
    }

    /// This process's slot, claimed if it has none.
    fn my_slot(&self) -> Option<(usize, u64)> {
        let me = liveness::me().id;
        let mine = Identity { tid: me.pid, ..me };
        for i in 0..SLOTS {
            let owner = self.u64_at(i, OWNER).load(Ordering::Acquire);
            if owner != 0 && self.identity(i, owner) == mine {
                return Some((i, owner));
            }
        }
        // A free slot, else one whose process is known to be dead.
        for take_dead in [false, true] {
            for i in 0..SLOTS {
                let owner = self.u64_at(i, OWNER).load(Ordering::Acquire);
                let free = owner == 0;
                let dead = !free
                    && pid_of(owner) != CLAIMING
                    && take_dead
                    && Watch::new(Owner::Recorded(self.identity(i, owner))).owner_dead();
                if (free || dead)
                    && let Some(claimed) = self.claim(i, owner, me)
                {
                    return Some((i, claimed));
                }
            }
        }
        None
    }

    /// Claims slot `i`, seen holding `owner`; `None` if someone else changed it first.
    fn claim(&self, i: usize, owner: u64, me: Identity) -> Option<u64> {
        let generation = (owner as u32).wrapping_add(1);
        let claiming = (u64::from(CLAIMING) << 32) | u64::from(generation);
        self.u64_at(i, OWNER)
            .compare_exchange(owner, claiming, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // A dead process's counts go with it (a ticket it sent names its owner word,
        // which no longer matches).
        self.u32_at(i, HANDLES).store(0, Ordering::Relaxed);
        self.u32_at(i, IN_FLIGHT).store(0, Ordering::Relaxed);
        self.u64_at(i, START).store(me.start, Ordering::Relaxed);
        self.u32_at(i, NS).store(me.ns, Ordering::Relaxed);
        let mine = (u64::from(me.pid) << 32) | u64::from(generation);
        self.u64_at(i, OWNER).store(mine, Ordering::Release);
        Some(mine)
    }

    /// Counts one more open handle of this process.
    pub(crate) fn register(&self) -> Registration {
        match self.my_slot() {
            Some((index, owner)) => {
                self.u32_at(index, HANDLES).fetch_add(1, Ordering::AcqRel);
                Registration::Slot { index, owner }
            }
            None => {
                self.untracked().fetch_add(1, Ordering::AcqRel);
                Registration::Untracked
            }
        }
    }

    /// Counts one handle less (closed or dropped).
    pub(crate) fn unregister(&self, r: Registration) {
        let count = match r {
            Registration::Slot { index, owner } => {
                if self.u64_at(index, OWNER).load(Ordering::Acquire) != owner {
                    return;
                }
                self.u32_at(index, HANDLES)
            }
            Registration::Untracked => self.untracked(),
        };
        let _ = count.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Counts a handle leaving this process in a message (unless `repeat`: the same
    /// message encoded again), and returns the ticket its receiver hands back.
    pub(crate) fn send(&self, repeat: bool) -> (u32, u64) {
        match self.my_slot() {
            Some((index, owner)) => {
                if !repeat {
                    self.u32_at(index, IN_FLIGHT).fetch_add(1, Ordering::AcqRel);
                }
                (index as u32, owner)
            }
            // Untracked: consumers never conclude anyway.
            None => (u32::MAX, 0),
        }
    }

    /// Takes a received handle off its sender's count (after the receiver registered).
    pub(crate) fn received(&self, index: u32, owner: u64) {
        let index = index as usize;
        if index >= SLOTS || self.u64_at(index, OWNER).load(Ordering::Acquire) != owner {
            return;
        }
        let _ =
            self.u32_at(index, IN_FLIGHT)
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether any handle that could put may still exist: an open or travelling handle
    /// of a process not known to be dead.
    pub(crate) fn any_left(&self) -> bool {
        if self.untracked().load(Ordering::Acquire) != 0 {
            return true;
        }
        let me = liveness::me().id;
        let mine = Identity { tid: me.pid, ..me };
        (0..SLOTS).any(|i| {
            let owner = self.u64_at(i, OWNER).load(Ordering::Acquire);
            if owner == 0 || pid_of(owner) == CLAIMING {
                return false;
            }
            let open = self.u32_at(i, HANDLES).load(Ordering::Acquire);
            let travelling = self.u32_at(i, IN_FLIGHT).load(Ordering::Acquire);
            if open == 0 && travelling == 0 {
                return false;
            }
            let who = self.identity(i, owner);
            who == mine || !Watch::new(Owner::Recorded(who)).owner_dead()
        })
    }
}

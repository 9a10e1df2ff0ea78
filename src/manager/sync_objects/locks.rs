//! The server side of the managed locks and conditions: plain state under a std
//! `Mutex`, waiters on a `Condvar`. The holder of a lock is a thread of a client
//! ([`ThreadToken`]), and the connection it acquired through ([`ClientId`]): when that
//! connection goes, the hold goes with it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::wait::{Caller, ThreadToken, Waited, lock, no_such_method, wait_on};
use crate::deadline;
use crate::error::Error;
use crate::manager::{CallCx, CallError, ClientId, Served, decode_args, encode_reply};

/// The answer to an `acquire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Acquired {
    /// Taken; no holder vanished since the last `mark_consistent`.
    Clean,
    /// Taken, but a holder's client vanished while holding it (and nobody has marked
    /// the lock consistent since).
    OwnerDied,
    /// Not taken in time.
    Timeout,
    /// The calling thread already holds this non-recursive lock.
    AlreadyHeld,
}

/// Who holds a lock.
#[derive(Clone, Copy, Debug)]
struct Holder {
    thread: ThreadToken,
    /// The connection it was taken through: its end releases the lock.
    client: ClientId,
}

#[derive(Debug, Default)]
struct LockState {
    holder: Option<Holder>,
    /// Levels held (1 for a plain lock).
    depth: u32,
    /// A holder's client vanished holding the lock; cleared by `mark_consistent`.
    inconsistent: bool,
}

/// A lock or re-entrant lock living in the server.
#[derive(Debug)]
pub(super) struct LockCore {
    recursive: bool,
    state: Mutex<LockState>,
    freed: Condvar,
}

/// The error for a call by a thread that does not hold the lock.
fn not_held(what: &str) -> CallError {
    Error::state(format!("{what} a lock this thread does not hold")).into()
}

impl LockCore {
    pub(super) fn new(recursive: bool) -> LockCore {
        LockCore {
            recursive,
            state: Mutex::new(LockState::default()),
            freed: Condvar::new(),
        }
    }

    /// Takes the lock for `thread` (at `depth` levels, `None`: one more level), waiting
    /// until `deadline`.
    fn take(
        &self,
        thread: ThreadToken,
        depth: Option<u32>,
        deadline: Option<Instant>,
        caller: &Caller<'_>,
    ) -> Result<Acquired, CallError> {
        let mut st = lock(&self.state);
        if st.holder.is_some_and(|h| h.thread == thread) {
            if !self.recursive {
                return Ok(Acquired::AlreadyHeld);
            }
            st.depth = match depth {
                Some(d) => d,
                None => st
                    .depth
                    .checked_add(1)
                    .ok_or_else(|| CallError::from(Error::state("RLock held too deep")))?,
            };
            return Ok(Acquired::Clean);
        }
        let (mut st, waited) = wait_on(st, &self.freed, deadline, caller, |s| s.holder.is_none());
        match waited {
            Waited::Ready => {
                st.holder = Some(Holder {
                    thread,
                    client: caller.client,
                });
                st.depth = depth.unwrap_or(1);
                Ok(if st.inconsistent {
                    Acquired::OwnerDied
                } else {
                    Acquired::Clean
                })
            }
            // Nobody reads the answer of a gone client.
            Waited::TimedOut | Waited::Gone => Ok(Acquired::Timeout),
        }
    }

    fn acquire(
        &self,
        thread: ThreadToken,
        timeout: Option<Duration>,
        caller: &Caller<'_>,
    ) -> Result<Acquired, CallError> {
        self.take(thread, None, timeout.and_then(deadline::after), caller)
    }

    fn release(&self, thread: ThreadToken) -> Result<(), CallError> {
        let mut st = lock(&self.state);
        match st.holder {
            Some(h) if h.thread == thread => {}
            _ => return Err(not_held("release of")),
        }
        st.depth = st.depth.saturating_sub(1);
        if st.depth == 0 {
            st.holder = None;
            drop(st);
            self.freed.notify_one();
        }
        Ok(())
    }

    /// Releases every level `thread` holds; the depth it held.
    fn release_all(&self, thread: ThreadToken) -> Result<u32, CallError> {
        let mut st = lock(&self.state);
        match st.holder {
            Some(h) if h.thread == thread => {}
            _ => return Err(not_held("wait on a condition whose lock is")),
        }
        let depth = std::mem::take(&mut st.depth);
        st.holder = None;
        drop(st);
        self.freed.notify_one();
        Ok(depth.max(1))
    }

    fn check_held(&self, thread: ThreadToken, what: &str) -> Result<(), CallError> {
        match lock(&self.state).holder {
            Some(h) if h.thread == thread => Ok(()),
            _ => Err(not_held(what)),
        }
    }

    fn mark_consistent(&self, thread: ThreadToken) -> Result<(), CallError> {
        let mut st = lock(&self.state);
        match st.holder {
            Some(h) if h.thread == thread => {
                st.inconsistent = false;
                Ok(())
            }
            _ => Err(not_held("mark_consistent on")),
        }
    }

    fn is_locked(&self) -> bool {
        lock(&self.state).holder.is_some()
    }

    fn depth(&self) -> u32 {
        let st = lock(&self.state);
        if st.holder.is_some() { st.depth } else { 0 }
    }

    /// `client` is gone: a hold taken through it ends, and the lock is marked.
    pub(super) fn client_gone(&self, client: ClientId) {
        let mut st = lock(&self.state);
        if st.holder.is_some_and(|h| h.client == client) {
            st.holder = None;
            st.depth = 0;
            st.inconsistent = true;
            drop(st);
            self.freed.notify_one();
        }
    }

    /// The lock methods shared by `Lock`, `RLock` and `Condition`; `None` for another.
    fn call_lock(
        &self,
        method: &str,
        args: &[u8],
        caller: &Caller<'_>,
    ) -> Option<Result<Vec<u8>, CallError>> {
        Some(match method {
            "acquire" => decode_args(args)
                .and_then(|(thread, timeout)| self.acquire(thread, timeout, caller))
                .and_then(|r| encode_reply(&r)),
            "release" => decode_args(args)
                .and_then(|(thread,)| self.release(thread))
                .and_then(|()| encode_reply(&())),
            "mark_consistent" => decode_args(args)
                .and_then(|(thread,)| self.mark_consistent(thread))
                .and_then(|()| encode_reply(&())),
            "locked" => encode_reply(&self.is_locked()),
            "recursion_depth" => encode_reply(&self.depth()),
            _ => return None,
        })
    }
}

/// The locks a condition may be made on, by key (see [`LockObject::key`]): the server's
/// object table holds `dyn Served` objects, which a condition could not use as locks.
/// Only references that do not keep a lock alive; each lock takes its key out when it
/// goes.
static BY_KEY: Mutex<Vec<(u64, Weak<LockCore>)>> = Mutex::new(Vec::new());

/// `Lock` or `RLock` as a served object.
pub(super) struct LockObject {
    core: Arc<LockCore>,
    /// The key a condition finds this lock by, once one was asked for.
    key: OnceLock<u64>,
}

impl LockObject {
    pub(super) fn new(recursive: bool) -> LockObject {
        LockObject {
            core: Arc::new(LockCore::new(recursive)),
            key: OnceLock::new(),
        }
    }

    /// A key that names this lock in [`lock_by_key`], random so that it names nothing
    /// else (a stale key, of a lock freed since, finds nothing).
    fn key(&self) -> Result<u64, CallError> {
        if let Some(k) = self.key.get() {
            return Ok(*k);
        }
        let mut bytes = [0; 8];
        crate::sys::net::random_bytes(&mut bytes).map_err(|e| CallError::from(Error::from(e)))?;
        let mut table = lock(&BY_KEY);
        let key = *self.key.get_or_init(|| u64::from_le_bytes(bytes));
        if !table.iter().any(|(k, _)| *k == key) {
            table.push((key, Arc::downgrade(&self.core)));
        }
        Ok(key)
    }
}

impl Drop for LockObject {
    fn drop(&mut self) {
        if let Some(key) = self.key.get() {
            lock(&BY_KEY).retain(|(k, _)| k != key);
        }
    }
}

/// The managed lock a condition was asked to use, by the key its proxy got.
pub(super) fn lock_by_key(key: u64) -> Result<Arc<LockCore>, CallError> {
    lock(&BY_KEY)
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
        .ok_or_else(|| {
            Error::InvalidArgument("the lock of this condition is not in this manager".into())
                .into()
        })
}

impl Served for LockObject {
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        if method == "condition_key" {
            return self.key().and_then(|k| encode_reply(&k));
        }
        let typeid = if self.core.recursive { "RLock" } else { "Lock" };
        self.core
            .call_lock(method, args, &Caller::of(cx))
            .unwrap_or_else(|| Err(no_such_method(typeid, method)))
    }

    fn client_gone(&self, client: ClientId) {
        self.core.client_gone(client);
    }
}

/// The answer to a condition's `wait`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct CondWaited {
    /// Notified (false: the timeout passed).
    pub(super) notified: bool,
    /// The lock was taken back from a vanished holder.
    pub(super) owner_died: bool,
}

#[derive(Debug, Default)]
struct Waiters {
    next_ticket: u64,
    /// Waiting threads, oldest first: ticket and whether a notify picked it.
    queue: VecDeque<(u64, bool)>,
}

impl Waiters {
    /// Marks up to `n` of the oldest waiters not yet notified; how many it marked.
    fn notify(&mut self, n: u64) -> u64 {
        let mut marked = 0;
        for (_, notified) in self.queue.iter_mut().filter(|(_, done)| !*done) {
            if marked == n {
                break;
            }
            *notified = true;
            marked += 1;
        }
        marked
    }

    fn is_notified(&self, ticket: u64) -> bool {
        self.queue.iter().any(|&(t, n)| t == ticket && n)
    }

    /// Takes `ticket` out; whether it had been notified.
    fn leave(&mut self, ticket: u64) -> bool {
        match self.queue.iter().position(|&(t, _)| t == ticket) {
            Some(i) => self.queue.remove(i).is_some_and(|(_, n)| n),
            None => false,
        }
    }
}

/// `Condition` as a served object: a lock of its own or a managed `Lock`/`RLock`
/// shared with its proxy, and the waiters.
pub(super) struct ConditionObject {
    lock: Arc<LockCore>,
    waiters: Mutex<Waiters>,
    woken: Condvar,
}

impl ConditionObject {
    pub(super) fn new(lock: Arc<LockCore>) -> ConditionObject {
        ConditionObject {
            lock,
            waiters: Mutex::new(Waiters::default()),
            woken: Condvar::new(),
        }
    }

    fn wait(
        &self,
        thread: ThreadToken,
        timeout: Option<Duration>,
        caller: &Caller<'_>,
    ) -> Result<CondWaited, CallError> {
        let deadline = timeout.and_then(deadline::after);
        self.lock
            .check_held(thread, "wait on a condition whose lock is")?;
        // Enqueued while the lock is held: a notify, which needs the lock, cannot come
        // between the release below and the wait.
        let ticket = {
            let mut w = lock(&self.waiters);
            let t = w.next_ticket;
            w.next_ticket += 1;
            w.queue.push_back((t, false));
            t
        };
        let depth = match self.lock.release_all(thread) {
            Ok(d) => d,
            Err(e) => {
                lock(&self.waiters).leave(ticket);
                return Err(e);
            }
        };
        let w = lock(&self.waiters);
        let (w, waited) = wait_on(w, &self.woken, deadline, caller, |w| w.is_notified(ticket));
        drop(w);
        if waited == Waited::Gone {
            self.leave_gone(ticket);
            return Ok(CondWaited {
                notified: false,
                owner_died: false,
            });
        }
        // Back at the depth it was held, as long as it takes (the client is watched).
        let taken = self.lock.take(thread, Some(depth), None, caller)?;
        // A notify that came between the timeout and taking the lock back counts.
        let notified = lock(&self.waiters).leave(ticket);
        match taken {
            Acquired::Clean => Ok(CondWaited {
                notified,
                owner_died: false,
            }),
            Acquired::OwnerDied => Ok(CondWaited {
                notified,
                owner_died: true,
            }),
            // Only a gone client fails to take it back: nobody reads this.
            Acquired::Timeout | Acquired::AlreadyHeld => {
                self.pass_on(notified);
                Ok(CondWaited {
                    notified,
                    owner_died: false,
                })
            }
        }
    }

    /// A waiter whose client left takes its ticket out; a notification it had been
    /// given goes to the next waiter, so a dead waiter absorbs none.
    fn leave_gone(&self, ticket: u64) {
        let notified = lock(&self.waiters).leave(ticket);
        self.pass_on(notified);
    }

    fn pass_on(&self, notified: bool) {
        if notified {
            let marked = lock(&self.waiters).notify(1);
            if marked > 0 {
                self.woken.notify_all();
            }
        }
    }

    fn notify(&self, thread: ThreadToken, n: u64) -> Result<(), CallError> {
        self.lock
            .check_held(thread, "notify on a condition whose lock is")?;
        if n > 0 && lock(&self.waiters).notify(n) > 0 {
            self.woken.notify_all();
        }
        Ok(())
    }
}

impl Served for ConditionObject {
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        let caller = Caller::of(cx);
        match method {
            "wait" => decode_args(args)
                .and_then(|(thread, timeout)| self.wait(thread, timeout, &caller))
                .and_then(|r| encode_reply(&r)),
            "notify" => decode_args(args)
                .and_then(|(thread, n)| self.notify(thread, n))
                .and_then(|()| encode_reply(&())),
            "notify_all" => decode_args(args)
                .and_then(|(thread,)| self.notify(thread, u64::MAX))
                .and_then(|()| encode_reply(&())),
            _ => self
                .lock
                .call_lock(method, args, &caller)
                .unwrap_or_else(|| Err(no_such_method("Condition", method))),
        }
    }

    fn client_gone(&self, client: ClientId) {
        // The lock may be shared with a `Lock` object this client never called.
        self.lock.client_gone(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn token(tid: u32) -> ThreadToken {
        ThreadToken::for_test(tid)
    }

    #[test]
    fn a_hold_of_a_gone_client_is_released_and_marked() {
        let here = AtomicBool::new(false);
        let a = Caller::new(ClientId(1), &here);
        let b = Caller::new(ClientId(2), &here);
        let core = LockCore::new(false);
        assert_eq!(core.acquire(token(1), None, &a).unwrap(), Acquired::Clean);
        assert_eq!(
            core.acquire(token(2), Some(Duration::ZERO), &b).unwrap(),
            Acquired::Timeout
        );
        core.client_gone(ClientId(1));
        assert_eq!(
            core.acquire(token(2), None, &b).unwrap(),
            Acquired::OwnerDied
        );
        core.release(token(2)).unwrap();
        assert_eq!(
            core.acquire(token(2), None, &b).unwrap(),
            Acquired::OwnerDied
        );
        core.mark_consistent(token(2)).unwrap();
        core.release(token(2)).unwrap();
        assert_eq!(core.acquire(token(2), None, &b).unwrap(), Acquired::Clean);
    }

    #[test]
    fn a_blocked_acquire_of_a_gone_client_ends() {
        let gone = AtomicBool::new(true);
        let here = AtomicBool::new(false);
        let core = LockCore::new(false);
        let a = Caller::new(ClientId(1), &here);
        core.acquire(token(1), None, &a).unwrap();
        let b = Caller::new(ClientId(2), &gone);
        assert_eq!(core.acquire(token(2), None, &b).unwrap(), Acquired::Timeout);
        assert!(core.is_locked());
    }
}

//! The server side of the managed semaphores, events and barriers.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::wait::{Caller, ThreadToken, Waited, lock, no_such_method, wait_on};
use crate::deadline;
use crate::error::Error;
use crate::manager::{CallCx, CallError, ClientId, Served, decode_args, encode_reply};

#[derive(Debug, Default)]
struct SemState {
    value: u32,
    /// Units taken into guards, by thread (and the connection each came through):
    /// given back when that connection goes. Units taken without a guard are not
    /// counted: another process may release them (a producer and a consumer), so
    /// nobody can say they are lost.
    held: HashMap<ThreadToken, (ClientId, u32)>,
}

/// `Semaphore` or `BoundedSemaphore` as a served object.
pub(super) struct SemaphoreObject {
    /// The most `release` may reach (`u32::MAX` for an unbounded one).
    max: u32,
    bounded: bool,
    state: Mutex<SemState>,
    released: Condvar,
}

impl SemaphoreObject {
    pub(super) fn new(value: u32, bounded: bool) -> SemaphoreObject {
        SemaphoreObject {
            max: if bounded { value } else { u32::MAX },
            bounded,
            state: Mutex::new(SemState {
                value,
                held: HashMap::new(),
            }),
            released: Condvar::new(),
        }
    }

    fn acquire(
        &self,
        thread: ThreadToken,
        timeout: Option<Duration>,
        guarded: bool,
        caller: &Caller<'_>,
    ) -> bool {
        let st = lock(&self.state);
        let deadline = timeout.and_then(deadline::after);
        let (mut st, waited) = wait_on(st, &self.released, deadline, caller, |s| s.value > 0);
        match waited {
            Waited::Ready => {
                st.value -= 1;
                if guarded {
                    let entry = st.held.entry(thread).or_insert((caller.client, 0));
                    entry.0 = caller.client;
                    entry.1 = entry.1.saturating_add(1);
                }
                true
            }
            Waited::TimedOut | Waited::Gone => false,
        }
    }

    fn release(&self, thread: ThreadToken, guarded: bool) -> Result<(), CallError> {
        let mut st = lock(&self.state);
        if st.value >= self.max {
            return Err(Error::state(if self.bounded {
                "semaphore or lock released too many times"
            } else {
                "semaphore value would overflow"
            })
            .into());
        }
        st.value += 1;
        if guarded {
            if let Some(entry) = st.held.get_mut(&thread) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    st.held.remove(&thread);
                }
            }
        }
        drop(st);
        self.released.notify_one();
        Ok(())
    }
}

impl Served for SemaphoreObject {
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        match method {
            "acquire" => decode_args(args)
                .map(|(thread, timeout, guarded)| {
                    self.acquire(thread, timeout, guarded, &Caller::of(cx))
                })
                .and_then(|r| encode_reply(&r)),
            "release" => decode_args(args)
                .and_then(|(thread, guarded)| self.release(thread, guarded))
                .and_then(|()| encode_reply(&())),
            "get_value" => encode_reply(&lock(&self.state).value),
            _ => Err(no_such_method(
                if self.bounded {
                    "BoundedSemaphore"
                } else {
                    "Semaphore"
                },
                method,
            )),
        }
    }

    /// Units the client's threads held in guards come back (not above the maximum).
    fn client_gone(&self, client: ClientId) {
        let mut st = lock(&self.state);
        let mut back = 0u32;
        st.held.retain(|_, (c, n)| {
            if *c == client {
                back = back.saturating_add(*n);
                false
            } else {
                true
            }
        });
        if back == 0 {
            return;
        }
        st.value = st.value.saturating_add(back).min(self.max);
        drop(st);
        self.released.notify_all();
    }
}

#[derive(Debug, Default)]
struct EventState {
    flag: bool,
    /// How many times the flag went up: a `set` during a wait ends it, even if the
    /// flag is cleared again before the waiter looks.
    sets: u64,
}

/// `Event` as a served object.
#[derive(Default)]
pub(super) struct EventObject {
    state: Mutex<EventState>,
    changed: Condvar,
}

impl EventObject {
    fn wait(&self, timeout: Option<Duration>, caller: &Caller<'_>) -> bool {
        let st = lock(&self.state);
        if st.flag {
            return true;
        }
        let start = st.sets;
        let deadline = timeout.and_then(deadline::after);
        let (_st, waited) = wait_on(st, &self.changed, deadline, caller, |s| {
            s.flag || s.sets != start
        });
        waited == Waited::Ready
    }
}

impl Served for EventObject {
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        match method {
            "set" => {
                let mut st = lock(&self.state);
                if !st.flag {
                    st.flag = true;
                    st.sets += 1;
                    drop(st);
                    self.changed.notify_all();
                }
                encode_reply(&())
            }
            "clear" => {
                lock(&self.state).flag = false;
                encode_reply(&())
            }
            "is_set" => encode_reply(&lock(&self.state).flag),
            "wait" => decode_args(args)
                .map(|(timeout,)| self.wait(timeout, &Caller::of(cx)))
                .and_then(|r| encode_reply(&r)),
            _ => Err(no_such_method("Event", method)),
        }
    }
}

/// How a round of a barrier ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Completed,
    Broken,
}

#[derive(Debug)]
struct BarrierState {
    /// Arrivals in the current round.
    count: u32,
    /// The current round's outcome, shared with its waiters: they read it after the
    /// next rounds began, so the barrier never waits for them to leave.
    round: Arc<Mutex<Outcome>>,
    broken: bool,
}

impl BarrierState {
    /// Ends the current round with `outcome` and starts the next.
    fn end_round(&mut self, outcome: Outcome) {
        *lock(&self.round) = outcome;
        self.round = Arc::new(Mutex::new(Outcome::Pending));
        self.count = 0;
    }
}

/// `Barrier` as a served object.
pub(super) struct BarrierObject {
    parties: u32,
    timeout: Option<Duration>,
    state: Mutex<BarrierState>,
    changed: Condvar,
}

impl BarrierObject {
    pub(super) fn new(parties: u32, timeout: Option<Duration>) -> Result<BarrierObject, CallError> {
        if parties == 0 {
            return Err(Error::InvalidArgument("a barrier needs at least one party".into()).into());
        }
        Ok(BarrierObject {
            parties,
            timeout,
            state: Mutex::new(BarrierState {
                count: 0,
                round: Arc::new(Mutex::new(Outcome::Pending)),
                broken: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// The arrival index, or `None`: the barrier is or became broken.
    fn wait(&self, timeout: Option<Duration>, caller: &Caller<'_>) -> Option<u32> {
        let deadline = timeout.or(self.timeout).and_then(deadline::after);
        let mut st = lock(&self.state);
        if st.broken {
            return None;
        }
        let index = st.count;
        st.count += 1;
        if st.count == self.parties {
            st.end_round(Outcome::Completed);
            drop(st);
            self.changed.notify_all();
            return Some(index);
        }
        let round = Arc::clone(&st.round);
        let (mut st, waited) = wait_on(st, &self.changed, deadline, caller, |_| {
            *lock(&round) != Outcome::Pending
        });
        match waited {
            Waited::Ready => (*lock(&round) == Outcome::Completed).then_some(index),
            Waited::TimedOut => {
                // As in Python: a waiter's timeout breaks the barrier for everyone.
                st.broken = true;
                st.end_round(Outcome::Broken);
                drop(st);
                self.changed.notify_all();
                None
            }
            // A party whose client vanished while waiting still counts as arrived.
            Waited::Gone => None,
        }
    }

    fn abort(&self) {
        let mut st = lock(&self.state);
        st.broken = true;
        st.end_round(Outcome::Broken);
        drop(st);
        self.changed.notify_all();
    }

    fn reset(&self) {
        let mut st = lock(&self.state);
        if st.count > 0 {
            st.end_round(Outcome::Broken);
        }
        st.broken = false;
        drop(st);
        self.changed.notify_all();
    }
}

impl Served for BarrierObject {
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        match method {
            "wait" => decode_args(args)
                .map(|(timeout,)| self.wait(timeout, &Caller::of(cx)))
                .and_then(|r| encode_reply(&r)),
            "abort" => {
                self.abort();
                encode_reply(&())
            }
            "reset" => {
                self.reset();
                encode_reply(&())
            }
            "parties" => encode_reply(&self.parties),
            "n_waiting" => {
                let st = lock(&self.state);
                encode_reply(&if st.broken { 0 } else { st.count })
            }
            "broken" => encode_reply(&lock(&self.state).broken),
            "timeout" => encode_reply(&self.timeout),
            _ => Err(no_such_method("Barrier", method)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn guarded_units_of_a_gone_client_come_back_and_others_do_not() {
        let here = AtomicBool::new(false);
        let a = Caller::new(ClientId(1), &here);
        let sem = SemaphoreObject::new(3, false);
        let t = ThreadToken::for_test(1);
        assert!(sem.acquire(t, None, true, &a));
        assert!(sem.acquire(t, None, true, &a));
        assert!(sem.acquire(t, None, false, &a));
        sem.release(t, true).unwrap();
        assert_eq!(lock(&sem.state).value, 1);
        sem.client_gone(ClientId(2));
        assert_eq!(lock(&sem.state).value, 1);
        sem.client_gone(ClientId(1));
        // The guarded unit still held comes back; the unguarded one does not.
        assert_eq!(lock(&sem.state).value, 2);
    }

    #[test]
    fn a_barrier_timeout_breaks_it_for_everyone_until_reset() {
        let here = AtomicBool::new(false);
        let a = Caller::new(ClientId(1), &here);
        let b = BarrierObject::new(2, None).unwrap();
        assert_eq!(b.wait(Some(Duration::from_millis(10)), &a), None);
        assert!(lock(&b.state).broken);
        assert_eq!(b.wait(None, &a), None);
        b.reset();
        let solo = BarrierObject::new(1, None).unwrap();
        assert_eq!(solo.wait(None, &a), Some(0));
        assert!(!lock(&b.state).broken);
    }
}

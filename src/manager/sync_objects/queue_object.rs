//! The server side of the managed `Queue` and `JoinableQueue` (one object for both, as
//! in Python): items as their clients encoded them, so the server needs no item type.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::wait::{Bytes, Caller, Waited, lock, no_such_method, wait_on};
use crate::deadline;
use crate::error::Error;
use crate::manager::{CallCx, CallError, Served, decode_args, encode_reply};

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Vec<u8>>,
    /// Items put and not yet reported done (`task_done`).
    unfinished: u64,
}

/// A FIFO of encoded items with an optional item limit.
pub(super) struct QueueObject {
    /// The most items held (0: no limit).
    maxsize: usize,
    state: Mutex<QueueState>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
}

impl QueueObject {
    pub(super) fn new(maxsize: usize) -> QueueObject {
        QueueObject {
            maxsize,
            state: Mutex::new(QueueState::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
        }
    }

    /// Puts `item` once there is room, waiting at most `timeout` (`None`: as long as it
    /// takes); false if there was none in time.
    fn put(&self, item: Vec<u8>, timeout: Option<Duration>, caller: &Caller<'_>) -> bool {
        let st = lock(&self.state);
        let maxsize = self.maxsize;
        let room = |s: &QueueState| maxsize == 0 || s.items.len() < maxsize;
        let deadline = timeout.and_then(deadline::after);
        let (mut st, waited) = wait_on(st, &self.not_full, deadline, caller, room);
        match waited {
            Waited::Ready => {
                st.items.push_back(item);
                st.unfinished += 1;
                drop(st);
                self.not_empty.notify_one();
                true
            }
            Waited::TimedOut | Waited::Gone => false,
        }
    }

    /// Takes the oldest item, waiting at most `timeout`; `None` if none came in time.
    ///
    /// A `get` that had to wait looks whether its client is still there before it
    /// takes the item ([`wait_on`]): the item of a client killed while it waited stays
    /// for others.
    fn get(&self, timeout: Option<Duration>, caller: &Caller<'_>) -> Option<Vec<u8>> {
        let mut st = lock(&self.state);
        if let Some(item) = st.items.pop_front() {
            drop(st);
            self.not_full.notify_one();
            return Some(item);
        }
        let deadline = timeout.and_then(deadline::after);
        let (mut st, waited) = wait_on(st, &self.not_empty, deadline, caller, |s| {
            !s.items.is_empty()
        });
        match waited {
            Waited::Ready => {
                let item = st.items.pop_front();
                drop(st);
                self.not_full.notify_one();
                item
            }
            // An item that came is left for a consumer that will read it.
            Waited::TimedOut | Waited::Gone => None,
        }
    }

    fn task_done(&self) -> Result<(), CallError> {
        let mut st = lock(&self.state);
        if st.unfinished == 0 {
            return Err(
                Error::state("task_done() called more times than there were items put").into(),
            );
        }
        st.unfinished -= 1;
        if st.unfinished == 0 {
            drop(st);
            self.all_done.notify_all();
        }
        Ok(())
    }

    /// Waits until every item put was reported done; false if the timeout passed first.
    fn join(&self, timeout: Option<Duration>, caller: &Caller<'_>) -> bool {
        let st = lock(&self.state);
        let deadline = timeout.and_then(deadline::after);
        let (_st, waited) = wait_on(st, &self.all_done, deadline, caller, |s| s.unfinished == 0);
        waited == Waited::Ready
    }
}

impl Served for QueueObject {
    fn call(&self, method: &str, args: &[u8], cx: &CallCx<'_>) -> Result<Vec<u8>, CallError> {
        match method {
            "put" => decode_args(args)
                .map(|(Bytes(item), timeout)| self.put(item, timeout, &Caller::of(cx)))
                .and_then(|r| encode_reply(&r)),
            "get" => decode_args(args)
                .map(|(timeout,)| self.get(timeout, &Caller::of(cx)).map(Bytes))
                .and_then(|r| encode_reply(&r)),
            "qsize" => encode_reply(&(lock(&self.state).items.len() as u64)),
            "maxsize" => encode_reply(&(self.maxsize as u64)),
            "task_done" => self.task_done().and_then(|()| encode_reply(&())),
            "join" => decode_args(args)
                .map(|(timeout,)| self.join(timeout, &Caller::of(cx)))
                .and_then(|r| encode_reply(&r)),
            _ => Err(no_such_method("Queue", method)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ClientId;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_waiting_get_of_a_gone_client_leaves_the_item() {
        let q = Arc::new(QueueObject::new(0));
        let gone = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (q, gone) = (Arc::clone(&q), Arc::clone(&gone));
            std::thread::spawn(move || {
                let caller = Caller::new(ClientId(1), &*gone);
                q.get(None, &caller)
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        gone.store(true, Ordering::SeqCst);
        let here = AtomicBool::new(false);
        let producer = Caller::new(ClientId(2), &here);
        assert!(q.put(vec![7], None, &producer));
        assert_eq!(waiter.join().unwrap(), None);
        assert_eq!(q.get(Some(Duration::ZERO), &producer), Some(vec![7]));
    }

    #[test]
    fn put_waits_for_room_under_maxsize() {
        let here = AtomicBool::new(false);
        let c = Caller::new(ClientId(1), &here);
        let q = QueueObject::new(1);
        assert!(q.put(vec![1], Some(Duration::ZERO), &c));
        assert!(!q.put(vec![2], Some(Duration::from_millis(20)), &c));
        assert_eq!(q.get(None, &c), Some(vec![1]));
        assert!(q.put(vec![2], Some(Duration::ZERO), &c));
    }
}

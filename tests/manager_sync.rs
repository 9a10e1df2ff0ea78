//! The managed synchronisation objects and queues (Python's `manager.Lock()`,
//! `manager.Queue()`, …) used from several processes: CPython's behaviours for them
//! (`_TestLock`, `_TestSemaphore`, `_TestCondition`, `_TestEvent`, `_TestBarrier`,
//! `_TestQueue` run with a manager, and `TestSyncManagerTypes`), proxies passed to
//! children (in arguments and inside a managed queue) under every start method, the
//! remote queue (served on TCP, used by programs that know only the address and the
//! key), and deaths: a client SIGKILLed while holding a lock or a semaphore unit does
//! not block the others, one killed while blocked in `get` or `acquire` takes nothing,
//! and a killed manager fails the calls blocked in it within a second.
//!
//! Timing: a timeout must not return early and must return within several seconds of
//! its expiry (loose bounds, for a loaded machine); the one tighter bound is the
//! second a blocked call may take to fail once its manager is killed. Every child is a daemon with
//! bounded waits and is killed on failure paths.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{CLEAN_METHODS, KillOnDrop, LONG, METHODS};
use multiproc::{
    BarrierProxy, ConditionProxy, Connection, Error, EventProxy, GetError, JoinableQueueProxy,
    LockProxy, Manager, Process, ProxyAcquireError, PutError, QueueProxy, RLockProxy,
    SemaphoreProxy, StartMethod, pipe,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long a child that should be blocked is given to (wrongly) report: a negative
/// check, so it only needs to be long enough to catch a bug most of the time.
const QUIET: Duration = Duration::from_millis(500);

/// A timeout tests measure: short enough to keep tests quick.
const SHORT: Duration = Duration::from_millis(300);

/// Slack allowed past a timeout on a loaded machine.
const SLACK: Duration = Duration::from_secs(10);

/// How long children that wait "forever" sleep; every test kills them itself.
const FOREVER: Duration = Duration::from_secs(600);

fn manager() -> Manager {
    Manager::start().expect("start a manager")
}

/// Starts `f(args)` as a daemon child with `method`; killed and reaped when dropped.
fn start_with<F, A, R>(method: StartMethod, f: F, args: A) -> KillOnDrop
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned + 'static,
    R: std::process::Termination + 'static,
{
    let mut p = Process::new(f, args).daemon(true).start_method(method);
    p.start().expect("start a child");
    KillOnDrop(p)
}

fn start<F, A, R>(f: F, args: A) -> KillOnDrop
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned + 'static,
    R: std::process::Termination + 'static,
{
    start_with(StartMethod::Forkserver, f, args)
}

/// Kills the child and waits until it is reaped: its connections to the manager are
/// closed once this returns.
fn kill(child: &mut KillOnDrop) {
    child.0.kill().expect("kill the child");
    assert!(
        child.0.join_timeout(LONG).expect("join"),
        "the killed child was not reaped"
    );
}

/// Joins a child that should end by itself, and checks it succeeded.
fn finish(mut child: KillOnDrop, what: &str) {
    assert!(
        child.0.join_timeout(LONG).expect("join"),
        "{what}: the child did not end"
    );
    assert_eq!(child.0.exitcode(), Some(0), "{what}: the child failed");
}

/// Receives one message, failing the test after [`LONG`].
fn recv<T: DeserializeOwned>(conn: &Connection, what: &str) -> T {
    conn.recv_timeout(LONG)
        .unwrap_or_else(|e| panic!("{what}: no message: {e:?}"))
}

/// Whether a message arrives on `conn` within `within`.
fn arrives(conn: &Connection, within: Duration) -> bool {
    conn.poll(Some(within)).expect("poll")
}

/// Asserts that an operation which timed out after `timeout` took about that long.
fn assert_about(elapsed: Duration, timeout: Duration, what: &str) {
    assert!(
        elapsed >= timeout,
        "{what}: returned early, after {elapsed:?} < {timeout:?}"
    );
    assert!(
        elapsed < timeout + SLACK,
        "{what}: returned far too late, after {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------
// Lock and RLock
// ---------------------------------------------------------------------------------

/// Reports whether the lock could be taken at once, then takes it with a wait and
/// reports again.
fn try_then_acquire((lock, conn): (LockProxy, Connection)) {
    conn.send(&lock.try_acquire().is_ok()).unwrap();
    let got = lock.acquire_timeout(LONG).is_ok();
    conn.send(&got).unwrap();
}

// CPython: _TestLock.test_lock with a manager; TestSyncManagerTypes.test_lock.
#[test]
fn a_managed_lock_held_here_keeps_a_child_out_until_released() {
    let manager = manager();
    let lock = manager.lock().unwrap();
    let held = lock.acquire().expect("acquire");
    assert!(lock.is_locked().unwrap());
    let (here, there) = pipe(true).unwrap();
    let child = start(try_then_acquire, (lock.clone(), there));
    assert!(
        !recv::<bool>(&here, "try_acquire"),
        "the child got a held lock"
    );
    assert!(!arrives(&here, QUIET), "the child's acquire did not wait");
    drop(held);
    assert!(
        recv::<bool>(&here, "acquire"),
        "the child never got the lock"
    );
    finish(child, "lock child");
}

// CPython: _TestLock.test_lock (release of an unheld lock raises).
#[test]
fn releasing_a_managed_lock_this_thread_does_not_hold_is_an_error() {
    let manager = manager();
    let lock = manager.lock().unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
    let held = lock.acquire().unwrap();
    let other = lock.clone();
    let from_another_thread = thread::spawn(move || other.release().is_err())
        .join()
        .unwrap();
    assert!(from_another_thread, "another thread released the lock");
    assert!(lock.is_locked().unwrap());
    assert!(matches!(
        lock.acquire(),
        Err(ProxyAcquireError::AlreadyHeld)
    ));
    drop(held);
    assert!(!lock.is_locked().unwrap());
}

// CPython: _TestLock.test_rlock with a manager.
#[test]
fn a_managed_rlock_is_reentrant_and_free_once_released_as_often() {
    let manager = manager();
    let lock: RLockProxy = manager.rlock().unwrap();
    let a = lock.acquire().unwrap();
    let b = lock.acquire().unwrap();
    let c = lock.try_acquire().unwrap();
    assert_eq!(lock.recursion_depth().unwrap(), 3);
    drop(c);
    drop(b);
    assert!(lock.is_locked().unwrap());
    drop(a);
    assert!(!lock.is_locked().unwrap());
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
}

// CPython: _TestLock (acquire with a timeout).
#[test]
fn a_managed_lock_acquire_timeout_gives_up_after_its_timeout() {
    let manager = manager();
    let lock = manager.lock().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(hold_lock_forever, (lock.clone(), there));
    recv::<()>(&here, "holder");
    let started = Instant::now();
    assert!(matches!(
        lock.acquire_timeout(SHORT),
        Err(ProxyAcquireError::Timeout)
    ));
    assert_about(started.elapsed(), SHORT, "acquire_timeout");
    kill(&mut holder);
}

fn hold_lock_forever((lock, conn): (LockProxy, Connection)) {
    let _held = lock.acquire().expect("child acquires");
    conn.send(&()).unwrap();
    thread::sleep(FOREVER);
}

#[test]
fn a_client_sigkilled_holding_a_managed_lock_does_not_block_the_others() {
    let manager = manager();
    let lock = manager.lock().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(hold_lock_forever, (lock.clone(), there));
    recv::<()>(&here, "holder");
    assert!(matches!(
        lock.try_acquire(),
        Err(ProxyAcquireError::Timeout)
    ));
    kill(&mut holder);
    // The next acquirer gets the lock, told that its holder vanished...
    let held = match lock.acquire_timeout(LONG) {
        Err(ProxyAcquireError::OwnerDied(held)) => held,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    drop(held);
    // ...and so does every acquirer until one declares the data repaired.
    let held = lock.acquire_timeout(LONG).unwrap_err().into_guard();
    let held = held.expect("still marked: OwnerDied again");
    held.mark_consistent().unwrap();
    drop(held);
    assert!(lock.acquire_timeout(LONG).is_ok());
}

fn hold_rlock_twice_forever((lock, conn): (RLockProxy, Connection)) {
    let _a = lock.acquire().expect("child acquires");
    let _b = lock.acquire().expect("child acquires again");
    conn.send(&()).unwrap();
    thread::sleep(FOREVER);
}

#[test]
fn a_client_sigkilled_holding_a_managed_rlock_twice_frees_it_entirely() {
    let manager = manager();
    let lock = manager.rlock().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(hold_rlock_twice_forever, (lock.clone(), there));
    recv::<()>(&here, "holder");
    kill(&mut holder);
    let held = lock
        .acquire_timeout(LONG)
        .unwrap_err()
        .into_guard()
        .expect("OwnerDied");
    assert_eq!(lock.recursion_depth().unwrap(), 1);
    held.mark_consistent().unwrap();
}

/// Says it is about to acquire, then blocks in `acquire` (until killed).
fn block_in_acquire((lock, conn): (LockProxy, Connection)) {
    conn.send(&()).unwrap();
    let _held = lock.acquire();
    thread::sleep(FOREVER);
}

#[test]
fn a_client_sigkilled_while_blocked_in_acquire_never_takes_the_lock() {
    let manager = manager();
    let lock = manager.lock().unwrap();
    let held = lock.acquire().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut waiter = start(block_in_acquire, (lock.clone(), there));
    recv::<()>(&here, "waiter");
    // Give the child's acquire time to reach the manager (if it has not, the test
    // checks less, never wrongly).
    thread::sleep(QUIET);
    kill(&mut waiter);
    drop(held);
    // The dead child's acquire ended: the lock is free and clean, not taken by it.
    match lock.acquire_timeout(LONG) {
        Ok(_) => {}
        other => panic!("expected the lock, clean; got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Semaphore and BoundedSemaphore
// ---------------------------------------------------------------------------------

// CPython: _TestSemaphore.test_semaphore / test_bounded_semaphore with a manager.
#[test]
fn managed_semaphores_count_units_and_a_bounded_one_refuses_extra_releases() {
    let manager = manager();
    let sem = manager.semaphore(2).unwrap();
    assert_eq!(sem.get_value().unwrap(), 2);
    sem.acquire().unwrap();
    assert!(sem.try_acquire().unwrap());
    assert_eq!(sem.get_value().unwrap(), 0);
    assert!(!sem.try_acquire().unwrap());
    sem.release().unwrap();
    assert_eq!(sem.get_value().unwrap(), 1);
    {
        let _unit = sem.acquire_guard().unwrap();
        assert_eq!(sem.get_value().unwrap(), 0);
        assert!(matches!(sem.try_acquire_guard(), Err(Error::Timeout)));
    }
    assert_eq!(sem.get_value().unwrap(), 1);
    sem.release().unwrap();
    sem.release().unwrap();
    assert_eq!(
        sem.get_value().unwrap(),
        3,
        "an unbounded semaphore goes past 2"
    );

    let bounded = manager.bounded_semaphore(1).unwrap();
    assert!(matches!(bounded.release(), Err(Error::InvalidState(_))));
    bounded.acquire().unwrap();
    bounded.release().unwrap();
    assert_eq!(bounded.get_value().unwrap(), 1);
}

// CPython: _TestSemaphore.test_timeout with a manager.
#[test]
fn a_managed_semaphore_acquire_timeout_gives_up_after_its_timeout() {
    let manager = manager();
    let sem = manager.semaphore(0).unwrap();
    let started = Instant::now();
    assert!(!sem.acquire_timeout(SHORT).unwrap());
    assert_about(started.elapsed(), SHORT, "acquire_timeout");
    let started = Instant::now();
    assert!(matches!(
        sem.acquire_guard_timeout(SHORT),
        Err(Error::Timeout)
    ));
    assert_about(started.elapsed(), SHORT, "acquire_guard_timeout");
}

fn release_later(sem: SemaphoreProxy) {
    thread::sleep(SHORT);
    sem.release().unwrap();
}

#[test]
fn a_managed_semaphore_released_by_a_child_wakes_a_waiter_here() {
    let manager = manager();
    let sem = manager.semaphore(0).unwrap();
    let child = start(release_later, sem.clone());
    assert!(sem.acquire_timeout(LONG).unwrap());
    finish(child, "releaser");
}

fn hold_unit_forever((sem, conn): (SemaphoreProxy, Connection)) {
    let _unit = sem.acquire_guard().expect("child acquires a unit");
    conn.send(&()).unwrap();
    thread::sleep(FOREVER);
}

#[test]
fn a_client_sigkilled_holding_a_semaphore_unit_gives_it_back() {
    let manager = manager();
    let sem = manager.semaphore(1).unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(hold_unit_forever, (sem.clone(), there));
    recv::<()>(&here, "holder");
    assert_eq!(sem.get_value().unwrap(), 0);
    kill(&mut holder);
    let unit = sem
        .acquire_guard_timeout(LONG)
        .expect("the dead holder's unit came back");
    drop(unit);
    assert_eq!(sem.get_value().unwrap(), 1, "the unit came back only once");
}

fn take_unit_unguarded_forever((sem, conn): (SemaphoreProxy, Connection)) {
    sem.acquire().expect("child acquires");
    conn.send(&()).unwrap();
    thread::sleep(FOREVER);
}

#[test]
fn a_semaphore_unit_taken_without_a_guard_by_a_killed_client_stays_taken() {
    // A bare acquire may be released by another process (a producer and a consumer),
    // so the manager cannot tell it was lost: giving it back would over-count.
    let manager = manager();
    let sem = manager.semaphore(1).unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut taker = start(take_unit_unguarded_forever, (sem.clone(), there));
    recv::<()>(&here, "taker");
    kill(&mut taker);
    assert!(!sem.acquire_timeout(QUIET).unwrap());
    assert_eq!(sem.get_value().unwrap(), 0);
}

// ---------------------------------------------------------------------------------
// Event
// ---------------------------------------------------------------------------------

fn wait_event((event, conn): (EventProxy, Connection)) {
    conn.send(&()).unwrap();
    let set = event.wait(Some(LONG)).expect("wait");
    conn.send(&set).unwrap();
}

// CPython: _TestEvent.test_event with a manager; TestSyncManagerTypes.test_event.
#[test]
fn a_managed_event_set_here_wakes_a_waiting_child() {
    let manager = manager();
    let event = manager.event().unwrap();
    assert!(!event.is_set().unwrap());
    let started = Instant::now();
    assert!(!event.wait(Some(SHORT)).unwrap());
    assert_about(started.elapsed(), SHORT, "Event::wait");
    let (here, there) = pipe(true).unwrap();
    let child = start(wait_event, (event.clone(), there));
    recv::<()>(&here, "waiter");
    assert!(!arrives(&here, QUIET), "the child did not wait");
    event.set().unwrap();
    assert!(recv::<bool>(&here, "woken"));
    finish(child, "event waiter");
    assert!(event.is_set().unwrap());
    assert!(event.wait(Some(Duration::ZERO)).unwrap());
    event.clear().unwrap();
    assert!(!event.is_set().unwrap());
    assert!(!event.wait(Some(Duration::ZERO)).unwrap());
}

// ---------------------------------------------------------------------------------
// Condition
// ---------------------------------------------------------------------------------

/// Waits on the condition (after saying so, under its lock) and reports whether it
/// was notified.
fn wait_condition((cond, conn): (ConditionProxy, Connection)) {
    let mut held = cond.acquire().expect("child acquires");
    conn.send(&()).unwrap();
    let notified = held.wait(Some(LONG)).expect("wait");
    conn.send(&notified).unwrap();
}

/// Starts `n` children waiting on `cond`; returns once all of them wait.
fn waiting_children(cond: &ConditionProxy, n: usize) -> Vec<(KillOnDrop, Connection)> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            let (here, there) = pipe(true).unwrap();
            (start(wait_condition, (cond.clone(), there)), here)
        })
        .collect();
    for (_, conn) in &children {
        recv::<()>(conn, "waiter");
    }
    // Each said so holding the lock and then waited, releasing it: once it is free,
    // every one of them waits.
    drop(cond.acquire_timeout(LONG).expect("the lock comes free"));
    children
}

// CPython: _TestCondition.test_notify and test_notify_n with a manager.
#[test]
fn managed_condition_notify_n_wakes_exactly_n_waiting_children() {
    let manager = manager();
    let cond = manager.condition().unwrap();
    let children = waiting_children(&cond, 3);
    cond.acquire().unwrap().notify(2).unwrap();
    let mut woken = vec![false; children.len()];
    let deadline = Instant::now() + LONG;
    while woken.iter().filter(|&&w| w).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "notify(2) did not wake two waiters"
        );
        for (i, (_, conn)) in children.iter().enumerate() {
            if !woken[i] && arrives(conn, Duration::from_millis(10)) {
                assert!(recv::<bool>(conn, "notified"));
                woken[i] = true;
            }
        }
    }
    thread::sleep(QUIET);
    let (last, _) = woken.iter().enumerate().find(|(_, w)| !**w).unwrap();
    assert!(
        !arrives(&children[last].1, Duration::ZERO),
        "notify(2) woke a third waiter"
    );
    cond.acquire().unwrap().notify(1).unwrap();
    assert!(recv::<bool>(&children[last].1, "notified last"));
    for (child, _) in children {
        finish(child, "condition waiter");
    }
}

// CPython: _TestCondition.test_notify_all with a manager.
#[test]
fn managed_condition_notify_all_wakes_every_waiting_child() {
    let manager = manager();
    let cond = manager.condition().unwrap();
    let children = waiting_children(&cond, 3);
    cond.acquire().unwrap().notify_all().unwrap();
    for (child, conn) in children {
        assert!(recv::<bool>(&conn, "notified"));
        finish(child, "condition waiter");
    }
}

// CPython: _TestCondition.test_timeout, test_waitfor_timeout with a manager.
#[test]
fn managed_condition_wait_times_out_and_wait_for_checks_its_predicate() {
    let manager = manager();
    let cond = manager.condition().unwrap();
    let mut held = cond.acquire().unwrap();
    let started = Instant::now();
    assert!(!held.wait(Some(SHORT)).unwrap());
    assert_about(started.elapsed(), SHORT, "Condition::wait");
    assert!(held.wait_for(|| true, Some(Duration::ZERO)).unwrap());
    let mut calls = 0;
    let started = Instant::now();
    assert!(
        !held
            .wait_for(
                || {
                    calls += 1;
                    false
                },
                Some(SHORT)
            )
            .unwrap()
    );
    assert_about(started.elapsed(), SHORT, "Condition::wait_for");
    assert!(
        calls >= 2,
        "the predicate was checked before and after waiting"
    );
    drop(held);
    assert!(cond.try_acquire().is_ok(), "the guard released the lock");
}

// CPython: _TestCondition with `Condition(lock)`.
#[test]
fn a_managed_condition_on_a_managed_lock_shares_it_and_learns_of_a_killed_holder() {
    let manager = manager();
    let lock = manager.lock().unwrap();
    let cond = manager.condition_with_lock(&lock).unwrap();
    {
        let _held = cond.acquire().unwrap();
        assert!(lock.is_locked().unwrap(), "the condition holds the lock");
        assert!(matches!(
            lock.try_acquire(),
            Err(ProxyAcquireError::AlreadyHeld)
        ));
    }
    assert!(!lock.is_locked().unwrap());
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(hold_lock_forever, (lock.clone(), there));
    recv::<()>(&here, "holder");
    assert!(matches!(
        cond.try_acquire(),
        Err(ProxyAcquireError::Timeout)
    ));
    kill(&mut holder);
    let mut held = cond
        .acquire_timeout(LONG)
        .unwrap_err()
        .into_guard()
        .expect("OwnerDied through the condition");
    held.mark_consistent().unwrap();
    assert!(!held.wait(Some(Duration::ZERO)).unwrap());
    drop(held);
    assert!(lock.try_acquire().is_ok(), "clean again");
    let event = manager.event().unwrap();
    assert!(matches!(
        manager.condition_with_lock(&event),
        Err(Error::InvalidArgument(_))
    ));
}

// ---------------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------------

fn barrier_party((barrier, conn): (BarrierProxy, Connection)) {
    let index = barrier.wait_timeout(LONG);
    conn.send(&index.map_err(|e| e.to_string())).unwrap();
}

// CPython: _TestBarrier.test_barrier with a manager; TestSyncManagerTypes.test_barrier.
#[test]
fn a_managed_barrier_releases_every_party_with_its_own_index() {
    let manager = manager();
    let barrier = manager.barrier(3).unwrap();
    assert_eq!(barrier.parties().unwrap(), 3);
    let children: Vec<_> = (0..2)
        .map(|_| {
            let (here, there) = pipe(true).unwrap();
            (start(barrier_party, (barrier.clone(), there)), here)
        })
        .collect();
    let mut indexes = vec![barrier.wait_timeout(LONG).expect("parent's wait")];
    for (child, conn) in children {
        indexes.push(recv::<Result<u32, String>>(&conn, "party").expect("child's wait"));
        finish(child, "party");
    }
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(barrier.n_waiting().unwrap(), 0);
    assert!(!barrier.broken().unwrap());
}

// CPython: _TestBarrier.test_abort and test_reset with a manager.
#[test]
fn aborting_a_managed_barrier_breaks_a_waiting_child_until_reset() {
    let manager = manager();
    let barrier = manager.barrier(2).unwrap();
    let (here, there) = pipe(true).unwrap();
    let child = start(barrier_party, (barrier.clone(), there));
    let deadline = Instant::now() + LONG;
    while barrier.n_waiting().unwrap() == 0 {
        assert!(Instant::now() < deadline, "the child never waited");
        thread::sleep(Duration::from_millis(10));
    }
    barrier.abort().unwrap();
    assert!(recv::<Result<u32, String>>(&here, "party").is_err());
    finish(child, "party");
    assert!(barrier.broken().unwrap());
    assert!(matches!(
        barrier.wait_timeout(LONG),
        Err(Error::BrokenBarrier)
    ));
    barrier.reset().unwrap();
    assert!(!barrier.broken().unwrap());
}

// CPython: _TestBarrier.test_timeout with a manager.
#[test]
fn a_managed_barrier_wait_that_times_out_breaks_the_barrier() {
    let manager = manager();
    let barrier = manager.barrier(2).unwrap();
    let started = Instant::now();
    assert!(matches!(
        barrier.wait_timeout(SHORT),
        Err(Error::BrokenBarrier)
    ));
    assert_about(started.elapsed(), SHORT, "Barrier::wait_timeout");
    assert!(barrier.broken().unwrap());
    let with_default = manager.barrier_with_timeout(2, SHORT).unwrap();
    assert!(matches!(with_default.wait(), Err(Error::BrokenBarrier)));
}

// ---------------------------------------------------------------------------------
// Queue and JoinableQueue
// ---------------------------------------------------------------------------------

fn produce((q, from, n): (QueueProxy<(u32, String)>, u32, u32)) {
    for i in from..from + n {
        q.put(&(i, format!("item {i}"))).expect("put");
    }
}

// CPython: _TestQueue.test_get with a manager (items put by a child).
#[test]
fn a_managed_queue_delivers_a_childs_items_in_order() {
    let manager = manager();
    let q = manager.queue().unwrap();
    let child = start(produce, (q.clone(), 0, 50));
    for i in 0..50 {
        let (n, s) = q.get_timeout(LONG).expect("get");
        assert_eq!((n, s.as_str()), (i, format!("item {i}").as_str()));
    }
    finish(child, "producer");
    assert!(q.empty().unwrap());
}

// CPython: _TestQueue.test_put with a manager.
#[test]
fn a_managed_queue_with_maxsize_is_full_and_put_waits_for_room() {
    let manager = manager();
    let q = manager.queue_with_maxsize::<u32>(2).unwrap();
    assert_eq!(q.maxsize().unwrap(), 2);
    assert!(q.empty().unwrap());
    q.put(&1).unwrap();
    q.try_put(&2).unwrap();
    assert!(q.full().unwrap());
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(matches!(q.try_put(&3), Err(PutError::Full)));
    let started = Instant::now();
    assert!(matches!(q.put_timeout(&3, SHORT), Err(PutError::Full)));
    assert_about(started.elapsed(), SHORT, "put_timeout");
    assert_eq!(q.get().unwrap(), 1);
    q.put_timeout(&3, LONG).unwrap();
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 3);
    assert!(!q.full().unwrap());
}

// CPython: _TestQueue.test_get and test_timeout with a manager.
#[test]
fn get_from_an_empty_managed_queue_answers_empty_after_its_timeout() {
    let manager = manager();
    let q = manager.queue::<u8>().unwrap();
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    let started = Instant::now();
    assert!(matches!(q.get_timeout(SHORT), Err(GetError::Empty)));
    assert_about(started.elapsed(), SHORT, "get_timeout");
}

#[test]
fn a_managed_queue_item_of_another_type_is_a_decode_error() {
    let manager = manager();
    let q = manager.queue::<u32>().unwrap();
    q.put(&300).unwrap();
    q.put(&1).unwrap();
    let as_bools: QueueProxy<bool> =
        multiproc::Proxy::from_core(multiproc::Proxy::core(&q).clone());
    assert!(matches!(as_bools.get(), Err(Error::Decode(_))));
    // The item that did not decode is gone; the next one is there.
    assert_eq!(q.get().unwrap(), 1);

    // In a joinable queue it needs no task_done.
    let jq = manager.joinable_queue::<u32>().unwrap();
    jq.put(&300).unwrap();
    let as_bools: JoinableQueueProxy<bool> =
        multiproc::Proxy::from_core(multiproc::Proxy::core(&jq).clone());
    assert!(matches!(as_bools.get(), Err(Error::Decode(_))));
    assert!(
        jq.join_timeout(LONG).unwrap(),
        "the undecodable item counts as done"
    );
}

fn get_once((q, conn): (QueueProxy<u32>, Connection)) {
    conn.send(&()).unwrap();
    let _ = q.get();
    thread::sleep(FOREVER);
}

#[test]
fn a_client_sigkilled_while_blocked_in_get_does_not_eat_the_next_item() {
    let manager = manager();
    let q = manager.queue::<u32>().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut consumer = start(get_once, (q.clone(), there));
    recv::<()>(&here, "consumer");
    // Give the child's get time to reach the manager (if it has not, the test checks
    // less, never wrongly).
    thread::sleep(QUIET);
    kill(&mut consumer);
    q.put(&7).unwrap();
    assert_eq!(q.get_timeout(LONG).expect("the item stayed"), 7);
}

fn do_tasks(q: JoinableQueueProxy<u32>) {
    loop {
        let job = q.get_timeout(LONG).expect("get");
        q.task_done().expect("task_done");
        if job == u32::MAX {
            return;
        }
    }
}

// CPython: _TestQueue.test_task_done with a manager's JoinableQueue.
#[test]
fn managed_joinable_queue_join_waits_for_every_task_done_in_children() {
    let manager = manager();
    let q = manager.joinable_queue::<u32>().unwrap();
    let workers: Vec<_> = (0..2).map(|_| start(do_tasks, q.clone())).collect();
    for job in 0..20 {
        q.put(&job).unwrap();
    }
    assert!(
        q.join_timeout(LONG).unwrap(),
        "join did not see every task done"
    );
    assert!(q.empty().unwrap());
    for _ in &workers {
        q.put(&u32::MAX).unwrap();
    }
    q.join().unwrap();
    for w in workers {
        finish(w, "worker");
    }
    assert!(matches!(q.task_done(), Err(Error::InvalidState(_))));
    q.put(&1).unwrap();
    let started = Instant::now();
    assert!(!q.join_timeout(SHORT).unwrap());
    assert_about(started.elapsed(), SHORT, "join_timeout");
}

#[test]
fn calls_blocked_in_a_managed_lock_and_queue_fail_within_a_second_when_the_manager_is_killed() {
    let manager = manager();
    let pid = manager.pid().expect("a started manager has a pid");
    let lock = manager.lock().unwrap();
    let held = lock.acquire().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let (waiter, getter) = {
        let (lock, q) = (lock.clone(), q.clone());
        (
            thread::spawn(move || {
                let r = lock.acquire().map(drop).map_err(Error::from);
                (r, Instant::now())
            }),
            thread::spawn(move || (q.get().map(drop), Instant::now())),
        )
    };
    // Let both calls reach the manager and block there.
    thread::sleep(QUIET);
    let killed_at = Instant::now();
    common::kill_pid(pid);
    for (what, handle) in [("acquire", waiter), ("get", getter)] {
        let (r, at) = handle.join().unwrap();
        assert!(
            matches!(r, Err(Error::PeerDied(_))),
            "{what}: expected PeerDied, got {r:?}"
        );
        let waited = at.saturating_duration_since(killed_at);
        assert!(
            waited < Duration::from_secs(1),
            "{what} waited {waited:?} after the manager died"
        );
    }
    drop(held); // its release fails quietly: the manager is gone
}

// ---------------------------------------------------------------------------------
// Proxies travelling
// ---------------------------------------------------------------------------------

fn set_the_event_received(q: QueueProxy<EventProxy>) {
    let event = q.get_timeout(LONG).expect("an event through the queue");
    event.set().expect("set");
}

// CPython: TestSyncManagerTypes (objects created here, used in children); a proxy
// inside a managed queue.
#[test]
fn proxies_reach_children_in_arguments_and_through_a_managed_queue_under_every_start_method() {
    let manager = manager();
    for method in METHODS {
        let event = manager.event().unwrap();
        let q = manager.queue::<EventProxy>().unwrap();
        q.put(&event).unwrap();
        let child = start_with(method, set_the_event_received, q.clone());
        assert!(
            event.wait(Some(LONG)).unwrap(),
            "{method:?}: the child did not set the event"
        );
        finish(child, "event setter");
    }
    for method in CLEAN_METHODS {
        let lock = manager.lock().unwrap();
        let held = lock.acquire().unwrap();
        let (here, there) = pipe(true).unwrap();
        let child = start_with(method, try_then_acquire, (lock.clone(), there));
        assert!(!recv::<bool>(&here, "try_acquire"), "{method:?}");
        drop(held);
        assert!(recv::<bool>(&here, "acquire"), "{method:?}");
        finish(child, "lock child");
    }
}

/// A program that knows only the address and the key puts `items`; the error as text.
fn remote_put((address, key, items): (String, Vec<u8>, Vec<String>)) -> Result<(), String> {
    let put = || -> multiproc::Result<()> {
        let q: QueueProxy<String> = Manager::connect(address.as_str(), &key)?.get("queue")?;
        items.iter().try_for_each(|item| q.put(item))
    };
    put().map_err(|e| format!("{e:?}"))
}

/// A program that knows only the address and the key gets `n` items.
fn remote_get((address, key, n): (String, Vec<u8>, usize)) -> Result<Vec<String>, String> {
    let get = || -> multiproc::Result<Vec<String>> {
        let q: QueueProxy<String> = Manager::connect(address.as_str(), &key)?.get("queue")?;
        (0..n).map(|_| Ok(q.get_timeout(LONG)?)).collect()
    };
    get().map_err(|e| format!("{e:?}"))
}

// Python's documented remote manager: a queue served on TCP, used by programs that
// share only the address and the key.
#[test]
fn a_queue_served_on_tcp_carries_items_between_clients_that_know_only_address_and_key() {
    let key = b"abracadabra".to_vec();
    let server = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(&key)
        .expose::<QueueProxy<String>, _>("queue", "", &(0u64,))
        .start()
        .unwrap();
    let address = server.address().to_string();
    let items: Vec<String> = ["hello", "from", "afar"].map(String::from).to_vec();
    let getter = multiproc::spawn(remote_get, (address.clone(), key.clone(), items.len())).unwrap();
    multiproc::spawn(remote_put, (address.clone(), key.clone(), items.clone()))
        .unwrap()
        .join()
        .expect("the putting program ran")
        .expect("the putting program put");
    let got = getter.join().expect("the getting program ran");
    assert_eq!(got.expect("the getting program got"), items);

    let refused = multiproc::spawn(remote_put, (address, b"wrong".to_vec(), items))
        .unwrap()
        .join()
        .expect("the refused program ran");
    assert_eq!(refused, Err("AuthenticationFailed".to_string()));
}

/// CPU time of process `pid` so far (user and system), from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which may hold spaces: state is the first.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// A client blocked in a managed `get` sleeps once its brief spin is over, and so does
/// the server thread serving it: neither burns a CPU while nothing comes.
#[test]
fn a_client_blocked_in_a_managed_get_and_its_server_use_next_to_no_cpu() {
    let manager = manager();
    let server = manager.pid().expect("a started manager has a pid");
    let q = manager.queue::<u32>().unwrap();
    let consumer = q.clone();
    let server_before = process_cpu(server);
    let blocked = common::cpu_while_blocked(
        move || assert_eq!(consumer.get().unwrap(), 1),
        || q.put(&1).unwrap(),
    );
    let server_cpu = process_cpu(server).saturating_sub(server_before);
    common::assert_idle_while_blocked("managed get", blocked);
    assert!(
        server_cpu * 5 < blocked.1,
        "the manager used {server_cpu:?} of CPU while a client was blocked for {:?}",
        blocked.1
    );
}

/// A value longer than the fast path's area goes through the socket, whole.
#[test]
fn a_value_longer_than_a_calls_shared_area_is_set_and_read_back_whole() {
    let manager = manager();
    let d = manager.dict::<u32, Vec<u8>>().unwrap();
    let long: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    d.set(&1, &long).unwrap();
    d.set(&2, &vec![7]).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(long));
    assert_eq!(d.get(&2).unwrap(), Some(vec![7]));
}

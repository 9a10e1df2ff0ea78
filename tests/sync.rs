//! CPython's behaviours of the synchronisation primitives, with waiters in several
//! processes: Lock and RLock (recursion, release-not-held, owner death), Semaphore and
//! BoundedSemaphore, Event, Condition (`notify(n)` wakes exactly n, `notify_all`, wait
//! timeouts, `wait_for`), Barrier (arrival indexes, abort, reset, timeouts), and every
//! primitive passed to children and through a pipe. Owner death is never concluded
//! wrongly (a waiter out of descriptors) nor missed (a waiter under a signal storm), and
//! a lock taken over stays marked until repaired.
//!
//! Timing: a timeout must not return early, and must return within several seconds of
//! its expiry (loose bounds, for a loaded machine). Every child is a daemon with bounded
//! waits and is killed on failure paths.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{KillOnDrop, LONG, assert_idle_while_blocked, cpu_while_blocked, join_bounded};
use multiproc::{
    AcquireError, Barrier, BoundedSemaphore, Condition, Connection, Error, Event, Lock, LockGuard,
    Process, RLock, Semaphore, StartMethod, Value, ValueGuard, Waitable, pipe,
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

/// Starts `f(args)` as a daemon child with `method`; killed and reaped when dropped.
fn start<F, A, R>(method: StartMethod, f: F, args: A) -> KillOnDrop
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned + 'static,
    R: std::process::Termination + 'static,
{
    let mut p = Process::new(f, args).daemon(true).start_method(method);
    p.start().expect("start a child");
    KillOnDrop(p)
}

/// Receives one message, failing the test after [`LONG`].
fn recv<T: DeserializeOwned>(conn: &Connection, what: &str) -> T {
    conn.recv_timeout(LONG)
        .unwrap_or_else(|e| panic!("{what}: no message: {e:?}"))
}

/// Receives one message from each of up to `n` connections that have one, waiting at
/// most `within`; returns (connection index, message) in arrival order.
fn gather<T: DeserializeOwned>(
    conns: &[&Connection],
    n: usize,
    within: Duration,
) -> Vec<(usize, T)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut done = vec![false; conns.len()];
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let pending: Vec<usize> = (0..conns.len()).filter(|&i| !done[i]).collect();
        if pending.is_empty() {
            break;
        }
        let objects: Vec<&dyn Waitable> =
            pending.iter().map(|&i| conns[i] as &dyn Waitable).collect();
        for k in multiproc::wait(&objects, Some(left)).expect("wait") {
            let i = pending[k];
            done[i] = true;
            got.push((i, recv(conns[i], "gather")));
        }
    }
    got
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

/// Polls `cond` every few milliseconds for at most [`LONG`].
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {LONG:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------
// Lock and RLock
// ---------------------------------------------------------------------------------

fn hold_lock_forever((lock, conn): (Lock, Connection)) {
    std::mem::forget(lock.acquire().expect("child acquires"));
    conn.send(&()).unwrap();
    thread::sleep(FOREVER);
}

fn hold_rlock_forever((lock, conn): (RLock, Connection)) {
    std::mem::forget(lock.acquire().expect("child acquires"));
    std::mem::forget(lock.acquire().expect("child acquires again"));
    conn.send(&lock.recursion_depth()).unwrap();
    thread::sleep(FOREVER);
}

/// Says it is about to acquire, then reports (previous owner died, got the lock).
fn acquire_and_report((lock, conn): (Lock, Connection)) {
    conn.send(&()).unwrap();
    let report = match lock.acquire_timeout(LONG) {
        Ok(_) => (false, true),
        Err(AcquireError::OwnerDied(_)) => (true, true),
        Err(_) => (false, false),
    };
    conn.send(&report).unwrap();
}

fn try_rlock((lock, conn): (RLock, Connection)) {
    // Reports whether it could take the lock at once, then takes it with a wait.
    conn.send(&lock.try_acquire().is_ok()).unwrap();
    let got = lock.acquire_timeout(LONG).is_ok();
    conn.send(&got).unwrap();
}

#[test]
fn lock_holder_sigkilled_next_acquire_in_another_process_gets_owner_died_within_1s() {
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let lock = Lock::new().unwrap();
        let (here, there) = pipe(true).unwrap();
        let holder = start(method, hold_lock_forever, (lock.clone(), there));
        recv::<()>(&here, "holder ready");
        assert!(lock.is_locked());

        let (here2, there2) = pipe(true).unwrap();
        let _waiter = start(method, acquire_and_report, (lock.clone(), there2));
        recv::<()>(&here2, "waiter ready");
        // The waiter is (about to be) blocked: it must not get the lock while the holder lives.
        assert!(
            !here2.poll(Some(QUIET)).unwrap(),
            "{method}: got a held lock"
        );

        let killed = Instant::now();
        holder.0.kill().unwrap();
        let (died, got): (bool, bool) = recv(&here2, "waiter report");
        let elapsed = killed.elapsed();
        assert!(got, "{method}: the waiter did not get the lock");
        assert!(
            died,
            "{method}: the waiter was not told that the owner died"
        );
        assert!(
            elapsed < Duration::from_secs(1),
            "{method}: took {elapsed:?} after the kill"
        );
    }
}

#[test]
fn lock_holder_sigkilled_every_acquirer_is_told_until_marked_consistent() {
    let lock = Lock::new().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(
        StartMethod::Forkserver,
        hold_lock_forever,
        (lock.clone(), there),
    );
    recv::<()>(&here, "holder ready");
    assert!(matches!(lock.try_acquire(), Err(AcquireError::Timeout)));
    holder.0.kill().unwrap();
    join_bounded(&mut holder.0, "holder");
    let t = Instant::now();
    match lock.acquire_timeout(LONG) {
        Err(AcquireError::OwnerDied(guard)) => drop(guard),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    // Released without repair (as `?` does): the lock stays marked, the next acquirer
    // is told too, at once.
    match lock.try_acquire() {
        Err(AcquireError::OwnerDied(guard)) => {
            guard.mark_consistent();
        }
        other => panic!("expected OwnerDied again, got {other:?}"),
    }
    // Repaired and released: the next acquisition is a clean one.
    assert!(lock.try_acquire().is_ok());
    assert!(lock.acquire_timeout(Duration::MAX).is_ok());
}

#[test]
fn rlock_holder_sigkilled_next_owner_starts_at_depth_one() {
    let lock = RLock::new().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut holder = start(
        StartMethod::Spawn,
        hold_rlock_forever,
        (lock.clone(), there),
    );
    assert_eq!(recv::<u32>(&here, "holder depth"), 2);
    holder.0.kill().unwrap();
    join_bounded(&mut holder.0, "holder");
    let guard = match lock.acquire_timeout(LONG) {
        Err(AcquireError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert_eq!(lock.recursion_depth(), 1);
    let again = lock.acquire().unwrap(); // this holder was told already
    assert_eq!(lock.recursion_depth(), 2);
    drop(again);
    drop(guard);
    assert!(!lock.is_locked());
    // Not repaired: the next holder is told too; repaired, the one after is not.
    match lock.try_acquire() {
        Err(AcquireError::OwnerDied(g)) => g.mark_consistent(),
        other => panic!("expected OwnerDied again, got {other:?}"),
    }
    assert!(lock.try_acquire().is_ok());
}

#[test]
fn rlock_is_recursive_and_free_only_after_as_many_releases() {
    let lock = RLock::new().unwrap();
    let a = lock.acquire().unwrap();
    let b = lock.acquire().unwrap();
    let c = lock.try_acquire().unwrap();
    assert_eq!(lock.recursion_depth(), 3);

    let (here, there) = pipe(true).unwrap();
    let _child = start(StartMethod::Forkserver, try_rlock, (lock.clone(), there));
    assert!(
        !recv::<bool>(&here, "child try_acquire"),
        "another process took a held RLock"
    );
    drop(c);
    drop(b);
    assert_eq!(lock.recursion_depth(), 1);
    assert!(
        !here.poll(Some(QUIET)).unwrap(),
        "the child got the RLock at depth 1"
    );
    drop(a);
    assert!(
        recv::<bool>(&here, "child acquire"),
        "the child never got the RLock"
    );
}

thread_local! {
    /// Guards a test thread holds across a fork (a forked child finds its copies here).
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<(LockGuard<'static>, ValueGuard<'static, u32>)>> =
        const { std::cell::RefCell::new(None) };
}

/// In a child forked while its parent held a `Lock` and a `Value`: drops its copies of
/// the parent's guards; fails unless both stay held by the parent afterwards.
fn drop_copied_guards((lock, v): (Lock, Value<u32>)) -> Result<(), String> {
    let copies = HELD_ACROSS_FORK.with(|h| h.borrow_mut().take());
    if copies.is_none() {
        return Err("the child has no copy of the guards".into());
    }
    drop(copies);
    match (lock.try_acquire(), v.try_get_lock()) {
        (Err(AcquireError::Timeout), Err(AcquireError::Timeout)) => Ok(()),
        (l, v) => Err(format!(
            "after dropping the copies: lock {:?}, value {:?}",
            l.map(drop),
            v.map(drop)
        )),
    }
}

#[test]
fn a_guard_copied_by_fork_and_dropped_in_the_child_leaves_the_parents_lock_held() {
    let lock: &'static Lock = Box::leak(Box::new(Lock::new().unwrap()));
    let v: &'static Value<u32> = Box::leak(Box::new(Value::new(7).unwrap()));
    let guards = (lock.acquire().unwrap(), v.get_lock().unwrap());
    HELD_ACROSS_FORK.with(|h| *h.borrow_mut() = Some(guards));
    let mut p =
        Process::new(drop_copied_guards, (lock.clone(), v.clone())).start_method(StartMethod::Fork);
    p.start().unwrap();
    join_bounded(&mut p, "guard-dropping child");
    assert_eq!(p.exitcode(), Some(0));
    // Still this thread's: taking them again is refused as already held.
    assert!(matches!(lock.try_acquire(), Err(AcquireError::AlreadyHeld)));
    assert!(matches!(v.try_get_lock(), Err(AcquireError::AlreadyHeld)));
    HELD_ACROSS_FORK.with(|h| drop(h.borrow_mut().take()));
    assert!(lock.try_acquire().is_ok());
    assert_eq!(v.get().unwrap(), 7);
}

#[test]
fn releasing_a_lock_not_held_is_an_error() {
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
    let rlock = RLock::new().unwrap();
    assert!(matches!(rlock.release(), Err(Error::InvalidState(_))));

    // Held by another process: still not ours to release.
    let (here, there) = pipe(true).unwrap();
    let _holder = start(
        StartMethod::Forkserver,
        hold_lock_forever,
        (lock.clone(), there),
    );
    recv::<()>(&here, "holder ready");
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
    assert!(lock.is_locked(), "a failed release unlocked the lock");

    // Held here, guard forgotten: release() works, once.
    let own = Lock::new().unwrap();
    std::mem::forget(own.acquire().unwrap());
    own.release().unwrap();
    assert!(own.release().is_err());
}

#[test]
fn a_lock_waiter_blocked_for_seconds_uses_almost_no_cpu() {
    let lock = Lock::new().unwrap();
    let waiter = lock.clone();
    let held = lock.acquire().unwrap();
    let blocked = cpu_while_blocked(
        move || {
            drop(
                waiter
                    .acquire_timeout(LONG)
                    .expect("the lock was never free"),
            )
        },
        || drop(held),
    );
    assert_idle_while_blocked("Lock::acquire", blocked);
}

#[test]
fn lock_acquire_timeout_returns_after_about_the_timeout() {
    let lock = Lock::new().unwrap();
    let (here, there) = pipe(true).unwrap();
    let _holder = start(
        StartMethod::Forkserver,
        hold_lock_forever,
        (lock.clone(), there),
    );
    recv::<()>(&here, "holder ready");
    let t = Instant::now();
    assert!(matches!(
        lock.acquire_timeout(SHORT),
        Err(AcquireError::Timeout)
    ));
    assert_about(t.elapsed(), SHORT, "Lock::acquire_timeout");
}

/// Trials a waiter makes at its descriptor limit.
const TRIALS: usize = 20;

/// Out of descriptors, tries [`TRIALS`] times to take a lock that a live process holds.
/// Reports whether it really was out of descriptors (before and after), and what each
/// try gave.
fn wait_out_of_descriptors((lock, conn): (Lock, Connection)) {
    // Learn who this thread is while descriptors remain (held: a timeout at once).
    assert!(matches!(lock.try_acquire(), Err(AcquireError::Timeout)));
    let emfile = |e: &std::io::Error| e.raw_os_error() == Some(24);
    let _used_up = common::DescriptorsUsedUp::leaving(0);
    let exhausted = std::fs::File::open("/dev/null").is_err_and(|e| emfile(&e));
    let outcomes: Vec<String> = (0..TRIALS)
        .map(|_| {
            match lock.acquire_timeout(Duration::from_millis(300)) {
                Ok(_) => "Ok",
                Err(AcquireError::OwnerDied(_)) => "OwnerDied",
                Err(AcquireError::Timeout) => "Timeout",
                Err(AcquireError::AlreadyHeld) => "AlreadyHeld",
            }
            .to_string()
        })
        .collect();
    let still = std::fs::File::open("/dev/null").is_err_and(|e| emfile(&e));
    conn.send(&(exhausted, still, outcomes)).unwrap();
}

#[test]
fn a_live_owner_is_never_reported_dead_to_a_waiter_out_of_descriptors() {
    let lock = Lock::new().unwrap();
    let held = lock.acquire().unwrap();
    let (here, there) = pipe(true).unwrap();
    let _waiter = start(
        StartMethod::Forkserver,
        wait_out_of_descriptors,
        (lock.clone(), there),
    );
    let (exhausted, still, outcomes): (bool, bool, Vec<String>) = recv(&here, "waiter report");
    assert!(
        exhausted && still,
        "the waiter never ran out of descriptors"
    );
    assert_eq!(outcomes.len(), TRIALS);
    assert!(
        outcomes.iter().all(|o| o == "Timeout"),
        "a live owner was taken for dead: {outcomes:?}"
    );
    assert!(lock.is_locked());
    drop(held);
    assert!(!lock.is_locked(), "the owner lost its lock");
}

/// Runs out of descriptors, then takes the lock for the first time in this process,
/// says so, and dies holding it (a zombie until the test process reaps it).
fn take_lock_out_of_descriptors_and_die((lock, taken): (Lock, Event)) {
    use rustix::process::{Resource, Rlimit, Signal, getpid, getrlimit, kill_process, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let low = Rlimit {
        current: Some(32),
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, low).is_err() {
        return;
    }
    let mut hoard = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hoard.push(f);
        if hoard.len() > 1000 {
            break;
        }
    }
    let _held = lock.acquire().ok();
    taken.set();
    thread::sleep(Duration::from_millis(200));
    let _ = kill_process(getpid(), Signal::KILL);
    thread::sleep(FOREVER);
}

#[test]
fn an_owner_that_took_the_lock_out_of_descriptors_and_died_unreaped_is_found_dead() {
    for method in common::METHODS {
        let lock = Lock::new().unwrap();
        let taken = Event::new().unwrap();
        let _holder = start(
            method,
            take_lock_out_of_descriptors_and_die,
            (lock.clone(), taken.clone()),
        );
        assert!(
            taken.wait(Some(LONG)),
            "{method}: the holder never took the lock"
        );
        // The holder dies a zombie that only this process reaps; a waiter must still
        // find it dead (before the test's bound, not hang forever).
        let t = Instant::now();
        match lock.acquire_timeout(Duration::from_secs(20)) {
            Err(AcquireError::OwnerDied(g)) => g.mark_consistent(),
            other => panic!(
                "{method}: expected OwnerDied, got {:?} after {:?}",
                other.map(|_| ()),
                t.elapsed()
            ),
        }
    }
}

/// With a SIGUSR1 handler installed, says it is ready, then waits for the lock and
/// reports (whether the owner was found dead, whether any signal arrived).
fn wait_under_signals((lock, conn): (Lock, Connection)) {
    let signalled = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, signalled.clone()).unwrap();
    conn.send(&()).unwrap();
    let died = matches!(
        lock.acquire_timeout(Duration::from_secs(20)),
        Err(AcquireError::OwnerDied(_))
    );
    conn.send(&(died, signalled.load(Ordering::Relaxed)))
        .unwrap();
}

#[test]
fn a_dead_owner_is_found_within_1s_by_a_waiter_under_a_1khz_signal_storm() {
    let lock = Lock::new().unwrap();
    let (here, there) = pipe(true).unwrap();
    let holder = start(
        StartMethod::Forkserver,
        hold_lock_forever,
        (lock.clone(), there),
    );
    recv::<()>(&here, "holder ready");
    let (here2, there2) = pipe(true).unwrap();
    let waiter = start(
        StartMethod::Forkserver,
        wait_under_signals,
        (lock.clone(), there2),
    );
    recv::<()>(&here2, "waiter ready");
    // Signals go through a pidfd: once the waiter has ended, they reach nobody, even if
    // its pid is reused.
    let pid = rustix::process::Pid::from_raw(waiter.0.pid().unwrap() as i32).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::USR1);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Let the storm run over the waiter's sleeps for a while before the owner dies.
    assert!(
        !here2.poll(Some(QUIET)).unwrap(),
        "the waiter got a held lock"
    );
    let killed = Instant::now();
    holder.0.kill().unwrap();
    let report = here2.recv_timeout::<(bool, bool)>(LONG);
    let elapsed = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let (died, signalled) = report.expect("waiter report");
    assert!(signalled, "no signal reached the waiter");
    assert!(died, "the waiter was not told that the owner died");
    assert!(
        elapsed < Duration::from_secs(1),
        "found {elapsed:?} after the kill"
    );
}

#[test]
fn huge_timeouts_mean_no_deadline_and_do_not_panic() {
    let lock = Lock::new().unwrap();
    drop(lock.acquire_timeout(Duration::MAX).unwrap());
    let rlock = RLock::new().unwrap();
    let a = rlock.acquire_timeout(Duration::MAX).unwrap();
    let b = rlock.acquire_timeout(Duration::MAX).unwrap();
    drop((b, a));
    let cond = Condition::new().unwrap();
    drop(cond.acquire_timeout(Duration::MAX).unwrap());
    // Contended: the waiter sleeps with no deadline until the holder lets go.
    let held = lock.acquire().unwrap();
    let other = lock.clone();
    let waiter = thread::spawn(move || other.acquire_timeout(Duration::MAX).is_ok());
    thread::sleep(Duration::from_millis(150));
    drop(held);
    assert!(waiter.join().unwrap());
}

// ---------------------------------------------------------------------------------
// Semaphore and BoundedSemaphore
// ---------------------------------------------------------------------------------

#[test]
fn semaphore_get_value_try_acquire_and_release() {
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    assert!(sem.try_acquire());
    assert!(sem.try_acquire());
    assert!(!sem.try_acquire());
    assert_eq!(sem.get_value(), 0);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 1);
    {
        let _unit = sem.acquire_guard().unwrap();
        assert_eq!(sem.get_value(), 0);
        assert!(matches!(sem.try_acquire_guard(), Err(Error::Timeout)));
    }
    assert_eq!(sem.get_value(), 1);
    // A plain semaphore may go above its initial value (Python's Semaphore).
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn semaphore_acquire_timeout_is_false_and_the_guard_form_timeout_after_about_the_timeout() {
    let sem = Semaphore::new(0).unwrap();
    let t = Instant::now();
    assert!(!sem.acquire_timeout(SHORT));
    assert_about(t.elapsed(), SHORT, "Semaphore::acquire_timeout");
    let t = Instant::now();
    assert!(matches!(
        sem.acquire_guard_timeout(SHORT),
        Err(Error::Timeout)
    ));
    assert_about(t.elapsed(), SHORT, "Semaphore::acquire_guard_timeout");
    assert_eq!(sem.get_value(), 0);
}

fn sem_waiter((sem, conn): (Semaphore, Connection)) {
    conn.send(&()).unwrap();
    let got = sem.acquire_timeout(LONG);
    conn.send(&got).unwrap();
}

#[test]
fn each_semaphore_release_lets_exactly_one_waiting_process_through() {
    let sem = Semaphore::new(0).unwrap();
    let mut conns = Vec::new();
    let mut children = Vec::new();
    for _ in 0..3 {
        let (here, there) = pipe(true).unwrap();
        children.push(start(
            StartMethod::Forkserver,
            sem_waiter,
            (sem.clone(), there),
        ));
        conns.push(here);
    }
    let refs: Vec<&Connection> = conns.iter().collect();
    assert_eq!(
        gather::<()>(&refs, 3, LONG).len(),
        3,
        "waiters never started"
    );
    assert!(
        gather::<bool>(&refs, 3, QUIET).is_empty(),
        "a waiter passed a semaphore at 0"
    );

    let mut through = BTreeSet::new();
    for round in 1..=3 {
        sem.release().unwrap();
        let pending: Vec<usize> = (0..3).filter(|i| !through.contains(i)).collect();
        let pending_refs: Vec<&Connection> = pending.iter().map(|&i| &conns[i]).collect();
        let got = gather::<bool>(&pending_refs, 1, LONG);
        assert_eq!(got.len(), 1, "round {round}: nobody passed");
        assert!(got[0].1);
        through.insert(pending[got[0].0]);
        let rest: Vec<&Connection> = (0..3)
            .filter(|i| !through.contains(i))
            .map(|i| &conns[i])
            .collect();
        assert!(
            gather::<bool>(&rest, 3, QUIET).is_empty(),
            "round {round}: one release let two processes through"
        );
    }
    assert_eq!(sem.get_value(), 0);
    for mut c in children {
        join_bounded(&mut c.0, "semaphore waiter");
    }
}

/// Reports how many processes were inside (itself included) while it held a unit.
fn limited_worker((sem, inside, conn): (Semaphore, Semaphore, Connection)) {
    let _unit = sem.acquire_guard().unwrap();
    inside.release().unwrap();
    let seen = inside.get_value();
    thread::sleep(Duration::from_millis(100));
    assert!(inside.try_acquire());
    conn.send(&seen).unwrap();
}

#[test]
fn semaphore_limits_how_many_processes_are_inside_at_once() {
    let sem = Semaphore::new(2).unwrap();
    let inside = Semaphore::new(0).unwrap();
    let mut conns = Vec::new();
    let mut children = Vec::new();
    for _ in 0..5 {
        let (here, there) = pipe(true).unwrap();
        children.push(start(
            StartMethod::Forkserver,
            limited_worker,
            (sem.clone(), inside.clone(), there),
        ));
        conns.push(here);
    }
    let refs: Vec<&Connection> = conns.iter().collect();
    let seen = gather::<u32>(&refs, 5, LONG);
    assert_eq!(seen.len(), 5, "not every worker finished");
    for (_, n) in seen {
        assert!(
            (1..=2).contains(&n),
            "{n} processes inside a semaphore of 2"
        );
    }
    // A worker reports while it still holds its unit: count them back once all ended.
    for mut c in children {
        join_bounded(&mut c.0, "worker");
    }
    assert_eq!(sem.get_value(), 2);
}

fn release_bounded((sem, conn): (BoundedSemaphore, Connection)) {
    let first = sem.release().map_err(|e| e.to_string());
    conn.send(&first).unwrap();
}

#[test]
fn bounded_semaphore_release_above_initial_value_is_an_error() {
    let sem = BoundedSemaphore::new(1).unwrap();
    match sem.release() {
        Err(Error::InvalidState(msg)) => {
            assert!(msg.contains("released too many times"), "{msg}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(sem.get_value(), 1, "a refused release changed the value");
    sem.acquire().unwrap();
    sem.release().unwrap();
    assert_eq!(sem.max_value(), 1);

    // The bound holds in another process too, and a release there fills what was taken here.
    let (here, there) = pipe(true).unwrap();
    let mut child = start(StartMethod::Spawn, release_bounded, (sem.clone(), there));
    let r: Result<(), String> = recv(&here, "child release");
    assert!(r.unwrap_err().contains("released too many times"));
    join_bounded(&mut child.0, "child");

    assert!(sem.try_acquire());
    let (here, there) = pipe(true).unwrap();
    let mut child = start(
        StartMethod::Forkserver,
        release_bounded,
        (sem.clone(), there),
    );
    let r: Result<(), String> = recv(&here, "child release");
    assert!(r.is_ok(), "{r:?}");
    join_bounded(&mut child.0, "child");
    assert_eq!(sem.get_value(), 1);
}

#[test]
fn bounded_semaphore_of_zero_refuses_every_release() {
    let sem = BoundedSemaphore::new(0).unwrap();
    assert!(!sem.try_acquire());
    assert!(sem.release().is_err());
    assert_eq!(sem.get_value(), 0);
}

// ---------------------------------------------------------------------------------
// Event
// ---------------------------------------------------------------------------------

#[test]
fn event_wait_returns_false_after_about_the_timeout() {
    let event = Event::new().unwrap();
    let t = Instant::now();
    assert!(!event.wait(Some(SHORT)));
    assert_about(t.elapsed(), SHORT, "Event::wait");
    assert!(!event.is_set());
    assert!(!event.wait(Some(Duration::ZERO)));
}

#[test]
fn an_event_waiter_blocked_for_seconds_uses_almost_no_cpu() {
    let event = Event::new().unwrap();
    let waiter = event.clone();
    let blocked = cpu_while_blocked(
        move || assert!(waiter.wait(Some(LONG)), "the event was never seen set"),
        || event.set(),
    );
    assert_idle_while_blocked("Event::wait", blocked);
}

#[test]
fn event_set_clear_is_set() {
    let event = Event::new().unwrap();
    assert!(!event.is_set());
    event.set();
    assert!(event.is_set());
    assert!(event.wait(None));
    assert!(event.wait(Some(Duration::ZERO)));
    event.set(); // idempotent
    event.clear();
    assert!(!event.is_set());
    assert!(!event.wait(Some(Duration::from_millis(20))));
}

fn event_waiter((event, conn): (Event, Connection)) {
    conn.send(&()).unwrap();
    let set = event.wait(Some(LONG));
    conn.send(&set).unwrap();
}

fn event_setter(event: Event) {
    event.set();
}

#[test]
fn event_set_wakes_waiters_in_several_processes() {
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let event = Event::new().unwrap();
        let mut conns = Vec::new();
        let mut children = Vec::new();
        for _ in 0..3 {
            let (here, there) = pipe(true).unwrap();
            children.push(start(method, event_waiter, (event.clone(), there)));
            conns.push(here);
        }
        let refs: Vec<&Connection> = conns.iter().collect();
        assert_eq!(gather::<()>(&refs, 3, LONG).len(), 3);
        assert!(
            gather::<bool>(&refs, 3, QUIET).is_empty(),
            "{method}: a wait returned unset"
        );

        // Set by yet another process.
        let mut setter = start(method, event_setter, event.clone());
        let woken = gather::<bool>(&refs, 3, LONG);
        assert_eq!(woken.len(), 3, "{method}: not every waiter woke");
        assert!(woken.iter().all(|(_, set)| *set), "{method}: {woken:?}");
        assert!(event.is_set());
        join_bounded(&mut setter.0, "setter");
        for mut c in children {
            join_bounded(&mut c.0, "event waiter");
        }
    }
}

fn event_through_pipe(conn: Connection) {
    let event: Event = conn.recv().unwrap();
    event.set();
    conn.send(&()).unwrap();
}

#[test]
fn event_travels_through_a_pipe() {
    let event = Event::new().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut child = start(StartMethod::Forkserver, event_through_pipe, there);
    here.send(&event).unwrap();
    assert!(event.wait(Some(LONG)));
    recv::<()>(&here, "child done");
    join_bounded(&mut child.0, "child");
}

// ---------------------------------------------------------------------------------
// Condition
// ---------------------------------------------------------------------------------

/// Takes the lock, says so (still holding it), waits; reports whether it was notified.
fn cond_waiter((cond, conn): (Condition, Connection)) {
    let mut held = cond.acquire().unwrap();
    conn.send(&()).unwrap();
    let notified = held.wait(Some(LONG)).unwrap();
    assert_eq!(cond.lock().recursion_depth(), 1);
    conn.send(&notified).unwrap();
}

/// Starts `n` processes waiting on `cond`; returns once all of them are inside `wait`.
fn start_cond_waiters(
    cond: &Condition,
    n: usize,
    method: StartMethod,
) -> (Vec<KillOnDrop>, Vec<Connection>) {
    let mut children = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..n {
        let (here, there) = pipe(true).unwrap();
        children.push(start(method, cond_waiter, (cond.clone(), there)));
        // It said so while holding the lock: once we hold it, it is inside `wait`.
        recv::<()>(&here, "waiter ready");
        drop(cond.acquire().unwrap());
        conns.push(here);
    }
    (children, conns)
}

/// Takes the condition's lock and ends without releasing it.
fn die_holding_condition(cond: Condition) {
    std::mem::forget(cond.acquire().unwrap());
}

#[test]
fn a_condition_whose_holder_died_reports_it_to_every_acquirer_and_waiter_until_marked_consistent() {
    let cond = Condition::new().unwrap();
    let mut p = start(StartMethod::Forkserver, die_holding_condition, cond.clone());
    join_bounded(&mut p.0, "dying holder");
    match cond.acquire_timeout(LONG) {
        Err(AcquireError::OwnerDied(held)) => drop(held), // not repaired
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Still marked: a waiter re-taking the lock is told too, and keeps its guard.
    let mut held = match cond.acquire() {
        Err(AcquireError::OwnerDied(held)) => held,
        other => panic!("expected OwnerDied again, got {other:?}"),
    };
    assert!(matches!(
        held.wait(Some(Duration::from_millis(10))),
        Err(Error::OwnerDied)
    ));
    held.mark_consistent();
    assert!(!held.wait(Some(Duration::from_millis(10))).unwrap());
    drop(held);
    assert!(cond.try_acquire().is_ok());
}

#[test]
fn condition_notify_n_wakes_exactly_n_processes() {
    let cond = Condition::new().unwrap();
    let (children, conns) = start_cond_waiters(&cond, 4, StartMethod::Forkserver);
    let refs: Vec<&Connection> = conns.iter().collect();
    assert!(
        gather::<bool>(&refs, 4, QUIET).is_empty(),
        "a waiter woke unnotified"
    );

    cond.acquire().unwrap().notify(2);
    let first = gather::<bool>(&refs, 2, LONG);
    assert_eq!(first.len(), 2, "notify(2) did not wake two");
    assert!(first.iter().all(|(_, n)| *n), "{first:?}");
    // notify(n) wakes the longest waiting first: the first two started.
    let woke: BTreeSet<usize> = first.iter().map(|(i, _)| *i).collect();
    assert_eq!(woke, BTreeSet::from([0, 1]));
    let rest: Vec<&Connection> = conns[2..].iter().collect();
    assert!(
        gather::<bool>(&rest, 2, QUIET).is_empty(),
        "notify(2) woke more than two"
    );

    cond.acquire().unwrap().notify(1);
    let third = gather::<bool>(&rest, 1, LONG);
    assert_eq!(
        third,
        vec![(0, true)],
        "notify(1) did not wake the oldest waiter"
    );
    let last: Vec<&Connection> = vec![&conns[3]];
    assert!(
        gather::<bool>(&last, 1, QUIET).is_empty(),
        "notify(1) woke two"
    );

    cond.acquire().unwrap().notify_all();
    assert_eq!(gather::<bool>(&last, 1, LONG), vec![(0, true)]);
    for mut c in children {
        join_bounded(&mut c.0, "condition waiter");
    }
}

#[test]
fn condition_notify_all_wakes_every_process() {
    let cond = Condition::new().unwrap();
    let (children, conns) = start_cond_waiters(&cond, 3, StartMethod::Spawn);
    let refs: Vec<&Connection> = conns.iter().collect();
    {
        let held = cond.acquire().unwrap();
        held.notify_all();
        // Woken, but they return only once they get the lock back.
        assert!(
            gather::<bool>(&refs, 3, QUIET).is_empty(),
            "a waiter returned without the lock"
        );
    }
    let woke = gather::<bool>(&refs, 3, LONG);
    assert_eq!(woke.len(), 3);
    assert!(woke.iter().all(|(_, n)| *n));
    for mut c in children {
        join_bounded(&mut c.0, "condition waiter");
    }
}

#[test]
fn condition_notify_reaches_only_waiters_present_at_the_time() {
    let cond = Condition::new().unwrap();
    let (mut children, mut conns) = start_cond_waiters(&cond, 1, StartMethod::Forkserver);
    cond.acquire().unwrap().notify(1);
    // A waiter arriving after the notify must not take it.
    let (more_children, more_conns) = start_cond_waiters(&cond, 1, StartMethod::Forkserver);
    children.extend(more_children);
    conns.extend(more_conns);
    assert_eq!(gather::<bool>(&[&conns[0]], 1, LONG), vec![(0, true)]);
    assert!(
        gather::<bool>(&[&conns[1]], 1, QUIET).is_empty(),
        "a later waiter took the notify"
    );
    cond.acquire().unwrap().notify(1);
    assert_eq!(gather::<bool>(&[&conns[1]], 1, LONG), vec![(0, true)]);
    for mut c in children {
        join_bounded(&mut c.0, "condition waiter");
    }
}

#[test]
fn condition_wait_timeout_returns_false_with_the_lock_held_again() {
    let cond = Condition::new().unwrap();
    let mut held = cond.acquire().unwrap();
    let t = Instant::now();
    assert!(!held.wait(Some(SHORT)).unwrap());
    assert_about(t.elapsed(), SHORT, "Condition::wait");
    assert_eq!(cond.lock().recursion_depth(), 1);
    let t = Instant::now();
    assert!(!held.wait_for(|| false, Some(SHORT)).unwrap());
    assert_about(t.elapsed(), SHORT, "Condition::wait_for");
    drop(held);
    assert!(!cond.lock().is_locked());
}

/// Under the condition's lock, makes `items` one larger and notifies, `n` times.
fn produce((cond, items, n): (Condition, Semaphore, u32)) {
    for _ in 0..n {
        let held = cond.acquire().unwrap();
        items.release().unwrap();
        held.notify(1);
        drop(held);
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn condition_wait_for_a_predicate_changed_by_another_process() {
    let cond = Condition::new().unwrap();
    let items = Semaphore::new(0).unwrap();
    let mut held = cond.acquire().unwrap();
    let mut child = start(
        StartMethod::Forkserver,
        produce,
        (cond.clone(), items.clone(), 5),
    );
    let ok = held
        .wait_for(|| items.get_value() >= 5, Some(LONG))
        .unwrap();
    assert!(ok, "the predicate never became true");
    assert_eq!(items.get_value(), 5);
    drop(held);
    join_bounded(&mut child.0, "producer");
}

fn notify_once(cond: Condition) {
    cond.acquire().unwrap().notify_all();
}

#[test]
fn condition_wait_releases_a_recursively_held_lock_entirely() {
    let lock = RLock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    let outer = lock.acquire().unwrap();
    let mut held = cond.acquire().unwrap();
    assert_eq!(lock.recursion_depth(), 2);
    let mut child = start(StartMethod::Spawn, notify_once, cond.clone());
    // The child can only notify if `wait` released both levels.
    assert!(held.wait(Some(LONG)).unwrap(), "never notified");
    assert_eq!(lock.recursion_depth(), 2);
    drop(held);
    drop(outer);
    assert!(!lock.is_locked());
    join_bounded(&mut child.0, "notifier");
}

#[test]
fn condition_skips_a_waiter_that_died() {
    let cond = Condition::new().unwrap();
    let (mut children, conns) = start_cond_waiters(&cond, 2, StartMethod::Forkserver);
    // The oldest waiter dies; notify(1) must reach the other one.
    children[0].0.kill().unwrap();
    join_bounded(&mut children[0].0, "killed waiter");
    cond.acquire().unwrap().notify(1);
    assert_eq!(gather::<bool>(&[&conns[1]], 1, LONG), vec![(0, true)]);
    join_bounded(&mut children[1].0, "waiter");
}

/// Takes the condition's lock (once a waiter has released it), notifies, and dies
/// holding it when killed.
fn notify_and_hold_forever((cond, conn): (Condition, Connection)) {
    let held = cond.acquire().unwrap();
    held.notify_all();
    std::mem::forget(held);
    conn.send(&()).unwrap();
    thread::sleep(FOREVER);
}

#[test]
fn condition_waiter_is_told_when_a_lock_holder_died() {
    let cond = Condition::new().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let waiter = {
        let cond = cond.clone();
        thread::spawn(move || {
            let mut held = cond.acquire().unwrap();
            ready_tx.send(()).unwrap();
            // Releases the lock; the child takes it, notifies, and dies holding it.
            let r = held.wait(Some(LONG));
            let depth = cond.lock().recursion_depth();
            (r.map_err(|e| e.to_string()), depth)
        })
    };
    ready_rx.recv_timeout(LONG).expect("waiter ready");
    let (here, there) = pipe(true).unwrap();
    let holder = start(
        StartMethod::Forkserver,
        notify_and_hold_forever,
        (cond.clone(), there),
    );
    recv::<()>(&here, "holder ready");
    holder.0.kill().unwrap();
    let (r, depth) = waiter.join().unwrap();
    assert_eq!(r, Err(Error::OwnerDied.to_string()));
    assert_eq!(depth, 1, "the waiter does not hold the lock again");
    assert!(!cond.lock().is_locked());
}

fn cond_through_pipe(conn: Connection) {
    let cond: Condition = conn.recv().unwrap();
    let mut held = cond.acquire().unwrap();
    conn.send(&()).unwrap();
    let notified = held.wait(Some(LONG)).unwrap();
    conn.send(&notified).unwrap();
}

#[test]
fn condition_travels_through_a_pipe() {
    let cond = Condition::new().unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut child = start(StartMethod::Forkserver, cond_through_pipe, there);
    here.send(&cond).unwrap();
    recv::<()>(&here, "child waiting");
    cond.acquire().unwrap().notify(1);
    assert!(recv::<bool>(&here, "child notified"));
    join_bounded(&mut child.0, "child");
}

// ---------------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------------

/// Waits `rounds` times and reports its arrival index for each.
fn barrier_party((barrier, rounds, conn): (Barrier, u32, Connection)) {
    let mut indexes = Vec::new();
    for _ in 0..rounds {
        indexes.push(barrier.wait_timeout(LONG).map_err(|e| e.to_string()));
    }
    conn.send(&indexes).unwrap();
}

#[test]
fn barrier_indexes_are_a_permutation_in_every_round() {
    const PARTIES: u32 = 4;
    const ROUNDS: u32 = 3;
    let barrier = Barrier::new(PARTIES).unwrap();
    assert_eq!(barrier.parties(), PARTIES);
    let mut children = Vec::new();
    let mut conns = Vec::new();
    for i in 0..PARTIES {
        let method = if i % 2 == 0 {
            StartMethod::Forkserver
        } else {
            StartMethod::Spawn
        };
        let (here, there) = pipe(true).unwrap();
        children.push(start(
            method,
            barrier_party,
            (barrier.clone(), ROUNDS, there),
        ));
        conns.push(here);
    }
    let refs: Vec<&Connection> = conns.iter().collect();
    let reports = gather::<Vec<Result<u32, String>>>(&refs, PARTIES as usize, LONG);
    assert_eq!(reports.len(), PARTIES as usize);
    for round in 0..ROUNDS as usize {
        let indexes: BTreeSet<u32> = reports
            .iter()
            .map(|(_, r)| r[round].clone().expect("wait failed"))
            .collect();
        assert_eq!(indexes, (0..PARTIES).collect(), "round {round}");
    }
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
    for mut c in children {
        join_bounded(&mut c.0, "party");
    }
}

/// Waits once, reports, waits for a go, waits again and reports.
fn barrier_twice((barrier, conn): (Barrier, Connection)) {
    let first = barrier.wait_timeout(LONG).map_err(|e| e.to_string());
    conn.send(&first).unwrap();
    recv::<()>(&conn, "go");
    let second = barrier.wait_timeout(LONG).map_err(|e| e.to_string());
    conn.send(&second).unwrap();
}

#[test]
fn barrier_abort_breaks_waiting_processes_until_reset() {
    let barrier = Barrier::new(3).unwrap();
    let mut children = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let (here, there) = pipe(true).unwrap();
        children.push(start(
            StartMethod::Forkserver,
            barrier_twice,
            (barrier.clone(), there),
        ));
        conns.push(here);
    }
    eventually("two parties waiting", || barrier.n_waiting() == 2);
    barrier.abort().unwrap();
    let refs: Vec<&Connection> = conns.iter().collect();
    let first = gather::<Result<u32, String>>(&refs, 2, LONG);
    assert_eq!(first.len(), 2);
    let broken = Error::BrokenBarrier.to_string();
    assert!(
        first.iter().all(|(_, r)| r.as_ref() == Err(&broken)),
        "{first:?}"
    );
    assert!(barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
    assert!(
        matches!(barrier.wait(), Err(Error::BrokenBarrier)),
        "a broken barrier let a waiter in"
    );

    barrier.reset().unwrap();
    assert!(!barrier.broken());
    for c in &conns {
        c.send(&()).unwrap();
    }
    let mine = barrier.wait_timeout(LONG).unwrap();
    let second = gather::<Result<u32, String>>(&refs, 2, LONG);
    let mut indexes: BTreeSet<u32> = second.iter().map(|(_, r)| r.clone().unwrap()).collect();
    indexes.insert(mine);
    assert_eq!(indexes, BTreeSet::from([0, 1, 2]));
    for mut c in children {
        join_bounded(&mut c.0, "party");
    }
}

#[test]
fn barrier_timeout_breaks_the_barrier_for_every_waiter() {
    let barrier = Barrier::new(3).unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut child = start(
        StartMethod::Spawn,
        barrier_party,
        (barrier.clone(), 1, there),
    );
    eventually("one party waiting", || barrier.n_waiting() == 1);
    let t = Instant::now();
    assert!(matches!(
        barrier.wait_timeout(SHORT),
        Err(Error::BrokenBarrier)
    ));
    assert_about(t.elapsed(), SHORT, "Barrier::wait_timeout");
    assert!(barrier.broken());
    let r: Vec<Result<u32, String>> = recv(&here, "party");
    assert_eq!(r, vec![Err(Error::BrokenBarrier.to_string())]);
    join_bounded(&mut child.0, "party");
}

#[test]
fn barrier_default_timeout_applies_to_wait() {
    let barrier = Barrier::with_timeout(2, SHORT).unwrap();
    assert_eq!(barrier.timeout(), Some(SHORT));
    let t = Instant::now();
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
    assert_about(t.elapsed(), SHORT, "Barrier::wait with a default timeout");
    assert!(barrier.broken());
    barrier.reset().unwrap();
    assert!(!barrier.broken());
}

#[test]
fn barrier_reset_breaks_current_waiters_and_leaves_it_usable() {
    let barrier = Barrier::new(2).unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut child = start(
        StartMethod::Forkserver,
        barrier_twice,
        (barrier.clone(), there),
    );
    eventually("one party waiting", || barrier.n_waiting() == 1);
    barrier.reset().unwrap();
    let first: Result<u32, String> = recv(&here, "first wait");
    assert_eq!(first, Err(Error::BrokenBarrier.to_string()));
    assert!(!barrier.broken(), "reset left the barrier broken");
    assert_eq!(barrier.n_waiting(), 0);
    here.send(&()).unwrap();
    let mine = barrier.wait_timeout(LONG).unwrap();
    let theirs = recv::<Result<u32, String>>(&here, "second wait").unwrap();
    assert_eq!(BTreeSet::from([mine, theirs]), BTreeSet::from([0, 1]));
    join_bounded(&mut child.0, "party");
}

#[test]
fn barrier_of_zero_parties_is_refused() {
    assert!(matches!(Barrier::new(0), Err(Error::InvalidState(_))));
}

// ---------------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------------

/// Receives every kind of primitive through the pipe and uses each once.
fn use_all(conn: Connection) {
    let (lock, rlock, sem, bsem, event, cond, barrier): (
        Lock,
        RLock,
        Semaphore,
        BoundedSemaphore,
        Event,
        Condition,
        Barrier,
    ) = conn.recv().unwrap();
    drop(lock.acquire().unwrap());
    drop(rlock.acquire().unwrap());
    sem.release().unwrap();
    bsem.acquire().unwrap();
    cond.acquire().unwrap().notify_all();
    barrier.wait_timeout(LONG).unwrap();
    event.set();
}

#[test]
fn every_primitive_travels_through_a_pipe_as_the_same_object() {
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let sem = Semaphore::new(0).unwrap();
    let bsem = BoundedSemaphore::new(1).unwrap();
    let event = Event::new().unwrap();
    let cond = Condition::new().unwrap();
    let barrier = Barrier::new(2).unwrap();
    let (here, there) = pipe(true).unwrap();
    let mut child = start(StartMethod::Spawn, use_all, there);
    here.send(&(&lock, &rlock, &sem, &bsem, &event, &cond, &barrier))
        .unwrap();
    barrier.wait_timeout(LONG).unwrap();
    assert!(event.wait(Some(LONG)));
    assert_eq!(sem.get_value(), 1);
    assert_eq!(bsem.get_value(), 0);
    join_bounded(&mut child.0, "child");
}

fn echo_back(conn: Connection) {
    // Sends back whatever handle came, as raw descriptors and bytes.
    let event: Event = conn.recv().unwrap();
    conn.send(&event).unwrap();
}

#[test]
fn a_handle_received_as_another_kind_is_an_error() {
    let (a, b) = pipe(true).unwrap();
    let mut child = start(StartMethod::Forkserver, echo_back, b);
    a.send(&Event::new().unwrap()).unwrap();
    // An event's memory is not a semaphore's: decoding fails, nothing panics.
    assert!(matches!(
        a.recv_timeout::<Semaphore>(LONG),
        Err(Error::Decode(_))
    ));
    join_bounded(&mut child.0, "child");

    let (a, b) = pipe(true).unwrap();
    a.send(&Lock::new().unwrap()).unwrap();
    assert!(matches!(
        b.recv_timeout::<Barrier>(LONG),
        Err(Error::Decode(_))
    ));
    a.send(&Semaphore::new(1).unwrap()).unwrap();
    assert!(matches!(
        b.recv_timeout::<BoundedSemaphore>(LONG),
        Err(Error::Decode(_))
    ));
    a.send(&Event::new().unwrap()).unwrap();
    assert!(matches!(
        b.recv_timeout::<Condition>(LONG),
        Err(Error::Decode(_))
    ));
    a.send(&Barrier::new(2).unwrap()).unwrap();
    assert!(b.recv_timeout::<Barrier>(LONG).is_ok());
}

#[test]
fn a_handle_of_another_kind_is_named_with_the_right_article() {
    let (a, b) = pipe(true).unwrap();
    let mut said = Vec::new();
    a.send(&Barrier::new(2).unwrap()).unwrap();
    said.push(b.recv_timeout::<Event>(LONG).map(|_| ()));
    a.send(&Barrier::new(2).unwrap()).unwrap();
    said.push(b.recv_timeout::<Semaphore>(LONG).map(|_| ()));
    a.send(&Semaphore::new(1).unwrap()).unwrap();
    said.push(b.recv_timeout::<BoundedSemaphore>(LONG).map(|_| ()));
    let texts: Vec<String> = said
        .into_iter()
        .map(|r| match r {
            Err(Error::Decode(m)) => m,
            other => panic!("expected a decode error, got {other:?}"),
        })
        .collect();
    assert!(texts[0].contains("is not an event"), "{}", texts[0]);
    assert!(texts[1].contains("is not a semaphore"), "{}", texts[1]);
    assert!(
        texts[2].contains("is not a bounded semaphore"),
        "{}",
        texts[2]
    );
}

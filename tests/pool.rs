//! CPython's pool behaviours (`_TestPool` in `_test_multiprocessing.py`), ported: results
//! in order for `map` and `imap`, all results for `imap_unordered`, chunk sizes, the
//! initializer once per worker, `maxtasksperchild` replacing workers, `close` then
//! `join`, `terminate`, `apply_async` after `close`, `get` with a timeout, `successful`
//! before ready, callbacks in the parent, panics in tasks; and what CPython cannot do: a
//! worker killed mid-task fails that task alone, with `WorkerLost`, and the pool goes on.
//!
//! Timing: `get` timeouts are checked not to return early; everything else is bounded by
//! [`LONG`].

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::pool_behaviours::{self, boom, sleep_ms, slow_square, square};
use common::{LONG, METHODS};
use multiproc::{Error, Pool, Queue, StartMethod};

fn pid_of(_: u64) -> u32 {
    std::process::id()
}

#[test]
fn map_returns_results_in_order_under_every_start_method() {
    for method in METHODS {
        pool_behaviours::map_gives_results_in_order(&|| {
            Pool::builder().processes(2).start_method(method)
        });
    }
}

#[test]
fn imap_is_in_order_and_imap_unordered_gives_every_result() {
    pool_behaviours::imap_is_in_order_and_imap_unordered_complete(&|| Pool::builder().processes(2));
}

#[test]
fn imap_reads_its_input_lazily() {
    pool_behaviours::imap_reads_its_input_lazily(&|| Pool::builder().processes(2));
}

fn init(q: Queue<u32>) {
    q.put(&std::process::id()).unwrap();
}

#[test]
fn the_initializer_runs_once_in_each_worker() {
    let q = Queue::<u32>::new().unwrap();
    let pool = Pool::builder()
        .processes(3)
        .initializer(init, q.clone())
        .build()
        .unwrap();
    let _ = pool.map(square, 0..30).unwrap();
    let mut pids = pool.pids();
    pids.sort_unstable();
    let mut inits: Vec<u32> = (0..3).map(|_| q.get_timeout(LONG).unwrap()).collect();
    inits.sort_unstable();
    assert_eq!(inits, pids);
    assert!(q.try_get().is_err(), "an initializer ran twice");
}

#[test]
fn maxtasksperchild_replaces_workers() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(2)
        .build()
        .unwrap();
    let pids: BTreeSet<u32> = (0..12).map(|i| pool.apply(pid_of, i).unwrap()).collect();
    assert!(
        pids.len() >= 4,
        "only {} distinct workers ran 12 tasks",
        pids.len()
    );
    assert_eq!(pool.map(square, 0..20).unwrap().len(), 20);
}

#[test]
fn close_then_join_completes_submitted_work() {
    pool_behaviours::close_then_join_completes_submitted_work(&|| Pool::builder().processes(2));
    // And the workers have ended.
    let pool = Pool::new(2).unwrap();
    pool.close();
    pool.join().unwrap();
    assert!(pool.pids().is_empty());
}

#[test]
fn join_before_close_is_an_error() {
    pool_behaviours::join_before_close_is_an_error(&|| Pool::builder().processes(1));
}

#[test]
fn terminate_stops_running_tasks_and_cancels_the_rest() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let results: Vec<_> = (0..6)
        .map(|_| pool.apply_async(sleep_ms, 60_000).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    pool.terminate();
    pool.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    for r in results {
        assert!(matches!(r.get(), Err(Error::Cancelled)));
    }
    for pid in pids {
        assert!(common::wait_gone(pid, LONG), "worker {pid} still runs");
    }
}

#[test]
fn get_with_a_timeout_and_successful_before_ready() {
    pool_behaviours::get_with_a_timeout_and_successful_before_ready(&|| {
        Pool::builder().processes(1)
    });
}

#[test]
fn callbacks_run_in_the_parent_in_completion_order() {
    pool_behaviours::callbacks_run_in_this_process(&|| Pool::builder().processes(2));
}

#[test]
fn a_panicking_task_fails_alone_and_its_worker_goes_on() {
    pool_behaviours::a_panicking_task_fails_alone(&|| Pool::builder().processes(1));
    // The worker that ran the panicking task is the one that goes on.
    let pool = Pool::new(1).unwrap();
    let before = pool.pids();
    assert!(matches!(pool.apply(boom, 3), Err(Error::Panicked { .. })));
    assert_eq!(pool.apply(boom, 4).unwrap(), 4);
    assert_eq!(pool.pids(), before);
}

fn die(code: i32) -> u64 {
    std::process::exit(code);
}

#[test]
fn a_worker_that_exits_inside_a_task_fails_that_task_with_worker_lost() {
    let pool = Pool::new(2).unwrap();
    let lost = pool.apply_async(die, 7).unwrap();
    let fine: Vec<_> = (0..20)
        .map(|i| pool.apply_async(square, i).unwrap())
        .collect();
    match lost.get() {
        Err(e @ Error::WorkerLost { exitcode: 7, .. }) => assert_eq!(e.signal(), None),
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    for (i, r) in fine.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), (i * i) as u64);
    }
    assert_eq!(pool.map(square, 0..10).unwrap().len(), 10);
    assert_eq!(pool.pids().len(), 2);
}

#[test]
fn a_sigkilled_worker_fails_only_its_task_and_is_replaced() {
    for method in [StartMethod::Forkserver, StartMethod::Fork] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        let victim = pool.apply_async(sleep_ms, 60_000).unwrap();
        let others: Vec<_> = (0..10)
            .map(|i| pool.apply_async(slow_square, i).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // The worker running the long task: the one whose pid ran no short one.
        let short_pids: BTreeSet<u32> = (0..4).map(|i| pool.apply(pid_of, i).unwrap()).collect();
        let target = *pool
            .pids()
            .iter()
            .find(|p| !short_pids.contains(p))
            .expect("a busy worker");
        common::kill_pid(target);
        match victim.get() {
            Err(e @ Error::WorkerLost { .. }) => assert_eq!(e.signal(), Some(9)),
            other => panic!("{method:?}: expected WorkerLost, got {other:?}"),
        }
        for (i, r) in others.into_iter().enumerate() {
            assert_eq!(r.get().unwrap(), (i * i) as u64);
        }
        assert_eq!(pool.map(square, 0..10).unwrap().len(), 10);
        assert_eq!(pool.pids().len(), 2);
    }
}

/// Exits the first time (while `flag` exists), returns 5 the next.
fn die_once(flag: String) -> u64 {
    if std::fs::remove_file(&flag).is_ok() {
        std::process::exit(3);
    }
    5
}

#[test]
fn with_retries_a_task_whose_worker_died_runs_again() {
    let flag = std::env::temp_dir().join(format!("multiproc-die-once-{}", std::process::id()));
    std::fs::write(&flag, b"").unwrap();
    let pool = Pool::builder().processes(2).retries(1).build().unwrap();
    assert_eq!(pool.apply(die_once, flag.display().to_string()).unwrap(), 5);
    assert!(!flag.exists());
}

#[test]
fn dropping_a_pool_with_tasks_in_flight_returns_promptly_and_leaves_no_worker() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let pending: Vec<_> = (0..8)
        .map(|_| pool.apply_async(sleep_ms, 60_000).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < Duration::from_secs(10));
    for r in pending {
        assert!(matches!(r.get(), Err(Error::Cancelled)));
    }
    for pid in pids {
        assert!(common::wait_gone(pid, LONG), "worker {pid} still runs");
    }
}

#[test]
fn an_async_result_can_be_awaited() {
    pool_behaviours::an_async_result_can_be_awaited(&|| Pool::builder().processes(2));
}

// ---- the executor (test_concurrent_futures' process executor) ----

#[test]
fn executor_submit_map_and_results() {
    pool_behaviours::executor_submit_map_and_results(&|| Pool::builder().processes(2));
}

#[test]
fn executor_cancel_and_shutdown_with_cancel_futures() {
    pool_behaviours::executor_cancel_and_shutdown_with_cancel_futures(&|| Pool::builder());
}

#[test]
fn executor_future_can_be_awaited() {
    pool_behaviours::executor_future_can_be_awaited(&|| Pool::builder().processes(1));
}

#[cfg(feature = "progress")]
#[test]
fn map_and_imap_with_a_progress_bar_give_the_same_results() {
    pool_behaviours::map_and_imap_with_a_progress_bar_give_the_same_results(&|| {
        Pool::builder().processes(2)
    });
}

#[test]
fn a_result_that_does_not_serialize_fails_that_task_alone() {
    pool_behaviours::a_result_that_does_not_serialize_fails_that_task_alone(&|| {
        Pool::builder().processes(2)
    });
}

#[test]
fn join_returns_only_after_every_callback_ran() {
    pool_behaviours::join_returns_only_after_every_callback_ran(&|| Pool::builder().processes(2));
}

#[test]
fn a_panicking_callback_still_delivers_its_result_and_later_ones() {
    pool_behaviours::a_panicking_callback_still_delivers_its_result_and_later_ones(&|| {
        Pool::builder().processes(2)
    });
}

#[test]
fn map_keeps_the_order_when_later_chunks_come_back_first() {
    pool_behaviours::map_keeps_the_order_when_later_chunks_come_back_first(&|| {
        Pool::builder().processes(2)
    });
}

#[test]
fn map_over_an_iterator_that_misstates_its_length_gives_a_result_per_item_it_yields() {
    pool_behaviours::map_over_an_iterator_that_misstates_its_length_gives_a_result_per_item_it_yields(&|| Pool::builder().processes(2));
}

#[test]
fn a_chunk_with_panicking_calls_fails_those_calls_alone() {
    pool_behaviours::a_chunk_with_panicking_calls_fails_those_calls_alone(&|| {
        Pool::builder().processes(2)
    });
}

#[test]
fn large_arguments_and_results_come_back_exactly() {
    pool_behaviours::large_arguments_and_results_come_back_exactly(&|| {
        Pool::builder().processes(2)
    });
}

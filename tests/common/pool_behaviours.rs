//! Pool behaviours written once, each a function taking how to make the pool's builder:
//! `tests/pool.rs` runs them on local workers, `tests/mpi_pool.rs` on the ranks of an
//! MPI job. Each assumes a pool of two workers at least; none depends on which worker
//! runs what.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::{Error, PoolBuilder, ProcessPoolExecutor};

use super::LONG;

/// How a behaviour gets its pool's options.
pub type MakeBuilder<'a> = &'a dyn Fn() -> PoolBuilder;

pub fn square(x: u64) -> u64 {
    x * x
}

pub fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(x % 7));
    x * x
}

pub fn boom(x: u64) -> u64 {
    if x == 3 {
        panic!("task {x} failed");
    }
    x
}

pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

/// `map` gives the results in order, for every chunk size, an empty input, `starmap`
/// (CPython's `test_map`, `test_map_chunksize`, `test_starmap`).
pub fn map_gives_results_in_order(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let want: Vec<u64> = (0..100).map(square).collect();
    assert_eq!(pool.map(square, 0..100).unwrap(), want);
    assert_eq!(
        pool.map(square, Vec::<u64>::new()).unwrap(),
        Vec::<u64>::new()
    );
    for chunksize in [1, 3, 100, 1000] {
        assert_eq!(
            pool.map_chunked(slow_square, 0..50, chunksize).unwrap()[..],
            want[..50]
        );
    }
    assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
}

/// `imap` keeps the order, with and without chunks; `imap_unordered` gives every result
/// (CPython's `test_imap`, `test_imap_unordered`).
pub fn imap_is_in_order_and_imap_unordered_complete(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let want: Vec<u64> = (0..40).map(square).collect();
    let got: Vec<u64> = pool.imap(slow_square, 0..40).map(Result::unwrap).collect();
    assert_eq!(got, want);
    let got: Vec<u64> = pool
        .imap_chunked(slow_square, 0..40, 7)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
    let got: BTreeSet<u64> = pool
        .imap_unordered(slow_square, 0..40)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want.into_iter().collect());
}

/// `imap` over an endless input reads only what is taken, and a bounded lead.
pub fn imap_reads_its_input_lazily(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let mut it = pool.imap(square, 0..);
    for i in 0..10 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
}

/// `get_timeout` does not return early, and the result can be asked for again;
/// `successful` before the result is an error (CPython's `test_async_timeout`).
pub fn get_with_a_timeout_and_successful_before_ready(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let mut r = pool.apply_async(sleep_ms, 500).unwrap();
    assert!(matches!(r.successful(), Err(Error::InvalidState(_))));
    let t = Instant::now();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(r.get_timeout(LONG).unwrap(), 500);
}

/// The value or the error goes to its callback, in this process (CPython's
/// `test_async_error_callback`).
pub fn callbacks_run_in_this_process(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let mut results = Vec::new();
    for i in 0..6u64 {
        let tx = tx.clone();
        let etx = etx.clone();
        results.push(
            pool.apply_async_with(
                boom,
                i,
                move |v: &u64| tx.send((*v, std::process::id())).unwrap(),
                move |e: &Error| etx.send((e.to_string(), std::process::id())).unwrap(),
            )
            .unwrap(),
        );
    }
    for r in results {
        let _ = r.get();
    }
    let got: Vec<(u64, u32)> = rx.try_iter().collect();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|(_, pid)| *pid == std::process::id()));
    let errors: Vec<(String, u32)> = erx.try_iter().collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].0.contains("task 3 failed"), "{errors:?}");
    assert_eq!(errors[0].1, std::process::id());
}

/// A panic fails its task alone, with its message and location, and the workers go
/// on; in a map, the first failure is the error.
pub fn a_panicking_task_fails_alone(make: MakeBuilder) {
    let pool = make().build().unwrap();
    match pool.apply(boom, 3) {
        Err(Error::Panicked { message, location }) => {
            assert!(message.contains("task 3 failed"));
            assert!(location.unwrap().contains("pool_behaviours.rs"));
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(pool.apply(boom, 4).unwrap(), 4);
    assert!(matches!(pool.map(boom, 0..10), Err(Error::Panicked { .. })));
    let each: Vec<Result<u64, Error>> = pool.imap(boom, 0..5).collect();
    assert!(matches!(each[3], Err(Error::Panicked { .. })));
    assert_eq!(each.iter().filter(|r| r.is_ok()).count(), 4);
}

/// The executor's `submit`, `result_timeout`, `map` (with a deadline) and `shutdown`
/// (CPython's `ProcessPoolExecutorTest`).
pub fn executor_submit_map_and_results(make: MakeBuilder) {
    let ex = ProcessPoolExecutor::with_options(make()).unwrap();
    let f = ex.submit(square, 12).unwrap();
    assert_eq!(f.result().unwrap(), 144);
    let mut slow = ex.submit(sleep_ms, 400).unwrap();
    assert!(!slow.done());
    assert!(matches!(
        slow.result_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert_eq!(slow.result_timeout(LONG).unwrap(), 400);
    let all: Vec<u64> = ex
        .map(square, 0..10, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all, (0..10).map(square).collect::<Vec<_>>());
    let mut late = ex
        .map(sleep_ms, [2_000, 2_000], Some(Duration::from_millis(100)))
        .unwrap();
    assert!(matches!(late.next(), Some(Err(Error::Timeout))));
    drop(late);
    ex.shutdown(true, false);
    assert!(matches!(ex.submit(square, 1), Err(Error::InvalidState(_))));
}

/// The executor's `cancel`: a running task cannot be cancelled, one still waiting in the
/// pool can; `shutdown` with `cancel_futures` cancels the waiting ones and waits for the
/// running ones. On one worker, which holds a few jobs (at most four now, one running)
/// and leaves the others waiting in the pool.
pub fn executor_cancel_and_shutdown_with_cancel_futures(make: MakeBuilder) {
    let ex = ProcessPoolExecutor::with_options(make().processes(1)).unwrap();
    let running = ex.submit(sleep_ms, 300).unwrap();
    let queued: Vec<_> = (0..8).map(|_| ex.submit(sleep_ms, 300).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(running.running());
    assert!(!running.cancel(), "a running task cannot be cancelled");
    // The last one waits in the pool.
    assert!(queued[7].cancel());
    assert!(queued[7].cancelled());
    ex.shutdown(true, true);
    assert_eq!(running.result().unwrap(), 300);
    let outcomes: Vec<_> = queued.into_iter().map(|f| f.result()).collect();
    assert!(outcomes.iter().any(|r| matches!(r, Err(Error::Cancelled))));
    assert!(
        outcomes
            .iter()
            .all(|r| matches!(r, Ok(300) | Err(Error::Cancelled)))
    );
}

/// An executor's future is a `Future`.
pub fn executor_future_can_be_awaited(make: MakeBuilder) {
    let ex = ProcessPoolExecutor::with_options(make()).unwrap();
    let f = ex.submit(square, 5).unwrap();
    assert_eq!(block_on(f).unwrap(), 25);
}

/// `map` and `imap` give the same results with a progress bar, also over an input of
/// unknown length (a counting spinner).
#[cfg(feature = "progress")]
pub fn map_and_imap_with_a_progress_bar_give_the_same_results(make: MakeBuilder) {
    let pool = make().progress(true).build().unwrap();
    let want: Vec<u64> = (0..300).map(square).collect();
    assert_eq!(pool.map(square, 0..300).unwrap(), want);
    let got: Vec<u64> = pool.imap(square, 0..300).map(Result::unwrap).collect();
    assert_eq!(got, want);
    let got: Vec<u64> = pool
        .imap(square, (0..300).filter(|_| true))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
}

/// A result type whose `Serialize` fails for one value.
#[derive(Debug, PartialEq)]
struct Picky(u64);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 does not serialize"));
        }
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Picky)
    }
}

fn picky(x: u64) -> Picky {
    Picky(x)
}

/// A result that does not serialize fails its call alone; an argument that does not
/// serialize is refused at submission.
pub fn a_result_that_does_not_serialize_fails_that_task_alone(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let results: Vec<_> = pool.imap_chunked(picky, 10..16, 3).collect();
    for (x, r) in (10..16).zip(results) {
        match r {
            Ok(v) => assert_eq!(v, Picky(x)),
            Err(e) => {
                assert_eq!(x, 13);
                assert!(e.to_string().contains("13 does not serialize"), "{e}");
            }
        }
    }
    // And an argument that does not serialize is refused at submission.
    assert!(pool.apply_async(|p: Picky| p.0, Picky(13)).is_err());
    assert_eq!(pool.apply(|p: Picky| p.0, Picky(12)).unwrap(), 12);
    let got: BTreeSet<u64> = pool
        .imap_unordered_chunked(square, 0..20, 4)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..20).map(square).collect());
}

/// `join` after `close` returns once every callback has run (as in Python).
pub fn join_returns_only_after_every_callback_ran(make: MakeBuilder) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = make().build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..5u64 {
        let ran = ran.clone();
        pool.apply_async_with(
            square,
            i,
            move |_: &u64| {
                std::thread::sleep(Duration::from_millis(100));
                ran.fetch_add(1, Ordering::SeqCst);
            },
            |_: &Error| {},
        )
        .unwrap();
    }
    pool.close();
    pool.join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 5);
}

/// A callback that panics does not keep its result, or later ones, from arriving.
pub fn a_panicking_callback_still_delivers_its_result_and_later_ones(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let mut first = pool
        .apply_async_with(
            square,
            3,
            |_: &u64| panic!("callback fails"),
            |_: &Error| {},
        )
        .unwrap();
    assert_eq!(first.get_timeout(LONG).unwrap(), 9);
    let mut second = pool
        .apply_async_with(square, 4, |_: &u64| {}, |_: &Error| {})
        .unwrap();
    assert_eq!(second.get_timeout(LONG).unwrap(), 16);
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
}

/// The first chunk of 5 (items below 5) sleeps, so that later chunks come back first;
/// item 17 panics, when asked to.
fn first_chunk_late(x: u64) -> u64 {
    if x < 5 {
        std::thread::sleep(Duration::from_millis(300));
    }
    x * 3
}

fn first_chunk_late_text(x: u64) -> String {
    format!("item {}", first_chunk_late(x))
}

fn first_chunk_late_then_17_panics(x: u64) -> u64 {
    if x == 17 {
        panic!("task {x} failed");
    }
    first_chunk_late(x)
}

/// `map` keeps the order when later chunks come back first; a failure that comes
/// back before the first chunk is the map's error.
pub fn map_keeps_the_order_when_later_chunks_come_back_first(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let want: Vec<u64> = (0..40).map(|x| x * 3).collect();
    assert_eq!(pool.map_chunked(first_chunk_late, 0..40, 5).unwrap(), want);
    let text: Vec<String> = want.iter().map(|x| format!("item {x}")).collect();
    assert_eq!(
        pool.map_chunked(first_chunk_late_text, 0..40, 5).unwrap(),
        text
    );
    // A failure that comes back before the first chunk is the map's error.
    match pool.map_chunked(first_chunk_late_then_17_panics, 0..40, 5) {
        Err(Error::Panicked { message, .. }) => assert!(message.contains("task 17"), "{message}"),
        other => panic!("expected the panic of task 17, got {other:?}"),
    }
    // The pool goes on.
    assert_eq!(pool.map(square, 0..10).unwrap()[9], 81);
}

/// Yields `0..real` while claiming to have exactly `claimed` items.
struct WrongLength {
    next: u64,
    real: u64,
    claimed: usize,
}

impl Iterator for WrongLength {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        (self.next < self.real).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claimed, Some(self.claimed))
    }
}

/// `map` gives a result per item an iterator yields, whatever length it claims.
pub fn map_over_an_iterator_that_misstates_its_length_gives_a_result_per_item_it_yields(
    make: MakeBuilder,
) {
    let pool = make().build().unwrap();
    for (real, claimed) in [(100, 3), (3, 100), (50, 0), (0, 10), (10, usize::MAX)] {
        let items = WrongLength {
            next: 0,
            real,
            claimed,
        };
        let want: Vec<u64> = (0..real).map(square).collect();
        assert_eq!(
            pool.map(square, items).unwrap(),
            want,
            "{real} claimed as {claimed}"
        );
    }
}

fn boom_at_3_and_7(x: u64) -> u64 {
    if x == 3 || x == 7 {
        panic!("task {x} failed");
    }
    x
}

/// Panicking calls inside a chunk fail alone; the calls around them return.
pub fn a_chunk_with_panicking_calls_fails_those_calls_alone(make: MakeBuilder) {
    let pool = make().build().unwrap();
    // One chunk of ten: the calls before, between and after the panics return.
    let got: Vec<_> = pool.imap_chunked(boom_at_3_and_7, 0..10, 10).collect();
    assert_eq!(got.len(), 10);
    for (i, r) in got.into_iter().enumerate() {
        match r {
            Err(Error::Panicked { message, .. }) => {
                assert!(i == 3 || i == 7, "item {i} failed");
                assert!(message.contains(&format!("task {i} failed")), "{message}");
            }
            Ok(v) => assert_eq!(v, i as u64),
            Err(e) => panic!("item {i}: {e}"),
        }
    }
}

/// `close` refuses new tasks, and `join` returns once the submitted ones are done
/// (CPython's `test_close`, `test_join`).
pub fn close_then_join_completes_submitted_work(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let results: Vec<_> = (0..10)
        .map(|i| pool.apply_async(sleep_ms, i * 5).unwrap())
        .collect();
    pool.close();
    assert!(matches!(
        pool.apply_async(square, 1),
        Err(Error::InvalidState(_))
    ));
    pool.join().unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert!(r.ready());
        assert_eq!(r.get().unwrap(), i as u64 * 5);
    }
}

/// `join` before `close` or `terminate` is an error, as Python's `ValueError`.
pub fn join_before_close_is_an_error(make: MakeBuilder) {
    let pool = make().build().unwrap();
    assert!(matches!(pool.join(), Err(Error::InvalidState(_))));
}

/// A minimal executor: polls `fut`, parking the thread until its waker is called.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// An `AsyncResult` is a future: `apply_async` and `map_async` can be awaited.
pub fn an_async_result_can_be_awaited(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let a = pool.apply_async(slow_square, 9).unwrap();
    let b = pool.map_async(square, 0..4).unwrap();
    let (x, ys) = block_on(async { (a.await, b.await) });
    assert_eq!(x.unwrap(), 81);
    assert_eq!(ys.unwrap(), [0, 1, 4, 9]);
}

/// Bytes that follow from `seed`, `len` of them.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn reversed(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

fn tripled(v: Vec<u64>) -> Vec<u64> {
    v.into_iter().map(|x| x * 3).collect()
}

/// Large arguments and results, between small ones, come back exactly, message after
/// message: bytes (which a large message's own buffer becomes) and numbers (which it
/// does not), so that memory kept from one message to the next shows nothing of the
/// earlier ones.
pub fn large_arguments_and_results_come_back_exactly(make: MakeBuilder) {
    let pool = make().build().unwrap();
    let sizes = [3 << 20, 100, (1 << 20) + 7, 5, 2 << 20, 0, 1 << 20, 64];
    let args: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(i as u8, n))
        .collect();
    for round in 0..2 {
        let got = pool.map_chunked(reversed, args.clone(), 1).unwrap();
        assert_eq!(got.len(), args.len());
        for (i, (g, a)) in got.iter().zip(&args).enumerate() {
            assert!(
                g.len() == a.len() && g.iter().eq(a.iter().rev()),
                "round {round}, argument {i} ({} bytes) came back as {} other bytes",
                a.len(),
                g.len()
            );
        }
    }
    let numbers: Vec<Vec<u64>> = [300_000u64, 10, 200_000, 0, 150_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|x| x + i as u64).collect())
        .collect();
    let got = pool.map_chunked(tripled, numbers.clone(), 1).unwrap();
    for (i, (g, a)) in got.iter().zip(&numbers).enumerate() {
        assert!(
            g.len() == a.len() && g.iter().zip(a).all(|(g, a)| *g == a * 3),
            "numbers {i} ({} of them) came back wrong",
            a.len()
        );
    }
    let one = pattern(200, (1 << 20) + 1);
    let back = pool.apply(reversed, one.clone()).unwrap();
    assert!(back.iter().eq(one.iter().rev()));
}

/// Every behaviour above, in turn.
pub fn all(make: MakeBuilder) {
    map_gives_results_in_order(make);
    imap_is_in_order_and_imap_unordered_complete(make);
    imap_reads_its_input_lazily(make);
    get_with_a_timeout_and_successful_before_ready(make);
    callbacks_run_in_this_process(make);
    a_panicking_task_fails_alone(make);
    executor_submit_map_and_results(make);
    close_then_join_completes_submitted_work(make);
    join_before_close_is_an_error(make);
    an_async_result_can_be_awaited(make);
    a_result_that_does_not_serialize_fails_that_task_alone(make);
    join_returns_only_after_every_callback_ran(make);
    a_panicking_callback_still_delivers_its_result_and_later_ones(make);
    map_keeps_the_order_when_later_chunks_come_back_first(make);
    map_over_an_iterator_that_misstates_its_length_gives_a_result_per_item_it_yields(make);
    a_chunk_with_panicking_calls_fails_those_calls_alone(make);
    large_arguments_and_results_come_back_exactly(make);
    executor_cancel_and_shutdown_with_cancel_futures(make);
    executor_future_can_be_awaited(make);
    #[cfg(feature = "progress")]
    map_and_imap_with_a_progress_bar_give_the_same_results(make);
}

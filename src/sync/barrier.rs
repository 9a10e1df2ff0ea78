//! `Barrier` across processes (Python's `multiprocessing.Barrier`).
//!
//! State lives under a small owner-recording lock: the arrival count, and a futex word
//! holding the round number (a generation) and a "broken" bit. The last arrival of a
//! round records the round's outcome in a ring indexed by round, starts the next round
//! and wakes everyone; a reset records the round as broken instead. A waiter that wakes
//! late (after the next rounds began) reads its own round's outcome from the ring, so
//! the barrier never has to wait for the waiters of a finished round to leave (a
//! process killed then would block it forever).
//!
//! A process that dies holding the internal lock leaves the state possibly half-changed:
//! the next holder breaks the round (waiters get `BrokenBarrier`, as after an abort) and
//! marks the lock consistent again, since the broken flag now says all there is to say.
//!
//! Breaking needs no lock: it sets the broken bit with one atomic operation, and the
//! last arrival completes a round with a compare-and-swap from the unbroken round, so a
//! break is never lost (a reset, which clears the bit, is ordered after it). Hence
//! `abort` and a waiter's timeout never wait for the lock, and a waiter whose deadline
//! passes while it waits to arrive (a party stopped or stuck inside the short critical
//! section, or a holder whose death cannot be known) breaks the barrier and returns by
//! its deadline, as a timeout does.
//!
//! Layout (32-bit words): kind tag, parties, the lock (eight words), state (round << 1 |
//! broken), count, default timeout in nanoseconds (two words, all ones: none), four
//! reserved, then the ring of outcomes.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deadline_after, new_words, remaining, serialize_words, spin_until, words_from_parts};
use crate::error::{Error, Result};
use crate::sync::owner_lock::{LOCK_SIZE, OwnerLock, Taken};
use crate::sys::futex;
use crate::sys::shm::SharedWords;
use crate::wire::handles::FdOwned;

const MAGIC: u32 = u32::from_le_bytes(*b"mpBa");

const PARTIES: usize = 1;
/// Byte offset of the lock (eight-byte aligned, [`LOCK_SIZE`] bytes).
const LOCK_OFFSET: usize = 8;
const STATE: usize = (LOCK_OFFSET + LOCK_SIZE) / 4;
const COUNT: usize = STATE + 1;
const TIMEOUT_LO: usize = STATE + 2;
const TIMEOUT_HI: usize = STATE + 3;
const RING: usize = 16;
/// Rounds whose outcome is remembered.
const RING_LEN: usize = 256;
const WORDS: usize = RING + RING_LEN;
const _: () = assert!(TIMEOUT_HI < RING, "the state words overlap the ring");

const BROKEN: u32 = 1;
/// In a ring entry: the round ended with every party released (else: broken, reset).
const COMPLETED: u32 = 1;
const NO_TIMEOUT: u64 = u64::MAX;

/// A meeting point for a fixed number of processes (Python's
/// `multiprocessing.Barrier`).
///
/// Each party calls [`wait`](Barrier::wait); all of them return once `parties` have
/// arrived, each with its arrival index (`0..parties`, a different one each). Then the
/// barrier is ready for the next round. If a waiter times out, or someone calls
/// [`abort`](Barrier::abort), the barrier is *broken*: every waiter, now and until
/// [`reset`](Barrier::reset), gets [`Error::BrokenBarrier`].
///
/// A party that dies while waiting still counts as arrived; one that never arrives
/// holds the others until their timeout (see [`with_timeout`](Barrier::with_timeout)).
/// Python's `action` argument has no equivalent: let the process that gets index 0 do
/// the work after `wait` returns.
///
/// ```
/// use multiproc::{Barrier, Process};
///
/// fn party(barrier: Barrier) {
///     barrier.wait().unwrap();
/// }
///
/// let barrier = Barrier::new(2)?;
/// let mut p = Process::new(party, barrier.clone());
/// p.start()?;
/// let index = barrier.wait()?; // returns once the child has arrived too
/// assert!(index < 2);
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    words: SharedWords<WORDS>,
    lock: OwnerLock,
    parties: u32,
}

/// Holds the barrier's internal lock.
struct Held<'a> {
    lock: &'a OwnerLock,
    /// The previous holder died inside a change: the round was broken for it.
    owner_died: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release_guarded();
    }
}

impl Barrier {
    /// A barrier for `parties` processes (or threads), with no default timeout.
    /// `parties` must be at least 1.
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(1)?;
    /// assert_eq!(barrier.wait()?, 0); // a barrier of one never waits
    /// assert!(multiproc::Barrier::new(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        Barrier::create(parties, None)
    }

    /// A barrier whose [`wait`](Barrier::wait) gives up after `timeout` (Python's
    /// `Barrier(parties, timeout=t)`), breaking the barrier.
    ///
    /// A timeout too large to count in nanoseconds (about 584 years and more, such as
    /// `Duration::MAX`) is no timeout at all: [`timeout`](Barrier::timeout) then reads
    /// `None`, and waits have no deadline, as with [`new`](Barrier::new).
    ///
    /// ```
    /// use std::time::Duration;
    /// let barrier = multiproc::Barrier::with_timeout(2, Duration::from_millis(10))?;
    /// assert!(matches!(barrier.wait(), Err(multiproc::Error::BrokenBarrier)));
    /// assert!(barrier.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Barrier> {
        Barrier::create(parties, Some(timeout))
    }

    fn create(parties: u32, timeout: Option<Duration>) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::state("a barrier needs at least one party"));
        }
        let words = new_words::<WORDS>(MAGIC)?;
        let w = words.get();
        w[PARTIES].store(parties, Ordering::Relaxed);
        // Beyond what the words hold, the timeout could never expire: none.
        let nanos = timeout
            .and_then(|t| u64::try_from(t.as_nanos()).ok())
            .unwrap_or(NO_TIMEOUT);
        w[TIMEOUT_LO].store(nanos as u32, Ordering::Relaxed);
        w[TIMEOUT_HI].store((nanos >> 32) as u32, Ordering::Release);
        Barrier::from_words(words, 0).map_err(Error::state)
    }

    /// The barrier whose words are `words`, at `offset` of their segment.
    fn from_words(
        words: SharedWords<WORDS>,
        offset: usize,
    ) -> std::result::Result<Barrier, String> {
        let parties = words.get()[PARTIES].load(Ordering::Acquire);
        if parties == 0 {
            return Err("barrier handle with no parties".into());
        }
        let lock = offset
            .checked_add(LOCK_OFFSET)
            .and_then(|at| OwnerLock::at(words.region().clone(), at))
            .ok_or("barrier handle outside its memory")?;
        Ok(Barrier {
            words,
            lock,
            parties,
        })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        &self.words.get()[i]
    }

    /// Takes the internal lock, waiting until `deadline` (`None`: no limit); `Ok(None)`
    /// once the deadline has passed.
    fn hold(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>> {
        match self.lock.acquire(deadline, false) {
            Ok(Some(taken)) => {
                let owner_died = taken == Taken::OwnerDied;
                if owner_died {
                    // A process died halfway through changing the state: nobody can
                    // trust this round. Broken, the state is consistent again.
                    self.break_round();
                    self.lock.mark_consistent();
                }
                Ok(Some(Held {
                    lock: &self.lock,
                    owner_died,
                }))
            }
            Ok(None) => Ok(None),
            // Not reachable: the lock is never held across calls.
            Err(()) => Err(Error::state("barrier lock unavailable")),
        }
    }

    fn ring(&self, state: u32) -> &AtomicU32 {
        self.word(RING + (state >> 1) as usize % RING_LEN)
    }

    /// Breaks the current round and wakes its waiters (with or without the lock).
    fn break_round(&self) {
        let state = self.word(STATE);
        state.fetch_or(BROKEN, Ordering::Release);
        futex::wake_all(state);
    }

    /// The default timeout given to [`with_timeout`](Barrier::with_timeout), if any
    /// (`None` too for a timeout too large to count, such as `Duration::MAX`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let barrier = multiproc::Barrier::with_timeout(3, Duration::from_secs(5))?;
    /// assert_eq!(barrier.timeout(), Some(Duration::from_secs(5)));
    /// assert_eq!(multiproc::Barrier::new(3)?.timeout(), None);
    /// let endless = multiproc::Barrier::with_timeout(3, Duration::MAX)?;
    /// assert_eq!(endless.timeout(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        let nanos = u64::from(self.word(TIMEOUT_LO).load(Ordering::Relaxed))
            | (u64::from(self.word(TIMEOUT_HI).load(Ordering::Relaxed)) << 32);
        (nanos != NO_TIMEOUT).then(|| Duration::from_nanos(nanos))
    }

    /// Waits until all parties have arrived (or the default timeout passes) and returns
    /// this caller's arrival index, in `0..parties`. [`Error::BrokenBarrier`] if the
    /// barrier is or becomes broken meanwhile (abort, reset, a timeout).
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(1)?;
    /// assert_eq!(barrier.wait()?, 0);
    /// assert_eq!(barrier.wait()?, 0); // cyclic: every round starts afresh
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(self.timeout().and_then(deadline_after))
    }

    /// Like [`wait`](Barrier::wait), giving up after `timeout` (instead of the default
    /// one): the barrier is then broken, for this waiter and all others. It returns by
    /// then even if another party is stuck inside the barrier's short internal
    /// critical section (stopped, say).
    ///
    /// ```
    /// use std::time::Duration;
    /// let barrier = multiproc::Barrier::new(2)?;
    /// let r = barrier.wait_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(multiproc::Error::BrokenBarrier)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32> {
        let state = self.word(STATE);
        let count = self.word(COUNT);
        let Some(held) = self.hold(deadline)? else {
            // Timed out before it could even arrive: a timeout like any other.
            self.break_round();
            return Err(Error::BrokenBarrier);
        };
        if held.owner_died {
            return Err(Error::BrokenBarrier); // `hold` broke the round
        }
        let round = state.load(Ordering::Relaxed);
        if round & BROKEN != 0 {
            return Err(Error::BrokenBarrier);
        }
        let index = count.load(Ordering::Relaxed);
        if index.saturating_add(1) >= self.parties {
            // Last to arrive: the round is complete; start the next one, unless it was
            // broken meanwhile (breaking takes no lock).
            self.ring(round).store(round | COMPLETED, Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
            let completed = state
                .compare_exchange(
                    round,
                    round.wrapping_add(2),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok();
            drop(held);
            if !completed {
                return Err(Error::BrokenBarrier);
            }
            futex::wake_all(state);
            return Ok(index.min(self.parties - 1));
        }
        count.store(index + 1, Ordering::Relaxed);
        drop(held);

        spin_until(|| state.load(Ordering::Acquire) != round);
        loop {
            let now = state.load(Ordering::Acquire);
            if now != round {
                return self.outcome(round, now, index);
            }
            let left = remaining(deadline);
            if left == Some(Duration::ZERO) {
                // Python breaks the barrier when a waiter times out: this round only.
                if state
                    .compare_exchange(round, round | BROKEN, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    futex::wake_all(state);
                    return Err(Error::BrokenBarrier);
                }
                continue; // the round ended meanwhile: its outcome decides
            }
            futex::wait(state, round, left);
        }
    }

    /// What became of `round` (in which this waiter arrived `index`-th), now that the
    /// state word reads `now`.
    fn outcome(&self, round: u32, now: u32, index: u32) -> Result<u32> {
        if now & !BROKEN == round {
            return Err(Error::BrokenBarrier); // broken during our round
        }
        let entry = self.ring(round).load(Ordering::Relaxed);
        if entry == round {
            return Err(Error::BrokenBarrier); // reset during our round
        }
        // Completed (or, after hundreds of later rounds, forgotten: it did end, and
        // completion is what ends rounds without a reset).
        Ok(index)
    }

    /// Breaks the barrier (Python's `abort`): current and future waiters get
    /// [`Error::BrokenBarrier`] until [`reset`](Barrier::reset).
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(2)?;
    /// barrier.abort()?;
    /// assert!(barrier.broken());
    /// assert!(matches!(barrier.wait(), Err(multiproc::Error::BrokenBarrier)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// Takes no lock, so it never waits.
    pub fn abort(&self) -> Result<()> {
        self.break_round();
        Ok(())
    }

    /// Returns the barrier to its initial, empty state (Python's `reset`): processes
    /// waiting in the current round get [`Error::BrokenBarrier`]; a broken barrier
    /// becomes usable again.
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(2)?;
    /// barrier.abort()?;
    /// barrier.reset()?;
    /// assert!(!barrier.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// A reset takes the barrier's internal lock, which parties hold only for a few
    /// instructions. With a default timeout ([`with_timeout`](Barrier::with_timeout)), it
    /// gives up after that long with [`Error::Timeout`] (a party stopped inside, or one
    /// whose death cannot be known from here, holds the lock).
    pub fn reset(&self) -> Result<()> {
        let Some(held) = self.hold(self.timeout().and_then(deadline_after))? else {
            return Err(Error::Timeout);
        };
        let state = self.word(STATE);
        let count = self.word(COUNT);
        let round = state.load(Ordering::Relaxed);
        if count.load(Ordering::Relaxed) > 0 || round & BROKEN != 0 || held.owner_died {
            let round = round & !BROKEN;
            self.ring(round).store(round, Ordering::Relaxed); // ended broken
            count.store(0, Ordering::Relaxed);
            state.store(round.wrapping_add(2), Ordering::Release);
            drop(held);
            futex::wake_all(state);
        }
        Ok(())
    }

    /// The number of parties a round needs.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties are waiting in the current round (0 when broken).
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4)?.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        if self.broken() {
            0
        } else {
            self.word(COUNT).load(Ordering::Relaxed)
        }
    }

    /// Whether the barrier is broken (aborted, or a waiter timed out) and not yet reset.
    ///
    /// ```
    /// assert!(!multiproc::Barrier::new(2)?.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.word(STATE).load(Ordering::Acquire) & BROKEN != 0
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_words(&self.words, s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Barrier, D::Error> {
        use serde::de::Error as _;
        let (fd, offset) = <(FdOwned, u64)>::deserialize(d)?;
        let words = words_from_parts(fd, offset, MAGIC, "barrier").map_err(D::Error::custom)?;
        // `words_from_parts` checked that the offset fits in the segment.
        let offset = usize::try_from(offset).map_err(D::Error::custom)?;
        Barrier::from_words(words, offset).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Holds `barrier`'s internal lock from another (live) thread until told to let go,
    /// or for 20 s at most; returns the channel that tells it.
    fn hold_internal_lock(barrier: &Barrier) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let b = barrier.clone();
        let (held_tx, held_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            assert_eq!(b.lock.acquire(None, false), Ok(Some(Taken::Clean)));
            held_tx.send(()).unwrap();
            let _ = go_rx.recv_timeout(Duration::from_secs(20));
            b.lock.release().unwrap();
        });
        held_rx.recv().unwrap();
        (go_tx, t)
    }

    #[test]
    fn wait_timeout_returns_broken_by_its_deadline_while_a_live_party_holds_the_internal_lock() {
        let barrier = Barrier::new(2).unwrap();
        let (go, t) = hold_internal_lock(&barrier);
        let start = Instant::now();
        let r = barrier.wait_timeout(Duration::from_millis(200));
        let elapsed = start.elapsed();
        go.send(()).unwrap();
        t.join().unwrap();
        assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        assert!(barrier.broken(), "a timeout breaks the barrier");
    }

    #[test]
    fn a_timeout_too_large_to_count_reads_back_as_none_and_one_that_fits_as_given() {
        let huge = Barrier::with_timeout(2, Duration::MAX).unwrap();
        assert_eq!(huge.timeout(), None);
        let largest = Duration::from_nanos(u64::MAX - 1);
        let fits = Barrier::with_timeout(2, largest).unwrap();
        assert_eq!(fits.timeout(), Some(largest));
        let just_over = Duration::from_nanos(u64::MAX) + Duration::from_nanos(1);
        assert_eq!(Barrier::with_timeout(2, just_over).unwrap().timeout(), None);
    }

    #[test]
    fn abort_and_a_timed_reset_do_not_wait_for_a_stuck_internal_lock() {
        let barrier = Barrier::with_timeout(2, Duration::from_millis(200)).unwrap();
        let (go, t) = hold_internal_lock(&barrier);
        let start = Instant::now();
        let aborted = barrier.abort();
        let reset = barrier.reset();
        let elapsed = start.elapsed();
        go.send(()).unwrap();
        t.join().unwrap();
        assert!(aborted.is_ok(), "{aborted:?}");
        assert!(matches!(reset, Err(Error::Timeout)), "{reset:?}");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        assert!(barrier.broken());
        barrier.reset().unwrap();
        assert!(!barrier.broken());
    }
}

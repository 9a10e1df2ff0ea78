//! Deadlines from timeouts. Every timeout the crate accepts goes through here, so that a
//! huge one (`Duration::MAX`) means "no deadline" instead of overflowing `Instant`.

use std::time::{Duration, Instant};

/// `now + timeout`, or `None` (no deadline) when that is beyond what `Instant` holds.
pub(crate) fn after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Time left until `deadline` (`None`: no limit); `Some(ZERO)` once it has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_is_no_deadline() {
        assert_eq!(after(Duration::MAX), None);
        assert!(after(Duration::from_secs(1)).is_some());
        assert_eq!(remaining(None), None);
        assert_eq!(remaining(Some(Instant::now())), Some(Duration::ZERO));
    }
}

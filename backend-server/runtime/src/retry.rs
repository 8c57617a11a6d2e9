//! Capped exponential backoff with jitter, for every client that retries
//! (the coordinator's Waldur and backend clients).

use std::time::Duration;

/// How often and how patiently to retry a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (before jitter).
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Share of the wait added at random, so many clients do not retry in
    /// step: up to a quarter.
    const JITTER_DIVISOR: u32 = 4;

    /// Whether a call that failed on attempt `attempt` (1-based) may go again.
    pub fn again(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }

    /// The wait after attempt `attempt` (1-based) failed: doubling from
    /// `initial_backoff`, capped at `max_backoff`, plus up to 25 % jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = doubled.min(self.max_backoff);
        let jitter = capped / Self::JITTER_DIVISOR;
        let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
        capped + Duration::from_millis(rand::random::<u64>() % (millis + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jitters_by_at_most_a_quarter() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        };
        for _ in 0..100 {
            let first = p.backoff(1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
            let second = p.backoff(2);
            assert!(second >= Duration::from_millis(200) && second <= Duration::from_millis(250));
            let late = p.backoff(30);
            assert!(late >= Duration::from_millis(400) && late <= Duration::from_millis(500));
        }
        assert!(p.again(4));
        assert!(!p.again(5));
    }
}

//! Exponential backoff with jitter for retrying retryable errors.

use std::time::Duration;

use rand::Rng;

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Delays of successive retries: `base * 2^n` capped at `max`, each with
/// "equal jitter" (a uniform value in `[d/2, d]`) so that clients that
/// failed together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BACKOFF_BASE, BACKOFF_MAX)
    }
}

impl Backoff {
    /// Returns a backoff starting at `base` and capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { attempt: 0, base, max: max.max(base) }
    }

    /// The un-jittered delay of retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Returns the delay before the next retry and advances.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let jitter_ns = rand::rng().random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(50));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(6), Duration::from_secs(2));
        assert_eq!(b.ceiling(100), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut b = Backoff::default();
        for i in 0..12 {
            let ceil = b.ceiling(i);
            let d = b.next_delay();
            assert!(d >= ceil / 2 && d <= ceil, "attempt {i}: {d:?} vs {ceil:?}");
        }
    }
}

//! A byte-rate throttle for background copies (clones, scrubbing).

use std::time::Duration;

use tokio::time::Instant;

/// Paces a stream of bytes to at most `bytes_per_sec` on average.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    /// A throttle; 0 means unlimited.
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle { bytes_per_sec, start: Instant::now(), bytes: 0 }
    }

    /// Time to wait after `n` more bytes so the average stays at the rate.
    pub fn delay_after(&mut self, n: u64) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(self.start.elapsed())
    }

    /// Accounts `n` bytes and sleeps as long as needed.
    pub async fn consume(&mut self, n: u64) {
        let d = self.delay_after(n);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate() {
        let mut t = Throttle::new(1000);
        assert_eq!(t.delay_after(500), Duration::from_millis(500));
        t.consume(500).await;
        tokio::time::advance(Duration::from_millis(0)).await;
        assert_eq!(t.start.elapsed(), Duration::from_secs(1));
        let mut free = Throttle::new(0);
        assert_eq!(free.delay_after(1 << 30), Duration::ZERO);
    }
}

//! Lease state of one chunk, as the master sees it.
//!
//! The chunkserver counts its lease from when it received `GrantLease`, which
//! is after the master's `granted_at`. The master additionally keeps the
//! lease "held" for a grace period (the RPC deadline) after `expires_at`, so
//! its view always ends later than the primary's and two leases never
//! overlap.

use std::time::Duration;

use tokio::time::Instant;

/// Most writers a lease remembers (see [`Lease::writers`]).
pub const MAX_WRITERS: usize = 16;

/// A lease granted to a primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Server id of the primary.
    pub primary: String,
    /// Chunk version the lease was granted for.
    pub version: u64,
    /// When the master sent the grant (before the RPC).
    pub granted_at: Instant,
    /// End of the lease as told to the primary (master clock).
    pub expires_at: Instant,
    /// Users this lease was handed to (each passed the WRITE check on the
    /// file), the latest [`MAX_WRITERS`]: only they may report the chunk's
    /// length (`ReportLength`). A writer pushed out only loses that hint;
    /// heartbeats carry lengths too.
    pub writers: Vec<String>,
    /// Servers this lease's version was granted to. If one of them dies,
    /// the lease is not handed out again: the next grant bumps the version
    /// so the dead copy is stale when it returns.
    pub holders: crate::sid::ServerSet,
}

impl Lease {
    /// A lease of `duration` starting at `now`.
    pub fn new(primary: String, version: u64, now: Instant, duration: Duration) -> Self {
        Lease {
            primary,
            version,
            granted_at: now,
            expires_at: now + duration,
            writers: Vec::new(),
            holders: Default::default(),
        }
    }

    /// Records `user` as a writer, forgetting the oldest beyond
    /// [`MAX_WRITERS`].
    pub fn add_writer(&mut self, user: &str) {
        if let Some(i) = self.writers.iter().position(|w| w == user) {
            let w = self.writers.remove(i);
            self.writers.push(w);
            return;
        }
        if self.writers.len() == MAX_WRITERS {
            self.writers.remove(0);
        }
        self.writers.push(user.to_string());
    }

    /// True while the lease may be handed to clients.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// True while no other server may be made primary.
    pub fn is_held(&self, now: Instant, grace: Duration) -> bool {
        now < self.expires_at + grace
    }

    /// Remaining validity at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }

    /// Extends the lease to `now + duration` (never shortens it).
    pub fn extend(&mut self, now: Instant, duration: Duration) {
        self.expires_at = self.expires_at.max(now + duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn validity_grace_and_extension() {
        let lease_ms = Duration::from_millis(1000);
        let grace = Duration::from_millis(200);
        let mut l = Lease::new("s1".into(), 2, Instant::now(), lease_ms);
        assert!(l.is_valid(Instant::now()));
        assert_eq!(l.remaining(Instant::now()), lease_ms);
        tokio::time::advance(Duration::from_millis(600)).await;
        l.extend(Instant::now(), lease_ms);
        assert_eq!(l.remaining(Instant::now()), lease_ms);
        tokio::time::advance(Duration::from_millis(1050)).await;
        let now = Instant::now();
        assert!(!l.is_valid(now));
        assert!(l.is_held(now, grace), "still held during the grace period");
        assert_eq!(l.remaining(now), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!l.is_held(Instant::now(), grace));
    }

    #[tokio::test(start_paused = true)]
    async fn writers_are_bounded_and_latest_first_to_stay() {
        let mut l = Lease::new("s".into(), 1, Instant::now(), Duration::from_secs(60));
        for i in 0..MAX_WRITERS {
            l.add_writer(&format!("u{i}"));
        }
        l.add_writer("u0");
        l.add_writer("new");
        assert_eq!(l.writers.len(), MAX_WRITERS);
        assert!(l.writers.iter().any(|w| w == "u0"), "a writer seen again stays");
        assert!(!l.writers.iter().any(|w| w == "u1"), "the oldest goes");
        assert_eq!(l.writers.last().map(String::as_str), Some("new"));
    }

    #[tokio::test(start_paused = true)]
    async fn extend_never_shortens() {
        let mut l = Lease::new("s".into(), 1, Instant::now(), Duration::from_secs(60));
        let before = l.expires_at;
        l.extend(Instant::now(), Duration::from_secs(1));
        assert_eq!(l.expires_at, before);
    }
}

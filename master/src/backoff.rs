//! Backoff of failed clones.
//!
//! The repair worker plans again as soon as a clone ends, and the planner
//! picks the emptiest server without the chunk: after a failure that is
//! usually the same server. Without a memory of failures, a destination
//! that cannot take the chunk (out of space, broken disk, unreachable)
//! would get the same clone again and again with no pause. So a failed
//! destination is not a target for that chunk for a while, twice as long
//! after each further failure, and one that ran out of space takes no
//! clone (and no new chunk) at all until its base backoff has passed.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The longest backoff is this many times the base.
const MAX_FACTOR: u32 = 32;

/// One destination's failures for one chunk.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    until: Instant,
}

/// Failed clone destinations, by chunk, and servers out of space.
#[derive(Debug, Default)]
pub struct CloneBackoff {
    failed: HashMap<u64, HashMap<String, Retry>>,
    no_space: HashMap<String, Instant>,
}

impl CloneBackoff {
    /// Records a failed clone of `handle` to `target`; returns how long
    /// `target` is now avoided for that chunk.
    pub fn failed(&mut self, handle: u64, target: &str, no_space: bool, now: Instant, base: Duration) -> Duration {
        let r = self
            .failed
            .entry(handle)
            .or_default()
            .entry(target.to_string())
            .or_insert(Retry { failures: 0, until: now });
        r.failures = r.failures.saturating_add(1);
        let wait = base * (1u32 << (r.failures - 1).min(5)).min(MAX_FACTOR);
        r.until = now + wait;
        if no_space {
            self.out_of_space(target, now, base);
        }
        wait
    }

    /// Holds `server` back from clones and new chunks for `base`: it
    /// answered that it is out of space (its reports may lag).
    pub fn out_of_space(&mut self, server: &str, now: Instant, base: Duration) {
        self.no_space.insert(server.to_string(), now + base);
    }

    /// Forgets the failures of `target` for `handle` (a clone there worked).
    pub fn succeeded(&mut self, handle: u64, target: &str) {
        if let Some(m) = self.failed.get_mut(&handle) {
            m.remove(target);
            if m.is_empty() {
                self.failed.remove(&handle);
            }
        }
    }

    /// Destinations to avoid for `handle` now.
    pub fn avoid(&self, handle: u64, now: Instant) -> Vec<String> {
        let Some(m) = self.failed.get(&handle) else { return Vec::new() };
        let mut v: Vec<String> = m.iter().filter(|(_, r)| now < r.until).map(|(s, _)| s.clone()).collect();
        v.sort();
        v
    }

    /// True while `server` is held back after running out of space.
    pub fn no_space(&self, server: &str, now: Instant) -> bool {
        self.no_space.get(server).is_some_and(|t| now < *t)
    }

    /// Drops what no longer matters: holds that ended, and failure counts
    /// quiet for longer than the longest backoff.
    pub fn prune(&mut self, now: Instant, base: Duration) {
        let keep = base * MAX_FACTOR;
        self.failed.retain(|_, m| {
            m.retain(|_, r| now.saturating_duration_since(r.until) < keep);
            !m.is_empty()
        });
        self.no_space.retain(|_, t| now < *t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_failed_target_waits_longer_after_each_failure() {
        let mut b = CloneBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.failed(7, "s1", false, t0, BASE), BASE);
        assert_eq!(b.avoid(7, t0), vec!["s1".to_string()]);
        assert!(b.avoid(8, t0).is_empty(), "only that chunk avoids s1");
        assert!(b.avoid(7, t0 + BASE).is_empty(), "the backoff ends");
        assert_eq!(b.failed(7, "s1", false, t0 + BASE, BASE), 2 * BASE);
        assert_eq!(b.failed(7, "s1", false, t0 + BASE, BASE), 4 * BASE);
        for _ in 0..10 {
            b.failed(7, "s1", false, t0, BASE);
        }
        assert_eq!(b.failed(7, "s1", false, t0, BASE), 32 * BASE, "capped");
        b.succeeded(7, "s1");
        assert!(b.avoid(7, t0).is_empty());
        assert_eq!(b.failed(7, "s1", false, t0, BASE), BASE, "a success resets the count");
    }

    #[tokio::test(start_paused = true)]
    async fn no_space_holds_the_server_back_for_every_chunk() {
        let mut b = CloneBackoff::default();
        let t0 = Instant::now();
        b.failed(7, "s1", true, t0, BASE);
        assert!(b.no_space("s1", t0) && !b.no_space("s2", t0));
        assert!(!b.no_space("s1", t0 + BASE));
        b.prune(t0 + BASE, BASE);
        assert!(!b.no_space.contains_key("s1"));
        assert_eq!(b.avoid(7, t0), vec!["s1".to_string()], "the failure count stays a while");
        b.prune(t0 + BASE + 32 * BASE, BASE);
        assert!(b.failed.is_empty());
    }
}

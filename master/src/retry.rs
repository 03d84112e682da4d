//! The retry cache: outcomes of recent client calls, by call id.
//!
//! A client retries a metadata call whose reply it did not get (a timeout,
//! a failover). Without this, a create that took effect comes back
//! `AlreadyExists` on the retry, and a delete `NotFound`. Each mutating
//! call carries a `CallId` (client, seq), the same on every retry; the
//! batch that carries the call out records it here when it is applied, on
//! every master, and checkpoints keep it. A retry that finds its call here
//! gets that outcome without running again (HDFS's NameNode retry cache
//! works the same way).
//!
//! Entries go in apply order and leave after [`RETRY_TTL_MS`] of batch time
//! or beyond [`RETRY_CAPACITY`] entries, so every master keeps the same
//! set.

use std::collections::{HashMap, VecDeque};

use gfs_common::{Error, Result};
use gfs_proto::{CallId, RetryEntry};

/// How long (in batch time) a call's outcome is kept.
pub const RETRY_TTL_MS: i64 = 10 * 60 * 1000;
/// Most outcomes kept.
pub const RETRY_CAPACITY: usize = 100_000;

/// Outcomes of recent calls.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RetryCache {
    outcomes: HashMap<(u64, u64), (i64, Vec<u8>)>,
    order: VecDeque<(u64, u64)>,
}

fn key(call: &CallId) -> Option<(u64, u64)> {
    (call.client != 0).then_some((call.client, call.seq))
}

impl RetryCache {
    /// Records the outcome of `call`, carried out by a batch of `time_ms`
    /// (`error`: its encoded error, empty when it succeeded).
    pub fn record(&mut self, call: &CallId, time_ms: i64, error: Vec<u8>) {
        let Some(k) = key(call) else { return };
        if self.outcomes.insert(k, (time_ms, error)).is_none() {
            self.order.push_back(k);
        }
        while let Some(old) = self.order.front() {
            let expired = self.outcomes.get(old).is_none_or(|(t, _)| *t < time_ms - RETRY_TTL_MS);
            if !expired && self.order.len() <= RETRY_CAPACITY {
                break;
            }
            let old = self.order.pop_front().expect("front exists");
            self.outcomes.remove(&old);
        }
    }

    /// The outcome of `call` if it was carried out.
    pub fn outcome(&self, call: Option<&CallId>) -> Option<Result<()>> {
        let (_, err) = self.outcomes.get(&key(call?)?)?;
        Some(if err.is_empty() { Ok(()) } else { Err(Error::from_detail_bytes(err)) })
    }

    /// Entries, oldest first (checkpoint).
    pub fn to_proto(&self) -> Vec<RetryEntry> {
        self.order
            .iter()
            .filter_map(|k| {
                let (t, e) = self.outcomes.get(k)?;
                Some(RetryEntry { call: Some(CallId { client: k.0, seq: k.1 }), time_ms: *t, error: e.clone().into() })
            })
            .collect()
    }

    /// Rebuilds the cache from checkpoint entries.
    pub fn from_proto(entries: &[RetryEntry]) -> RetryCache {
        let mut c = RetryCache::default();
        for e in entries {
            if let Some(call) = &e.call {
                c.record(call, e.time_ms, e.error.to_vec());
            }
        }
        c
    }

    /// Number of outcomes kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(client: u64, seq: u64) -> CallId {
        CallId { client, seq }
    }

    #[test]
    fn outcomes_are_kept_by_call_and_expire_in_order() {
        let mut c = RetryCache::default();
        c.record(&call(1, 1), 1000, vec![]);
        let err = Error::NotFound { path: "/x".into() };
        c.record(&call(1, 2), 2000, err.to_detail_bytes());
        c.record(&call(0, 3), 2000, vec![]);
        assert_eq!(c.outcome(Some(&call(1, 1))), Some(Ok(())));
        assert_eq!(c.outcome(Some(&call(1, 2))), Some(Err(err)));
        assert_eq!(c.outcome(Some(&call(2, 1))), None);
        assert_eq!(c.outcome(Some(&call(0, 3))), None, "client 0 is not protected");
        assert_eq!(c.outcome(None), None);
        assert_eq!(RetryCache::from_proto(&c.to_proto()), c);
        // A batch 10 minutes later pushes the first out, not the second.
        c.record(&call(2, 1), 1001 + RETRY_TTL_MS, vec![]);
        assert_eq!(c.outcome(Some(&call(1, 1))), None);
        assert!(c.outcome(Some(&call(1, 2))).is_some());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn capacity_drops_the_oldest() {
        let mut c = RetryCache::default();
        for i in 0..(RETRY_CAPACITY as u64 + 10) {
            c.record(&call(7, i), 5, vec![]);
        }
        assert_eq!(c.len(), RETRY_CAPACITY);
        assert_eq!(c.outcome(Some(&call(7, 9))), None);
        assert_eq!(c.outcome(Some(&call(7, 10))), Some(Ok(())));
    }
}

//! Primary leases held by this server, and master-epoch fencing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gfs_common::{Error, Result};

#[derive(Debug, Clone, Copy)]
struct Lease {
    version: u64,
    lease_ms: u64,
    expires: Instant,
    last_mutation: Option<Instant>,
}

/// Leases this server holds as primary, counted from when it received them.
#[derive(Default)]
pub struct Leases {
    map: Mutex<HashMap<u64, Lease>>,
}

impl Leases {
    /// Makes this server primary for `handle` at `version` for `lease_ms`.
    pub fn grant(&self, handle: u64, version: u64, lease_ms: u64) {
        let expires = Instant::now() + Duration::from_millis(lease_ms);
        let lease = Lease { version, lease_ms, expires, last_mutation: None };
        self.map.lock().expect("lease lock").insert(handle, lease);
    }

    /// Drops any lease on `handle`.
    pub fn revoke(&self, handle: u64) {
        self.map.lock().expect("lease lock").remove(&handle);
    }

    /// Fails with `NotPrimary` unless a valid lease on `handle` is held.
    pub fn check(&self, handle: u64) -> Result<()> {
        let map = self.map.lock().expect("lease lock");
        match map.get(&handle) {
            Some(l) if l.expires > Instant::now() => Ok(()),
            _ => Err(Error::NotPrimary { handle, primary: None }),
        }
    }

    /// Records that a mutation went through this primary.
    pub fn mark_mutated(&self, handle: u64) {
        if let Some(l) = self.map.lock().expect("lease lock").get_mut(&handle) {
            l.last_mutation = Some(Instant::now());
        }
    }

    /// Returns the handles whose lease is still valid but has less than half
    /// left and that saw a mutation within the last lease period.
    pub fn wanting_extension(&self) -> Vec<u64> {
        let now = Instant::now();
        let mut map = self.map.lock().expect("lease lock");
        map.retain(|_, l| l.expires > now);
        map.iter()
            .filter(|(_, l)| {
                let period = Duration::from_millis(l.lease_ms);
                let recent = l.last_mutation.is_some_and(|t| now.duration_since(t) < period);
                recent && l.expires.duration_since(now) < period / 2
            })
            .map(|(h, _)| *h)
            .collect()
    }

    /// Applies an extension granted by the master for `version`.
    pub fn extend(&self, handle: u64, version: u64, lease_ms: u64) {
        if let Some(l) = self.map.lock().expect("lease lock").get_mut(&handle)
            && l.version == version
        {
            l.expires = Instant::now() + Duration::from_millis(lease_ms);
            l.lease_ms = lease_ms;
        }
    }
}

/// The master epoch this server knows: the highest one a master answered
/// with (Register, Heartbeat and LeaderEpoch replies). Requests stamped
/// with an older epoch are fenced; a newer one is never adopted from a
/// request itself, only once the leader vouches for it (`fence.rs`), so a
/// forged request cannot fence the real master.
#[derive(Default)]
pub struct Epoch {
    known: AtomicU64,
}

/// How a request's epoch compares with the known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// Not stamped (0) or the known epoch: accepted.
    Accept,
    /// Newer than the known epoch: accepted only once the leader vouches
    /// for it.
    Ahead,
}

impl Epoch {
    /// Raises the known epoch to one a master answered with.
    pub fn observe(&self, epoch: u64) {
        self.known.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Returns the known epoch.
    pub fn known(&self) -> u64 {
        self.known.load(Ordering::Acquire)
    }

    /// Judges `epoch` (0 = not stamped) against the known epoch without
    /// changing it: `StaleEpoch` when older.
    pub fn check(&self, epoch: u64) -> Result<EpochCheck> {
        let known = self.known();
        if epoch == 0 || epoch == known {
            return Ok(EpochCheck::Accept);
        }
        if epoch < known {
            return Err(Error::StaleEpoch { have: epoch, seen: known });
        }
        Ok(EpochCheck::Ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_fencing() {
        let e = Epoch::default();
        // Nothing is adopted from a request: a newer epoch is only "ahead".
        assert_eq!(e.check(3).unwrap(), EpochCheck::Ahead);
        assert_eq!(e.check(u64::MAX).unwrap(), EpochCheck::Ahead);
        assert_eq!(e.known(), 0);
        e.observe(3);
        assert_eq!(e.check(3).unwrap(), EpochCheck::Accept);
        assert_eq!(e.check(0).unwrap(), EpochCheck::Accept);
        assert_eq!(e.check(2).unwrap_err(), Error::StaleEpoch { have: 2, seen: 3 });
        e.observe(5);
        e.observe(4);
        assert_eq!(e.known(), 5);
        assert!(e.check(4).is_err());
        assert_eq!(e.check(6).unwrap(), EpochCheck::Ahead);
    }

    #[test]
    fn lease_lifecycle() {
        let l = Leases::default();
        assert!(l.check(1).is_err());
        l.grant(1, 2, 100);
        l.check(1).unwrap();
        assert!(l.wanting_extension().is_empty());
        l.grant(1, 2, 0);
        assert!(l.check(1).is_err());
        l.grant(1, 2, 10_000);
        l.mark_mutated(1);
        // Pretend half the lease passed by granting a short one.
        l.extend(1, 2, 1_000);
        l.map.lock().unwrap().get_mut(&1).unwrap().lease_ms = 10_000;
        assert_eq!(l.wanting_extension(), vec![1]);
        l.revoke(1);
        assert!(l.check(1).is_err());
    }
}

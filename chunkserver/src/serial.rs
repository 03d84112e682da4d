//! Mutation serial numbers on a replica: which mutations a secondary
//! applies, skips or refuses.
//!
//! The primary numbers the mutations of a chunk version 1, 2, 3, ... under
//! the chunk's mutation lock, and sends each serial once, in order, to
//! every secondary. A secondary can miss some (one that failed there, or
//! reached it after its deadline), so the serials it sees may skip ahead;
//! they only go back for a late or repeated delivery. With `last` the
//! highest serial this replica applied at its version, the *expected*
//! serial is `last + 1`, and serial `s` is:
//!
//! - `0`: refused (the primary numbers from 1);
//! - `last < s <= last + MAX_SERIAL_GAP`: applied (up to
//!   `MAX_SERIAL_GAP - 1` missed mutations are tolerated);
//! - `s > last + MAX_SERIAL_GAP`: refused, nothing applied. Taken as the new
//!   `last`, a forged or corrupt serial would make every real mutation up
//!   to it look like a duplicate: skipped, yet acknowledged;
//! - `s <= last` and applied here (the last [`WINDOW`] serials are
//!   remembered): a duplicate, skipped and acknowledged as before;
//! - `s <= last` otherwise: refused. Applying it would break the order, and
//!   acknowledging it would claim a mutation this replica does not hold.
//!   A primary never waits for such a reply (it moved on from that serial
//!   before sending the next), so this only makes a jump caused by a forged
//!   serial fail loudly instead of letting the replicas diverge.
//!
//! `MAX_SERIAL_GAP` equals `WINDOW`, so after any accepted jump every real
//! serial still to come is either above `last` or remembered.
//!
//! `last` lives in memory only. After a restart it is unknown until the
//! first mutation at the chunk's version, which is taken as it comes (the
//! primary kept counting meanwhile); a version change (a new lease grant)
//! starts it at 0, as the primary does.

use gfs_common::{Error, Result};

/// Serials remembered below the last applied one.
pub(crate) const WINDOW: u64 = 128;
/// Largest step from the last applied serial to the next one accepted.
pub(crate) const MAX_SERIAL_GAP: u64 = WINDOW;

/// What to do with a mutation's serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SerialCheck {
    /// A new mutation in order: apply it, then [`Serials::record`] it.
    Apply,
    /// Already applied here: skip it and acknowledge.
    Duplicate,
}

/// The serials a replica applied at its current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Serials {
    last: u64,
    /// False after a restart, until the first mutation.
    known: bool,
    /// Bit i set: serial `last - i` was applied here.
    applied: u128,
}

impl Serials {
    /// A new version: the primary numbers from 1.
    pub(crate) fn fresh() -> Self {
        Serials { last: 0, known: true, applied: 0 }
    }

    /// A replica loaded from disk: where the primary's count is, is unknown.
    pub(crate) fn unknown() -> Self {
        Serials { last: 0, known: false, applied: 0 }
    }

    /// The serial a primary gives its next mutation.
    pub(crate) fn next(&self) -> u64 {
        self.last + 1
    }

    /// Judges serial `serial` of a mutation to chunk `handle` (see the
    /// module doc).
    pub(crate) fn check(&self, handle: u64, serial: u64) -> Result<SerialCheck> {
        if serial == 0 {
            return Err(Error::InvalidArgument(format!(
                "chunk {handle:#x}: mutation serial 0 (the primary numbers mutations from 1)"
            )));
        }
        if !self.known {
            return Ok(SerialCheck::Apply);
        }
        if serial > self.last {
            if serial - self.last > MAX_SERIAL_GAP {
                return Err(Error::InvalidArgument(format!(
                    "chunk {handle:#x}: mutation serial {serial} is {} ahead of the expected serial {} (at most \
                     {MAX_SERIAL_GAP} ahead is accepted); refused, nothing applied",
                    serial - self.last - 1,
                    self.last + 1
                )));
            }
            return Ok(SerialCheck::Apply);
        }
        let back = self.last - serial;
        if back < WINDOW && self.applied & (1u128 << back) != 0 {
            return Ok(SerialCheck::Duplicate);
        }
        Err(Error::InvalidArgument(format!(
            "chunk {handle:#x}: mutation serial {serial} is behind the last applied serial {} and was not applied \
             here; refused (out of order)",
            self.last
        )))
    }

    /// Records that mutation `serial` was applied (or, on a primary, used).
    pub(crate) fn record(&mut self, serial: u64) {
        if !self.known || serial > self.last {
            let shift = if self.known { serial - self.last } else { WINDOW };
            self.applied = if shift >= WINDOW { 0 } else { self.applied << shift };
            self.applied |= 1;
            self.last = serial;
            self.known = true;
        } else if self.last - serial < WINDOW {
            self.applied |= 1u128 << (self.last - serial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &Serials, serial: u64) -> std::result::Result<SerialCheck, String> {
        s.check(7, serial).map_err(|e| e.to_string())
    }

    #[test]
    fn in_order_gaps_duplicates_and_refusals() {
        let mut s = Serials::fresh();
        assert_eq!(s.next(), 1);
        assert!(check(&s, 0).unwrap_err().contains("serial 0"));
        assert_eq!(check(&s, 1), Ok(SerialCheck::Apply));
        s.record(1);
        assert_eq!(check(&s, 1), Ok(SerialCheck::Duplicate));
        // Missed mutations: a gap up to MAX_SERIAL_GAP is applied.
        assert_eq!(check(&s, 1 + MAX_SERIAL_GAP), Ok(SerialCheck::Apply));
        let far = check(&s, 2 + MAX_SERIAL_GAP).unwrap_err();
        assert!(far.contains("ahead of the expected serial 2") && far.contains("nothing applied"), "{far}");
        assert!(check(&s, 1001).is_err() && check(&s, u64::MAX).is_err());
        s.record(5);
        // 2..=4 were never applied here: refused, not acknowledged.
        let behind = check(&s, 3).unwrap_err();
        assert!(behind.contains("behind the last applied serial 5"), "{behind}");
        assert_eq!(check(&s, 1), Ok(SerialCheck::Duplicate));
        assert_eq!(check(&s, 5), Ok(SerialCheck::Duplicate));
        assert_eq!(s.next(), 6);
    }

    #[test]
    fn after_a_forged_jump_real_serials_fail_loudly() {
        let mut s = Serials::fresh();
        s.record(1);
        // The largest jump accepted; the real primary then sends 2, 3, ...
        s.record(1 + MAX_SERIAL_GAP);
        for real in 2..=MAX_SERIAL_GAP {
            assert!(check(&s, real).is_err(), "serial {real} would be skipped yet acknowledged");
        }
        // Older than the window: whether it was applied is not known.
        assert!(check(&s, 1).is_err());
        assert_eq!(check(&s, 1 + MAX_SERIAL_GAP), Ok(SerialCheck::Duplicate));
    }

    #[test]
    fn unknown_after_a_restart_until_the_first_mutation() {
        let mut s = Serials::unknown();
        assert_eq!(check(&s, 5000), Ok(SerialCheck::Apply));
        s.record(5000);
        assert_eq!(check(&s, 5000), Ok(SerialCheck::Duplicate));
        assert!(check(&s, 5001 + MAX_SERIAL_GAP).is_err());
        assert!(check(&s, 4000).is_err());
        assert_eq!(Serials::fresh().next(), 1);
    }
}

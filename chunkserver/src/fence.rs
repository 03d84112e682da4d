//! Master-epoch fencing of incoming requests.
//!
//! The known epoch comes from the leader's own replies (Register,
//! Heartbeat). A request (GrantLease, DeleteChunks, CloneChunk, Write,
//! Append, ApplyMutation) stamped with an older epoch is refused
//! (`StaleEpoch`). One stamped with a newer epoch is either a new leader's
//! that arrived before its first heartbeat reply, or forged; adopting it
//! blindly would let one forged `u64::MAX` fence the real master forever.
//! So the server asks the leader (`LeaderEpoch`, following `NotLeader`
//! hints), adopts the epoch the leader answers with, and lets the request
//! through only if that is exactly its epoch; an epoch still ahead is
//! refused with `InvalidArgument`.
//!
//! Confirmations are bounded: one at a time (requests that need one wait
//! for it and then re-check, so a burst from a real new leader costs one
//! call), at most one started per [`CONFIRM_INTERVAL`] (within it an epoch
//! still ahead is refused without asking), and each within a deadline. A
//! flood of forged epochs therefore costs the leader at most a few calls
//! per second per chunkserver, and a real new leader is known at the
//! latest from the next heartbeat reply.

use std::time::{Duration, Instant};

use gfs_common::{Error, Result};

use crate::lease::EpochCheck;
use crate::service::Shared;

/// Least time between two confirmations started by one server.
pub(crate) const CONFIRM_INTERVAL: Duration = Duration::from_millis(200);
/// Longest a confirmation (waiting for the one in flight, then asking the
/// leader) may take.
const MAX_CONFIRM_DEADLINE: Duration = Duration::from_secs(2);

/// The single-flight gate of epoch confirmations.
pub(crate) struct Confirmer {
    /// When the last confirmation started; held while one is in flight.
    last: tokio::sync::Mutex<Option<Instant>>,
    deadline: Duration,
}

impl Confirmer {
    /// A gate whose confirmations take at most `rpc_timeout` (capped at
    /// [`MAX_CONFIRM_DEADLINE`]).
    pub(crate) fn new(rpc_timeout: Duration) -> Self {
        Self { last: tokio::sync::Mutex::new(None), deadline: rpc_timeout.min(MAX_CONFIRM_DEADLINE) }
    }
}

fn ahead(epoch: u64, known: u64, when: &str) -> Error {
    Error::InvalidArgument(format!(
        "master epoch {epoch} is ahead of the master group's epoch {known} ({when}); refused, not adopted"
    ))
}

impl Shared {
    /// Admits a request stamped with master epoch `epoch` (0: not
    /// stamped), confirming a newer one with the leader first.
    pub(crate) async fn admit_epoch(&self, epoch: u64) -> Result<()> {
        match self.epoch.check(epoch)? {
            EpochCheck::Accept => Ok(()),
            EpochCheck::Ahead => self.confirm_epoch(epoch).await,
        }
    }

    async fn confirm_epoch(&self, epoch: u64) -> Result<()> {
        let deadline = self.fence.deadline;
        let started = Instant::now();
        let mut last = tokio::time::timeout(deadline, self.fence.last.lock()).await.map_err(|_| {
            Error::Unavailable(format!("master epoch {epoch}: no epoch confirmation slot within {deadline:?}"))
        })?;
        // The confirmation waited for may have vouched for this epoch.
        if self.epoch.check(epoch)? == EpochCheck::Accept {
            return Ok(());
        }
        if let Some(at) = *last
            && at.elapsed() < CONFIRM_INTERVAL
        {
            tracing::debug!(epoch, known = self.epoch.known(), "epoch ahead, confirmed moments ago: refused");
            return Err(ahead(epoch, self.epoch.known(), "as confirmed moments ago"));
        }
        *last = Some(Instant::now());
        let left = deadline.saturating_sub(started.elapsed());
        let leader = match tokio::time::timeout(left, self.rpc.leader_epoch()).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                return Err(Error::Unavailable(format!("cannot confirm master epoch {epoch} with the leader: {e}")));
            }
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "cannot confirm master epoch {epoch}: the leader did not answer within {deadline:?}"
                )));
            }
        };
        self.epoch.observe(leader);
        match self.epoch.check(epoch)? {
            EpochCheck::Accept => {
                tracing::info!(epoch, "new master epoch confirmed by the leader");
                Ok(())
            }
            EpochCheck::Ahead => {
                tracing::warn!(epoch, leader_epoch = leader, "request stamped with an epoch ahead of the master's");
                Err(ahead(epoch, leader, "as the leader says"))
            }
        }
    }
}

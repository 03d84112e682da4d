//! Chunk token signing keys (see `gfs_common::token`).
//!
//! The acting leader makes a key when the group has none, and a new one
//! every `token_key_rotate_ms`. A key is logged like any metadata change, so
//! every master has every key and a new leader signs with the same ones;
//! chunkservers receive the set in Register and Heartbeat replies. A key
//! signs tokens only once it is [`ACTIVATION_MS`] old, so that every
//! chunkserver had a few heartbeats to receive it first, and it lives long
//! enough to verify every token signed with it.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::Result;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::log_record::Op;
use tracing::{info, warn};

use crate::state::Shared;

/// A new key signs tokens only after this long (several heartbeats).
pub const ACTIVATION_MS: i64 = 5_000;

/// How often the worker looks at the keys; more often while the group has
/// none (a new group cannot serve reads or writes without one).
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_EVERY_WITHOUT_KEY: Duration = Duration::from_millis(50);

/// Makes token keys while this master is the acting leader.
pub struct KeyWorker {
    shared: Arc<Shared>,
}

impl KeyWorker {
    /// A worker over the master state.
    pub fn new(shared: Arc<Shared>) -> Self {
        KeyWorker { shared }
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if self.shared.is_leader()
                && let Err(e) = self.tick().await
            {
                warn!(error = %e, "cannot make a token key; retrying");
            }
            let pause = if self.shared.meta().token_keys.is_empty() { CHECK_EVERY_WITHOUT_KEY } else { CHECK_EVERY };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Logs a new key if the newest one is due for rotation (or none exists).
    async fn tick(&self) -> Result<()> {
        let cfg = &self.shared.cfg;
        let now = gfs_common::now_ms();
        let rotate = cfg.token_key_rotate_ms as i64;
        let next_id = {
            let meta = self.shared.meta();
            match meta.token_keys.values().next_back() {
                Some(k) if k.created_ms + rotate > now => return Ok(()),
                Some(k) => k.id.wrapping_add(1).max(1),
                None => 1,
            }
        };
        // Valid until the next key has been active for a whole token
        // lifetime: every token signed with this one has expired by then.
        let expires = now + 2 * rotate + ACTIVATION_MS + cfg.token_lifetime_ms as i64;
        let key = gfs_common::token::new_key(next_id, now, expires)?;
        self.shared.commit(vec![Op::TokenKey(key)]).await?;
        info!(key_id = next_id, "token signing key created");
        Ok(())
    }
}

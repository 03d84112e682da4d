//! Master configuration.

use std::path::PathBuf;

use gfs_common::net::ServerLimits;
use gfs_common::{DEFAULT_CHUNK_SIZE, Error, Result};

/// Granularity of chunk sizes (one checksum block).
const CHUNK_SIZE_UNIT: u64 = 64 * 1024;

/// Master settings. `Default` gives a runnable single master on
/// `127.0.0.1:0`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: String,
    /// Directory for the epoch, checkpoint and log segments.
    pub data_dir: PathBuf,
    /// Chunk size of new files; a multiple of 64 KiB.
    pub chunk_size: u64,
    /// Default replica count of new files.
    pub replication: u32,
    /// Lease duration.
    pub lease_ms: u64,
    /// Heartbeat interval told to chunkservers.
    pub heartbeat_ms: u64,
    /// Silence after which a chunkserver is dead.
    pub dead_after_ms: u64,
    /// Log records between checkpoints.
    pub checkpoint_every: u64,
    /// Deadline for master -> chunkserver RPCs (also the lease grace).
    pub rpc_timeout_ms: u64,
    /// Chunk creations per server per 10 s before it is avoided.
    pub max_recent_creations: u32,
    /// Server limits.
    pub limits: ServerLimits,
    /// Self-healing: repair queue, clones, GC, rebalancing, hot chunks.
    pub heal: HealConfig,
    /// Admin HTTP address (`/metrics`, `/healthz`, `/readyz`); None = off.
    pub admin_listen: Option<String>,
    /// Serves `/debug/pprof/profile` on the admin port.
    pub profiling: bool,
    /// Bearer token that `/metrics` and `/debug/pprof/*` on the admin port
    /// require (`--admin-auth-token-file`); open when `None`.
    pub admin_auth: Option<std::sync::Arc<gfs_common::admin_auth::TokenFile>>,
    /// This master's Raft id (a pod ordinal works: 0 is allowed).
    pub id: u64,
    /// The initial master group, id -> address. Empty: a group of one at
    /// the bound address. Only its lowest id initializes the group; a
    /// master not listed joins (waits to be added).
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Join an existing group (added later with `AddMaster`) instead of
    /// initializing one from `peers`.
    pub join: bool,
    /// Addresses (a list or a DNS name) where members of this master's
    /// group may already run: a founder with an empty data dir that finds
    /// an initialized group there waits for it instead of founding one.
    pub discover: Option<String>,
    /// Raft timing.
    pub raft: RaftConfig,
    /// A new leader grants no lease on a chunk from an earlier term for
    /// this long, so every live chunkserver has re-registered and reported
    /// its replicas first (and repair waits as long). Default: dead_after_ms.
    pub leader_warmup_ms: u64,
    /// Accept `RaftService.SetPartition` (tests only).
    pub fault_injection: bool,
    /// Lifetime of a chunk access token (read tokens come with locations,
    /// write tokens with leases).
    pub token_lifetime_ms: u64,
    /// The leader makes a new token signing key this often.
    pub token_key_rotate_ms: u64,
    /// mTLS material for every connection (served and dialled), or
    /// plaintext without authentication (the default for in-code configs;
    /// the binary needs `--insecure` for it).
    pub security: gfs_common::tls::Security,
    /// Users that bypass namespace permission checks (HDFS's superuser),
    /// besides callers with the admin role. Not replicated: give every
    /// master of a group the same list. On an `--insecure` master a
    /// caller names its own user, so anyone can claim to be one.
    pub superusers: Vec<String>,
    /// Members of this group are superusers too.
    pub supergroup: String,
}

/// Raft timing among masters. Defaults follow the chunkserver rhythm: a
/// heartbeat every second and an election after about three missed ones.
/// openraft 0.9 lets a follower that heard from a leader start an election
/// only after the leader lease (= `election_timeout_max_ms`) plus a random
/// election timeout in [min, max) without a heartbeat: 1.8 s + 1.5-1.8 s =
/// 3.3-3.6 s by default.
#[derive(Debug, Clone, Copy)]
pub struct RaftConfig {
    /// Leader -> follower heartbeat period.
    pub heartbeat_ms: u64,
    /// Election timeout: see the type's docs for how it adds to the lease.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig { heartbeat_ms: 1_000, election_timeout_min_ms: 1_500, election_timeout_max_ms: 1_800 }
    }
}

/// Self-healing knobs (issue 4). `Default` gives production values.
#[derive(Debug, Clone)]
pub struct HealConfig {
    /// Period of the repair worker's scan.
    pub scan_ms: u64,
    /// A deficit waits this long before its repair starts (unless a client
    /// is blocked on it), so that servers failing together are all counted
    /// before the queue is ordered.
    pub repair_delay_ms: u64,
    /// Clones in flight, cluster-wide.
    pub max_clones: u32,
    /// Clones in flight per server, as source or destination.
    pub max_clones_per_server: u32,
    /// Bandwidth of one clone, bytes/s (0 = unlimited).
    pub clone_bytes_per_sec: u64,
    /// Deleted (hidden) files are reclaimed this long after deletion.
    pub gc_delay_ms: u64,
    /// Rebalance when max - min disk use fraction exceeds this (0 = off).
    pub rebalance_threshold: f64,
    /// GetChunks lookups per chunk (decaying score) that make it hot (0 = off).
    pub hot_reads: u32,
    /// Extra replicas of a hot chunk.
    pub hot_extra_replicas: u32,
    /// Half-life of the read score, in ms.
    pub hot_half_life_ms: u64,
    /// After a failed clone, its destination is not tried again for that
    /// chunk for this long, doubling with each further failure (at most
    /// 32 times); a destination out of space takes no clone at all for
    /// this long. ms.
    pub clone_retry_ms: u64,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            scan_ms: 1_000,
            repair_delay_ms: 0,
            max_clones: 16,
            max_clones_per_server: 2,
            clone_bytes_per_sec: 64 << 20,
            gc_delay_ms: 3 * 24 * 3600 * 1000,
            rebalance_threshold: 0.1,
            hot_reads: 1_000,
            hot_extra_replicas: 1,
            hot_half_life_ms: 10_000,
            clone_retry_ms: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".into(),
            data_dir: PathBuf::from("gfs-master-data"),
            chunk_size: DEFAULT_CHUNK_SIZE,
            replication: 3,
            lease_ms: 60_000,
            heartbeat_ms: 1_000,
            dead_after_ms: 3_000,
            checkpoint_every: 10_000,
            rpc_timeout_ms: 5_000,
            max_recent_creations: 32,
            limits: ServerLimits::default(),
            heal: HealConfig::default(),
            admin_listen: None,
            profiling: false,
            admin_auth: None,
            id: 1,
            peers: Default::default(),
            join: false,
            raft: RaftConfig::default(),
            discover: None,
            leader_warmup_ms: 3_000,
            fault_injection: false,
            token_lifetime_ms: 10 * 60 * 1000,
            token_key_rotate_ms: 60 * 60 * 1000,
            security: Default::default(),
            superusers: vec![crate::perm::SUPERUSER.to_string()],
            supergroup: crate::perm::SUPERGROUP.to_string(),
        }
    }
}

/// Largest replication factor accepted.
pub const MAX_REPLICATION: u32 = 16;

impl Config {
    /// Checks every field, with a message naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.listen.trim().is_empty() {
            return bad("listen address is empty".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir is empty".into());
        }
        if self.chunk_size < CHUNK_SIZE_UNIT || !self.chunk_size.is_multiple_of(CHUNK_SIZE_UNIT) {
            return bad(format!("chunk_size {} must be a multiple of 64 KiB and at least 64 KiB", self.chunk_size));
        }
        if self.replication == 0 || self.replication > MAX_REPLICATION {
            return bad(format!("replication {} must be between 1 and {MAX_REPLICATION}", self.replication));
        }
        for (name, v) in [
            ("lease_ms", self.lease_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("checkpoint_every", self.checkpoint_every),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("max_recent_creations", self.max_recent_creations as u64),
            ("heal.scan_ms", self.heal.scan_ms),
            ("heal.max_clones", self.heal.max_clones as u64),
            ("heal.max_clones_per_server", self.heal.max_clones_per_server as u64),
            ("heal.hot_half_life_ms", self.heal.hot_half_life_ms),
        ] {
            if v == 0 {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if self.token_key_rotate_ms == 0 || self.token_lifetime_ms < self.lease_ms {
            return bad(format!(
                "token_key_rotate_ms must be positive and token_lifetime_ms ({}) at least lease_ms ({})",
                self.token_lifetime_ms, self.lease_ms
            ));
        }
        if self.dead_after_ms <= self.heartbeat_ms {
            return bad(format!(
                "dead_after_ms ({}) must be greater than heartbeat_ms ({})",
                self.dead_after_ms, self.heartbeat_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.heal.rebalance_threshold) {
            return bad(format!("heal.rebalance_threshold {} must be between 0 and 1", self.heal.rebalance_threshold));
        }
        if self.peers.len() > 1 && self.peers.len().is_multiple_of(2) {
            return bad(format!("{} masters: a group needs an odd number (1, 3 or 5)", self.peers.len()));
        }
        if let Some(d) = &self.discover {
            gfs_common::MasterSet::parse(d).map_err(|e| Error::InvalidArgument(format!("discover {d:?}: {e}")))?;
        }
        let r = self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return bad(format!(
                "raft election timeout ({} ms) must be longer than the raft heartbeat ({} ms)",
                r.election_timeout_min_ms, r.heartbeat_ms
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return bad("raft election_timeout_max_ms must be greater than election_timeout_min_ms".into());
        }
        if self.limits.max_connections == 0 || self.limits.max_concurrent_per_connection == 0 {
            return bad("server limits must be greater than 0".into());
        }
        for (what, name) in self.superusers.iter().map(|u| ("superuser", u)).chain([("supergroup", &self.supergroup)]) {
            if !gfs_common::auth::is_valid_name(name) {
                return bad(gfs_common::auth::bad_name(what, name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let c = Config { chunk_size: 1000, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("chunk_size"));
        let c = Config { replication: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("replication"));
        let c = Config { dead_after_ms: 10, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("dead_after_ms"));
        let c = Config { lease_ms: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("lease_ms"));
        let c = Config { discover: Some("no-port".into()), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("discover"));
        let c = Config { superusers: vec!["root".into(), "a b".into()], ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("superuser"));
        let c = Config { supergroup: String::new(), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("supergroup"));
    }
}

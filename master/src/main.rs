//! `gfs-master`: the master binary.

use std::path::PathBuf;

use clap::Parser;
use gfs_common::telemetry::{self, LogFormat};

/// gfs master server.
#[derive(Debug, Parser)]
#[command(name = "gfs-master", version, about = "gfs master server")]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Args {
    /// A tool to run instead of the server.
    #[command(subcommand)]
    command: Option<Tool>,
    /// Address to listen on.
    #[arg(long, env = "GFS_LISTEN", default_value = "127.0.0.1:9700")]
    listen: String,
    /// This master's id in the master group (1, 2, 3, ...).
    #[arg(long, env = "GFS_MASTER_ID", default_value_t = 1)]
    id: u64,
    /// The initial master group as ID=HOST:PORT,... including this master
    /// (1, 3 or 5 entries). Omitted: a group of one.
    #[arg(long, env = "GFS_PEERS", default_value = "")]
    peers: String,
    /// Join an existing group (the leader adds it with `gfs admin
    /// add-master`) instead of initializing a new one from --peers.
    #[arg(long, env = "GFS_JOIN")]
    join: bool,
    /// Where members of this group may already run (HOST:PORT list or a DNS
    /// name): a founder whose data dir is empty joins an initialized group
    /// found there instead of founding a new one (a recreated pod 0).
    #[arg(long, env = "GFS_DISCOVER")]
    discover: Option<String>,
    /// Raft heartbeat between masters, in milliseconds.
    #[arg(long, env = "GFS_RAFT_HEARTBEAT_MS", default_value_t = 1_000)]
    raft_heartbeat_ms: u64,
    /// Raft election timeout in milliseconds (randomized up to 1.2x). A
    /// follower suspects the leader after the leader lease (1.2x this) plus
    /// the election timeout without a heartbeat: 3.3-3.6 s by default.
    #[arg(long, env = "GFS_ELECTION_TIMEOUT_MS", default_value_t = 1_500)]
    election_timeout_ms: u64,
    /// Accept the SetPartition fault-injection RPC (tests only).
    #[arg(long, env = "GFS_FAULT_INJECTION", hide = true)]
    fault_injection: bool,
    /// Directory for the Raft log, vote and checkpoint.
    #[arg(long, env = "GFS_DATA_DIR", required = true)]
    data_dir: Option<PathBuf>,
    /// Chunk size of new files: bytes or with a suffix (KiB, MiB, GiB, K, M, G).
    #[arg(long, env = "GFS_CHUNK_SIZE", default_value = "64MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Default replicas per chunk.
    #[arg(long, env = "GFS_REPLICATION", default_value_t = 3)]
    replication: u32,
    /// Lease duration in milliseconds.
    #[arg(long, env = "GFS_LEASE_MS", default_value_t = 60_000)]
    lease_ms: u64,
    /// Heartbeat interval told to chunkservers, in milliseconds.
    #[arg(long, env = "GFS_HEARTBEAT_MS", default_value_t = 1_000)]
    heartbeat_ms: u64,
    /// Silence after which a chunkserver is declared dead, in milliseconds.
    #[arg(long, env = "GFS_DEAD_AFTER_MS", default_value_t = 3_000)]
    dead_after_ms: u64,
    /// Log records between checkpoints.
    #[arg(long, env = "GFS_CHECKPOINT_EVERY", default_value_t = 10_000)]
    checkpoint_every: u64,
    /// Period of the repair and garbage-collection scans, ms.
    #[arg(long, env = "GFS_HEAL_SCAN_MS", default_value_t = 1_000)]
    heal_scan_ms: u64,
    /// A replica deficit waits this many ms before its repair starts.
    #[arg(long, env = "GFS_REPAIR_DELAY_MS", default_value_t = 0)]
    repair_delay_ms: u64,
    /// Clones in flight cluster-wide.
    #[arg(long, env = "GFS_MAX_CLONES", default_value_t = 16)]
    max_clones: u32,
    /// Clones in flight per chunkserver (source or destination).
    #[arg(long, env = "GFS_MAX_CLONES_PER_SERVER", default_value_t = 2)]
    max_clones_per_server: u32,
    /// Bandwidth of one clone: bytes/s with optional unit (0 = unlimited).
    #[arg(long, env = "GFS_CLONE_RATE", default_value = "64MiB", value_parser = parse_size)]
    clone_rate: u64,
    /// Deleted files are reclaimed after this many ms (default 3 days).
    #[arg(long, env = "GFS_GC_DELAY_MS", default_value_t = 3 * 24 * 3600 * 1000)]
    gc_delay_ms: u64,
    /// Rebalance when disk use fractions differ by more than this (0 = off).
    #[arg(long, env = "GFS_REBALANCE_THRESHOLD", default_value_t = 0.1)]
    rebalance_threshold: f64,
    /// Read lookups (decaying) that make a chunk hot (0 = off).
    #[arg(long, env = "GFS_HOT_READS", default_value_t = 1_000)]
    hot_reads: u32,
    /// A failed clone's destination waits this many ms before it is tried
    /// again for that chunk (doubling per failure, at most 32x).
    #[arg(long, env = "GFS_CLONE_RETRY_MS", default_value_t = 10_000)]
    clone_retry_ms: u64,
    /// Serve /metrics, /healthz and /readyz on this address (off if unset).
    #[arg(long, env = "GFS_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Serve a CPU profile (flame graph) at /debug/pprof/profile?seconds=N
    /// on the admin port.
    #[arg(long, env = "GFS_PROFILING")]
    profiling: bool,
    /// Log format: text or json.
    #[arg(long, env = "GFS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Lifetime of a chunk access token in milliseconds (at least the
    /// lease).
    #[arg(long, env = "GFS_TOKEN_LIFETIME_MS", default_value_t = 10 * 60 * 1000)]
    token_lifetime_ms: u64,
    /// The leader makes a new token signing key this often, milliseconds.
    #[arg(long, env = "GFS_TOKEN_KEY_ROTATE_MS", default_value_t = 60 * 60 * 1000)]
    token_key_rotate_ms: u64,
    /// A superuser, who bypasses namespace permission checks (repeat the
    /// flag for several; the env var takes a comma-separated list).
    /// Callers with the admin role (certificate OU admin) always are. On an
    /// --insecure master callers name themselves, so anyone can claim it.
    #[arg(
        long = "superuser",
        env = "GFS_SUPERUSERS",
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "gfs"
    )]
    superusers: Vec<String>,
    /// Members of this group are superusers.
    #[arg(long, env = "GFS_SUPERGROUP", value_name = "GROUP", default_value = "supergroup")]
    supergroup: String,
    /// Most connections open at once from one IP address.
    #[arg(long, env = "GFS_MAX_CONNECTIONS_PER_PEER", default_value_t = 256)]
    max_connections_per_peer: usize,
    #[command(flatten)]
    tls: gfs_common::tls::TlsArgs,
    #[command(flatten)]
    admin_auth: gfs_common::admin_auth::AdminAuthArgs,
}

/// Tools run instead of the server.
#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Reports a master's Raft log (each segment; each problem with its
    /// file, byte offset and last good index; torn tail or damage) without
    /// changing anything. Exits 1 when the master would refuse to start.
    CheckLog {
        /// The master's data directory.
        #[arg(long, env = "GFS_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// Parses `123`, `64KiB`, `1MiB`, `2GiB`, `4K`, `8M`, `1G` (binary units),
/// and Kubernetes quantities `64Mi`, `1Gi` (what the operator passes).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}: expected a number with optional unit"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" | "ki" => 1 << 10,
        "m" | "mb" | "mib" | "mi" => 1 << 20,
        "g" | "gb" | "gib" | "gi" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {s:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Tool::CheckLog { data_dir }) = &args.command {
        std::process::exit(gfs_master::raft::check::run(data_dir));
    }
    telemetry::abort_on_panic();
    // openraft traces every vote and append at info; keep its warnings.
    telemetry::init(args.log_format, "info,openraft=warn");
    let security = args.tls.security()?;
    let limits =
        gfs_common::net::ServerLimits { max_connections_per_peer: args.max_connections_per_peer, ..Default::default() };
    let config = gfs_master::Config {
        security,
        limits,
        token_lifetime_ms: args.token_lifetime_ms,
        token_key_rotate_ms: args.token_key_rotate_ms,
        listen: args.listen,
        data_dir: args.data_dir.ok_or_else(|| anyhow::anyhow!("--data-dir is required"))?,
        chunk_size: args.chunk_size,
        replication: args.replication,
        lease_ms: args.lease_ms,
        heartbeat_ms: args.heartbeat_ms,
        dead_after_ms: args.dead_after_ms,
        checkpoint_every: args.checkpoint_every,
        admin_listen: args.admin_listen,
        profiling: args.profiling,
        admin_auth: args.admin_auth.open()?,
        id: args.id,
        peers: gfs_master::group::parse_peers(&args.peers)?,
        join: args.join,
        discover: args.discover,
        raft: gfs_master::config::RaftConfig {
            heartbeat_ms: args.raft_heartbeat_ms,
            election_timeout_min_ms: args.election_timeout_ms,
            election_timeout_max_ms: args.election_timeout_ms * 6 / 5,
        },
        fault_injection: args.fault_injection,
        leader_warmup_ms: args.dead_after_ms,
        superusers: args.superusers,
        supergroup: args.supergroup,
        heal: gfs_master::HealConfig {
            scan_ms: args.heal_scan_ms,
            repair_delay_ms: args.repair_delay_ms,
            max_clones: args.max_clones,
            max_clones_per_server: args.max_clones_per_server,
            clone_bytes_per_sec: args.clone_rate,
            gc_delay_ms: args.gc_delay_ms,
            rebalance_threshold: args.rebalance_threshold,
            hot_reads: args.hot_reads,
            clone_retry_ms: args.clone_retry_ms,
            ..Default::default()
        },
        ..Default::default()
    };
    let shutdown = gfs_common::shutdown::on_signals();
    if let Err(e) = gfs_master::run(config, shutdown).await {
        tracing::error!(error = %e, "master failed");
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Args, parse_size};
    use clap::Parser;

    #[test]
    fn superusers_repeat_and_default() {
        let a = Args::try_parse_from(["gfs-master", "--data-dir", "d"]).unwrap();
        assert_eq!((a.superusers, a.supergroup.as_str()), (vec!["gfs".to_string()], "supergroup"));
        let a = Args::try_parse_from(["gfs-master", "--data-dir", "d", "--superuser", "hdfs", "--superuser", "root"])
            .unwrap();
        assert_eq!(a.superusers, vec!["hdfs".to_string(), "root".to_string()]);
        let a = Args::try_parse_from(["gfs-master", "--data-dir", "d", "--superuser", "a,b", "--supergroup", "ops"])
            .unwrap();
        assert_eq!((a.superusers.len(), a.supergroup.as_str()), (2, "ops"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1XB").is_err());
    }
}

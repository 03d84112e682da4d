//! `gfs-chunkserver`: parses flags, sets up tracing and runs the chunkserver.

use std::path::PathBuf;

use clap::Parser;
use gfs_common::shutdown;
use gfs_common::telemetry::{self, LogFormat};

/// gfs chunkserver: stores chunks and serves reads and mutations.
#[derive(Parser, Debug)]
#[command(name = "gfs-chunkserver", version)]
struct Args {
    /// Master address(es): host:port, a list h1:p1,h2:p2,h3:p3 (the master
    /// group; Register and heartbeats follow the leader), or one name:port
    /// whose DNS name resolves to every master.
    #[arg(long, env = "GFS_MASTER", default_value = "127.0.0.1:9700")]
    master: String,
    /// Address to listen on.
    #[arg(long, env = "GFS_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Address advertised to the master and clients (default: bound address).
    #[arg(long, env = "GFS_ADVERTISE")]
    advertise: Option<String>,
    /// Data folder (server id and chunk files).
    #[arg(long, env = "GFS_DATA_DIR")]
    data_dir: PathBuf,
    /// Failure domain.
    #[arg(long, env = "GFS_ZONE", default_value = "default")]
    zone: String,
    /// Heartbeat period in milliseconds.
    #[arg(long, env = "GFS_HEARTBEAT_MS", default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Capacity reported to the master, in bytes (default: disk size).
    #[arg(long, env = "GFS_CAPACITY")]
    capacity: Option<u64>,
    /// Report the server full (no new replicas) below this many free bytes.
    #[arg(long, env = "GFS_DISK_RESERVE", default_value_t = gfs_common::DEFAULT_CHUNK_SIZE)]
    disk_reserve: u64,
    /// Bound on pushed-but-uncommitted data, in bytes.
    #[arg(long, env = "GFS_PUSH_BUFFER", default_value_t = 256 * 1024 * 1024)]
    push_buffer: u64,
    /// Do not fdatasync before acknowledging mutations.
    #[arg(long, env = "GFS_NO_SYNC")]
    no_sync: bool,
    /// Clones run at once as destination.
    #[arg(long, env = "GFS_MAX_CLONES", default_value_t = 4)]
    max_clones: usize,
    /// Pause between two scrubbed chunks in ms (0 = no scrubbing).
    #[arg(long, env = "GFS_SCRUB_INTERVAL_MS", default_value_t = 1_000)]
    scrub_interval_ms: u64,
    /// Scrub chunks not mutated for this many ms.
    #[arg(long, env = "GFS_SCRUB_IDLE_MS", default_value_t = 60_000)]
    scrub_idle_ms: u64,
    /// Scrubber read rate in bytes/s (0 = unlimited).
    #[arg(long, env = "GFS_SCRUB_BYTES_PER_SEC", default_value_t = 16 << 20)]
    scrub_bytes_per_sec: u64,
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
    /// Most connections open at once from one IP address.
    #[arg(long, env = "GFS_MAX_CONNECTIONS_PER_PEER", default_value_t = 256)]
    max_connections_per_peer: usize,
    #[command(flatten)]
    tls: gfs_common::tls::TlsArgs,
    #[command(flatten)]
    admin_auth: gfs_common::admin_auth::AdminAuthArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::abort_on_panic();
    telemetry::init(args.log_format, "info");
    let security = args.tls.security()?;
    let limits =
        gfs_common::net::ServerLimits { max_connections_per_peer: args.max_connections_per_peer, ..Default::default() };
    let config = gfs_chunkserver::Config {
        security,
        limits,
        listen: args.listen,
        advertise: args.advertise,
        master: args.master,
        data_dir: args.data_dir,
        zone: args.zone,
        heartbeat_ms: args.heartbeat_ms,
        capacity_bytes: args.capacity,
        disk_reserve_bytes: args.disk_reserve,
        push_buffer_bytes: args.push_buffer,
        sync_writes: !args.no_sync,
        max_clones: args.max_clones,
        scrub_interval_ms: args.scrub_interval_ms,
        scrub_idle_ms: args.scrub_idle_ms,
        scrub_bytes_per_sec: args.scrub_bytes_per_sec,
        admin_listen: args.admin_listen,
        profiling: args.profiling,
        admin_auth: args.admin_auth.open()?,
        ..Default::default()
    };
    let token = shutdown::on_signals();
    gfs_chunkserver::run(config, token).await?;
    Ok(())
}

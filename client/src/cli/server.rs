//! `gfs server`: master + chunkservers in this process.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use gfs_common::shutdown::on_signals;

use crate::local_cluster::{LocalCluster, LocalClusterOptions};
use crate::size::parse_size;

/// Flags of `gfs server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Root data dir (`master/`, `chunkserver-<i>/` below it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Number of chunkservers.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub chunkservers: usize,
    /// Masters in the group (1, 3 or 5), all in this process: the first
    /// listens on --listen, the others on free loopback ports. The group's
    /// addresses are remembered in DIR/master-addresses: a restart on the
    /// same data dir listens there again (its Raft membership names them).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub masters: usize,
    /// Master listen address.
    #[arg(long, default_value = "127.0.0.1:9700", value_name = "HOST:PORT")]
    pub listen: String,
    /// Chunk size of new files (suffixes KiB, MiB, GiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "BYTES")]
    pub chunk_size: u64,
    /// Default replication [default: min(3, N)].
    #[arg(long, value_name = "R")]
    pub replication: Option<u32>,
    /// A chunkserver with less free disk space than this reports itself
    /// full and gets no new replicas [default: the chunk size].
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub disk_reserve: Option<u64>,
    /// Serve /metrics (master and every chunkserver), /healthz and /readyz here.
    #[arg(long, env = "GFS_ADMIN_LISTEN", value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,
    /// Serve a CPU profile (flame graph) at /debug/pprof/profile?seconds=N
    /// on the admin port.
    #[arg(long, env = "GFS_PROFILING")]
    pub profiling: bool,
    #[command(flatten)]
    pub admin_auth: gfs_common::admin_auth::AdminAuthArgs,
    /// Write the master address(es, comma-separated) to this file once ready.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(args: ServerArgs, insecure: bool) -> anyhow::Result<()> {
    let shutdown = on_signals();
    let mut opts = LocalClusterOptions::new(&args.data_dir);
    opts.tls = !insecure;
    if insecure {
        tracing::warn!("gfs server without TLS (--insecure): connections are plaintext and nobody is authenticated");
    }
    opts.chunkservers = args.chunkservers;
    opts.listen = args.listen.clone();
    opts.chunk_size = args.chunk_size;
    opts.replication = args.replication;
    opts.disk_reserve = args.disk_reserve;
    opts.admin_listen = args.admin_listen.clone();
    opts.profiling = args.profiling;
    opts.admin_auth = args.admin_auth.open()?;
    opts.masters = args.masters;
    let cluster = LocalCluster::start(opts, shutdown.clone()).await?;
    let masters = cluster.master_spec();
    println!(
        "gfs server ready: master{} {masters}, {} chunkservers, data {}",
        if args.masters > 1 { "s" } else { "" },
        args.chunkservers,
        args.data_dir.display()
    );
    if opts_tls_dir(&args.data_dir, insecure).is_some() {
        let dir = std::path::absolute(args.data_dir.join("tls").join("admin")).unwrap_or_default();
        println!("gfs server TLS: clients use --tls-dir {} (or GFS_TLS_DIR)", dir.display());
    }
    if let Some(a) = cluster.admin_addr {
        println!("gfs server admin: http://{a}/metrics");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.ready_file {
        let write = || -> std::io::Result<()> {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, &masters)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            shutdown.cancel();
            let _ = cluster.wait().await;
            return Err(e).with_context(|| path.display().to_string());
        }
    }
    cluster.wait().await
}

/// The admin identity's folder of a TLS cluster.
fn opts_tls_dir(data_dir: &std::path::Path, insecure: bool) -> Option<PathBuf> {
    (!insecure).then(|| data_dir.join("tls").join("admin"))
}

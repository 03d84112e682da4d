//! In-process gfs cluster for tests.
//!
//! [`Cluster::start`] runs one master and N chunkservers as tasks on
//! listeners bound to `127.0.0.1:0`, each storing under its own folder of a
//! temporary directory. Components can be stopped and restarted on the same
//! folder, which is how tests check recovery and stale replicas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gfs_client::{Client, ClientConfig};
use gfs_common::shutdown::CancellationToken;
use tempfile::TempDir;

/// Knobs for a test cluster. `Default` gives 3 chunkservers, replication 3,
/// 1 MiB chunks and short heartbeats.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of chunkservers.
    pub chunkservers: usize,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Default replication.
    pub replication: u32,
    /// Lease length.
    pub lease_ms: u64,
    /// Chunkserver heartbeat period.
    pub heartbeat_ms: u64,
    /// Time without a heartbeat before a chunkserver is dead.
    pub dead_after_ms: u64,
    /// Log records between master checkpoints.
    pub checkpoint_every: u64,
    /// Master self-healing knobs (scan period, clone caps, GC delay...).
    pub heal: gfs_master::HealConfig,
    /// Capacity each chunkserver reports (default: its disk).
    pub capacity_bytes: Option<u64>,
    /// Chunkserver scrubber pause between chunks, ms (0 = off).
    pub scrub_interval_ms: u64,
    /// Chunkserver scrubber idle time before a chunk is checked, ms.
    pub scrub_idle_ms: u64,
    /// Free bytes below which a chunkserver reports itself full (default:
    /// one chunk of `chunk_size`).
    pub disk_reserve_bytes: Option<u64>,
    /// Data dirs of given chunkservers (by index) instead of folders of
    /// the cluster's temporary dir, e.g. a small [`Tmpfs`].
    pub chunkserver_dirs: std::collections::BTreeMap<usize, PathBuf>,
    /// The master's superusers (it runs `--insecure`, so a caller is the
    /// user it claims). By default the harness's own callers are:
    /// [`Cluster::client`] (the login user, as any `ClientConfig`) and raw
    /// gRPC clients that claim no user (`anonymous`), so tests of other
    /// features find no permissions in their way; permission tests narrow
    /// this.
    pub superusers: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            chunkservers: 3,
            chunk_size: 1024 * 1024,
            replication: 3,
            lease_ms: 10_000,
            heartbeat_ms: 200,
            dead_after_ms: 1_500,
            checkpoint_every: 10_000,
            heal: gfs_master::HealConfig { scan_ms: 200, ..Default::default() },
            capacity_bytes: None,
            scrub_interval_ms: 0,
            scrub_idle_ms: 1_000,
            disk_reserve_bytes: None,
            chunkserver_dirs: Default::default(),
            superusers: vec!["gfs".into(), gfs_client::default_user(), gfs_common::auth::ANONYMOUS.into()],
        }
    }
}

struct Running<H> {
    handle: H,
    token: CancellationToken,
}

/// One chunkserver slot: its folder and, while it runs, its handle.
struct ChunkserverSlot {
    data_dir: PathBuf,
    zone: String,
    running: Option<Running<gfs_chunkserver::ChunkserverHandle>>,
    /// Last address it listened on, kept so that a restart reuses it.
    last_addr: Option<String>,
}

/// A master and N chunkservers running as tasks in this process.
pub struct Cluster {
    opts: ClusterOptions,
    dir: TempDir,
    master: Option<Running<gfs_master::MasterHandle>>,
    master_addr: String,
    chunkservers: Vec<ChunkserverSlot>,
    /// Every chunkserver records here (series labelled by address).
    chunkserver_metrics: gfs_chunkserver::Metrics,
    registry: prometheus_client::registry::Registry,
}

impl Cluster {
    /// Starts a cluster and waits until every chunkserver has registered.
    pub async fn start(opts: ClusterOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("gfs-testkit-").tempdir()?;
        let mut registry = prometheus_client::registry::Registry::default();
        let chunkserver_metrics = gfs_chunkserver::Metrics::default().register(&mut registry);
        let mut cluster = Cluster {
            opts,
            dir,
            master: None,
            master_addr: String::new(),
            chunkservers: Vec::new(),
            chunkserver_metrics,
            registry,
        };
        cluster.start_master().await?;
        for i in 0..cluster.opts.chunkservers {
            let data_dir = match cluster.opts.chunkserver_dirs.get(&i) {
                Some(d) => d.clone(),
                None => cluster.dir.path().join(format!("chunkserver-{i}")),
            };
            cluster.chunkservers.push(ChunkserverSlot {
                data_dir,
                zone: format!("zone-{i}"),
                running: None,
                last_addr: None,
            });
            cluster.start_chunkserver(i).await?;
        }
        cluster.wait_live(cluster.opts.chunkservers).await?;
        Ok(cluster)
    }

    /// Returns the cluster's root folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the master's address.
    pub fn master_addr(&self) -> &str {
        &self.master_addr
    }

    /// A chunk token from the running master, for raw chunkserver RPCs
    /// (the master issues the same with locations and leases).
    pub fn token(&self, handle: u64, version: u64, rights: u32) -> gfs_proto::ChunkToken {
        let m = self.master.as_ref().expect("master running");
        m.handle.token(handle, version, rights).expect("token")
    }

    /// Returns a new client (with its own empty caches).
    pub fn client(&self) -> Client {
        let mut cfg = ClientConfig::new(self.master_addr.clone());
        cfg.rpc_timeout = Duration::from_secs(5);
        Client::new(cfg).expect("client config")
    }

    /// Returns the options the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    fn master_config(&self) -> gfs_master::Config {
        gfs_master::Config {
            // Reuse the previous port on restart so clients keep working.
            listen: if self.master_addr.is_empty() { "127.0.0.1:0".into() } else { self.master_addr.clone() },
            data_dir: self.dir.path().join("master"),
            chunk_size: self.opts.chunk_size,
            replication: self.opts.replication,
            lease_ms: self.opts.lease_ms,
            heartbeat_ms: self.opts.heartbeat_ms,
            dead_after_ms: self.opts.dead_after_ms,
            leader_warmup_ms: self.opts.dead_after_ms,
            checkpoint_every: self.opts.checkpoint_every,
            heal: self.opts.heal.clone(),
            superusers: self.opts.superusers.clone(),
            ..Default::default()
        }
    }

    async fn start_master(&mut self) -> Result<()> {
        let token = CancellationToken::new();
        let mut last_err = None;
        // A just-closed port can take a moment to become bindable again.
        for _ in 0..50 {
            match gfs_master::start(self.master_config(), token.clone()).await {
                Ok(handle) => {
                    self.master_addr = handle.addr.to_string();
                    self.master = Some(Running { handle, token });
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("master did not start: {:?}", last_err)
    }

    /// Starts (or restarts) chunkserver `i` on its folder.
    pub async fn start_chunkserver(&mut self, i: usize) -> Result<()> {
        let slot = &self.chunkservers[i];
        if slot.running.is_some() {
            bail!("chunkserver {i} is already running");
        }
        let token = CancellationToken::new();
        let defaults = gfs_chunkserver::Config::default();
        let cfg = gfs_chunkserver::Config {
            listen: slot.last_addr.clone().unwrap_or_else(|| "127.0.0.1:0".into()),
            master: self.master_addr.clone(),
            data_dir: slot.data_dir.clone(),
            zone: slot.zone.clone(),
            heartbeat_ms: self.opts.heartbeat_ms,
            capacity_bytes: self.opts.capacity_bytes,
            scrub_interval_ms: self.opts.scrub_interval_ms,
            scrub_idle_ms: self.opts.scrub_idle_ms,
            disk_reserve_bytes: self.opts.disk_reserve_bytes.unwrap_or(self.opts.chunk_size),
            ..defaults
        };
        let mut last_err = None;
        for _ in 0..50 {
            match gfs_chunkserver::start_with_metrics(cfg.clone(), token.clone(), self.chunkserver_metrics.clone())
                .await
            {
                Ok(handle) => {
                    let slot = &mut self.chunkservers[i];
                    slot.last_addr = Some(handle.addr.to_string());
                    slot.running = Some(Running { handle, token });
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("chunkserver {i} did not start: {:?}", last_err)
    }

    /// Adds a chunkserver slot (zone `zone-<i>`), starts it and returns
    /// its index.
    pub async fn add_chunkserver(&mut self) -> Result<usize> {
        let i = self.chunkservers.len();
        let data_dir = self.dir.path().join(format!("chunkserver-{i}"));
        self.chunkservers.push(ChunkserverSlot { data_dir, zone: format!("zone-{i}"), running: None, last_addr: None });
        self.start_chunkserver(i).await?;
        Ok(i)
    }

    /// The chunkservers' metrics in the Prometheus text format.
    pub fn chunkserver_metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode metrics");
        out
    }

    /// Returns the stable id of chunkserver `i` while it runs.
    pub fn chunkserver_id(&self, i: usize) -> Option<String> {
        self.chunkservers[i].running.as_ref().map(|r| r.handle.id.clone())
    }

    /// Returns the data folder of chunkserver `i`.
    pub fn chunkserver_dir(&self, i: usize) -> &Path {
        &self.chunkservers[i].data_dir
    }

    /// Number of chunkserver slots.
    pub fn chunkserver_count(&self) -> usize {
        self.chunkservers.len()
    }

    /// Stops chunkserver `i` gracefully and waits for it to finish.
    pub async fn stop_chunkserver(&mut self, i: usize) -> Result<()> {
        let running = self.chunkservers[i].running.take().context("chunkserver not running")?;
        running.token.cancel();
        running.handle.wait().await?;
        Ok(())
    }

    /// Stops the master (gracefully); [`Self::start_stopped_master`] brings
    /// it back on the same data dir.
    pub async fn stop_master(&mut self) -> Result<()> {
        let running = self.master.take().context("master not running")?;
        running.token.cancel();
        Ok(running.handle.wait().await?)
    }

    /// Starts the master that [`Self::stop_master`] stopped.
    pub async fn start_stopped_master(&mut self) -> Result<()> {
        if self.master.is_some() {
            bail!("the master is running");
        }
        self.start_master().await
    }

    /// Stops the master gracefully (log flushed) and starts it again on the
    /// same folder and port.
    pub async fn restart_master(&mut self) -> Result<()> {
        let running = self.master.take().context("master not running")?;
        running.token.cancel();
        running.handle.wait().await?;
        self.start_master().await
    }

    /// Returns the address of chunkserver `i` while it runs.
    pub fn chunkserver_addr(&self, i: usize) -> Option<String> {
        self.chunkservers[i].running.as_ref().map(|r| r.handle.addr.to_string())
    }

    /// Returns the index of the chunkserver listening on `addr`.
    pub fn chunkserver_index(&self, addr: &str) -> Option<usize> {
        self.chunkservers
            .iter()
            .position(|s| s.running.as_ref().map(|r| r.handle.addr.to_string()).as_deref() == Some(addr))
    }

    /// Returns the data file of `handle` on chunkserver `i`.
    pub fn chunk_path(&self, i: usize, handle: u64) -> Option<PathBuf> {
        self.chunkservers[i].running.as_ref().map(|r| r.handle.chunk_path(handle))
    }

    /// Waits until the master reports at least `n` live chunkservers.
    pub async fn wait_live(&self, n: usize) -> Result<()> {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = client.cluster_status().await
                && status.servers.iter().filter(|s| s.alive).count() >= n
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("fewer than {n} chunkservers registered within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every component gracefully.
    pub async fn shutdown(mut self) -> Result<()> {
        for i in 0..self.chunkservers.len() {
            if self.chunkservers[i].running.is_some() {
                self.stop_chunkserver(i).await?;
            }
        }
        if let Some(m) = self.master.take() {
            m.token.cancel();
            m.handle.wait().await?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Tasks end with the test's runtime; cancelling lets them exit early.
        if let Some(m) = &self.master {
            m.token.cancel();
        }
        for s in &self.chunkservers {
            if let Some(r) = &s.running {
                r.token.cancel();
            }
        }
    }
}

/// A tmpfs mounted for a test: a real file system that fills up (ENOSPC),
/// unmounted when dropped. Mounting needs root (CAP_SYS_ADMIN); tests run
/// as root, also in CI. Without it, [`Tmpfs::mount`] panics saying so: a
/// full-disk test must not pass without a full disk.
pub struct Tmpfs {
    path: PathBuf,
    /// The temporary folder mounted on, removed after the unmount.
    _dir: Option<TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a new temporary folder.
    pub fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("gfs-tmpfs-").tempdir().expect("temporary dir");
        let mut t = Tmpfs::mount_at(bytes, dir.path());
        t._dir = Some(dir);
        t
    }

    /// Mounts a tmpfs of `bytes` on `path` (created if missing), e.g. the
    /// data dir a process will be given.
    pub fn mount_at(bytes: u64, path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { path: path.to_path_buf(), _dir: None },
            Ok(o) => panic!(
                "cannot mount a {bytes}-byte tmpfs on {} ({}): this test needs root (CAP_SYS_ADMIN) to get a real \
                 full disk and proves nothing without one",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount ({e}): this test needs a tmpfs to get a real full disk"),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.path).status().is_ok_and(|s| s.success())
        };
        // Busy (a file still open): detach it now; freed once closed.
        if !umount(false) && !umount(true) {
            eprintln!("cannot unmount the test tmpfs at {}", self.path.display());
        }
    }
}

/// Lowest port `free_addr` hands out.
const FREE_PORT_FLOOR: u32 = 10_000;
/// Most ports `free_addr` cycles through.
const FREE_PORT_SPAN: u32 = 12_000;

/// Returns a loopback address whose port was free a moment ago, for a
/// process the test starts and must know the address of beforehand.
///
/// The port is taken from just below the kernel's ephemeral range, so an
/// outgoing connection (which gets its local port from that range) can
/// never take it between this call and the process's bind, and ports are
/// handed out in turn from a per-process random start, so two calls in one
/// test binary do not get the same one.
pub fn free_addr() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static RANGE: std::sync::OnceLock<Option<(u32, u32, u32)>> = std::sync::OnceLock::new();
    let range = RANGE.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let ephemeral_low: u32 = text.split_whitespace().next()?.parse().ok()?;
        let span = ephemeral_low.checked_sub(FREE_PORT_FLOOR)?.min(FREE_PORT_SPAN);
        let seed = std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.subsec_nanos());
        (span >= 1_000).then_some((ephemeral_low - span, span, seed % span))
    });
    if let Some((low, span, seed)) = *range {
        for _ in 0..span {
            let port = low + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
                return l.local_addr().expect("local addr");
            }
        }
    }
    // No room below the ephemeral range (or none free): any free port.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[cfg(test)]
mod tests {
    use super::free_addr;

    #[test]
    fn free_addrs_differ_and_are_bindable() {
        let addrs: Vec<_> = (0..200).map(|_| free_addr()).collect();
        let distinct: std::collections::BTreeSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), addrs.len(), "a port handed out twice");
        for a in &addrs[..10] {
            std::net::TcpListener::bind(a).expect("handed out a port that cannot be bound");
        }
    }
}

//! A master and chunkservers in this process (`gfs server`, `gfs bench`,
//! tests).
//!
//! Layout under the data dir: `master/` and `chunkserver-<i>/`. Chunkservers
//! keep their ids in their data dirs, so restarting on the same dir keeps
//! every file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gfs_common::DEFAULT_CHUNK_SIZE;
use gfs_common::admin_http::{self, Admin};
use gfs_common::auth::Role;
use gfs_common::certs::{CertSpec, LocalPki};
use gfs_common::shutdown::CancellationToken;
use gfs_common::tls::{Security, Tls};
use prometheus_client::registry::Registry;
use std::sync::Arc;

use crate::{Client, ClientConfig};

/// What to run.
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    /// Root data dir: `master/` and `chunkserver-<i>/` go below it.
    pub data_dir: PathBuf,
    /// Number of chunkservers.
    pub chunkservers: usize,
    /// Master listen address (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Chunk size of new files.
    pub chunk_size: u64,
    /// Default replication; `None` = min(3, chunkservers).
    pub replication: Option<u32>,
    /// How long to wait for every chunkserver to register.
    pub ready_timeout: Duration,
    /// Admin HTTP address (`/metrics` of the master and every chunkserver,
    /// `/healthz`, `/readyz`); None = off.
    pub admin_listen: Option<String>,
    /// Serves `/debug/pprof/profile` on the admin port.
    pub profiling: bool,
    /// Bearer token that `/metrics` and `/debug/pprof/*` on the admin port
    /// require; open when `None`.
    pub admin_auth: Option<Arc<gfs_common::admin_auth::TokenFile>>,
    /// Masters in the group (1, 3 or 5), in this process on loopback.
    pub masters: usize,
    /// mTLS between every component, with a CA and certificates generated
    /// under `<data_dir>/tls/` (kept across restarts); false = plaintext.
    pub tls: bool,
    /// Free bytes below which a chunkserver reports itself full; `None` =
    /// one chunk of `chunk_size`.
    pub disk_reserve: Option<u64>,
}

impl LocalClusterOptions {
    /// Three chunkservers, a free port, default chunk size and replication.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            chunkservers: 3,
            listen: "127.0.0.1:0".into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            replication: None,
            ready_timeout: Duration::from_secs(30),
            admin_listen: None,
            profiling: false,
            admin_auth: None,
            masters: 1,
            tls: true,
            disk_reserve: None,
        }
    }
}

/// The identities of a local cluster's components.
struct Pki {
    master: Security,
    chunkserver: Security,
    admin: Security,
}

impl Pki {
    /// Opens (or creates) `<data_dir>/tls`: a CA and one certificate per
    /// role, reused across restarts. The admin certificate's CN is the
    /// login user, so the files it creates are owned by that user.
    fn open(opts: &LocalClusterOptions) -> anyhow::Result<Pki> {
        if !opts.tls {
            return Ok(Pki { master: Security::Insecure, chunkserver: Security::Insecure, admin: Security::Insecure });
        }
        let dir = opts.data_dir.join("tls");
        let (pki, ca) = LocalPki::open(&dir).with_context(|| format!("TLS folder {}", dir.display()))?;
        let load = |name: &str, user: String, role: Role| -> anyhow::Result<Security> {
            let files = pki.component(&ca, name, &CertSpec::new(user, role))?;
            Ok(Security::Tls(Tls::load(files)?))
        };
        Ok(Pki {
            master: load("master", "master".into(), Role::Master)?,
            chunkserver: load("chunkserver", "chunkserver".into(), Role::Chunkserver)?,
            admin: load("admin", crate::config::default_user(), Role::Admin)?,
        })
    }
}

/// A running in-process cluster.
pub struct LocalCluster {
    /// The first master's bound address.
    pub master_addr: SocketAddr,
    /// Every master's address (one entry unless `masters` > 1).
    pub master_addrs: Vec<SocketAddr>,
    /// Bound addresses of the chunkservers, in start order.
    pub chunkserver_addrs: Vec<SocketAddr>,
    /// Root data dir.
    pub data_dir: PathBuf,
    /// The bound admin HTTP address, if `admin_listen` was set.
    pub admin_addr: Option<SocketAddr>,
    /// The admin identity for clients of this cluster (`<data_dir>/tls/admin`
    /// with TLS), or plaintext.
    pub client_security: Security,
    shutdown: CancellationToken,
    masters: Vec<gfs_master::MasterHandle>,
    chunkservers: Vec<gfs_chunkserver::ChunkserverHandle>,
}

impl LocalCluster {
    /// Starts the master and the chunkservers and waits until the master
    /// sees every chunkserver alive. Cancelling `shutdown` stops them all.
    pub async fn start(opts: LocalClusterOptions, shutdown: CancellationToken) -> anyhow::Result<Self> {
        if opts.chunkservers == 0 {
            bail!("need at least one chunkserver");
        }
        if !matches!(opts.masters, 1 | 3 | 5) {
            bail!("masters must be 1, 3 or 5, not {}", opts.masters);
        }
        let replication = opts.replication.unwrap_or_else(|| opts.chunkservers.min(3) as u32);
        let pki = Pki::open(&opts)?;
        let admin = match &opts.admin_listen {
            Some(a) => Some(gfs_common::net::bind(a).await.context("cannot bind the admin address")?),
            None => None,
        };
        // One registry for every component; chunkserver series carry
        // `server`. With several masters, the first one's series are served.
        let mut registry = Registry::default();
        let master_metrics = gfs_master::Metrics::default().register(&mut registry);
        let cs_metrics = gfs_chunkserver::Metrics::default().register(&mut registry);
        // A group needs every address up front.
        let mut listens = vec![opts.listen.clone()];
        let mut peers = std::collections::BTreeMap::new();
        if opts.masters > 1 {
            listens = group_addresses(&opts)?;
            for (i, addr) in listens.iter().enumerate() {
                peers.insert(i as u64 + 1, addr.clone());
            }
        }
        let mut masters = Vec::with_capacity(opts.masters);
        for (i, listen) in listens.iter().enumerate() {
            let dir = if opts.masters == 1 {
                opts.data_dir.join("master")
            } else {
                opts.data_dir.join(format!("master-{}", i + 1))
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let metrics = if i == 0 { master_metrics.clone() } else { gfs_master::Metrics::default() };
            let cfg = gfs_master::Config {
                listen: listen.clone(),
                data_dir: dir,
                chunk_size: opts.chunk_size,
                replication,
                id: i as u64 + 1,
                peers: peers.clone(),
                security: pki.master.clone(),
                // As HDFS's NameNode user: whoever starts the local cluster
                // is a superuser, also when it runs without TLS (where the
                // CLI claims the login user).
                superusers: vec![gfs_master::perm::SUPERUSER.into(), crate::config::default_user()],
                ..Default::default()
            };
            match gfs_master::start_with_metrics(cfg, shutdown.clone(), metrics).await {
                Ok(h) => masters.push(h),
                Err(e) => {
                    shutdown.cancel();
                    return Err(anyhow::Error::from(e).context(format!("cannot start master {}", i + 1)));
                }
            }
        }
        let master_addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr).collect();
        let master_addr = master_addrs[0];
        let master_spec = master_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let mut chunkservers = Vec::with_capacity(opts.chunkservers);
        for i in 0..opts.chunkservers {
            let dir = opts.data_dir.join(format!("chunkserver-{i}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let cfg = gfs_chunkserver::Config {
                listen: "127.0.0.1:0".into(),
                master: master_spec.clone(),
                data_dir: dir,
                zone: format!("zone-{i}"),
                security: pki.chunkserver.clone(),
                disk_reserve_bytes: opts.disk_reserve.unwrap_or(opts.chunk_size),
                ..Default::default()
            };
            match gfs_chunkserver::start_with_metrics(cfg, shutdown.clone(), cs_metrics.clone()).await {
                Ok(h) => chunkservers.push(h),
                Err(e) => {
                    shutdown.cancel();
                    return Err(anyhow::Error::from(e).context(format!("cannot start chunkserver {i}")));
                }
            }
        }
        let admin_addr = admin.map(|(listener, addr)| {
            let probes: Vec<_> = chunkservers.iter().map(|c| c.readiness()).collect();
            let master_probes: Vec<_> = masters.iter().map(|m| m.readiness()).collect();
            let token = shutdown.clone();
            let admin = Admin::new(Arc::new(std::mem::take(&mut registry)))
                .ready(move || !token.is_cancelled() && probes.iter().all(|p| p()) && master_probes.iter().all(|p| p()))
                .refresh(masters[0].metrics_refresher())
                .profiling(opts.profiling)
                .auth(opts.admin_auth.clone())
                .route(gfs_master::status_page::PATH, leaders_page(&masters));
            tokio::spawn(admin_http::serve_listener(listener, admin, shutdown.clone()));
            tracing::info!(%addr, "admin http listening");
            addr
        });
        let cluster = LocalCluster {
            admin_addr,
            master_addr,
            master_addrs,
            chunkserver_addrs: chunkservers.iter().map(|c| c.addr).collect(),
            data_dir: opts.data_dir.clone(),
            client_security: pki.admin,
            shutdown: shutdown.clone(),
            masters,
            chunkservers,
        };
        if let Err(e) = cluster.wait_ready(opts.chunkservers, opts.ready_timeout).await {
            shutdown.cancel();
            let _ = cluster.wait().await;
            return Err(e);
        }
        Ok(cluster)
    }

    async fn wait_ready(&self, want: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut cfg = self.client_config();
        cfg.rpc_timeout = Duration::from_secs(2);
        cfg.max_attempts = 1;
        // This loop polls on its own deadline.
        cfg.failover_timeout = Duration::ZERO;
        let client = Client::new(cfg)?;
        let deadline = Instant::now() + timeout;
        loop {
            let alive = match client.cluster_status().await {
                Ok(s) => s.servers.iter().filter(|s| s.alive).count(),
                Err(e) => {
                    tracing::debug!(error = %e, "master not ready yet");
                    0
                }
            };
            if alive >= want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("only {alive} of {want} chunkservers registered after {timeout:?}");
            }
            if self.shutdown.is_cancelled() {
                bail!("shut down before the cluster was ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client for this cluster with default settings.
    pub fn client(&self) -> crate::Result<Client> {
        Client::new(self.client_config())
    }

    /// The default client configuration for this cluster (its masters, and
    /// the admin identity when it runs TLS).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.master_spec());
        cfg.security = self.client_security.clone();
        cfg
    }

    /// The master addresses as clients and chunkservers take them.
    pub fn master_spec(&self) -> String {
        self.master_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
    }

    /// The token that stops the cluster.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every component has stopped (after the shutdown token is
    /// cancelled). If one fails on its own, the others are cancelled too and
    /// its error is returned.
    pub async fn wait(self) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        let masters = futures::future::join_all(self.masters.into_iter().enumerate().map(|(i, h)| {
            let token = token.clone();
            async move {
                let r = h.wait().await;
                if r.is_err() {
                    token.cancel();
                }
                r.map_err(|e| anyhow::Error::from(e).context(format!("master {}", i + 1)))
            }
        }));
        let servers = futures::future::join_all(self.chunkservers.into_iter().enumerate().map(|(i, h)| {
            let token = token.clone();
            async move {
                let r = h.wait().await;
                if r.is_err() {
                    token.cancel();
                }
                r.map_err(|e| anyhow::Error::from(e).context(format!("chunkserver {i}")))
            }
        }));
        let (ms, cs) = tokio::join!(masters, servers);
        for r in ms {
            r?;
        }
        for r in cs {
            r?;
        }
        Ok(())
    }

    /// Cancels the shutdown token and waits for every component.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// File under the data dir that remembers a master group's addresses.
const GROUP_FILE: &str = "master-addresses";

/// The addresses of a group of `opts.masters` masters: the ones this data
/// dir's group was created with (its Raft membership names them, so a
/// restart must listen there again), or, for a new group, `--listen` for
/// the first and free loopback ports for the others, remembered for the
/// next start.
fn group_addresses(opts: &LocalClusterOptions) -> anyhow::Result<Vec<String>> {
    let file = opts.data_dir.join(GROUP_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let addrs: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if addrs.len() != opts.masters {
                bail!(
                    "{} holds a group of {} masters ({}), not {}: start with --masters {} or use a new data dir",
                    opts.data_dir.display(),
                    addrs.len(),
                    addrs.join(","),
                    opts.masters,
                    addrs.len()
                );
            }
            let first = &addrs[0];
            let wanted_port = opts.listen.rsplit_once(':').map(|(_, p)| p);
            if wanted_port != Some("0") && opts.listen != *first {
                bail!(
                    "{} holds a master group at {}: its first master listens on {first}, not --listen {} \
                     (start with --listen {first} or use a new data dir)",
                    opts.data_dir.display(),
                    addrs.join(","),
                    opts.listen
                );
            }
            Ok(addrs)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Every port held until all are picked, so none is picked twice.
            let mut held = Vec::with_capacity(opts.masters);
            for i in 0..opts.masters {
                let want = if i == 0 { opts.listen.clone() } else { "127.0.0.1:0".to_string() };
                held.push(std::net::TcpListener::bind(&want).with_context(|| format!("cannot bind {want}"))?);
            }
            let addrs = held.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<Vec<_>, _>>()?;
            drop(held);
            std::fs::create_dir_all(&opts.data_dir).with_context(|| opts.data_dir.display().to_string())?;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, addrs.join("\n") + "\n").with_context(|| tmp.display().to_string())?;
            std::fs::rename(&tmp, &file).with_context(|| file.display().to_string())?;
            Ok(addrs)
        }
        Err(e) => Err(e).with_context(|| file.display().to_string()),
    }
}

/// The status page of whichever master leads when it is asked for (the
/// first master's while none does).
fn leaders_page(masters: &[gfs_master::MasterHandle]) -> admin_http::Handler {
    let pages: Vec<(admin_http::Handler, Box<dyn Fn() -> bool + Send + Sync>)> = masters
        .iter()
        .map(|m| (m.status_page(), Box::new(m.leader_probe()) as Box<dyn Fn() -> bool + Send + Sync>))
        .collect();
    Arc::new(move |target: String| {
        let page = pages.iter().find(|(_, leads)| leads()).or(pages.first()).map(|(p, _)| p.clone());
        match page {
            Some(p) => p(target),
            None => Box::pin(async { ("503 Service Unavailable", "text/plain", "no master\n".to_string()) }),
        }
    })
}

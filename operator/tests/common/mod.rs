//! Harness of the operator tests: a real etcd + kube-apiserver
//! (`e2e/control-plane up`, or `GFS_E2E_KUBECONFIG`), the CRD from
//! `crds/`, the operator's RBAC from `operator/rbac/`, a client with a bound
//! token of the operator's ServiceAccount, and a real gfs master with
//! chunkservers as processes on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gfs_common::shutdown::CancellationToken;
use gfs_operator::crd::GfsCluster;
use gfs_operator::metrics::Metrics;
use gfs_operator::{RunConfig, admin::MasterAdmin};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

pub const MANAGER: &str = "gfs-e2e-admin";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Kubeconfig of the cluster under test: GFS_E2E_KUBECONFIG, or a local
/// control plane started (or reused) by `e2e/control-plane up`.
pub fn kubeconfig() -> PathBuf {
    static KC: OnceLock<PathBuf> = OnceLock::new();
    KC.get_or_init(|| {
        if let Ok(p) = std::env::var("GFS_E2E_KUBECONFIG") {
            return PathBuf::from(p);
        }
        let out = Command::new(root().join("e2e/control-plane"))
            .arg("up")
            .stderr(Stdio::inherit())
            .output()
            .expect("run e2e/control-plane up");
        assert!(out.status.success(), "e2e/control-plane up failed");
        let s = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(s.lines().last().expect("kubeconfig path").trim())
    })
    .clone()
}

async fn config() -> Config {
    let kc = Kubeconfig::read_from(kubeconfig()).expect("kubeconfig");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config")
}

/// Admin client (the test plays kubelet, controller-manager and user).
pub async fn admin() -> Client {
    Client::try_from(config().await).unwrap()
}

/// Applies the committed CRD and the operator RBAC (idempotent), and
/// returns a client authenticated as the operator's ServiceAccount.
pub async fn setup() -> (Client, Client) {
    let admin = admin().await;
    let pp = PatchParams::apply(MANAGER).force();
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("crds/gfscluster.yaml")).unwrap()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.patch(&crd.name_any(), &pp, &Patch::Apply(&crd)).await.unwrap();
    wait("CRD established", || {
        let crds = crds.clone();
        async move {
            let c = crds.get("gfsclusters.gfs.dev").await.ok()?;
            let ok = c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            ok.then_some(())
        }
    })
    .await;

    let ns: Api<Namespace> = Api::all(admin.clone());
    ns.patch(
        "gfs-system",
        &pp,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gfs-system"}})),
    )
    .await
    .unwrap();
    let rbac = std::fs::read_to_string(root().join("operator/rbac/operator.yaml")).unwrap();
    for doc in rbac.split("\n---\n") {
        let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        match v["kind"].as_str().unwrap() {
            "Namespace" => {}
            "ServiceAccount" => {
                let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), "gfs-system");
                api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
            }
            "ClusterRole" => {
                let api: Api<ClusterRole> = Api::all(admin.clone());
                api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
            }
            "ClusterRoleBinding" => {
                let api: Api<ClusterRoleBinding> = Api::all(admin.clone());
                api.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
            }
            k => panic!("unexpected kind {k} in rbac"),
        }
    }
    // A bound token of the ServiceAccount (TokenRequest API).
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "gfs-system");
    let tr: serde_json::Value = sas
        .create_subresource(
            "token",
            "gfs-operator",
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}),
        )
        .await
        .unwrap();
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    let mut cfg = config().await;
    cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    let operator = Client::try_from(cfg).unwrap();
    (admin, operator)
}

/// Creates a fresh namespace for one test.
pub async fn namespace(admin: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:x}", std::process::id() as u64 * 1000 + rand_suffix());
    let ns: Api<Namespace> = Api::all(admin.clone());
    ns.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
        .await
        .unwrap();
    name
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 % 1000
}

/// Polls `f` until it returns `Some`, for up to 90 s.
pub async fn wait<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An operator running in this process under the ServiceAccount client.
pub struct Operator {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The operator's metrics (shared counters).
    pub metrics: Metrics,
}

impl Operator {
    pub fn start(client: Client, ns: &str, master: &str, identity: &str) -> Self {
        Self::start_with(client, ns, master, None, identity, Duration::from_secs(1))
    }

    /// As `start`, with a periodic requeue of `requeue`: a test that sets
    /// it far beyond its own wait proves that something other than the
    /// periodic pass (a watch, a timer) made the operator act.
    pub fn start_with_requeue(client: Client, ns: &str, master: &str, identity: &str, requeue: Duration) -> Self {
        Self::start_with(client, ns, master, None, identity, requeue)
    }

    /// As `start`, also telling the operator where master pods listen, so
    /// it drives master membership against real master processes.
    pub fn start_with_master_pods(
        client: Client,
        ns: &str,
        master: &str,
        pods: std::collections::BTreeMap<u64, String>,
        identity: &str,
    ) -> Self {
        Self::start_with(client, ns, master, Some(pods), identity, Duration::from_secs(1))
    }

    fn start_with(
        client: Client,
        ns: &str,
        master: &str,
        pods: Option<std::collections::BTreeMap<u64, String>>,
        identity: &str,
        requeue: Duration,
    ) -> Self {
        Self::start_cfg(client, ns, master, identity, |cfg| {
            cfg.controller.master_pod_addresses = pods;
            cfg.controller.requeue = requeue;
        })
    }

    /// As `start`, with `tune` applied to the config last. cert-manager
    /// is off unless `tune` turns it on: its CRDs are cluster-wide, and a
    /// test that installs them must not switch the other tests' clusters
    /// to certificates nobody issues.
    pub fn start_cfg(
        client: Client,
        ns: &str,
        master: &str,
        identity: &str,
        tune: impl FnOnce(&mut RunConfig),
    ) -> Self {
        let mut cfg = RunConfig::new(ns, identity);
        cfg.controller.namespace = Some(ns.into());
        cfg.controller.master_override = Some(master.into());
        cfg.controller.requeue = Duration::from_secs(1);
        cfg.controller.cert_manager = gfs_operator::pki::CertManagerMode::Never;
        cfg.lease.duration = Duration::from_secs(4);
        cfg.lease.renew_every = Duration::from_secs(1);
        tune(&mut cfg);
        let stop = CancellationToken::new();
        let metrics = Metrics::default();
        let task = tokio::spawn(gfs_operator::run(client, cfg, metrics.clone(), stop.clone()));
        Self { stop, task, metrics }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built; run `cargo build --workspace --bins` first", path.display());
    path
}

fn free_addr() -> String {
    gfs_testkit::free_addr().to_string()
}

/// Certificate folders (`--tls-dir` layout) of the test processes.
#[derive(Clone, Debug)]
pub struct TlsDirs {
    pub master: PathBuf,
    pub chunkserver: PathBuf,
    /// Used by the harness's own calls (status, `gfs put`).
    pub admin: PathBuf,
}

impl TlsDirs {
    /// The harness's master client with the admin certificate.
    pub fn admin_client(&self) -> MasterAdmin {
        let tls = gfs_common::tls::Tls::load(gfs_common::tls::TlsFiles::in_dir(&self.admin)).unwrap();
        MasterAdmin::new(&gfs_common::tls::Security::Tls(tls))
    }
}

/// `--insecure`, or `--tls-dir DIR`.
fn security_args(dir: Option<&Path>) -> Vec<std::ffi::OsString> {
    match dir {
        None => vec!["--insecure".into()],
        Some(d) => vec!["--tls-dir".into(), d.as_os_str().to_owned()],
    }
}

/// A gfs master and chunkservers as processes on loopback.
pub struct Gfs {
    pub dir: tempfile::TempDir,
    /// Certificates, or plaintext (`--insecure`) when `None`.
    pub tls: Option<TlsDirs>,
    pub master: String,
    /// Chunkserver addresses indexed by the operator's positional ordinal
    /// (sorted by address, as `scaling::server_for_ordinal` maps them).
    pub chunkservers: Vec<String>,
    /// The process name (`cs{i}`, zone `z{i}`, log `cs{i}.log`) of each
    /// ordinal in `chunkservers`.
    names: Vec<String>,
    /// (name, process).
    procs: Vec<(String, Child)>,
}

/// Attempts at starting a master on a port that was free a moment ago.
const MASTER_START_ATTEMPTS: usize = 5;

impl Gfs {
    /// Starts a master and `n` chunkservers and waits until all `n` are
    /// registered and alive. The chunkservers listen on port 0 and are
    /// found by their zone in the master's status, so only the master's
    /// port can be raced for; a master that exits at once (its port was
    /// taken after `free_addr` let go of it) is started again on another.
    pub async fn start(n: usize) -> Self {
        Self::start_with_tls(n, None).await
    }

    /// As `start`, every process with its certificate from `tls` (mTLS).
    pub async fn start_with_tls(n: usize, tls: Option<TlsDirs>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut g =
            Self { dir, tls, master: String::new(), chunkservers: Vec::new(), names: Vec::new(), procs: Vec::new() };
        g.start_master().await;
        for i in 0..n {
            let name = format!("cs{i}");
            let c = Command::new(bin("gfs-chunkserver"))
                .args(security_args(g.tls.as_ref().map(|t| t.chunkserver.as_path())))
                .args(["--master", &g.master, "--listen", "127.0.0.1:0", "--zone", &format!("z{i}"), "--no-sync"])
                .arg("--data-dir")
                .arg(g.dir.path().join(&name))
                .stdout(Stdio::null())
                .stderr(g.log(&name))
                .spawn()
                .unwrap();
            g.procs.push((name, c));
        }
        let admin = g.admin();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last;
        let servers = loop {
            g.assert_running();
            match admin.status(&g.master).await {
                Ok(st) => {
                    let alive: Vec<_> =
                        st.servers.iter().filter(|s| s.alive).filter_map(|s| s.server.clone()).collect();
                    if alive.len() == n {
                        break alive;
                    }
                    last = format!("{} of {n} alive: {:?}", alive.len(), st.servers);
                }
                Err(e) => last = format!("master status: {e}"),
            }
            assert!(Instant::now() < deadline, "timed out waiting for chunkservers registered ({last})\n{}", g.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // The ordinal order is the address order; names follow zones.
        let mut by_addr: Vec<(String, String)> =
            servers.into_iter().map(|s| (s.address, s.zone.replacen('z', "cs", 1))).collect();
        by_addr.sort();
        (g.chunkservers, g.names) = by_addr.into_iter().unzip();
        g
    }

    /// The harness's master client (admin certificate with TLS).
    pub fn admin(&self) -> MasterAdmin {
        self.tls.as_ref().map_or_else(MasterAdmin::default, TlsDirs::admin_client)
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap()
    }

    async fn start_master(&mut self) {
        let admin = self.admin();
        for attempt in 1..=MASTER_START_ATTEMPTS {
            let addr = free_addr();
            let mut m = Command::new(bin("gfs-master"))
                .args(security_args(self.tls.as_ref().map(|t| t.master.as_path())))
                .args(["--listen", &addr, "--chunk-size", "1MiB", "--dead-after-ms", "2000", "--data-dir"])
                .arg(self.dir.path().join("master"))
                .stdout(Stdio::null())
                .stderr(self.log("master"))
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = m.try_wait().unwrap() {
                    let log = std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default();
                    assert!(
                        attempt < MASTER_START_ATTEMPTS,
                        "gfs-master exited ({status}) {attempt} times; last log:\n{log}"
                    );
                    eprintln!("gfs-master on {addr} exited ({status}); starting it on another port\n{log}");
                    break;
                }
                if admin.status(&addr).await.is_ok() {
                    self.master = addr;
                    self.procs.push(("master".to_string(), m));
                    return;
                }
                assert!(Instant::now() < deadline, "gfs-master on {addr} never answered\n{}", self.logs());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Panics, with the logs, if a process exited that the test did not stop.
    fn assert_running(&mut self) {
        let mut exited = Vec::new();
        for (name, c) in &mut self.procs {
            if let Some(status) = c.try_wait().unwrap() {
                exited.push(format!("{name} exited ({status})"));
            }
        }
        assert!(exited.is_empty(), "{}\n{}", exited.join(", "), self.logs());
    }

    /// The last lines of every process's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} (last 30 lines)\n", p.display()));
            for l in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Writes `bytes` of data to PATH with the CLI.
    pub fn put(&self, path: &str, bytes: usize) {
        let mut child = Command::new(bin("gfs"))
            .args(security_args(self.tls.as_ref().map(|t| t.admin.as_path())))
            .args(["--master", &self.master, "put", "-", path])
            // Without TLS the master believes the claimed user ($USER):
            // claim its superuser, as the admin certificate is with TLS.
            .env("USER", "gfs")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "gfs put: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// SIGKILLs the chunkserver of ordinal `i`.
    pub fn kill_chunkserver(&mut self, ordinal: usize) {
        let name = &self.names[ordinal];
        let (_, c) = self.procs.iter_mut().find(|(n, _)| n == name).unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// State name of the chunkserver of `ordinal` ("LIVE", "DECOMMISSIONED", ...).
    pub async fn state(&self, ordinal: usize) -> String {
        let st = self.admin().status(&self.master).await.unwrap();
        let s = st
            .servers
            .iter()
            .find(|s| s.server.as_ref().is_some_and(|i| i.address == self.chunkservers[ordinal]))
            .unwrap();
        gfs_operator::scaling::state_of(s).as_str_name().to_string()
    }
}

impl Drop for Gfs {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates a GfsCluster from JSON as admin.
pub async fn create_cluster(admin: &Client, ns: &str, v: serde_json::Value) -> GfsCluster {
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap()).await.unwrap()
}

/// Plays the StatefulSet controller: marks `ready` pods ready and `updated`
/// pods at the update revision.
pub async fn set_sts_status(admin: &Client, ns: &str, name: &str, ready: i32, updated: i32) {
    let api: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let s = wait(name, || async { api.get_opt(name).await.unwrap() }).await;
    let replicas = s.spec.replicas.unwrap_or(0);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "observedGeneration": s.metadata.generation, "replicas": replicas,
            "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": updated, "currentReplicas": replicas,
        }})),
    )
    .await
    .unwrap();
}

/// Reasons of the Events recorded on the cluster, in order.
pub async fn event_reasons(admin: &Client, ns: &str, cluster: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(admin.clone(), ns);
    let mut evs: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cluster))
        .collect();
    evs.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    evs.into_iter().filter_map(|e| e.reason).collect()
}

/// Number of occurrences of Events with `reason` (an Event object with a
/// series counts each occurrence: the recorder aggregates repeats).
pub async fn count_events(admin: &Client, ns: &str, cluster: &str, reason: &str) -> usize {
    let api: Api<Event> = Api::namespaced(admin.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cluster) && e.reason.as_deref() == Some(reason)
        })
        .map(|e| e.series.as_ref().map_or(1, |s| s.count as usize))
        .sum()
}

/// A minimal valid GfsCluster spec.
pub fn cluster_json(name: &str, chunkservers: i32) -> serde_json::Value {
    json!({
        "apiVersion": "gfs.dev/v1alpha1", "kind": "GfsCluster",
        "metadata": {"name": name},
        "spec": {
            "replication": 3,
            "masters": {"replicas": 1, "storage": {"size": "1Gi"}},
            "chunkservers": {"replicas": chunkservers, "storage": {"size": "10Gi"}},
            // These tests drive plaintext masters; tests/tls.rs runs the
            // same flows with certificates.
            "tls": {"enabled": false},
        }
    })
}

/// The repository root (for tests outside `kube.rs`).
pub fn repo_root() -> PathBuf {
    root()
}

/// Path of a workspace binary built by `cargo build --workspace --bins`.
pub fn bin_path(name: &str) -> PathBuf {
    bin(name)
}

/// A client authenticated with a bound token (TokenRequest API) of the
/// ServiceAccount `ns/name`.
pub async fn sa_client(admin: &Client, ns: &str, name: &str) -> Client {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let tr: serde_json::Value = sas
        .create_subresource(
            "token",
            name,
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}),
        )
        .await
        .unwrap();
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    let mut cfg = config().await;
    cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    Client::try_from(cfg).unwrap()
}

/// Master processes as the master StatefulSet's pods would run them: pod 0
/// founds the group (`--peers 0=<pod 0>`), the others wait to be added.
pub struct MasterPods {
    pub dir: tempfile::TempDir,
    pub addrs: std::collections::BTreeMap<u64, String>,
    procs: Vec<Child>,
}

impl MasterPods {
    /// Starts `n` masters and waits until each answers. The addresses are
    /// ports that were free a moment ago; if one was taken in between (a
    /// master exits at once), all are started again on other ports.
    pub async fn start(n: u64) -> Self {
        for attempt in 1..=MASTER_START_ATTEMPTS {
            let mut pods = Self::spawn(n);
            match pods.answering().await {
                Ok(()) => return pods,
                Err(e) => {
                    assert!(attempt < MASTER_START_ATTEMPTS, "master pods did not start {attempt} times: {e}");
                    eprintln!("master pods did not start ({e}); again on other ports");
                }
            }
        }
        unreachable!()
    }

    fn spawn(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addrs: std::collections::BTreeMap<u64, String> = (0..n).map(|o| (o, free_addr())).collect();
        let mut procs = Vec::new();
        for (o, a) in &addrs {
            let log = std::fs::File::create(dir.path().join(format!("master-{o}.log"))).unwrap();
            procs.push(
                Command::new(bin("gfs-master"))
                    .arg("--insecure")
                    .args(["--id", &o.to_string(), "--listen", a, "--peers", &format!("0={}", addrs[&0])])
                    .args(["--chunk-size", "1MiB", "--data-dir"])
                    .arg(dir.path().join(format!("m{o}")))
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
        }
        Self { dir, addrs, procs }
    }

    /// Waits until every master is listening (a master not yet added to
    /// the group does not answer status calls, so its log is read); an
    /// error names the first that exited, with its log.
    async fn answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut listening = 0;
            for (o, p) in self.addrs.keys().zip(&mut self.procs) {
                let log = std::fs::read_to_string(self.dir.path().join(format!("master-{o}.log"))).unwrap_or_default();
                if let Some(status) = p.try_wait().unwrap() {
                    return Err(format!("master {o} exited ({status}): {log}"));
                }
                listening += usize::from(log.contains("master listening"));
            }
            if listening == self.procs.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{listening} of {} masters listening after 30 s", self.procs.len()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The voter ids the group reports (asked at pod 0).
    pub async fn voters(&self) -> Option<Vec<u64>> {
        let st = MasterAdmin::default().status(&self.addrs[&0]).await.ok()?;
        let mut v: Vec<u64> = st.masters.iter().filter(|m| m.voter).map(|m| m.id).collect();
        v.sort();
        Some(v)
    }
}

impl Drop for MasterPods {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

//! Observability with real processes: every component's admin port serves
//! `/metrics`, `/healthz` and `/readyz`; the metric families exist and
//! their values move (writes, reads, a killed chunkserver and its repair).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_common::admin_http::{get, sample_sum};
use gfs_e2e::{Proc, bin, free_addr};

const CHUNK: usize = 64 * 1024;

fn client(master: &str) -> Client {
    let mut cfg = gfs_e2e::client_config(master.to_string());
    cfg.rpc_timeout = Duration::from_secs(5);
    Client::new(cfg).unwrap()
}

/// Status code of `path`, or 0 while nothing listens.
async fn status(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path).await.map(|(s, _)| s).unwrap_or(0)
}

/// The `/metrics` body (panics on a non-200 answer).
async fn scrape(addr: SocketAddr) -> String {
    let (s, body) = get(addr, "/metrics").await.expect("scrape");
    assert_eq!(s, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics: {body}");
    body
}

/// Polls `f` every 50 ms until it returns true (panics after `secs`).
async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Asserts every family in `names` has a `# TYPE` line.
fn assert_families(body: &str, names: &[&str]) {
    for n in names {
        assert!(body.contains(&format!("# TYPE {n} ")), "family {n} missing from:\n{body}");
    }
}

fn value(body: &str, name: &str, labels: &[&str]) -> f64 {
    sample_sum(body, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{body}"))
}

const MASTER_FAMILIES: &[&str] = &[
    "gfs_master_rpc_requests",
    "gfs_master_rpc_duration_seconds",
    "gfs_master_lease_grants",
    "gfs_master_oplog_fsync_seconds",
    "gfs_master_chunks",
    "gfs_master_under_replicated_chunks",
    "gfs_master_replication_backlog_bytes",
    "gfs_master_replication_backlog_chunks",
    "gfs_master_drain_backlog_bytes",
    "gfs_master_active_clones",
    "gfs_master_chunkserver_heartbeat_age_seconds",
    "gfs_master_raft_term",
    "gfs_master_raft_is_leader",
    "gfs_master_raft_leader_changes",
    "gfs_master_raft_applied_index",
    "gfs_master_raft_entry_batches",
    "gfs_master_shadow_pulls",
    "gfs_master_shadow_pulled_chunks",
    "gfs_master_corrupt_reports",
    "gfs_master_corrupt_replicas_kept",
];

const CHUNKSERVER_FAMILIES: &[&str] = &[
    "gfs_chunkserver_rpc_requests",
    "gfs_chunkserver_rpc_duration_seconds",
    "gfs_chunkserver_read_bytes",
    "gfs_chunkserver_written_bytes",
    "gfs_chunkserver_chunks",
    "gfs_chunkserver_capacity_bytes",
    "gfs_chunkserver_free_bytes",
];

#[tokio::test(flavor = "multi_thread")]
async fn separate_processes_serve_metrics_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let master = free_addr().to_string();
    let master_admin = free_addr();
    let spawn_cs = |i: usize, admin: SocketAddr| {
        Proc::spawn(
            Command::new(bin("gfs-chunkserver"))
                .args(["--master", &master, "--listen", "127.0.0.1:0", "--heartbeat-ms", "100", "--no-sync"])
                .args(["--zone", &format!("z{i}"), "--scrub-interval-ms", "0"])
                .args(["--admin-listen", &admin.to_string()])
                .arg("--data-dir")
                .arg(dir.path().join(format!("cs{i}"))),
            &dir.path().join(format!("cs{i}.log")),
        )
    };
    // A chunkserver without its master is alive but not ready.
    let cs_admin: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let mut servers = vec![Some(spawn_cs(0, cs_admin[0]))];
    wait_for("chunkserver healthz", 30, || status(cs_admin[0], "/healthz").map_eq(200)).await;
    assert_eq!(status(cs_admin[0], "/readyz").await, 503);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(cs_admin[0], "/readyz").await, 503, "ready without a master");

    let _m = Proc::spawn(
        Command::new(bin("gfs-master"))
            .args(["--listen", &master, "--chunk-size", "64KiB", "--heartbeat-ms", "100"])
            .args(["--dead-after-ms", "1500", "--heal-scan-ms", "100", "--lease-ms", "2000"])
            .args(["--repair-delay-ms", "1500", "--admin-listen", &master_admin.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("master")),
        &dir.path().join("master.log"),
    );
    for (i, a) in cs_admin.iter().enumerate().skip(1) {
        servers.push(Some(spawn_cs(i, *a)));
    }
    wait_for("master readyz", 30, || status(master_admin, "/readyz").map_eq(200)).await;
    for a in &cs_admin {
        wait_for("chunkserver readyz", 30, || status(*a, "/readyz").map_eq(200)).await;
    }

    // Families exist before any traffic.
    let body = scrape(master_admin).await;
    assert_families(&body, MASTER_FAMILIES);
    assert!(value(&body, "gfs_master_rpc_requests_total", &["method=\"Register\"", "code=\"OK\""]) >= 4.0);
    wait_for("4 heartbeat ages", 10, || async {
        let b = scrape(master_admin).await;
        b.lines().filter(|l| l.starts_with("gfs_master_chunkserver_heartbeat_age_seconds{")).count() == 4
    })
    .await;
    let body = scrape(master_admin).await;
    assert!(value(&body, "gfs_master_chunkserver_heartbeat_age_seconds", &[]) < 4.0 * 2.0);

    // Traffic moves the counters.
    let c = client(&master);
    let data: Vec<u8> = (0..8 * CHUNK - 10).map(|i| (i % 251) as u8).collect();
    c.create("/m", None).await.unwrap();
    c.write_at("/m", 0, &data).await.unwrap();
    assert_eq!(c.read_all("/m").await.unwrap(), data);
    let body = scrape(master_admin).await;
    assert_eq!(value(&body, "gfs_master_chunks", &[]), 8.0);
    assert!(value(&body, "gfs_master_lease_grants_total", &[]) >= 8.0);
    assert!(value(&body, "gfs_master_oplog_fsync_seconds_count", &[]) > 0.0);
    // A group of one: this master leads, in a term >= 1, and applied entries.
    assert_eq!(value(&body, "gfs_master_raft_is_leader", &[]), 1.0);
    assert!(value(&body, "gfs_master_raft_term", &[]) >= 1.0);
    assert_eq!(value(&body, "gfs_master_raft_leader_changes_total", &[]), 1.0);
    // Every proposed entry carries at least one caller's batch. Callers'
    // batches are grouped into entries as they arrive, so only the batch
    // total is fixed: the create and one allocation per chunk at least.
    let entries = value(&body, "gfs_master_raft_entry_batches_count", &[]);
    let batches = value(&body, "gfs_master_raft_entry_batches_sum", &[]);
    assert!(entries >= 1.0, "{entries} proposed entries");
    assert!(batches >= entries, "{batches} batches in {entries} entries");
    assert!(batches >= 9.0, "{batches} batches for a create and 8 chunks");
    // The log also holds the group's first membership entry and the
    // leader's blank entry, before any proposal.
    assert!(value(&body, "gfs_master_raft_applied_index", &[]) >= 3.0);
    assert!(value(&body, "gfs_master_rpc_requests_total", &["method=\"Create\"", "code=\"OK\""]) >= 1.0);
    assert!(value(&body, "gfs_master_rpc_duration_seconds_count", &["method=\"Create\""]) >= 1.0);
    assert_eq!(value(&body, "gfs_master_under_replicated_chunks", &[]), 0.0);
    c.create("/m", None).await.unwrap_err();
    let body = scrape(master_admin).await;
    assert!(value(&body, "gfs_master_rpc_requests_total", &["method=\"Create\"", "code=\"AlreadyExists\""]) >= 1.0);

    // (Families without a series yet, like RPCs before the first call,
    // are not encoded, so chunkserver families are checked after traffic.)
    let mut all = String::new();
    for a in &cs_admin {
        all.push_str(&scrape(*a).await);
    }
    assert_families(&all, CHUNKSERVER_FAMILIES);
    let written = value(&all, "gfs_chunkserver_written_bytes_total", &[]);
    let read = value(&all, "gfs_chunkserver_read_bytes_total", &[]);
    assert!(value(&all, "gfs_chunkserver_rpc_requests_total", &["method=\"Write\"", "code=\"OK\""]) >= 8.0);
    assert!(value(&all, "gfs_chunkserver_rpc_duration_seconds_count", &["method=\"Read\""]) >= 1.0);
    assert!(written >= 3.0 * data.len() as f64, "three replicas of every byte: {written}");
    assert!(read >= data.len() as f64);
    // The disk gauges (the chart's disk-nearly-full alert reads them).
    let (cap, free) =
        (value(&all, "gfs_chunkserver_capacity_bytes", &[]), value(&all, "gfs_chunkserver_free_bytes", &[]));
    assert!(cap > 0.0 && free > 0.0 && free <= cap, "capacity {cap} free {free}");
    wait_for("chunk gauges", 10, || async {
        let mut sum = 0.0;
        for a in &cs_admin {
            sum += sample_sum(&scrape(*a).await, "gfs_chunkserver_chunks", &[]).unwrap_or(0.0);
        }
        sum == 24.0
    })
    .await;

    // Kill a chunkserver holding chunks: deficits rise, then repair brings
    // them back to 0.
    let victim = (0..4)
        .find(|&i| {
            let b = std::fs::read_dir(dir.path().join(format!("cs{i}")).join("chunks")).map(|d| d.count()).unwrap_or(0);
            b > 0
        })
        .expect("some server holds chunks");
    drop(servers[victim].take());
    wait_for("under-replicated chunks to rise", 30, || async {
        let b = scrape(master_admin).await;
        sample_sum(&b, "gfs_master_under_replicated_chunks", &["missing=\"1\""]).unwrap_or(0.0) > 0.0
            && value(&b, "gfs_master_replication_backlog_chunks", &[]) > 0.0
            && value(&b, "gfs_master_replication_backlog_bytes", &[]) > 0.0
    })
    .await;
    let body = scrape(master_admin).await;
    assert!(value(&body, "gfs_master_chunkserver_heartbeat_age_seconds", &[]) > 1.5, "dead server's age grows");
    wait_for("under-replicated chunks to fall to 0", 60, || async {
        let b = scrape(master_admin).await;
        value(&b, "gfs_master_under_replicated_chunks", &[]) == 0.0
            && value(&b, "gfs_master_replication_backlog_chunks", &[]) == 0.0
            && value(&b, "gfs_master_replication_backlog_bytes", &[]) == 0.0
            && value(&b, "gfs_master_active_clones", &[]) == 0.0
    })
    .await;
    let body = scrape(master_admin).await;
    assert!(
        value(&body, "gfs_master_under_replicated_chunks", &["missing=\"1\""]) == 0.0,
        "the deficit series stays, at 0"
    );
    let mut clone_rpcs = 0.0;
    for (i, a) in cs_admin.iter().enumerate() {
        if i != victim {
            clone_rpcs +=
                sample_sum(&scrape(*a).await, "gfs_chunkserver_rpc_requests_total", &["method=\"CloneChunk\""])
                    .unwrap_or(0.0);
        }
    }
    assert!(clone_rpcs > 0.0, "repair cloned chunks");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_in_one_server_serves_every_component() {
    let dir = tempfile::tempdir().unwrap();
    let master = free_addr().to_string();
    let admin = free_addr();
    gfs_e2e::seed_ca(&dir.path().join("data"));
    let _p = Proc::spawn(
        Command::new(bin("gfs"))
            .args(["server", "--chunkservers", "3", "--listen", &master, "--chunk-size", "64KiB"])
            .args(["--admin-listen", &admin.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data")),
        &dir.path().join("server.log"),
    );
    wait_for("gfs server readyz", 30, || status(admin, "/readyz").map_eq(200)).await;
    assert_eq!(status(admin, "/healthz").await, 200);
    let c = client(&master);
    c.create("/a", None).await.unwrap();
    c.write_at("/a", 0, &vec![7u8; 2 * CHUNK]).await.unwrap();
    let body = scrape(admin).await;
    assert_families(&body, MASTER_FAMILIES);
    assert_families(&body, CHUNKSERVER_FAMILIES);
    assert_eq!(value(&body, "gfs_master_chunks", &[]), 2.0);
    let servers: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| l.starts_with("gfs_chunkserver_written_bytes_total{"))
        .filter_map(|l| l.split("server=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(servers.len(), 3, "one series per chunkserver: {body}");
    assert!(value(&body, "gfs_chunkserver_written_bytes_total", &[]) >= 3.0 * 2.0 * CHUNK as f64);
    assert!(value(&body, "gfs_chunkserver_rpc_requests_total", &["method=\"Write\"", "code=\"OK\""]) >= 2.0);
    dashboard_metrics_exist(&body);
    // The status page is the leading master's, with every chunkserver.
    let (code, page) = get(admin, "/status").await.unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<span class=\"badge ok\">leader</span>"), "{page}");
    assert_eq!(page.matches("<span class=\"badge ok\">live</span>").count(), 3, "{page}");
    assert!(page.contains("id=\"chunks\">2<"), "{page}");
}

/// Every master and chunkserver metric the shipped Grafana dashboard
/// queries is a family the components export.
fn dashboard_metrics_exist(scrape: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dash = std::fs::read_to_string(root.join("charts/gfs-operator/dashboards/gfs-overview.json")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in dash.match_indices("gfs_") {
        let name: String =
            dash[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect();
        let family = ["_bucket", "_total", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(family);
    }
    assert!(names.len() >= 10, "dashboard queries too few metrics: {names:?}");
    for n in &names {
        assert!(scrape.contains(&format!("# TYPE {n} ")), "dashboard metric {n} is not exported");
    }
}

/// `fut.map_eq(v)`: a future of `fut == v`.
trait MapEq: std::future::Future + Sized {
    fn map_eq(self, v: Self::Output) -> impl std::future::Future<Output = bool>
    where
        Self::Output: PartialEq,
    {
        async move { self.await == v }
    }
}

impl<F: std::future::Future> MapEq for F {}

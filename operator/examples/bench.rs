//! Operator benchmark (docs/BENCHMARKS.md, "Operator"): against a real
//! etcd + kube-apiserver and a real `gfs server`, with the operator as its
//! own process (`gfs-operator run`) so its resident memory is measurable.
//!
//! ```sh
//! cargo build --release -p gfs-operator -p gfs-client --bins
//! cargo run --release -p gfs-operator --example bench [-- CLUSTERS]
//! ```
//! Uses `GFS_E2E_KUBECONFIG` or starts/reuses `e2e/control-plane up`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gfs_operator::crd::GfsCluster;
use gfs_operator::render::{self, Component, StsPlan};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let mut p = dir.join(name);
    if !p.exists() {
        // The master only answers ClusterStatus here; a debug build will do.
        p = dir.parent().unwrap().join("debug").join(name);
    }
    assert!(p.exists(), "{} missing: cargo build --release -p gfs-operator -p gfs-client --bins", p.display());
    p
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn client_for(kc: &Path) -> anyhow::Result<Client> {
    let cfg = Config::from_custom_kubeconfig(Kubeconfig::read_from(kc)?, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// The RSS baseline, run as a child process of this bench: the watch
/// caches the operator holds (GfsClusters, labelled StatefulSets and Pods
/// of the namespace, all Nodes) on the same kube-rs stack, with no
/// reconciler. The operator's RSS over this one is its own cost.
async fn bare_watch(kc: &Path, ns: &str) -> anyhow::Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let client = client_for(kc).await?;
    let cfg = watcher::Config::default().any_semantic();
    let (_gcs, gw) = reflector::store::<GfsCluster>();
    let (_stss, sw) = reflector::store::<StatefulSet>();
    let (_pods, pw) = reflector::store::<Pod>();
    let (_nodes, nw) = reflector::store::<Node>();
    let g = reflector(gw, watcher(Api::<GfsCluster>::namespaced(client.clone(), ns), cfg.clone())).default_backoff();
    let s = reflector(
        sw,
        watcher(
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            cfg.clone().labels("app.kubernetes.io/managed-by=gfs-operator"),
        ),
    )
    .default_backoff();
    let p = reflector(
        pw,
        watcher(Api::<Pod>::namespaced(client.clone(), ns), cfg.clone().labels("app.kubernetes.io/name=gfs")),
    )
    .default_backoff();
    let n = reflector(nw, watcher(Api::<Node>::all(client), cfg)).default_backoff();
    futures::join!(
        g.for_each(|_| async {}),
        s.for_each(|_| async {}),
        p.for_each(|_| async {}),
        n.for_each(|_| async {})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare-watch") {
        return bare_watch(Path::new(&args[2]), &args[3]).await;
    }
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(50);
    let kc = match std::env::var("GFS_E2E_KUBECONFIG") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let out = Command::new(root().join("e2e/control-plane")).arg("up").stderr(Stdio::inherit()).output()?;
            PathBuf::from(String::from_utf8(out.stdout)?.lines().last().unwrap().trim())
        }
    };
    let admin = client_for(&kc).await?;
    let pp = PatchParams::apply("gfs-bench").force();
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("crds/gfscluster.yaml"))?)?;
    Api::<CustomResourceDefinition>::all(admin.clone()).patch(&crd.name_any(), &pp, &Patch::Apply(&crd)).await?;
    let ns = format!("bench-{}", std::process::id());
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?)
        .await?;

    let dir = tempfile::tempdir()?;
    let ready = dir.path().join("ready");
    let _server = Kill(
        Command::new(bin("gfs"))
            .arg("--insecure")
            .args(["server", "--listen", "127.0.0.1:0", "--chunkservers", "3", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()?,
    );
    let t = Instant::now();
    let master = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            break s.trim().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "gfs server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let op = Kill(
        Command::new(bin("gfs-operator"))
            .args(["run", "--master-override", &master, "--namespace", &ns, "--lease-namespace", &ns])
            .args(["--admin-listen", "127.0.0.1:0", "--requeue-seconds", "10"])
            .env("KUBECONFIG", &kc)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = op.0.id();
    let bare = Kill(
        Command::new(std::env::current_exe()?)
            .arg("--bare-watch")
            .arg(&kc)
            .arg(&ns)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let bare_pid = bare.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(pid);
    let bare_idle = rss_kib(bare_pid);

    let clusters: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    let spec = |name: &str| -> GfsCluster {
        serde_json::from_value(
            json!({"apiVersion": "gfs.dev/v1alpha1", "kind": "GfsCluster", "metadata": {"name": name},
            "spec": {"replication": 3, "masters": {"replicas": 3, "storage": {"size": "10Gi"}},
                     "chunkservers": {"replicas": 4, "storage": {"size": "100Gi"}},
                     // The bench's masters run with --insecure.
                     "tls": {"enabled": false}}}),
        )
        .unwrap()
    };
    // 1. Apply -> every child object exists.
    let t = Instant::now();
    clusters.create(&PostParams::default(), &spec("first")).await?;
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let svc: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let sa: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    loop {
        let all = sts.get_opt("first-master").await?.is_some()
            && sts.get_opt("first-chunkserver").await?.is_some()
            && svc.get_opt("first").await?.is_some()
            && svc.get_opt("first-master").await?.is_some()
            && svc.get_opt("first-chunkserver").await?.is_some()
            && sa.get_opt("first-gfs").await?.is_some()
            && pdb.get_opt("first-master").await?.is_some()
            && pdb.get_opt("first-chunkserver").await?.is_some();
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_children = t.elapsed();

    // Baseline, same run: the same 8 rendered children applied directly by
    // this client, one server-side apply after another, in a namespace the
    // operator does not watch. What is left of the operator's time is its
    // watch latency and its reads of the master and the cluster.
    let direct_children = direct_apply(&admin, &ns, &spec("direct")).await?;

    // Baseline for the N-cluster rows, same run: this client does the same
    // API writes per cluster (create, 8 server-side applies, status patch)
    // for N clusters at once, in a namespace the operator does not watch.
    let mut direct_lat = direct_clusters(&admin, &ns, n, &spec).await?;

    // 2. N clusters created at once: create -> status.observedGeneration=1.
    let mut created = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        clusters.create(&PostParams::default(), &spec(&format!("c{i:03}"))).await?;
        created.push(t0.elapsed());
    }
    let mut rss_peak = rss_kib(pid);
    let mut bare_peak = rss_kib(bare_pid);
    let mut done: Vec<Option<Duration>> = vec![None; n];
    let wait_gen = |gen_: i64, done: &mut Vec<Option<Duration>>, list: &[GfsCluster], now: Duration| {
        for g in list {
            if let Some(i) = g.name_any().strip_prefix('c').and_then(|s| s.parse::<usize>().ok())
                && done[i].is_none()
                && g.status.as_ref().and_then(|s| s.observed_generation) == Some(gen_)
            {
                done[i] = Some(now);
            }
        }
    };
    while done.iter().any(Option::is_none) {
        let list = clusters.list(&ListParams::default()).await?.items;
        wait_gen(1, &mut done, &list, t0.elapsed());
        rss_peak = rss_peak.max(rss_kib(pid));
        bare_peak = bare_peak.max(rss_kib(bare_pid));
        assert!(t0.elapsed() < Duration::from_secs(300), "clusters not reconciled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut create_lat: Vec<f64> =
        done.iter().zip(&created).map(|(d, c)| (d.unwrap() - *c).as_secs_f64() * 1e3).collect();
    let all_created = t0.elapsed();

    // 3. Spec change on all N: patch -> status.observedGeneration=2.
    let t1 = Instant::now();
    let mut patched = Vec::new();
    for i in 0..n {
        clusters
            .patch(
                &format!("c{i:03}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"chunkservers": {"replicas": 5}}})),
            )
            .await?;
        patched.push(t1.elapsed());
    }
    let mut done2: Vec<Option<Duration>> = vec![None; n];
    while done2.iter().any(Option::is_none) {
        let list = clusters.list(&ListParams::default()).await?.items;
        wait_gen(2, &mut done2, &list, t1.elapsed());
        rss_peak = rss_peak.max(rss_kib(pid));
        bare_peak = bare_peak.max(rss_kib(bare_pid));
        assert!(t1.elapsed() < Duration::from_secs(300), "updates not reconciled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut update_lat: Vec<f64> =
        done2.iter().zip(&patched).map(|(d, c)| (d.unwrap() - *c).as_secs_f64() * 1e3).collect();
    // Steady state with N clusters requeued every 10 s.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_loaded = rss_kib(pid);
    let bare_loaded = rss_kib(bare_pid);
    let direct_p50 = pct(&mut direct_lat, 0.5);

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| apply -> all 8 child objects exist (1 cluster); baseline: the 8 rendered objects applied directly | {:.0} ms vs {:.0} ms (ratio {:.1}) |",
        first_children.as_secs_f64() * 1e3,
        direct_children.as_secs_f64() * 1e3,
        first_children.as_secs_f64() / direct_children.as_secs_f64().max(1e-9)
    );
    println!(
        "| {n} clusters created back to back: create -> status observed, p50 / p95 / max | {:.0} / {:.0} / {:.0} ms (all done {:.1} s) |",
        pct(&mut create_lat, 0.5),
        pct(&mut create_lat, 0.95),
        pct(&mut create_lat, 1.0),
        all_created.as_secs_f64()
    );
    println!(
        "| baseline: the same writes per cluster (create, 8 applies, status patch) for {n} clusters at once by one client, p50 / p95 / max | {:.0} / {:.0} / {:.0} ms (operator p50 / baseline p50 = {:.1}) |",
        direct_p50,
        pct(&mut direct_lat, 0.95),
        pct(&mut direct_lat, 1.0),
        pct(&mut create_lat, 0.5) / direct_p50.max(1e-9)
    );
    println!(
        "| spec change on all {n}: patch -> status observed, p50 / p95 / max | {:.0} / {:.0} / {:.0} ms |",
        pct(&mut update_lat, 0.5),
        pct(&mut update_lat, 0.95),
        pct(&mut update_lat, 1.0)
    );
    let mib = |k: u64| k as f64 / 1024.0;
    let row = |what: &str, op: u64, base: u64| {
        println!(
            "| operator RSS {what}; baseline: bare kube-rs watch of the same objects | {:.1} MiB vs {:.1} MiB (ratio {:.2}) |",
            mib(op),
            mib(base),
            op as f64 / base.max(1) as f64
        )
    };
    row("idle (no clusters)", rss_idle, bare_idle);
    row(&format!("peak during the {n}-cluster load"), rss_peak, bare_peak);
    row(&format!("with {} clusters, steady", n + 1), rss_loaded, bare_loaded);
    Api::<Namespace>::all(admin).delete(&ns, &Default::default()).await.ok();
    Ok(())
}

/// The baseline of the N-cluster rows: in a namespace of its own, `n`
/// concurrent tasks each create a cluster, server-side apply its 9
/// rendered children and patch its status, as the operator's first
/// reconcile does; returns each task's latency in ms.
async fn direct_clusters(
    admin: &Client,
    ns: &str,
    n: usize,
    spec: &dyn Fn(&str) -> GfsCluster,
) -> anyhow::Result<Vec<f64>> {
    let ns2 = format!("{ns}-direct-n");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns2}}))?)
        .await?;
    let one = |gc: GfsCluster| {
        let (admin, ns2) = (admin.clone(), ns2.clone());
        async move {
            let t = Instant::now();
            let gc = Api::<GfsCluster>::namespaced(admin.clone(), &ns2).create(&PostParams::default(), &gc).await?;
            apply_children(&admin, &ns2, &gc).await?;
            Api::<GfsCluster>::namespaced(admin, &ns2)
                .patch_status(
                    &gc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"observedGeneration": gc.metadata.generation}})),
                )
                .await?;
            anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
        }
    };
    let lat = futures::future::try_join_all((0..n).map(|i| one(spec(&format!("d{i:03}"))))).await?;
    Api::<Namespace>::all(admin.clone()).delete(&ns2, &Default::default()).await.ok();
    Ok(lat)
}

/// Server-side applies the 8 children the operator renders for `gc`.
async fn apply_children(admin: &Client, ns: &str, gc: &GfsCluster) -> anyhow::Result<()> {
    let pp = PatchParams::apply("gfs-bench-direct").force();
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let svc: Api<Service> = Api::namespaced(admin.clone(), ns);
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), ns);
    let sa = render::service_account(gc);
    Api::<ServiceAccount>::namespaced(admin.clone(), ns).patch(&sa.name_any(), &pp, &Patch::Apply(&sa)).await?;
    for s in [
        render::headless_service(gc, Component::Master),
        render::headless_service(gc, Component::Chunkserver),
        render::client_service(gc),
    ] {
        svc.patch(&s.name_any(), &pp, &Patch::Apply(&s)).await?;
    }
    for p in [render::pdb(gc, Component::Master), render::pdb(gc, Component::Chunkserver)] {
        pdb.patch(&p.name_any(), &pp, &Patch::Apply(&p)).await?;
    }
    let plan = StsPlan { replicas: gc.spec.chunkservers.replicas, partition: 0 };
    for s in [
        render::master_sts(gc, StsPlan { replicas: gc.spec.masters.replicas, partition: 0 }),
        render::chunkserver_sts(gc, plan),
    ] {
        sts.patch(&s.name_any(), &pp, &Patch::Apply(&s)).await?;
    }
    Ok(())
}

/// Creates `gc` in a namespace of its own (not watched by the operator),
/// then server-side applies the 8 children the operator would render for
/// it, sequentially; returns the time of the applies.
async fn direct_apply(admin: &Client, ns: &str, gc: &GfsCluster) -> anyhow::Result<Duration> {
    let ns2 = format!("{ns}-direct");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns2}}))?)
        .await?;
    let gc = Api::<GfsCluster>::namespaced(admin.clone(), &ns2).create(&PostParams::default(), gc).await?;
    let t = Instant::now();
    apply_children(admin, &ns2, &gc).await?;
    let took = t.elapsed();
    Api::<Namespace>::all(admin.clone()).delete(&ns2, &Default::default()).await.ok();
    Ok(took)
}

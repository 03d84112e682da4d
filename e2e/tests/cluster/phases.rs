//! The steps of the real-cluster suite, in order; each returns an error
//! that says what it saw.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::kube::{Kube, condition, items, name, pod_ready, repo, wait_for};
use crate::{CLUSTER, NS, OP_NS};

/// What later steps check again.
#[derive(Default)]
pub struct Data {
    /// sha256 of the 200 MiB file `/e2e/big`.
    pub big_sum: RefCell<String>,
}

const CLIENT: &str = "gfs-client";
const BIG: u64 = 200 << 20;
/// A new leader after the old leader's pod is deleted (graceful stop;
/// the process benchmark's kill -9 failover median is 4.4 s).
const FAILOVER_GOAL: Duration = Duration::from_secs(20);

pub fn clean(k: &Kube) -> Result<()> {
    // Operator first, so that it cannot put the finalizer back; then the
    // finalizer by hand (this is a throwaway cluster, not a cleanup test).
    k.helm(&["uninstall", "gfs-operator", "-n", OP_NS, "--ignore-not-found", "--wait"])?;
    let _ = k.kubectl(&[
        "-n",
        NS,
        "patch",
        "gfsc",
        CLUSTER,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    k.kubectl(&["delete", "ns", NS, OP_NS, "--ignore-not-found", "--timeout", "180s"])?;
    Ok(())
}

pub fn install_operator(k: &Kube) -> Result<()> {
    k.kubectl(&["create", "namespace", OP_NS])?;
    let chart = repo().join("charts/gfs-operator");
    k.helm(&[
        "install",
        "gfs-operator",
        chart.to_str().expect("utf-8 path"),
        "-n",
        OP_NS,
        "--set",
        "image.tag=dev",
        "--wait",
        "--timeout",
        "180s",
    ])?;
    let pod = wait_for("a Ready operator pod", Duration::from_secs(120), || {
        let pods = k.json(&["-n", OP_NS, "get", "pods", "-l", "app.kubernetes.io/instance=gfs-operator"])?;
        Ok(items(&pods).into_iter().find(pod_ready).map(|p| name(&p)))
    })?;
    let holder = wait_for("the operator's leader Lease", Duration::from_secs(60), || {
        let lease = k.json(&["-n", OP_NS, "get", "lease", "gfs-operator"])?;
        Ok(lease["spec"]["holderIdentity"].as_str().map(str::to_string))
    })?;
    ensure!(holder == pod, "the Lease is held by {holder}, not by the Ready pod {pod}");
    Ok(())
}

fn component_pods(k: &Kube, component: &str) -> Result<Vec<Value>> {
    let sel = format!("app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/component={component}");
    Ok(items(&k.json(&["-n", NS, "get", "pods", "-l", &sel])?))
}

/// Waits until `n` pods of the component are Ready; returns them.
fn ready_pods(k: &Kube, component: &str, n: usize, timeout: Duration) -> Result<Vec<Value>> {
    wait_for(&format!("{n} Ready {component} pods"), timeout, || {
        let pods = component_pods(k, component)?;
        let ready = pods.iter().filter(|p| pod_ready(p) && p["metadata"]["deletionTimestamp"].is_null()).count();
        Ok((ready == n && pods.len() == n).then_some(pods))
    })
}

fn check_restricted(pod: &Value) -> Result<()> {
    let p = &pod["spec"]["securityContext"];
    let c = &pod["spec"]["containers"][0]["securityContext"];
    let pod_name = name(pod);
    ensure!(p["runAsNonRoot"] == true && p["fsGroup"] == 65532, "{pod_name}: pod securityContext {p}");
    ensure!(
        c["readOnlyRootFilesystem"] == true
            && c["allowPrivilegeEscalation"] == false
            && c["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "{pod_name}: container securityContext {c}"
    );
    Ok(())
}

pub fn create_cluster(k: &Kube) -> Result<()> {
    k.apply(&std::fs::read_to_string(repo().join("e2e/k8s/gfscluster.yaml"))?)?;
    let masters = ready_pods(k, "master", 3, Duration::from_secs(420))?;
    let chunkservers = ready_pods(k, "chunkserver", 4, Duration::from_secs(300))?;
    for p in masters.iter().chain(&chunkservers) {
        check_restricted(p)?;
    }
    let pvcs = items(&k.json(&["-n", NS, "get", "pvc"])?);
    let bound = pvcs.iter().filter(|p| p["status"]["phase"] == "Bound").count();
    ensure!(pvcs.len() == 7 && bound == 7, "PVCs: {bound} of {} Bound (want 7)", pvcs.len());
    wait_for("GfsCluster Available", Duration::from_secs(120), || {
        let gc = k.json(&["-n", NS, "get", "gfsc", CLUSTER])?;
        Ok(condition(&gc, "Available").is_some_and(|c| c["status"] == "True").then_some(()))
    })?;
    let cols = k.kubectl(&["-n", NS, "get", "gfsc", CLUSTER])?;
    eprintln!("{cols}");
    Ok(())
}

fn client_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {CLIENT}, namespace: {NS}}}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile: {{type: RuntimeDefault}}
  containers:
  - name: client
    image: localhost/busybox:1.35
    imagePullPolicy: Never
    command: [sleep, "86400"]
    env:
    - {{name: PATH, value: "/opt/gfs/usr/local/bin:/bin"}}
    - {{name: GFS_MASTER, value: "{CLUSTER}.{NS}.svc:9700"}}
    - {{name: GFS_TLS_DIR, value: /etc/gfs/tls}}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL]}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: gfs, mountPath: /opt/gfs, readOnly: true}}
    - {{name: tls, mountPath: /etc/gfs/tls, readOnly: true}}
  volumes:
  - {{name: work, emptyDir: {{}}}}
  # The gfs CLI from its own image (an image volume), next to a shell.
  - {{name: gfs, image: {{reference: "localhost/gfs:dev", pullPolicy: IfNotPresent}}}}
  - {{name: tls, secret: {{secretName: e2e-client-tls, defaultMode: 0400}}}}
"#
    )
}

/// A client certificate (role admin, group supergroup) signed by the
/// cluster's CA Secret, as a user of the cluster would make one.
fn client_secret(k: &Kube) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca_dir, out) = (dir.path().join("ca"), dir.path().join("out"));
    std::fs::create_dir_all(&ca_dir)?;
    for (key, file) in [("tls.crt", "ca.crt"), ("tls.key", "ca.key")] {
        let tpl = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        let pem = k.kubectl(&["-n", NS, "get", "secret", &format!("{CLUSTER}-ca"), "-o", &tpl])?;
        ensure!(pem.contains("-----BEGIN"), "{CLUSTER}-ca has no {key}");
        std::fs::write(ca_dir.join(file), pem)?;
    }
    let st = std::process::Command::new(gfs_e2e::bin("gfs"))
        .args(["cert", "issue", "--role", "admin", "--user", "e2e", "--group", "supergroup", "--ca-dir"])
        .arg(&ca_dir)
        .arg("--out")
        .arg(&out)
        .status()?;
    ensure!(st.success(), "gfs cert issue: {st}");
    let file = |f: &str| format!("--from-file={f}={}", out.join(f).display());
    k.kubectl(&[
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "e2e-client-tls",
        &file("tls.crt"),
        &file("tls.key"),
        &file("ca.crt"),
    ])?;
    Ok(())
}

fn gfs_json(k: &Kube, args: &str) -> Result<Value> {
    let out = k.sh(NS, CLIENT, &format!("gfs {args}"))?;
    serde_json::from_str(&out).with_context(|| format!("gfs {args}: not JSON: {out}"))
}

fn sha_of(k: &Kube, remote: &str) -> Result<String> {
    let out = k.sh(NS, CLIENT, &format!("gfs cat {remote} | sha256sum"))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

/// The chunkserver pod of a replica address (`<pod>.<service>...:port`).
fn pod_of(address: &str) -> &str {
    address.split('.').next().unwrap_or(address)
}

/// Every chunk of `remote` has `want` replicas on distinct chunkserver pods.
fn replicas_ok(k: &Kube, remote: &str, want: usize) -> Result<Option<Vec<BTreeSet<String>>>> {
    let st = gfs_json(k, &format!("stat --json {remote}"))?;
    let chunks = st["chunks"].as_array().context("stat has no chunks")?;
    let mut sets = Vec::new();
    for c in chunks {
        let pods: BTreeSet<String> = c["replicas"]
            .as_array()
            .context("chunk without replicas")?
            .iter()
            .filter_map(|r| r.as_str().map(|a| pod_of(a).to_string()))
            .collect();
        if pods.len() != want || !pods.iter().all(|p| p.starts_with(&format!("{CLUSTER}-chunkserver-"))) {
            return Ok(None);
        }
        sets.push(pods);
    }
    Ok(Some(sets))
}

pub fn client_io(k: &Kube, data: &Data) -> Result<()> {
    client_secret(k)?;
    k.apply(&client_yaml())?;
    wait_for("the client pod Ready", Duration::from_secs(120), || {
        Ok(pod_ready(&k.json(&["-n", NS, "get", "pod", CLIENT])?).then_some(()))
    })?;
    let made = k.sh(NS, CLIENT, &format!("head -c {BIG} /dev/urandom > /work/in && sha256sum /work/in"))?;
    let sum = made.split_whitespace().next().unwrap_or_default().to_string();
    let t = Instant::now();
    k.sh(NS, CLIENT, "gfs mkdir -p /e2e && gfs put /work/in /e2e/big")?;
    eprintln!("put 200 MiB in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let back = sha_of(k, "/e2e/big")?;
    eprintln!("cat 200 MiB in {:.1} s", t.elapsed().as_secs_f64());
    ensure!(back == sum, "read back sha256 {back}, wrote {sum}");
    let st = gfs_json(k, "stat --json /e2e/big")?;
    ensure!(st["size"] == BIG, "size {} (want {BIG})", st["size"]);
    let sets = replicas_ok(k, "/e2e/big", 3)?.context("a chunk without 3 replicas on 3 chunkserver pods")?;
    ensure!(sets.len() == 4, "{} chunks (want 4 of 64 MiB)", sets.len());
    eprintln!("replica pods per chunk: {sets:?}");
    *data.big_sum.borrow_mut() = sum;
    Ok(())
}

fn status(k: &Kube) -> Result<Value> {
    gfs_json(k, "admin status --json")
}

fn leader_pod(st: &Value) -> Option<String> {
    st["masters"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "leader")
        .map(|m| pod_of(m["address"].as_str().unwrap_or_default()).to_string())
}

fn term(st: &Value) -> u64 {
    st["masters"].as_array().into_iter().flatten().filter_map(|m| m["term"].as_u64()).max().unwrap_or(0)
}

pub fn lose_leader(k: &Kube, data: &Data) -> Result<()> {
    let before = status(k)?;
    let old = leader_pod(&before).context("no leader in admin status")?;
    let old_uid = k.json(&["-n", NS, "get", "pod", &old])?["metadata"]["uid"].clone();
    k.sh(NS, CLIENT, "echo acknowledged-before-failover | gfs put - /e2e/before")?;
    let t = Instant::now();
    k.kubectl(&["-n", NS, "delete", "pod", &old, "--wait=false"])?;
    // Unavailability: until a new write is acknowledged and a leader named.
    let mut n = 0;
    let leader = wait_for("a write acknowledged after the leader's pod went", FAILOVER_GOAL * 3, || {
        n += 1;
        k.sh(NS, CLIENT, &format!("echo during-failover | gfs put - /e2e/failover-{n}"))?;
        Ok(leader_pod(&status(k)?))
    })?;
    let took = t.elapsed();
    let recreated = wait_for(&format!("{old} recreated and Ready"), Duration::from_secs(180), || {
        let p = k.json(&["-n", NS, "get", "pod", &old])?;
        Ok((p["metadata"]["uid"] != old_uid && pod_ready(&p)).then_some(()))
    });
    recreated?;
    let after = wait_for("3 reachable masters with one leader", Duration::from_secs(120), || {
        let st = status(k)?;
        let up = st["masters"].as_array().map(|m| m.iter().filter(|m| m["reachable"] == true).count());
        Ok((up == Some(3) && leader_pod(&st).is_some()).then_some(st))
    })?;
    eprintln!(
        "leader {old} (term {}) deleted: writes acknowledged again after {:.1} s by leader {leader}; now {} leads in term {}",
        term(&before),
        took.as_secs_f64(),
        leader_pod(&after).unwrap_or_default(),
        term(&after)
    );
    ensure!(took <= FAILOVER_GOAL, "writes failed for {took:?} (goal {FAILOVER_GOAL:?})");
    // The operator follows the leader, and its Leader column says so.
    let now = leader_pod(&after).unwrap_or_default();
    wait_for("the GfsCluster's Leader column to name the leader", Duration::from_secs(60), || {
        let gc = k.json(&["-n", NS, "get", "gfsc", CLUSTER])?;
        Ok(gc["status"]["leader"].as_str().is_some_and(|l| pod_of(l) == now).then_some(()))
    })?;
    ensure!(k.sh(NS, CLIENT, "gfs cat /e2e/before")?.trim() == "acknowledged-before-failover", "/e2e/before changed");
    ensure!(k.sh(NS, CLIENT, &format!("gfs cat /e2e/failover-{n}"))?.trim() == "during-failover", "lost a write");
    ensure!(sha_of(k, "/e2e/big")? == *data.big_sum.borrow(), "/e2e/big changed after the failover");
    Ok(())
}

pub fn lose_chunkserver(k: &Kube, data: &Data) -> Result<()> {
    let victim = format!("{CLUSTER}-chunkserver-3");
    let before = status(k)?;
    let old_ids: Vec<String> = before["servers"]
        .as_array()
        .context("no servers")?
        .iter()
        .filter(|s| pod_of(s["address"].as_str().unwrap_or_default()) == victim)
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    ensure!(old_ids.len() == 1, "{victim} is {} servers in admin status", old_ids.len());
    let old_uid = k.json(&["-n", NS, "get", "pvc", &format!("data-{victim}")])?["metadata"]["uid"].clone();
    let t = Instant::now();
    k.kubectl(&["-n", NS, "delete", "pvc", &format!("data-{victim}"), "--wait=false"])?;
    k.kubectl(&["-n", NS, "delete", "pod", &victim])?;
    wait_for("3 replicas of every chunk, none on the lost server", Duration::from_secs(420), || {
        let st = status(k)?;
        let on_old = st["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| old_ids.iter().any(|id| s["id"] == id.as_str()) && s["alive"] == true);
        Ok((st["under_replicated_chunks"] == 0 && !on_old && replicas_ok(k, "/e2e/big", 3)?.is_some()).then_some(()))
    })?;
    eprintln!("full replication {:.1} s after deleting {victim} and its PVC", t.elapsed().as_secs_f64());
    let pods = ready_pods(k, "chunkserver", 4, Duration::from_secs(300))?;
    ensure!(pods.iter().any(|p| name(p) == victim), "{victim} did not come back");
    let new_uid = k.json(&["-n", NS, "get", "pvc", &format!("data-{victim}")])?["metadata"]["uid"].clone();
    ensure!(new_uid != old_uid, "{victim} came back on its old PVC");
    wait_for(&format!("{victim} registered again"), Duration::from_secs(120), || {
        let st = status(k)?;
        let alive: Vec<&Value> = st["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["alive"] == true && pod_of(s["address"].as_str().unwrap_or_default()) == victim)
            .collect();
        Ok((st["live_servers"] == 4 && alive.len() == 1).then_some(()))
    })?;
    ensure!(sha_of(k, "/e2e/big")? == *data.big_sum.borrow(), "/e2e/big changed");
    Ok(())
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string()
}

fn node_ready(k: &Kube, node: &str) -> Result<bool> {
    Ok(condition(&k.json(&["get", "node", node])?, "Ready").is_some_and(|c| c["status"] == "True"))
}

/// Moves the pods of `selector` in `ns` off `node` (cordoned) and waits
/// until one of them is Ready elsewhere.
fn move_off(k: &Kube, ns: &str, selector: &str, node: &str) -> Result<()> {
    for p in items(&k.json(&["-n", ns, "get", "pods", "-l", selector])?) {
        if node_of(&p) == node {
            k.kubectl(&["-n", ns, "delete", "pod", &name(&p)])?;
        }
    }
    wait_for(&format!("{selector} Ready off {node}"), Duration::from_secs(120), || {
        let pods = items(&k.json(&["-n", ns, "get", "pods", "-l", selector])?);
        Ok(pods.iter().any(|p| pod_ready(p) && node_of(p) != node).then_some(()))
    })
}

/// The node with fewer masters (so the group keeps its quorum), the other
/// node, and how many masters the first runs.
fn pick_victim(k: &Kube) -> Result<(&'static str, &'static str, usize)> {
    let masters = component_pods(k, "master")?;
    let on = |n: &str| masters.iter().filter(|p| node_of(p) == n).count();
    Ok(if on("node1") <= on("node2") { ("node1", "node2", on("node1")) } else { ("node2", "node1", on("node2")) })
}

/// Cordons `victim` and moves the operator and the client pod off it:
/// their own high availability is not what the node-loss steps check.
fn clear_for_loss(k: &Kube, victim: &str) -> Result<()> {
    k.kubectl(&["cordon", victim])?;
    move_off(k, OP_NS, "app.kubernetes.io/instance=gfs-operator", victim)?;
    if node_of(&k.json(&["-n", NS, "get", "pod", CLIENT])?) == victim {
        k.kubectl(&["-n", NS, "delete", "pod", CLIENT])?;
        k.apply(&client_yaml())?;
        wait_for("the client pod Ready again", Duration::from_secs(120), || {
            Ok(pod_ready(&k.json(&["-n", NS, "get", "pod", CLIENT])?).then_some(()))
        })?;
    }
    Ok(())
}

/// Waits until every chunk of `/e2e/big` has 3 replicas and 4
/// chunkservers are live, with nothing under-replicated.
fn full_replication(k: &Kube) -> Result<()> {
    wait_for("3 replicas of every chunk on 4 live chunkservers", Duration::from_secs(300), || {
        let st = status(k)?;
        Ok((st["under_replicated_chunks"] == 0 && st["live_servers"] == 4 && replicas_ok(k, "/e2e/big", 3)?.is_some())
            .then_some(()))
    })
}

/// Waits until chunkserver pods `pods` run Ready on `node`.
fn back_on(k: &Kube, pods: &[String], node: &str) -> Result<()> {
    wait_for(&format!("{pods:?} Ready on {node}"), Duration::from_secs(300), || {
        let now = component_pods(k, "chunkserver")?;
        Ok(pods.iter().all(|l| now.iter().any(|p| name(p) == *l && pod_ready(p) && node_of(p) == node)).then_some(()))
    })
}

/// Power loss of a node: its kubelet, kube-proxy, containerd and every
/// container die at once. The operator must mark its chunkservers lost,
/// the StatefulSet must bring them back on the other node (new volumes:
/// local-path volumes die with their node), and re-replication must
/// restore 3 replicas; nothing written is lost.
pub fn lose_node(k: &Kube, data: &Data) -> Result<()> {
    let (victim, survivor, masters_there) = pick_victim(k)?;
    let lost: Vec<String> =
        component_pods(k, "chunkserver")?.iter().filter(|p| node_of(p) == victim).map(name).collect();
    ensure!(!lost.is_empty(), "no chunkserver runs on {victim}: nothing to lose");
    clear_for_loss(k, victim)?;
    let leader = leader_pod(&status(k)?).context("no leader in admin status")?;
    let leader_there = component_pods(k, "master")?.iter().any(|p| name(p) == leader && node_of(p) == victim);
    let t = Instant::now();
    k.cluster(&["node-stop", victim, "--power-off"])?;
    eprintln!(
        "{victim} powered off with chunkservers {lost:?} and {masters_there} master(s), the leader {leader} {}",
        if leader_there { "among them" } else { "elsewhere" }
    );
    back_on(k, &lost, survivor)?;
    eprintln!("chunkservers back on {survivor} after {:.1} s", t.elapsed().as_secs_f64());
    full_replication(k)?;
    eprintln!("full replication {:.1} s after the power loss", t.elapsed().as_secs_f64());
    let events = |reason: &str| -> Result<bool> {
        let sel = format!("reason={reason}");
        Ok(!k.kubectl(&["-n", NS, "get", "events", "--field-selector", &sel, "-o", "name"])?.trim().is_empty())
    };
    // A new leader drops the soft state and knows only the chunkservers
    // that registered with it since: when the leader died with the node,
    // the lost ones never did, so there is nothing to fence and the
    // operator says so (MarkLostSkipped) before replacing their pods.
    let (marked, skipped) = (events("MarkedLost")?, events("MarkLostSkipped")?);
    eprintln!("operator events: MarkedLost {marked}, MarkLostSkipped {skipped}");
    ensure!(
        marked || (leader_there && skipped),
        "the operator never marked a chunkserver lost (no MarkedLost event{})",
        if leader_there { " and no MarkLostSkipped, with the leader on the lost node" } else { "" }
    );
    ensure!(sha_of(k, "/e2e/big")? == *data.big_sum.borrow(), "/e2e/big changed after the node loss");
    k.sh(NS, CLIENT, "echo after-node-loss | gfs put - /e2e/after-node-loss")?;
    // The node comes back: its master (volume on that node) rejoins.
    k.cluster(&["node-start", victim])?;
    wait_for(&format!("{victim} Ready"), Duration::from_secs(180), || Ok(node_ready(k, victim)?.then_some(())))?;
    k.kubectl(&["uncordon", victim])?;
    ready_pods(k, "master", 3, Duration::from_secs(300))?;
    wait_for("3 reachable masters", Duration::from_secs(120), || {
        let st = status(k)?;
        let up = st["masters"].as_array().map(|m| m.iter().filter(|m| m["reachable"] == true).count());
        Ok((up == Some(3) && leader_pod(&st).is_some()).then_some(()))
    })?;
    ensure!(k.sh(NS, CLIENT, "gfs cat /e2e/after-node-loss")?.trim() == "after-node-loss", "lost a write");
    Ok(())
}

/// Ids of the live chunkservers whose address names one of `pods`.
fn server_ids(st: &Value, pods: &[String]) -> Vec<String> {
    st["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["alive"] == true && pods.iter().any(|p| pod_of(s["address"].as_str().unwrap_or_default()) == p))
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// Recreates chunkservers `pods` on node `to` with new volumes (`from`
/// cordoned meanwhile), then waits for full replication.
fn move_chunkservers(k: &Kube, pods: &[String], from: &str, to: &str) -> Result<()> {
    k.kubectl(&["cordon", from])?;
    for p in pods {
        k.kubectl(&["-n", NS, "delete", "pvc", &format!("data-{p}"), "--wait=false"])?;
        k.kubectl(&["-n", NS, "delete", "pod", p])?;
    }
    back_on(k, pods, to)?;
    k.kubectl(&["uncordon", from])?;
    full_replication(k)
}

/// A partition: the node's link is cut while everything on it keeps
/// running. Its chunkservers are replaced on the other node; when the
/// link returns, the old processes must not count again (marked lost,
/// then killed by their kubelet), and nothing is lost or written twice.
pub fn partition_node(k: &Kube, data: &Data) -> Result<()> {
    let (victim, survivor, masters_there) = pick_victim(k)?;
    let mut cut: Vec<String> =
        component_pods(k, "chunkserver")?.iter().filter(|p| node_of(p) == victim).map(name).collect();
    if cut.len() < 2 {
        // After a node loss every chunkserver may run on the survivor:
        // move two back (new volumes, as an operator would rebalance).
        let moving: Vec<String> = component_pods(k, "chunkserver")?
            .iter()
            .filter(|p| node_of(p) == survivor)
            .map(name)
            .take(2 - cut.len())
            .collect();
        move_chunkservers(k, &moving, survivor, victim)?;
        cut.extend(moving);
    }
    let old_ids = server_ids(&status(k)?, &cut);
    ensure!(old_ids.len() == cut.len(), "{cut:?} are servers {old_ids:?}");
    clear_for_loss(k, victim)?;
    let t = Instant::now();
    k.cluster(&["partition", victim])?;
    eprintln!("{victim} cut off with chunkservers {cut:?} (servers {old_ids:?}) and {masters_there} master(s)");
    back_on(k, &cut, survivor)?;
    eprintln!("chunkservers replaced on {survivor} after {:.1} s", t.elapsed().as_secs_f64());
    wait_for(
        "3 replicas of every chunk on 4 live chunkservers, none of the cut-off ones",
        Duration::from_secs(360),
        || {
            let st = status(k)?;
            let stale = old_ids.iter().any(|id| server_ids(&st, &cut).contains(id));
            Ok((st["under_replicated_chunks"] == 0
                && st["live_servers"] == 4
                && !stale
                && replicas_ok(k, "/e2e/big", 3)?.is_some())
            .then_some(()))
        },
    )?;
    eprintln!("full replication {:.1} s after the partition", t.elapsed().as_secs_f64());
    k.sh(NS, CLIENT, "echo during-partition | gfs put - /e2e/during-partition")?;
    k.cluster(&["heal", victim])?;
    wait_for(&format!("{victim} Ready"), Duration::from_secs(180), || Ok(node_ready(k, victim)?.then_some(())))?;
    k.kubectl(&["uncordon", victim])?;
    // The old processes are back on the network until their kubelet
    // kills them: they must never count as live servers again.
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_secs(30) {
        let st = status(k)?;
        let back: Vec<String> = server_ids(&st, &cut).into_iter().filter(|id| old_ids.contains(id)).collect();
        ensure!(back.is_empty(), "cut-off chunkservers {back:?} count as live again after the partition healed");
        std::thread::sleep(Duration::from_secs(2));
    }
    ready_pods(k, "master", 3, Duration::from_secs(300))?;
    ready_pods(k, "chunkserver", 4, Duration::from_secs(120))?;
    ensure!(sha_of(k, "/e2e/big")? == *data.big_sum.borrow(), "/e2e/big changed after the partition");
    let size = gfs_json(k, "stat --json /e2e/big")?["size"].clone();
    ensure!(size == BIG, "/e2e/big is {size} bytes after the partition (want {BIG})");
    ensure!(k.sh(NS, CLIENT, "gfs cat /e2e/during-partition")? == "during-partition\n", "a write changed or doubled");
    Ok(())
}

/// The chart's values that turn the ScaledObject on for this suite: KEDA
/// reads the lag from the operator (the default source) every 5 s; one
/// MiB of lag asks for a chunkserver more, up to 5; 60 s of no lag gives
/// one back (through a drain).
const KEDA_VALUES: &[&str] = &[
    "keda.enabled=true",
    "keda.clusterName=demo",
    "keda.clusterNamespace=gfs",
    "keda.minReplicas=4",
    "keda.maxReplicas=5",
    "keda.pollingInterval=5",
    "keda.cooldownPeriod=30",
    "keda.threshold=1048576",
    "keda.scaleDownStabilizationSeconds=60",
];

fn helm_upgrade(k: &Kube, set: &[&str]) -> Result<()> {
    let chart = repo().join("charts/gfs-operator");
    let mut args = vec!["upgrade", "gfs-operator", chart.to_str().expect("utf-8 path"), "-n", OP_NS, "--reuse-values"];
    for v in set {
        args.extend(["--set", v]);
    }
    args.extend(["--wait", "--timeout", "180s"]);
    k.helm(&args)?;
    Ok(())
}

fn desired_chunkservers(k: &Kube) -> Result<i64> {
    k.json(&["-n", NS, "get", "gfsc", CLUSTER])?["spec"]["chunkservers"]["replicas"]
        .as_i64()
        .context("no spec.chunkservers.replicas")
}

fn sts_replicas(k: &Kube) -> Result<i64> {
    let sts = k.json(&["-n", NS, "get", "statefulset", &format!("{CLUSTER}-chunkserver")])?;
    sts["spec"]["replicas"].as_i64().context("chunkserver StatefulSet without spec.replicas")
}

/// The master's view of the chunkserver at pod `pod` (the live one, or
/// the last one listed).
fn server_at(st: &Value, pod: &str) -> Option<Value> {
    let at: Vec<&Value> =
        st["servers"].as_array()?.iter().filter(|s| pod_of(s["address"].as_str().unwrap_or_default()) == pod).collect();
    at.iter().find(|s| s["alive"] == true).or(at.last()).map(|s| (*s).clone())
}

/// Step 6: the chart's ScaledObject, read by the real KEDA. A file whose
/// replication is raised to 5 on 4 chunkservers is lag that only a fifth
/// chunkserver can clear: KEDA scales up; once the fifth replicas exist
/// and the goal is back at 3, KEDA scales down, and the operator drains
/// the fifth chunkserver before its StatefulSet shrinks, while the drain's
/// own copies never count as lag (no scale-up in the middle of it).
pub fn keda_scaling(k: &Kube, data: &Data) -> Result<()> {
    helm_upgrade(k, KEDA_VALUES)?;
    let so = format!("{CLUSTER}-chunkservers");
    wait_for("the ScaledObject Ready (KEDA reads the operator's lag)", Duration::from_secs(120), || {
        let obj = k.json(&["-n", NS, "get", "scaledobject", &so])?;
        Ok(condition(&obj, "Ready").is_some_and(|c| c["status"] == "True").then_some(()))
    })?;
    ensure!(desired_chunkservers(k)? == 4, "KEDA changed the count with no lag");
    let fifth = format!("{CLUSTER}-chunkserver-4");

    // Lag that 4 chunkservers cannot clear.
    let t = Instant::now();
    k.sh(NS, CLIENT, "gfs setrep --allow-under-replicated 5 /e2e/big")?;
    wait_for("KEDA to ask for a fifth chunkserver", Duration::from_secs(180), || {
        Ok((desired_chunkservers(k)? == 5).then_some(()))
    })?;
    eprintln!("lag of 200 MiB: KEDA set 5 chunkservers after {:.1} s", t.elapsed().as_secs_f64());
    wait_for("5 replicas of every chunk, one on the new chunkserver", Duration::from_secs(300), || {
        Ok(replicas_ok(k, "/e2e/big", 5)?.filter(|sets| sets.iter().all(|p| p.contains(&fifth))))
    })?;
    eprintln!("5 replicas {:.1} s after the lag appeared", t.elapsed().as_secs_f64());

    // Back to 3; new data lands on the emptiest server, the new one, so
    // that its drain has something to copy.
    k.sh(NS, CLIENT, "gfs setrep -w 3 /e2e/big")?;
    let mut more = Vec::new();
    for i in 0..3 {
        let f = format!("/e2e/more-{i}");
        let out = k.sh(
            NS,
            CLIENT,
            &format!("head -c 67108864 /dev/urandom > /work/m && gfs put /work/m {f} && sha256sum /work/m"),
        )?;
        more.push((f, out.split_whitespace().next().unwrap_or_default().to_string()));
        let held = server_at(&status(k)?, &fifth).and_then(|s| s["chunk_count"].as_u64()).unwrap_or(0);
        if held > 0 {
            eprintln!("{fifth} holds {held} chunk(s) before the scale-down");
            break;
        }
    }
    let fifth_id = server_at(&status(k)?, &fifth).and_then(|s| s["id"].as_str().map(str::to_string));
    let fifth_id = fifth_id.context("the fifth chunkserver is not registered")?;

    // KEDA lowers the count; the StatefulSet keeps the pod until the
    // master has copied everything off it, and nothing scales back up.
    let t = Instant::now();
    wait_for("KEDA to give the fifth chunkserver back", Duration::from_secs(300), || {
        Ok((desired_chunkservers(k)? == 4).then_some(()))
    })?;
    eprintln!("no lag: KEDA set 4 chunkservers after {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    // (wait_for retries errors: a broken rule is recorded and ends the wait.)
    let (mut drain_seen, mut held_while_draining, mut broken) = (false, 0u64, None::<String>);
    wait_for("the StatefulSet at 4 after the drain", Duration::from_secs(300), || {
        if desired_chunkservers(k)? != 4 {
            broken = Some("the count went back up during the drain".into());
            return Ok(Some(()));
        }
        let gc = k.json(&["-n", NS, "get", "gfsc", CLUSTER])?;
        let st = status(k)?;
        if gc["status"]["drain"]["ordinal"] == 4 {
            drain_seen = true;
            let held = server_at(&st, &fifth).and_then(|s| s["chunk_count"].as_u64()).unwrap_or(0);
            held_while_draining = held_while_draining.max(held);
        }
        if sts_replicas(k)? > 4 {
            return Ok(None);
        }
        // Shrunk: only after the master called the server drained.
        let state = st["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == fifth_id.as_str())
            .map(|s| s["state"].as_str().unwrap_or_default().to_string());
        if state.as_deref() != Some("decommissioned") {
            broken = Some(format!("the StatefulSet shrank while {fifth} ({fifth_id}) was {state:?}"));
        }
        Ok(Some(()))
    })?;
    if let Some(b) = broken {
        anyhow::bail!(b);
    }
    ensure!(drain_seen, "the scale-down never drained {fifth} (status.drain not seen)");
    eprintln!(
        "{fifth} drained ({held_while_draining} chunk(s) on it during the drain) and removed {:.1} s after KEDA's scale-down",
        t.elapsed().as_secs_f64()
    );
    ensure!(desired_chunkservers(k)? == 4, "the count went back up after the drain");
    ready_pods(k, "chunkserver", 4, Duration::from_secs(120))?;
    full_replication(k)?;
    ensure!(sha_of(k, "/e2e/big")? == *data.big_sum.borrow(), "/e2e/big changed");
    for (f, sum) in &more {
        ensure!(sha_of(k, f)? == *sum, "{f} changed");
    }
    // KEDA off again: the later steps own the count.
    helm_upgrade(k, &["keda.enabled=false"])?;
    Ok(())
}

/// The reader loop of step 7: `gfs cat` of /e2e/big, one line per read
/// (its sha256, or FAIL with the exit status), until /work/stop exists.
const READER: &str = "rm -f /work/stop /work/reads /work/reads.err; \
    setsid sh -c 'set -o pipefail; while [ ! -f /work/stop ]; do \
      if s=$(gfs cat /e2e/big 2>>/work/reads.err | sha256sum); then echo \"${s%% *}\" >> /work/reads; \
      else echo \"FAIL $?\" >> /work/reads; fi; done; echo done >> /work/reads' </dev/null >/dev/null 2>&1 &";

/// Image tag step 7 rolls to.
const NEXT_TAG: &str = "dev-next";

fn image_of(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string()
}

/// Step 7: a new image tag for masters and chunkservers. The operator
/// restarts the masters one at a time, followers first and the leader
/// last, and lets the chunkservers' StatefulSet update one pod at a time;
/// a reader loop in the client pod sees every read succeed, byte-equal.
pub fn rolling_upgrade(k: &Kube, data: &Data) -> Result<()> {
    for image in ["gfs-master", "gfs-chunkserver"] {
        k.cluster(&["tag", &format!("localhost/{image}:dev"), &format!("localhost/{image}:{NEXT_TAG}")])?;
    }
    k.sh(NS, CLIENT, READER)?;
    wait_for("the reader's first read", Duration::from_secs(60), || {
        Ok(k.sh(NS, CLIENT, "cat /work/reads 2>/dev/null || true")?.lines().next().map(str::to_string))
    })?;
    // Before the patch: who leads, and each master's pod uid.
    let mut leader = leader_pod(&status(k)?).context("no leader before the rollout")?;
    let mut uids: std::collections::BTreeMap<String, String> = Default::default();
    let mut seen_with: std::collections::BTreeMap<String, String> = Default::default();
    for p in component_pods(k, "master")? {
        uids.insert(name(&p), p["metadata"]["uid"].as_str().unwrap_or_default().to_string());
        seen_with.insert(name(&p), leader.clone());
    }
    let t = Instant::now();
    let patch = format!(
        r#"{{"spec":{{"images":{{"master":"localhost/gfs-master:{NEXT_TAG}","chunkserver":"localhost/gfs-chunkserver:{NEXT_TAG}"}}}}}}"#
    );
    k.kubectl(&["-n", NS, "patch", "gfsc", CLUSTER, "--type", "merge", "-p", &patch])?;
    let next = |p: &Value| image_of(p).ends_with(&format!(":{NEXT_TAG}"));
    // Watch the masters: which pod goes, whether it led, and how many of
    // the others already ran the new tag; never two masters down at once.
    // (pod, the leader when it went, masters on the new tag besides it)
    let mut restarts: Vec<(String, String, usize)> = Vec::new();
    let (mut min_masters, mut min_chunkservers, mut elections) = (3usize, 4usize, 0usize);
    wait_for("every master and chunkserver on the new tag, Ready", Duration::from_secs(600), || {
        let masters = component_pods(k, "master")?;
        let chunkservers = component_pods(k, "chunkserver")?;
        let up = |pods: &[Value]| {
            pods.iter().filter(|p| pod_ready(p) && p["metadata"]["deletionTimestamp"].is_null()).count()
        };
        min_masters = min_masters.min(up(&masters));
        min_chunkservers = min_chunkservers.min(up(&chunkservers));
        for p in &masters {
            let (pod, uid) = (name(p), p["metadata"]["uid"].as_str().unwrap_or_default().to_string());
            let gone = p["metadata"]["deletionTimestamp"].is_string();
            if (gone || uids.get(&pod).is_some_and(|u| *u != uid)) && !restarts.iter().any(|(r, ..)| *r == pod) {
                let others_new = masters.iter().filter(|o| name(o) != pod && next(o)).count();
                // The leader as known when the pod was last seen running
                // (a status read after that may already show a successor).
                let then = seen_with.get(&pod).cloned().unwrap_or_default();
                restarts.push((pod.clone(), then, others_new));
            } else if !gone && uids.get(&pod).is_none_or(|u| *u == uid) {
                seen_with.insert(pod.clone(), leader.clone());
            }
            uids.entry(pod).or_insert(uid);
        }
        if let Ok(st) = status(k)
            && let Some(l) = leader_pod(&st)
            && l != leader
        {
            eprintln!("leader: {l} (term {}) at {:.1} s", term(&st), t.elapsed().as_secs_f64());
            leader = l;
            elections += 1;
        }
        let done = |pods: &[Value], n: usize| pods.len() == n && pods.iter().all(|p| next(p) && pod_ready(p));
        Ok((done(&masters, 3) && done(&chunkservers, 4)).then_some(()))
    })?;
    eprintln!(
        "rolled to :{NEXT_TAG} in {:.1} s; master restarts (pod, leader then, others on the new tag): {restarts:?}",
        t.elapsed().as_secs_f64()
    );
    ensure!(min_masters >= 2, "{} masters Ready at one point (the rollout took more than one down)", min_masters);
    ensure!(min_chunkservers >= 3, "{} chunkservers Ready at one point (more than one down)", min_chunkservers);
    ensure!(restarts.len() == 3, "master restarts seen: {restarts:?}");
    // A leader goes only once both other masters run the new tag.
    for (pod, leader_then, others_new) in &restarts {
        ensure!(pod != leader_then || *others_new == 2, "leader {pod} restarted before the followers: {restarts:?}");
    }
    // Restarted followers do not campaign (election grace): the leader
    // changes once, when the old leader itself restarts.
    ensure!(elections <= 1, "{elections} leader changes during the rollout (want at most 1): {restarts:?}");
    // The reader stops; every read it made succeeded and read the same bytes.
    k.sh(NS, CLIENT, "touch /work/stop")?;
    let reads = wait_for("the reader to stop", Duration::from_secs(60), || {
        let r = k.sh(NS, CLIENT, "cat /work/reads")?;
        Ok(r.lines().last().is_some_and(|l| l == "done").then_some(r))
    })?;
    let reads: Vec<&str> = reads.lines().filter(|l| *l != "done").collect();
    let failed = reads.iter().filter(|l| **l != data.big_sum.borrow().as_str()).count();
    let errors = k.sh(NS, CLIENT, "tail -n 5 /work/reads.err")?;
    eprintln!("{} reads of /e2e/big during the rollout, {failed} failed or differed", reads.len());
    ensure!(failed == 0, "{failed} of {} reads failed or differed; last errors:\n{errors}", reads.len());
    // The loop reads back to back from before the patch until after the
    // last pod is Ready: some read was in flight at every moment.
    ensure!(reads.len() >= 3, "only {} reads during the rollout", reads.len());
    let st = status(k)?;
    let up = st["masters"].as_array().map(|m| m.iter().filter(|m| m["reachable"] == true).count());
    ensure!(up == Some(3) && leader_pod(&st).is_some(), "masters after the rollout: {}", st["masters"]);
    full_replication(k)?;
    Ok(())
}

/// GfsCluster delete (finalizer; PVCs kept by the default whenDeleted:
/// Retain), then `helm uninstall` (the CRD stays: resource-policy keep).
pub fn uninstall(k: &Kube) -> Result<()> {
    let pvcs = items(&k.json(&["-n", NS, "get", "pvc"])?).len();
    k.kubectl(&["-n", NS, "delete", "gfsc", CLUSTER, "--timeout", "120s"])?;
    wait_for("the cluster's pods and StatefulSets gone", Duration::from_secs(180), || {
        let sts = items(&k.json(&["-n", NS, "get", "statefulsets"])?).len();
        let pods = component_pods(k, "master")?.len() + component_pods(k, "chunkserver")?.len();
        Ok((sts == 0 && pods == 0).then_some(()))
    })?;
    let kept = items(&k.json(&["-n", NS, "get", "pvc"])?).len();
    // 7, and the one a scale-down retired (whenScaled: Retain) if step 6 ran.
    ensure!(kept == pvcs && kept >= 7, "{kept} of {pvcs} PVCs kept (whenDeleted: Retain keeps them all)");
    k.helm(&["uninstall", "gfs-operator", "-n", OP_NS, "--wait"])?;
    // Helm waits for the Deployment; its pods take their grace period.
    wait_for("the operator's pods gone after helm uninstall", Duration::from_secs(120), || {
        Ok(items(&k.json(&["-n", OP_NS, "get", "deploy,pods"])?).is_empty().then_some(()))
    })?;
    k.kubectl(&["get", "crd", "gfsclusters.gfs.dev"])?;
    Ok(())
}

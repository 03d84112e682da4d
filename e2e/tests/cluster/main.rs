//! gfs on a real Kubernetes cluster (`e2e/cluster`: 2 nodes, each its own
//! containerd + kubelet; CoreDNS; local-path volumes; KEDA): the chart
//! installs the operator, a GfsCluster becomes real pods on real volumes,
//! a client pod moves data through the Service, and the cluster survives
//! losing its leader master, a chunkserver with its volume, and a node.
//!
//! Ignored by default: it needs root and the cluster's parts (built once
//! into ~/.cache/gfs/k8s, half an hour cold). `scripts/test.sh` runs it:
//! `cargo test -p gfs-e2e --test cluster -- --ignored --nocapture`
//! (`GFS_CLUSTER_KUBECONFIG` reuses a running cluster).

mod kube;
mod phases;

use std::time::Instant;

use anyhow::Result;

use kube::Kube;

/// Namespace of the operator release.
pub const OP_NS: &str = "gfs-system";
/// Namespace of the GfsCluster (Pod Security "restricted" enforced), as
/// in `e2e/k8s/gfscluster.yaml` (the README's example, applied as is).
pub const NS: &str = "gfs";
/// The GfsCluster's name.
pub const CLUSTER: &str = "demo";

fn step(name: &str, f: impl FnOnce() -> Result<()>) {
    let t = Instant::now();
    eprintln!("\n=== {name}");
    if let Err(e) = f() {
        panic!("{name}: {e:#}");
    }
    eprintln!("=== {name}: ok in {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs root and e2e/cluster (scripts/test.sh runs it)"]
fn gfs_on_a_real_cluster() {
    let k = Kube::connect().expect("cluster");
    step("clean up an earlier run", || phases::clean(&k));
    step("1. helm install: the operator is Ready and holds the Lease", || phases::install_operator(&k));
    step("2. a GfsCluster of 3 masters and 4 chunkservers becomes Available", || phases::create_cluster(&k));
    let data = phases::Data::default();
    step("3. a client pod writes 200 MiB through the Service and reads it back", || phases::client_io(&k, &data));
    // GFS_CLUSTER_STEPS=6,8 runs only those steps after 1-3 (iterating on one).
    let wanted = std::env::var("GFS_CLUSTER_STEPS").ok();
    let on = |s: &str| wanted.as_deref().is_none_or(|w| w.split(',').any(|x| x.trim() == s));
    if on("4") {
        step("4a. the leader master pod is deleted: a new leader, nothing lost", || phases::lose_leader(&k, &data));
        step("4b. a chunkserver pod and its PVC are deleted: full replication, it rejoins", || {
            phases::lose_chunkserver(&k, &data)
        });
    }
    if on("5") {
        step("5a. a node loses power: chunkservers come back on the other node, 3 replicas again", || {
            phases::lose_node(&k, &data)
        });
        step("5b. a node is cut off with its pods running: replaced, old processes fenced, nothing lost", || {
            phases::partition_node(&k, &data)
        });
    }
    if on("6") {
        step("6. KEDA scales chunkservers up on lag and back down through a drain", || phases::keda_scaling(&k, &data));
    }
    if on("7") {
        step("7. a new image tag rolls masters (leader last) and chunkservers; every read succeeds", || {
            phases::rolling_upgrade(&k, &data)
        });
    }
    // GFS_CLUSTER_KEEP=1 leaves the cluster as the last step left it, to look at.
    if std::env::var_os("GFS_CLUSTER_KEEP").is_none() && on("8") {
        step("8. GfsCluster delete keeps the PVCs (Retain); helm uninstall removes the operator", || {
            phases::uninstall(&k)
        });
    }
}

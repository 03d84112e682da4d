//! The Helm chart (`charts/gfs-operator`) against the real kube-apiserver of
//! `common`: `helm template` with default values and with every option on
//! (`ci/all-on-values.yaml`) is applied object by object (server-side apply)
//! and each object is read back; then the operator runs with a bound token of
//! the chart's own ServiceAccount, so the chart's RBAC is what authorizes it,
//! and must create a GfsCluster's StatefulSets. The KEDA ScaledObject must
//! target an existing GfsCluster whose CRD has a scale subresource, and its
//! Prometheus query must name a metric that `gfs-master` really serves.
//!
//! The ServiceMonitor and ScaledObject kinds come from test-only CRDs in
//! `tests/fixtures/` (open schemas): no Prometheus Operator or KEDA runs here.
//! helm comes from `scripts/helm.sh` (installed once into the gfs cache).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use gfs_operator::crd::GfsCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};
use serde_json::Value;

const CHART: &str = "charts/gfs-operator";
const ALL_ON: &str = "charts/gfs-operator/ci/all-on-values.yaml";
const APPLIER: &str = "gfs-chart-test";

fn helm() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/helm.sh")).output().expect("run scripts/helm.sh");
    assert!(out.status.success(), "scripts/helm.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().expect("helm path").trim())
}

/// `helm template RELEASE charts/gfs-operator -n NS --include-crds ARGS...`.
fn helm_template(release: &str, ns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .current_dir(repo_root())
        .args(["template", release, CHART, "--namespace", ns, "--include-crds"])
        .args(args)
        .output()
        .expect("run helm template");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a multi-document YAML stream (comment-only documents dropped).
fn docs(yaml: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut flush = |cur: &mut String| {
        if cur.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
            out.push(serde_saphyr::from_str::<Value>(cur).unwrap_or_else(|e| panic!("bad YAML: {e}\n{cur}")));
        }
        cur.clear();
    };
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            flush(&mut cur);
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    flush(&mut cur);
    out
}

fn render(release: &str, ns: &str, args: &[&str]) -> Vec<Value> {
    docs(&helm_template(release, ns, args).unwrap_or_else(|e| panic!("helm template failed: {e}")))
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs.iter().map(|o| o["kind"].as_str().unwrap().to_string()).collect();
    k.sort();
    k
}

async fn wait_established(admin: &Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    wait(name, || {
        let crds = crds.clone();
        async move {
            let c = crds.get(name).await.ok()?;
            c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        }
    })
    .await;
}

/// The dynamic API of an object (namespaced in its own or the default namespace).
async fn api_for(client: &Client, obj: &Value, default_ns: &str) -> Api<DynamicObject> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), obj["apiVersion"].as_str().unwrap().to_string()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap());
    // Discovery of a just-established CRD can lag a moment.
    let (ar, caps) =
        wait(&format!("discovery of {gvk:?}"), || async { discovery::pinned_kind(client, &gvk).await.ok() }).await;
    match caps.scope {
        Scope::Namespaced => {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or(default_ns);
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    }
}

/// Server-side applies every object (CRDs first), then reads each one back.
async fn apply_all(admin: &Client, objs: &[Value], ns: &str) {
    let pp = PatchParams::apply(APPLIER).force();
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = objs.iter().partition(|o| o["kind"] == "CustomResourceDefinition");
    for o in crds.iter().chain(rest.iter()) {
        let name = o["metadata"]["name"].as_str().unwrap();
        let api = api_for(admin, o, ns).await;
        api.patch(name, &pp, &Patch::Apply(o))
            .await
            .unwrap_or_else(|e| panic!("apiserver refused {} {name}: {e}", o["kind"]));
        if o["kind"] == "CustomResourceDefinition" {
            wait_established(admin, name).await;
        }
    }
    for o in objs {
        let name = o["metadata"]["name"].as_str().unwrap();
        let api = api_for(admin, o, ns).await;
        let got = api.get_opt(name).await.unwrap();
        assert!(got.is_some(), "{} {name} not found after apply", o["kind"]);
    }
}

/// The test-only CRDs of the optional kinds (ServiceMonitor, PodMonitor,
/// PrometheusRule, ScaledObject, TriggerAuthentication).
async fn fixture_crds(admin: &Client) {
    let mut objs = Vec::new();
    for f in [
        "servicemonitor-crd.yaml",
        "podmonitor-crd.yaml",
        "prometheusrule-crd.yaml",
        "scaledobject-crd.yaml",
        "triggerauthentication-crd.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join("operator/tests/fixtures").join(f)).unwrap();
        objs.extend(docs(&text));
    }
    apply_all(admin, &objs, "default").await;
}

async fn get_sts(admin: &Client, ns: &str, name: &str) -> Option<StatefulSet> {
    Api::<StatefulSet>::namespaced(admin.clone(), ns).get_opt(name).await.unwrap()
}

#[test]
fn chart_crd_is_a_copy_of_crds_folder() {
    let root = repo_root();
    let a = std::fs::read_to_string(root.join("crds/gfscluster.yaml")).unwrap();
    let b = std::fs::read_to_string(root.join("charts/gfs-operator/files/gfscluster.yaml")).unwrap();
    assert!(a == b, "charts/gfs-operator/files/gfscluster.yaml differs from crds/gfscluster.yaml: copy it");
    // A template (so `helm upgrade` updates it) that `helm uninstall` keeps.
    let crd = find(&render("gfs", "default", &[]), "CustomResourceDefinition")[0].clone();
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(crd["metadata"]["name"], "gfsclusters.gfs.dev");
    let off = render("gfs", "default", &["--set", "crds.install=false"]);
    assert!(find(&off, "CustomResourceDefinition").is_empty(), "crds.install=false still renders the CRD");
}

#[test]
fn schema_refuses_bad_values() {
    for bad in [
        "replicas=9",
        "operator.logFormat=xml",
        "nosuchkey=1",
        "image.pullPolicy=Sometimes",
        "keda.prometheus.threshold=lots",
        "keda.threshold=lots",
        "keda.source=graphite",
        "example.masters.replicas=2",
        "watchNamespace=Not_A_Namespace",
    ] {
        let err = helm_template("gfs", "default", &["--set", bad]).expect_err(bad);
        assert!(err.contains("schema"), "{bad}: {err}");
    }
    helm_template("gfs", "default", &[]).expect("defaults render");
    helm_template("gfs", "default", &["-f", ALL_ON]).expect("all-on values render");
}

#[tokio::test]
async fn chart_applies_and_operator_runs_under_its_rbac() {
    let (admin, _) = setup().await;
    fixture_crds(&admin).await;
    let gfs = Gfs::start(3).await;

    // Default values: cluster-wide manager ClusterRole, no optional parts.
    let ns1 = namespace(&admin, "chart-def").await;
    let def = render("gfs", &ns1, &[]);
    assert_eq!(
        kinds(&def),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    apply_all(&admin, &def, &ns1).await;
    let dep = find(&def, "Deployment")[0];
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "localhost/gfs-operator:dev");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "run");
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{args:?}");
    // Every flag the Deployment passes is one `gfs-operator run` knows.
    let help = Command::new(bin_path("gfs-operator")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(help.contains(&format!("{flag} ")), "gfs-operator run has no {flag}:\n{help}");
    }
    assert!(args.iter().any(|a| a.starts_with("--admin-listen=")), "{args:?}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    // Every option on, watching only the release namespace: namespaced Roles.
    let ns2 = namespace(&admin, "chart-all").await;
    let all = render("gfs", &ns2, &["-f", ALL_ON, "--set", &format!("watchNamespace={ns2}")]);
    for k in [
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
        "NetworkPolicy",
        "GfsCluster",
        "ConfigMap",
        "PodDisruptionBudget",
    ] {
        assert_eq!(find(&all, k).len(), 1, "{k} missing from the all-on render");
    }
    // The Grafana dashboard ConfigMap carries the sidecar label and valid
    // dashboard JSON (its metric names are checked against a live scrape in
    // e2e/tests/metrics.rs).
    let dash = find(&all, "ConfigMap")[0];
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dash["data"]["gfs-overview.json"].as_str().unwrap()).unwrap();
    assert!(!json["panels"].as_array().unwrap().is_empty());
    assert_eq!(
        find(&all, "ClusterRole").len(),
        1,
        "only Nodes, PVs and StorageClasses are cluster-wide with watchNamespace"
    );
    let cr = find(&all, "ClusterRole")[0];
    let rules = cr["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["resources"][0], "nodes");
    assert_eq!(
        (rules[1]["resources"][0].as_str(), rules[1]["verbs"].to_string().as_str()),
        (Some("storageclasses"), r#"["get"]"#)
    );
    let dep = find(&all, "Deployment")[0];
    assert_eq!(dep["spec"]["replicas"], 2);
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains(&format!("--namespace={ns2}")), "{args}");
    // Two replicas: a PDB that lets one go at a time, selecting exactly the
    // operator's pods.
    let pdb = find(&all, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let sel = pdb["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(!sel.is_empty());
    for (k, v) in sel {
        assert_eq!(&dep["spec"]["template"]["metadata"]["labels"][k], v, "PDB selector {k} is not a pod label");
    }
    // KEDA owns spec.chunkservers.replicas: the example's own autoscaler is off.
    let example = find(&all, "GfsCluster")[0];
    assert_eq!(example["spec"]["autoscaling"]["enabled"], false);
    // TLS on, and the metrics token: the example's pods, the operator and
    // both monitors use the same Secret key.
    assert_eq!(example["spec"]["tls"]["enabled"], true);
    assert_eq!(
        example["spec"]["metrics"]["authTokenSecret"],
        serde_json::json!({"name": "gfs-metrics-token", "key": "token"})
    );
    for k in ["ServiceMonitor", "PodMonitor"] {
        let ep = &find(&all, k)[0]["spec"][if k == "PodMonitor" { "podMetricsEndpoints" } else { "endpoints" }][0];
        assert_eq!(ep["authorization"]["type"], "Bearer", "{k}");
        assert_eq!(ep["authorization"]["credentials"]["name"], "gfs-metrics-token", "{k}");
    }
    let op_pod = &dep["spec"]["template"]["spec"];
    let env = op_pod["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "GFS_ADMIN_AUTH_TOKEN_FILE" && e["value"] == "/etc/gfs/metrics-auth/token")
    );
    assert_eq!(op_pod["volumes"][0]["secret"]["secretName"], "gfs-metrics-token");
    assert_eq!(op_pod["volumes"][0]["secret"]["defaultMode"], 0o400);
    // Secrets and (cert-manager may be installed) its objects, nothing more.
    let role =
        find(&all, "Role").into_iter().find(|r| r["metadata"]["name"].as_str().unwrap().ends_with("-manager")).unwrap();
    let rule = |res: &str| {
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"].as_array().unwrap().iter().any(|x| x == res))
            .cloned()
    };
    assert_eq!(
        rule("secrets").expect("secrets rule")["verbs"],
        serde_json::json!(["get", "list", "watch", "create", "patch"])
    );
    assert_eq!(rule("certificates").expect("cert-manager rule")["apiGroups"][0], "cert-manager.io");
    let never = render("gfs", &ns2, &["-f", ALL_ON, "--set", "tls.certManager=never"]);
    let never_role = find(&never, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"].as_str().unwrap().ends_with("-manager"))
        .unwrap();
    assert!(!never_role["rules"].to_string().contains("cert-manager.io"), "no cert-manager RBAC with never");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &ns2);
    let token: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gfs-metrics-token"}, "stringData": {"token": "chart-test-token"}
    }))
    .unwrap();
    secrets.create(&Default::default(), &token).await.unwrap();
    apply_all(&admin, &all, &ns2).await;

    // The ScaledObject's target resolves to an existing GfsCluster, whose CRD
    // has a scale subresource on spec.chunkservers.replicas that answers.
    let so = find(&all, "ScaledObject")[0];
    let target = &so["spec"]["scaleTargetRef"];
    assert_eq!(
        (target["apiVersion"].as_str(), target["kind"].as_str()),
        (Some("gfs.dev/v1alpha1"), Some("GfsCluster"))
    );
    let so_ns = so["metadata"]["namespace"].as_str().unwrap();
    let target_name = target["name"].as_str().unwrap();
    let gcs: Api<GfsCluster> = Api::namespaced(admin.clone(), so_ns);
    let gc = gcs.get(target_name).await.expect("ScaledObject target GfsCluster exists");
    assert!(
        !gc.spec.autoscaling.as_ref().is_some_and(|a| a.enabled),
        "KEDA target must have spec.autoscaling.enabled=false"
    );
    let crd = Api::<CustomResourceDefinition>::all(admin.clone()).get("gfsclusters.gfs.dev").await.unwrap();
    let v = crd.spec.versions.iter().find(|v| v.name == "v1alpha1" && v.served).expect("v1alpha1 served");
    let scale = v.subresources.as_ref().and_then(|s| s.scale.as_ref()).expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.chunkservers.replicas");
    let req = http::Request::get(format!("/apis/gfs.dev/v1alpha1/namespaces/{so_ns}/gfsclusters/{target_name}/scale"))
        .body(Vec::new())
        .unwrap();
    let sc: Value = serde_json::from_str(&admin.request_text(req).await.unwrap()).unwrap();
    assert_eq!(sc["kind"], "Scale");
    assert_eq!(sc["spec"]["replicas"], 3);

    // The operator under the chart's ServiceAccount (watchNamespace RBAC):
    // it must reconcile the example cluster into StatefulSets and status.
    let sa = find(&all, "ServiceAccount")[0]["metadata"]["name"].as_str().unwrap().to_string();
    let op_client = sa_client(&admin, &ns2, &sa).await;
    let op = Operator::start(op_client, &ns2, &gfs.master, "chart-op");
    let name = example["metadata"]["name"].as_str().unwrap().to_string();
    let (cs_sts, m_sts) = (format!("{name}-chunkserver"), format!("{name}-master"));
    let sts = wait("example chunkserver sts", || get_sts(&admin, &ns2, &cs_sts)).await;
    assert_eq!(sts.spec.replicas, Some(3));
    wait("example master sts", || get_sts(&admin, &ns2, &m_sts)).await;
    wait("example status", || async {
        let gc = gcs.get(&name).await.ok()?;
        gc.status.filter(|s| s.observed_generation.is_some() && !s.conditions.is_empty())
    })
    .await;
    wait("example finalizer", || async { gcs.get(&name).await.ok().filter(|g| !g.finalizers().is_empty()) }).await;
    // The chart's RBAC lets the operator write the cluster's certificates
    // and read the metrics token (no MetricsTokenSecretInvalid).
    for s in ["ca", "master-tls", "chunkserver-tls", "admin-tls"] {
        let n = format!("{name}-{s}");
        wait(&n, || async { secrets.get_opt(&n).await.unwrap() }).await;
    }
    let gc = gcs.get(&name).await.unwrap();
    let reasons: Vec<String> = gc.status.unwrap().conditions.into_iter().map(|c| c.reason).collect();
    assert!(!reasons.iter().any(|r| r == "MetricsTokenSecretInvalid"), "{reasons:?}");
    op.shutdown().await;

    // And under the default (all-namespaces) RBAC of the first release.
    let sa = find(&def, "ServiceAccount")[0]["metadata"]["name"].as_str().unwrap().to_string();
    let op_client = sa_client(&admin, &ns1, &sa).await;
    let op = Operator::start(op_client, &ns1, &gfs.master, "chart-op-default");
    create_cluster(&admin, &ns1, cluster_json("plain", 3)).await;
    wait("default-rbac chunkserver sts", || get_sts(&admin, &ns1, "plain-chunkserver")).await;
    wait("default-rbac master sts", || get_sts(&admin, &ns1, "plain-master")).await;
    op.shutdown().await;
}

/// The metric name of a `max(NAME{...})`-style PromQL query.
/// The metric names (`gfs_...`) a PromQL query reads.
fn metrics_of(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(i) = rest.find("gfs_") {
        let name: String =
            rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

fn free_addr() -> String {
    gfs_testkit::free_addr().to_string()
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The alerts group by the labels the PodMonitor's relabelling adds and
/// read only metrics the binaries serve (e2e/tests/metrics.rs checks each
/// of these families on real processes).
#[test]
fn alerts_read_served_metrics_and_the_pod_monitor_labels() {
    let all = render("gfs", "gfs-ci", &["-f", ALL_ON]);
    let rules = find(&all, "PrometheusRule")[0]["spec"]["groups"][0]["rules"].as_array().unwrap().clone();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(alerts, ["GfsUnderReplicated", "GfsNoLeader", "GfsChunkserverDown", "GfsDiskNearlyFull"]);
    let mut used: Vec<String> = rules
        .iter()
        .flat_map(|r| metrics_of(r["expr"].as_str().unwrap()))
        .filter(|m| !m.starts_with("gfs_cluster") && !m.starts_with("gfs_component"))
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(
        used,
        [
            "gfs_chunkserver_capacity_bytes",
            "gfs_chunkserver_free_bytes",
            "gfs_master_drain_backlog_bytes",
            "gfs_master_raft_is_leader",
            "gfs_master_replication_backlog_bytes"
        ]
    );
    let pm = find(&all, "PodMonitor")[0];
    let targets: Vec<&str> = pm["spec"]["podMetricsEndpoints"][0]["relabelings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["targetLabel"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["gfs_cluster", "gfs_component"]);
    for r in &rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(
            !expr.contains("by (") || expr.contains("gfs_cluster"),
            "{}: groups without the cluster label: {expr}",
            r["alert"]
        );
    }
}

#[test]
fn keda_reads_the_lag_the_operator_serves_for_that_cluster() {
    let all = render("gfs", "gfs-ci", &["-f", ALL_ON]);
    let so = find(&all, "ScaledObject")[0];
    let trig = &so["spec"]["triggers"][0];
    assert_eq!((trig["type"].as_str(), trig["metricType"].as_str()), (Some("metrics-api"), Some("Value")));
    let url = trig["metadata"]["url"].as_str().unwrap();
    // The operator's Service, on its port...
    let svc = find(&all, "Service").into_iter().find(|s| s["metadata"]["name"] == "gfs-gfs-operator-metrics").unwrap();
    let port = svc["spec"]["ports"][0]["port"].as_u64().unwrap();
    let base = format!("http://gfs-gfs-operator-metrics.gfs-ci.svc:{port}");
    let path = url.strip_prefix(&base).unwrap_or_else(|| panic!("{url} is not on {base}"));
    // ...at a path the operator parses into the ScaledObject's target...
    let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
    let ns = so["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(gfs_operator::http::scaling_target(path), Ok((ns, target)));
    // ...and a key its answer has.
    let mut gc = GfsCluster::new(
        target,
        serde_json::from_value(serde_json::json!({
            "masters": {"replicas": 1, "storage": {"size": "1Gi"}},
            "chunkservers": {"replicas": 3, "storage": {"size": "1Gi"}},
        }))
        .unwrap(),
    );
    gc.status = Some(gfs_operator::crd::GfsClusterStatus {
        observed_generation: Some(1),
        replication_lag_bytes: 42,
        ..Default::default()
    });
    let (_, _, body) = gfs_operator::http::scaling_answer(ns, target, Some(&gc));
    let answer: Value = serde_json::from_str(&body).unwrap();
    let key = trig["metadata"]["valueLocation"].as_str().unwrap();
    assert_eq!(answer[key], 42, "{key} in {body}");
    // With metricsAuth the trigger sends the operator's bearer token.
    assert_eq!(trig["metadata"]["authMode"], "bearer");
    let ta = find(&all, "TriggerAuthentication")[0];
    assert_eq!(ta["metadata"]["name"], trig["authenticationRef"]["name"]);
    assert_eq!(ta["spec"]["secretTargetRef"][0]["parameter"], "token");
    assert_eq!(ta["spec"]["secretTargetRef"][0]["name"], "gfs-metrics-token");
}

#[test]
fn keda_query_names_a_metric_the_master_serves() {
    let all = render("gfs", "gfs-ci", &["-f", ALL_ON, "--set", "keda.source=prometheus"]);
    let so = find(&all, "ScaledObject")[0];
    let trig = &so["spec"]["triggers"][0];
    assert_eq!(trig["type"], "prometheus");
    let query = trig["metadata"]["query"].as_str().unwrap();
    let metrics = metrics_of(query);
    assert_eq!(
        metrics,
        ["gfs_master_replication_backlog_bytes", "gfs_master_drain_backlog_bytes"],
        "the backlog less what planned drains owe: {query}"
    );
    assert!(trig["metadata"]["threshold"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);

    // A real gfs-master, scraped on its --admin-listen /metrics.
    let dir = tempfile::tempdir().unwrap();
    let admin_addr = free_addr();
    let mut master = Command::new(bin_path("gfs-master"))
        .args(["--insecure", "--listen", &free_addr(), "--admin-listen", &admin_addr, "--data-dir"])
        .arg(dir.path().join("master"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("master-err.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(status) = master.try_wait().unwrap() {
            let err = std::fs::read_to_string(dir.path().join("master-err.log")).unwrap_or_default();
            panic!(
                "gfs-master exited ({status}) with --admin-listen: the master does not serve /metrics yet, so the \
                 KEDA query's metrics {metrics:?} cannot exist.\n{err}"
            );
        }
        if let Some(b) = http_get(&admin_addr, "/metrics").filter(|b| b.starts_with("HTTP/1.1 200")) {
            break b;
        }
        assert!(Instant::now() < deadline, "gfs-master --admin-listen {admin_addr} never answered /metrics");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = master.kill();
    let _ = master.wait();
    for metric in &metrics {
        let exported = body.lines().any(|l| {
            l.starts_with(&format!("# TYPE {metric} gauge"))
                || l.strip_prefix(metric.as_str()).is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        });
        assert!(exported, "gfs-master /metrics does not export {metric} (the KEDA ScaledObject's query):\n{body}");
    }
}

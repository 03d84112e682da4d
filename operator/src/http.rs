//! The operator's admin port: `/metrics`, `/healthz`, `/readyz` (and the
//! older `/health` alias), served by `gfs_common::admin_http`, and the
//! scaling figures of each GfsCluster for KEDA's `metrics-api` trigger:
//! `GET /scaling/namespaces/NS/gfsclusters/NAME` answers
//! `{"replicationLagBytes": ..., "drainBacklogBytes": ..., ...}` from the
//! cluster's status, which the leading operator keeps current. Any replica
//! answers (it reads the status through the API server), so KEDA needs no
//! Prometheus and the trigger does not depend on which operator pod leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use gfs_common::admin_auth::TokenFile;
use gfs_common::admin_http::{self, Admin, Answer, Handler};
use gfs_common::shutdown::CancellationToken;
use kube::Api;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::crd::GfsCluster;

/// Prefix of the scaling figures.
pub const SCALING_PREFIX: &str = "/scaling/";

/// Deadline of the status read behind one scaling request.
const SCALING_DEADLINE: Duration = Duration::from_secs(5);

/// Readiness of the operator: true once it takes part in leader election
/// (leading or standing by), false again when it stops.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets readiness.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Current readiness.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves the registry and readiness on `listener` until `shutdown`.
/// With `profiling`, also serves `/debug/pprof/profile`; with `scaling`,
/// the scaling figures; with `auth`, `/metrics`, `/debug/pprof/*` and the
/// scaling figures need that bearer token.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: Readiness,
    profiling: bool,
    auth: Option<Arc<TokenFile>>,
    scaling: Option<Scaling>,
    shutdown: CancellationToken,
) {
    let mut admin = Admin::new(registry).ready(move || ready.get()).profiling(profiling).auth(auth);
    if let Some(s) = scaling {
        admin = admin.route(SCALING_PREFIX, s.handler());
    }
    admin_http::serve_listener(listener, admin, shutdown).await
}

/// Reads scaling figures from GfsCluster statuses.
#[derive(Clone)]
pub struct Scaling {
    /// Reads the GfsClusters.
    pub client: kube::Client,
    /// The only namespace the operator watches (and may read), if any.
    pub namespace: Option<String>,
}

impl Scaling {
    fn handler(self) -> Handler {
        Arc::new(move |target| {
            let this = self.clone();
            Box::pin(async move { this.answer(&target).await })
        })
    }

    async fn answer(&self, target: &str) -> Answer {
        let (ns, name) = match scaling_target(target) {
            Ok(t) => t,
            Err(why) => return ("404 Not Found", "application/json", error_json(&why)),
        };
        if self.namespace.as_deref().is_some_and(|w| w != ns) {
            let why = format!("this operator watches only namespace {}", self.namespace.as_deref().unwrap_or(""));
            return ("404 Not Found", "application/json", error_json(&why));
        }
        let api: Api<GfsCluster> = Api::namespaced(self.client.clone(), ns);
        match tokio::time::timeout(SCALING_DEADLINE, api.get_opt(name)).await {
            Ok(Ok(found)) => scaling_answer(ns, name, found.as_ref()),
            Ok(Err(e)) => ("502 Bad Gateway", "application/json", error_json(&format!("reading GfsCluster: {e}"))),
            Err(_) => ("504 Gateway Timeout", "application/json", error_json("the API server did not answer in 5 s")),
        }
    }
}

/// Splits `/scaling/namespaces/NS/gfsclusters/NAME` (a query is ignored);
/// both names must be DNS labels, so nothing else reaches the API server.
pub fn scaling_target(target: &str) -> Result<(&str, &str), String> {
    let path = target.split('?').next().unwrap_or("");
    let want = "want /scaling/namespaces/NAMESPACE/gfsclusters/NAME";
    let rest = path.strip_prefix(SCALING_PREFIX).ok_or(want)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let ["namespaces", ns, "gfsclusters", name] = parts[..] else { return Err(want.into()) };
    for n in [ns, name] {
        if !is_dns_label(n) {
            return Err(format!("{:?} is not a Kubernetes name (a DNS label)", n.chars().take(80).collect::<String>()));
        }
    }
    Ok((ns, name))
}

fn is_dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len()) && s.chars().all(|c| ok(c) || c == '-') && s.starts_with(ok) && s.ends_with(ok)
}

/// The figures of `gc` as JSON: 404 when it does not exist, 503 before its
/// first status.
pub fn scaling_answer(ns: &str, name: &str, gc: Option<&GfsCluster>) -> Answer {
    let Some(gc) = gc else {
        return ("404 Not Found", "application/json", error_json(&format!("no GfsCluster {ns}/{name}")));
    };
    let Some(st) = gc.status.as_ref().filter(|s| s.observed_generation.is_some()) else {
        let why = format!("GfsCluster {ns}/{name} has no status yet (is the operator running?)");
        return ("503 Service Unavailable", "application/json", error_json(&why));
    };
    let body = serde_json::json!({
        "namespace": ns,
        "name": name,
        "replicationLagBytes": st.replication_lag_bytes,
        "drainBacklogBytes": st.drain_backlog_bytes,
        "underReplicatedChunks": st.under_replicated_chunks,
        "chunkservers": st.chunkservers,
        "readyChunkservers": st.ready_chunkservers,
        "draining": st.drain.is_some(),
    });
    ("200 OK", "application/json", format!("{body}\n"))
}

fn error_json(why: &str) -> String {
    format!("{}\n", serde_json::json!({ "error": why }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_readiness_and_health_alias_stays() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut registry = Registry::default();
        let metrics = crate::metrics::Metrics::default().register(&mut registry);
        metrics.count_and_measure();
        let ready = Readiness::default();
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, Arc::new(registry), ready.clone(), false, None, None, token.clone()));
        assert_eq!(admin_http::get(addr, "/readyz").await.unwrap().0, 503);
        assert_eq!(admin_http::get(addr, "/healthz").await.unwrap().0, 200);
        assert_eq!(admin_http::get(addr, "/health").await.unwrap().0, 200);
        ready.set(true);
        assert_eq!(admin_http::get(addr, "/readyz").await.unwrap().0, 200);
        let (code, body) = admin_http::get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert_eq!(admin_http::sample_sum(&body, "gfs_operator_reconciles_total", &[]), Some(1.0));
        assert!(body.contains("gfs_operator_reconcile_duration_seconds_count"), "{body}");
        token.cancel();
    }
    #[test]
    fn scaling_targets_are_checked_before_any_lookup() {
        assert_eq!(scaling_target("/scaling/namespaces/gfs/gfsclusters/demo"), Ok(("gfs", "demo")));
        assert_eq!(scaling_target("/scaling/namespaces/a-1/gfsclusters/b?x=1"), Ok(("a-1", "b")));
        for bad in [
            "/scaling/",
            "/scaling/namespaces/gfs/gfsclusters/demo/extra",
            "/scaling/namespaces/gfs/pods/demo",
            "/scaling/namespaces/GFS/gfsclusters/demo",
            "/scaling/namespaces/gfs/gfsclusters/-demo",
            "/scaling/namespaces/gfs/gfsclusters/de%2fmo",
            "/scaling/namespaces//gfsclusters/demo",
        ] {
            assert!(scaling_target(bad).is_err(), "{bad}");
        }
        let long = format!("/scaling/namespaces/gfs/gfsclusters/{}", "a".repeat(64));
        let err = scaling_target(&long).unwrap_err();
        assert!(err.len() < 200, "the error quotes a bounded part: {err}");
    }

    #[test]
    fn scaling_answer_reads_the_status() {
        use crate::crd::{GfsClusterSpec, GfsClusterStatus};
        assert_eq!(scaling_answer("gfs", "x", None).0, "404 Not Found");
        let spec: GfsClusterSpec = serde_json::from_value(serde_json::json!({
            "masters": {"replicas": 1, "storage": {"size": "1Gi"}},
            "chunkservers": {"replicas": 4, "storage": {"size": "1Gi"}},
        }))
        .unwrap();
        let mut gc = GfsCluster::new("demo", spec);
        assert_eq!(scaling_answer("gfs", "demo", Some(&gc)).0, "503 Service Unavailable");
        gc.status = Some(GfsClusterStatus {
            observed_generation: Some(1),
            replication_lag_bytes: 7 << 20,
            drain_backlog_bytes: 3,
            chunkservers: 4,
            ..Default::default()
        });
        let (code, ctype, body) = scaling_answer("gfs", "demo", Some(&gc));
        assert_eq!((code, ctype), ("200 OK", "application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["replicationLagBytes"], 7 << 20);
        assert_eq!(v["drainBacklogBytes"], 3);
        assert_eq!(v["chunkservers"], 4);
        assert_eq!(v["draining"], false);
    }
}

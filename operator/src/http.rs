//! The operator's admin port: `/metrics`, `/healthz`, `/readyz` (and the
//! older `/health` alias), served by `gfs_common::admin_http`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gfs_common::admin_auth::TokenFile;
use gfs_common::admin_http::{self, Admin};
use gfs_common::shutdown::CancellationToken;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

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
/// With `profiling`, also serves `/debug/pprof/profile`; with `auth`,
/// `/metrics` and `/debug/pprof/*` need that bearer token.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: Readiness,
    profiling: bool,
    auth: Option<Arc<TokenFile>>,
    shutdown: CancellationToken,
) {
    let admin = Admin::new(registry).ready(move || ready.get()).profiling(profiling).auth(auth);
    admin_http::serve_listener(listener, admin, shutdown).await
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
        tokio::spawn(serve(listener, Arc::new(registry), ready.clone(), false, None, token.clone()));
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
}

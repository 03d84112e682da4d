//! The admin HTTP port of every component: `/metrics` (OpenMetrics text of
//! a `prometheus-client` registry), `/healthz` (200 while the process
//! serves) and `/readyz` (200 once the component can do its job).
//!
//! Plain HTTP/1.1 on a tokio listener, one request per connection, no
//! framework: the surface is three GETs and must stay dependency-light.
//!
//! With a token ([`Admin::auth`], `--admin-auth-token-file`), `/metrics`,
//! `/debug/pprof/*` and an extra route ([`Admin::route`]) need
//! `Authorization: Bearer <token>` and answer 401 otherwise; the probes
//! stay open (see [`crate::admin_auth`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Result;
use crate::admin_auth::TokenFile;
use crate::net::bind;

/// Content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Largest request head read (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;

/// A request must arrive within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Most admin connections served at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

/// Longest CPU profile one request may ask for.
const MAX_PROFILE_SECONDS: u64 = 60;

/// Readiness probe: true once the component can do its job.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// Hook run before each `/metrics` encoding (refreshes derived gauges).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// An answer: status line, content type, body.
pub type Answer = (&'static str, &'static str, String);

/// Handler of an extra route: given the request target (path and query),
/// the answer. It runs while the connection holds one of the
/// `MAX_CONNECTIONS` slots, so it must bound its own time.
pub type Handler =
    Arc<dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>> + Send + Sync>;

/// What the admin port serves.
#[derive(Clone)]
pub struct Admin {
    /// Encoded on `/metrics`.
    pub registry: Arc<Registry>,
    /// Answers `/readyz`.
    pub ready: Ready,
    /// Run before each scrape, if set.
    pub refresh: Option<Refresh>,
    /// Serves `/debug/pprof/profile?seconds=N` (a CPU flame graph, SVG)
    /// when set (`--profiling`).
    pub profiling: bool,
    /// Bearer token required by `/metrics`, `/debug/pprof/*` and the extra
    /// route; open when `None`.
    pub auth: Option<Arc<TokenFile>>,
    /// GETs below this path prefix go to the handler.
    pub route: Option<(&'static str, Handler)>,
}

impl Admin {
    /// An admin surface that is always ready.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry, ready: Arc::new(|| true), refresh: None, profiling: false, auth: None, route: None }
    }

    /// Requires `token` for `/metrics` and `/debug/pprof/*` (none: open).
    pub fn auth(mut self, token: Option<Arc<TokenFile>>) -> Self {
        self.auth = token;
        self
    }

    /// True if `path` needs the token and `authorization` (the header's
    /// value) does not carry it.
    pub fn refuses(&self, path: &str, authorization: Option<&str>) -> bool {
        let routed = self.route.as_ref().is_some_and(|(prefix, _)| path.starts_with(prefix));
        let guarded = path == "/metrics" || path.starts_with("/debug/") || routed;
        guarded && self.auth.as_ref().is_some_and(|t| !t.allows(authorization))
    }

    /// Sets the readiness probe.
    pub fn ready(mut self, ready: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.ready = Arc::new(ready);
        self
    }

    /// Turns the CPU profile endpoint on or off.
    pub fn profiling(mut self, on: bool) -> Self {
        self.profiling = on;
        self
    }

    /// Serves GETs below `prefix` (which ends with `/`) with `handler`.
    pub fn route(mut self, prefix: &'static str, handler: Handler) -> Self {
        self.route = Some((prefix, handler));
        self
    }

    /// Sets the pre-scrape hook.
    pub fn refresh(mut self, refresh: impl Fn() + Send + Sync + 'static) -> Self {
        self.refresh = Some(Arc::new(refresh));
        self
    }

    /// Answers one request line (`GET /path HTTP/1.1`): status, content type, body.
    pub fn respond(&self, request_line: &str) -> (&'static str, &'static str, String) {
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        let path = target.split('?').next().unwrap_or("");
        if method != "GET" && method != "HEAD" {
            return ("405 Method Not Allowed", "text/plain", "only GET\n".into());
        }
        match path {
            "/metrics" => {
                if let Some(r) = &self.refresh {
                    r();
                }
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => ("200 OK", OPENMETRICS_CONTENT_TYPE, out),
                    Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
                }
            }
            "/healthz" | "/health" | "/livez" => ("200 OK", "text/plain", "ok\n".into()),
            "/readyz" | "/ready" => {
                if (self.ready)() {
                    ("200 OK", "text/plain", "ready\n".into())
                } else {
                    ("503 Service Unavailable", "text/plain", "not ready\n".into())
                }
            }
            "/debug/pprof/profile" => {
                ("404 Not Found", "text/plain", "profiling is off (start the component with --profiling)\n".into())
            }
            _ => ("404 Not Found", "text/plain", "not found\n".into()),
        }
    }

    /// Answers `/debug/pprof/profile?seconds=N` when profiling is on: samples
    /// the whole process at 99 Hz for N seconds (default 10, at most 60) and
    /// returns a flame graph.
    async fn profile(&self, target: &str) -> (&'static str, &'static str, String) {
        let seconds = target
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("seconds=")))
            .map(|v| v.parse::<u64>())
            .unwrap_or(Ok(10));
        let seconds = match seconds {
            Ok(s) if (1..=MAX_PROFILE_SECONDS).contains(&s) => s,
            _ => return ("400 Bad Request", "text/plain", format!("seconds must be 1..={MAX_PROFILE_SECONDS}\n")),
        };
        match tokio::task::spawn_blocking(move || crate::profile::cpu_flamegraph(Duration::from_secs(seconds))).await {
            Ok(Ok(svg)) => ("200 OK", "image/svg+xml", svg),
            Ok(Err(e)) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        }
    }
}

/// Binds `addr` and serves `admin` until `shutdown` is cancelled. Returns the
/// bound address (use port 0 in tests).
pub async fn serve(addr: &str, admin: Admin, shutdown: CancellationToken) -> Result<SocketAddr> {
    let (listener, local) = bind(addr).await?;
    info!(addr = %local, "admin http listening");
    tokio::spawn(serve_listener(listener, admin, shutdown));
    Ok(local)
}

/// Serves an already bound listener until `shutdown` is cancelled.
pub async fn serve_listener(listener: TcpListener, admin: Admin, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let sock = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(sock, &admin).await {
                debug!(error = %e, "admin request failed");
            }
            drop(permit);
        });
    }
}

async fn handle(mut sock: TcpStream, admin: &Admin) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(i));
            }
            if buf.len() > MAX_REQUEST {
                return Ok(None);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timeout"))??;
    let Some(end) = head_end else {
        let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let line = head.lines().next().unwrap_or("");
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let authorization = head.lines().skip(1).find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.trim().eq_ignore_ascii_case("authorization").then(|| value.trim())
    });
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if admin.refuses(path, authorization) {
        ("401 Unauthorized", "text/plain", "a bearer token is required (Authorization: Bearer <token>)\n".to_string())
    } else if admin.profiling && target.split('?').next() == Some("/debug/pprof/profile") {
        admin.profile(target).await
    } else if let Some((_, handler)) = admin.route.as_ref().filter(|(prefix, _)| path.starts_with(prefix)) {
        if line.starts_with("GET ") || line.starts_with("HEAD ") {
            handler(target.to_string()).await
        } else {
            ("405 Method Not Allowed", "text/plain", "only GET\n".into())
        }
    } else {
        admin.respond(line)
    };
    let head_only = line.starts_with("HEAD ");
    let challenge = if status.starts_with("401") { "www-authenticate: Bearer realm=\"gfs\"\r\n" } else { "" };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{challenge}connection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    if !head_only {
        sock.write_all(body.as_bytes()).await?;
    }
    sock.shutdown().await
}

/// `grpc-status` name of a tonic code, as Go's `codes.Code.String()`
/// (`OK`, `NotFound`, ...), for the `code` label of RPC metrics.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Latency buckets of RPC histograms, in seconds.
pub const RPC_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A tiny HTTP GET for tests and probes: returns (status code, body).
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_with(addr, path, &[]).await.map(|(s, _, b)| (s, b))
}

/// As [`get`] with extra request `headers` (name, value); also returns the
/// response head.
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let mut sock = TcpStream::connect(addr).await?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{extra}connection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_string(), body.to_string()))
}

/// Sums every sample of `name` (exact metric name, any labels) whose label
/// text contains all of `labels` (e.g. `missing="1"`), in an OpenMetrics
/// body. `None` if no sample matched.
pub fn sample_sum(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut sum = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, l)) => (m, l),
            None => (series, ""),
        };
        if metric != name || !labels.iter().all(|l| label_text.contains(l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut reg = Registry::default();
        let c: Counter = Counter::default();
        reg.register("gfs_test_things", "Things", c.clone());
        c.inc_by(3);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ready.clone();
        let admin = Admin::new(Arc::new(reg)).ready(move || r2.load(std::sync::atomic::Ordering::Relaxed));
        let token = CancellationToken::new();
        let addr = serve("127.0.0.1:0", admin, token.clone()).await.unwrap();
        let (s, body) = get(addr, "/metrics").await.unwrap();
        assert_eq!(s, 200);
        assert_eq!(sample_sum(&body, "gfs_test_things_total", &[]), Some(3.0));
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
        assert_eq!(get(addr, "/readyz").await.unwrap().0, 503);
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);
        assert_eq!(get(addr, "/nope").await.unwrap().0, 404);
        token.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get(addr, "/healthz").await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cpu_profile_only_when_enabled() {
        let token = CancellationToken::new();
        let off = serve("127.0.0.1:0", Admin::new(Arc::default()), token.clone()).await.unwrap();
        let (s, body) = get(off, "/debug/pprof/profile?seconds=1").await.unwrap();
        assert_eq!(s, 404);
        assert!(body.contains("--profiling"), "{body}");

        let on = serve("127.0.0.1:0", Admin::new(Arc::default()).profiling(true), token.clone()).await.unwrap();
        assert_eq!(get(on, "/debug/pprof/profile?seconds=0").await.unwrap().0, 400);
        assert_eq!(get(on, "/debug/pprof/profile?seconds=61").await.unwrap().0, 400);
        // Something to sample while the profile runs.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let spin = std::thread::spawn(move || {
            let mut x = 0u64;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            x
        });
        let (s, body) = get(on, "/debug/pprof/profile?seconds=1").await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().unwrap();
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("<svg"), "not a flame graph: {}", &body[..body.len().min(200)]);
        token.cancel();
    }

    #[tokio::test]
    async fn a_token_guards_metrics_and_pprof_but_not_the_probes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").unwrap();
        let token = crate::admin_auth::TokenFile::open(&file).unwrap();
        let echo: Handler = Arc::new(|target| Box::pin(async move { ("200 OK", "text/plain", target) }));
        let admin = Admin::new(Arc::default()).profiling(true).auth(Some(token)).route("/extra/", echo);
        let shutdown = CancellationToken::new();
        let addr = serve("127.0.0.1:0", admin, shutdown.clone()).await.unwrap();
        let (s, head, _) = get_with(addr, "/metrics", &[]).await.unwrap();
        assert_eq!(s, 401);
        assert!(head.to_lowercase().contains("www-authenticate: bearer"), "{head}");
        assert_eq!(get_with(addr, "/metrics", &[("Authorization", "Bearer wrong")]).await.unwrap().0, 401);
        assert_eq!(get_with(addr, "/metrics", &[("authorization", "Bearer t0ken")]).await.unwrap().0, 200);
        // Refused before a profile is taken (a bad seconds value would be 400).
        assert_eq!(get_with(addr, "/debug/pprof/profile?seconds=0", &[]).await.unwrap().0, 401);
        let auth = [("Authorization", "Bearer t0ken")];
        assert_eq!(get_with(addr, "/debug/pprof/profile?seconds=0", &auth).await.unwrap().0, 400);
        assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
        assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);
        // The extra route is guarded too, and gets the whole target.
        assert_eq!(get_with(addr, "/extra/a?b=1", &[]).await.unwrap().0, 401);
        let (s, _, body) = get_with(addr, "/extra/a?b=1", &auth).await.unwrap();
        assert_eq!((s, body.as_str()), (200, "/extra/a?b=1"));
        assert_eq!(get_with(addr, "/extrax", &auth).await.unwrap().0, 404);
        // Without a token the port stays open, as before.
        let open = serve("127.0.0.1:0", Admin::new(Arc::default()), shutdown.clone()).await.unwrap();
        assert_eq!(get(open, "/metrics").await.unwrap().0, 200);
        shutdown.cancel();
    }

    #[test]
    fn sums_samples() {
        let body = "# TYPE x gauge\nx{missing=\"1\"} 2\nx{missing=\"2\"} 3\ny 1\n# EOF\n";
        assert_eq!(sample_sum(body, "x", &[]), Some(5.0));
        assert_eq!(sample_sum(body, "x", &["missing=\"2\""]), Some(3.0));
        assert_eq!(sample_sum(body, "z", &[]), None);
    }
}

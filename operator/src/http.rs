//! `/metrics` and `/health` on an admin port (plain HTTP/1.1, no framework).

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

/// Serves the registry until the listener fails.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { return };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &registry) {
                    Ok(()) => ("200 OK", out),
                    Err(e) => ("500 Internal Server Error", e.to_string()),
                }
            } else if req.starts_with("GET /health") {
                ("200 OK", "ok\n".to_string())
            } else {
                ("404 Not Found", String::new())
            };
            let resp =
                format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            if let Err(e) = sock.write_all(resp.as_bytes()).await {
                warn!(error = %e, "metrics response failed");
            }
        });
    }
}

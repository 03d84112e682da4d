//! Networking helpers: listeners with a connection cap, server builders with
//! request limits, and a bounded pool of client channels with deadlines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// Limits applied to every gfs gRPC server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Most TCP connections open at once; further connects wait in the
    /// kernel backlog until one closes.
    pub max_connections: usize,
    /// Most requests in flight on one connection.
    pub max_concurrent_per_connection: usize,
    /// Server-side deadline for any single request.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self { max_connections: 1024, max_concurrent_per_connection: 64, request_timeout: Duration::from_secs(60) }
    }
}

/// A TCP connection that holds a slot of the listener's connection limit
/// until it is dropped.
pub struct LimitedConn {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Stream of accepted connections for `serve_with_incoming_shutdown`.
pub type Incoming = ReceiverStream<std::io::Result<LimitedConn>>;

/// Turns a bound listener into a stream of connections capped at
/// `max_connections` open at once. The accept task ends when the stream is
/// dropped (the server stopped).
pub fn limited_incoming(listener: TcpListener, max_connections: usize) -> Incoming {
    let (tx, rx) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let item = match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    Ok(LimitedConn { inner: stream, _permit: permit })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Back off briefly so that EMFILE does not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Binds a TCP listener, with a clear error naming the address.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener =
        TcpListener::bind(addr).await.map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Error::io("local_addr", e))?;
    Ok((listener, local))
}

/// Largest HTTP/2 frame a peer may send us (the protocol's default is 16 KiB).
const HTTP2_MAX_FRAME: u32 = 1024 * 1024;

/// Returns a tonic server builder with the given limits applied.
pub fn server_builder(limits: &ServerLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits.max_concurrent_per_connection)
        .timeout(limits.request_timeout)
        .tcp_nodelay(true)
        .max_frame_size(Some(HTTP2_MAX_FRAME))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// A bounded cache of client channels keyed by `host:port`.
///
/// A tonic `Channel` multiplexes requests over one HTTP/2 connection, so one
/// per peer is enough. Connects are lazy; the per-request deadline is set by
/// the caller with [`with_deadline`].
#[derive(Clone)]
pub struct ChannelPool {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    max_entries: usize,
    connect_timeout: Duration,
}

impl ChannelPool {
    /// Returns a pool that keeps at most `max_entries` channels.
    pub fn new(max_entries: usize, connect_timeout: Duration) -> Self {
        Self { inner: Arc::new(Mutex::new(HashMap::new())), max_entries: max_entries.max(1), connect_timeout }
    }

    /// Returns the channel to `addr`, creating it (lazily connected) if needed.
    pub fn get(&self, addr: &str) -> Result<Channel> {
        let mut map = self.inner.lock().expect("channel pool lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::InvalidArgument(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .initial_stream_window_size(Some(4 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024))
            .max_frame_size(Some(HTTP2_MAX_FRAME));
        let channel = endpoint.connect_lazy();
        if map.len() >= self.max_entries {
            // Evict an arbitrary entry; channels are cheap to rebuild.
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `addr` so the next call reconnects.
    pub fn forget(&self, addr: &str) {
        self.inner.lock().expect("channel pool lock").remove(addr);
    }
}

/// Wraps a message in a request that carries a deadline.
pub fn with_deadline<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(deadline);
    req
}

/// Runs a handler's work as a task of its own and waits for it. tonic drops
/// a handler's future when its caller goes away (the caller's deadline
/// passed, the stream was reset). Work that must not stop half-way runs
/// this way: a chunk mutation between its write and its bookkeeping (the
/// in-memory length and checksums, the serial), or a lease grant between
/// telling the chunkservers and logging the new version.
pub async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = crate::Result<T>> + Send + 'static,
) -> crate::Result<T> {
    tokio::spawn(work).await.map_err(|e| crate::Error::Internal(format!("handler task: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn detached_work_finishes_after_its_caller_went_away() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let work = super::detached(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.store(true, Ordering::SeqCst);
            Ok(())
        });
        // The caller gives up long before the work is done.
        assert!(tokio::time::timeout(Duration::from_millis(5), work).await.is_err());
        // (Paused clock: this sleep lets the work's 50 ms pass, in order.)
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.load(Ordering::SeqCst), "the work stopped with its caller");
        assert_eq!(super::detached(async { Ok(7) }).await, Ok(7));
    }
}

//! Networking helpers: listeners with connection caps and TLS, server
//! builders with request limits, and a bounded pool of client channels
//! (plaintext or mTLS) with deadlines.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{PeerInfo, Role, Roles};
use crate::error::{Error, Result};
use crate::tls::Security;

/// Limits applied to every gfs gRPC server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Most TCP connections open at once; further connects wait in the
    /// kernel backlog until one closes.
    pub max_connections: usize,
    /// Most connections open at once from one IP address, so that one
    /// peer (or a flood of idle sockets from it) cannot take every slot.
    /// Connections over it are closed at once.
    pub max_connections_per_peer: usize,
    /// A new connection must finish its TLS handshake (or, plaintext, send
    /// its first bytes) within this, or it is closed.
    pub handshake_timeout: Duration,
    /// Connections are closed gracefully (HTTP/2 GOAWAY; in-flight requests
    /// finish) after this age, so idle connections do not hold slots
    /// forever; clients reconnect transparently.
    pub max_connection_age: Duration,
    /// Most requests in flight on one connection.
    pub max_concurrent_per_connection: usize,
    /// Server-side deadline for any single request.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 256,
            handshake_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30 * 60),
            max_concurrent_per_connection: 64,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Open connections per peer IP address.
#[derive(Default)]
struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

impl PeerCounts {
    /// Takes a slot for `ip` unless it already has `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = self.0.lock().expect("peer counts lock");
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(PeerSlot { counts: self.clone(), ip })
    }
}

/// One open connection of a peer; gives its slot back when dropped.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().expect("peer counts lock");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The byte stream of an accepted connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<Buffered>>),
}

/// What TLS runs over: rustls reads the socket at most 4 KiB at a time
/// (its deframer's read size), a read syscall per 4 KiB of a 1 MiB data
/// frame; a user-space buffer underneath turns those into large reads.
/// Writes pass through.
type Buffered = tokio::io::BufReader<TcpStream>;

/// Capacity of [`Buffered`], and the plaintext rustls buffers before it
/// writes to the socket (its default, 64 KiB, is a write syscall per four
/// 16 KiB records). At most 256 KiB per TLS connection, 256 MiB at the
/// default 1024 connections (pages are touched only as data flows).
const TLS_IO_BUFFER: usize = 128 * 1024;

fn buffered(tcp: TcpStream) -> Buffered {
    tokio::io::BufReader::with_capacity(TLS_IO_BUFFER, tcp)
}

/// An accepted connection: it holds a slot of the listener's global and
/// per-peer limits until dropped, and carries the peer's identity
/// ([`PeerInfo`]) to every request made on it.
pub struct Conn {
    stream: Stream,
    info: PeerInfo,
    _permit: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Stream of accepted connections for `serve_with_incoming_shutdown`.
pub type Incoming = ReceiverStream<std::io::Result<Conn>>;

/// Finishes accepting one connection: the TLS handshake (and the peer's
/// identity from its certificate), or for plaintext the peer's first
/// bytes. The caller bounds it with the handshake deadline.
async fn establish(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(Stream, PeerInfo)> {
    let Some(config) = tls else {
        // A plaintext peer that connects and never speaks would hold its
        // slot until the keepalive notices, which never starts before the
        // HTTP/2 preface.
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(Error::Unavailable(format!("{remote} closed before speaking"))),
            Ok(_) => {}
            Err(e) => return Err(Error::Unavailable(format!("{remote}: {e}"))),
        }
        return Ok((Stream::Plain(stream), PeerInfo { remote: Some(remote), identity: None }));
    };
    if speaks_plaintext_http2(&stream).await {
        return Err(refuse_plaintext_http2(stream, remote).await);
    }
    let mut tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(buffered(stream))
        .await
        .map_err(|e| Error::Unauthenticated(format!("TLS handshake with {remote}: {e}")))?;
    tls.get_mut().1.set_buffer_limit(Some(TLS_IO_BUFFER));
    let der = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
    let der = der.ok_or_else(|| Error::Unauthenticated(format!("{remote} presented no certificate")))?;
    let identity = crate::tls::identity_of(&der)?;
    Ok((Stream::Tls(Box::new(tls)), PeerInfo { remote: Some(remote), identity: Some(Arc::new(identity)) }))
}

/// The first bytes a plaintext HTTP/2 client sends.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plaintext client at a TLS server is told.
pub const TLS_REQUIRED: &str = "this gfs server accepts only mTLS connections: give the client a certificate (--tls-dir) or run both with --insecure";

/// True when `stream`'s first bytes are a plaintext HTTP/2 preface.
async fn speaks_plaintext_http2(stream: &TcpStream) -> bool {
    let mut first = [0u8; H2_PREFACE.len()];
    matches!(stream.peek(&mut first).await, Ok(n) if n >= 4 && H2_PREFACE.starts_with(&first[..n]))
}

/// A plaintext HTTP/2 client at a TLS server (a client run with
/// `--insecure`, or without its certificate) would otherwise see only a
/// reset connection. Every request it makes is answered with gRPC status
/// UNAUTHENTICATED saying why, for as long as the handshake deadline
/// leaves, then the connection is closed.
async fn refuse_plaintext_http2(stream: TcpStream, remote: SocketAddr) -> Error {
    let svc = hyper::service::service_fn(|_req| async {
        let resp = hyper::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "16")
            .header("grpc-message", TLS_REQUIRED)
            .body(http_body_util::Empty::<bytes::Bytes>::new());
        resp.map_err(|e| Error::Internal(format!("plaintext refusal: {e}")))
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!(peer = %remote, error = %e, "plaintext connection to a TLS server ended");
    }
    Error::Unauthenticated(format!("{remote} spoke plaintext HTTP/2 to a TLS server"))
}

/// Turns a bound listener into a stream of connections within `limits`
/// (global and per-peer caps, handshake deadline), wrapped in TLS when
/// `security` says so. Handshakes run as tasks of their own, at most one
/// per connection slot. The accept task ends when the stream is dropped
/// (the server stopped).
pub fn incoming(listener: TcpListener, limits: &ServerLimits, security: &Security) -> Incoming {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let peers = Arc::new(PeerCounts::default());
    let tls = security.tls().map(|t| t.server_config());
    let (per_peer, deadline) = (limits.max_connections_per_peer, limits.handshake_timeout);
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Back off briefly so that EMFILE does not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(peer) = peers.take(remote.ip(), per_peer) else {
                refused += 1;
                // One line per 1000 refusals: a flood must not flood the log.
                if refused % 1000 == 1 {
                    tracing::warn!(peer = %remote.ip(), limit = per_peer, refused, "connection refused: per-peer limit");
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(deadline, establish(stream, remote, tls)).await {
                    Ok(Ok((stream, info))) => {
                        let conn = Conn { stream, info, _permit: permit, _peer: peer };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(peer = %remote, error = %e, "connection refused"),
                    Err(_) => tracing::debug!(peer = %remote, ?deadline, "connection closed: no handshake in time"),
                }
            });
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
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(Duration::from_secs(300))
}

/// Dials TLS connections for tonic channels: TCP, then a TLS 1.3 handshake
/// whose server must hold the pool's expected roles.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<Buffered>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let host = uri.host().ok_or_else(|| invalid(format!("no host in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| invalid(format!("no port in {uri}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone()).map_err(|e| invalid(format!("{host}: {e}")))?;
            let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, buffered(tcp)).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "TLS handshake with {host}:{port} failed: {e} (a server run with --insecure speaks no TLS)"
                    ),
                )
            })?;
            tls.get_mut().1.set_buffer_limit(Some(TLS_IO_BUFFER));
            Ok(TokioIo::new(tls))
        })
    }
}

/// A bounded cache of client channels keyed by `host:port`.
///
/// A tonic `Channel` multiplexes requests over one HTTP/2 connection, so one
/// per peer is enough. Connects are lazy; the per-request deadline is set by
/// the caller with [`with_deadline`]. With TLS, every server dialled must
/// present a certificate under the cluster CA holding one of the pool's
/// expected roles.
#[derive(Clone)]
pub struct ChannelPool {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    max_entries: usize,
    connect_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ChannelPool {
    /// Returns a pool that keeps at most `max_entries` channels, dialling
    /// with `security`; with TLS, servers must hold one of `expect`.
    pub fn new(max_entries: usize, connect_timeout: Duration, security: &Security, expect: &[Role]) -> Self {
        let tls = security.tls().map(|t| t.client_config(Roles::of(expect)));
        Self { inner: Arc::new(Mutex::new(HashMap::new())), max_entries: max_entries.max(1), connect_timeout, tls }
    }

    /// Returns the channel to `addr`, creating it (lazily connected) if needed.
    pub fn get(&self, addr: &str) -> Result<Channel> {
        let mut map = self.inner.lock().expect("channel pool lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let bare = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://")).unwrap_or(addr);
        let endpoint = Endpoint::from_shared(format!("http://{bare}"))
            .map_err(|e| Error::InvalidArgument(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .initial_stream_window_size(Some(4 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024))
            .max_frame_size(Some(HTTP2_MAX_FRAME));
        let channel = match &self.tls {
            Some(config) => endpoint.connect_with_connector_lazy(TlsConnector { config: config.clone() }),
            None => endpoint.connect_lazy(),
        };
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
#[path = "net_tests.rs"]
mod listener_tests;

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

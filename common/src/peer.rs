//! What a failed call without a gfs answer says about the peer: it could
//! not be reached, or something answered that is not a gfs server. The
//! reasons are short and free of tonic/h2 internals, for user-facing
//! messages (`gfs --master` pointed at the wrong address).

use tonic::{Code, Status};

/// Why a call got no gfs answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFailure {
    /// Nothing answered: refused, unresolvable, no route, timed out,
    /// connection dropped.
    Unreachable(String),
    /// Something answered, but not gRPC or not the gfs service (an HTTP
    /// server, a plain TCP service, TLS with another certificate).
    NotGfs(String),
}

impl PeerFailure {
    /// Classifies a failed call's status; `None` when it carries a gfs
    /// error (the peer is a gfs server that answered).
    pub fn of(s: &Status) -> Option<Self> {
        if !s.details().is_empty() {
            return None;
        }
        let text = chain_text(s).to_lowercase();
        // Other codes are answers of a gRPC server (e.g. a TLS server
        // refusing a plaintext client with UNAUTHENTICATED and a reason),
        // unless tonic made them up from a plain HTTP status.
        let transport = matches!(
            s.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::Unimplemented
        );
        if !transport && !text.contains("grpc-status header missing") {
            return None;
        }
        if let Some(f) = not_gfs(s.code(), &text) {
            return Some(PeerFailure::NotGfs(f));
        }
        if let Some(f) = unreachable(s.code(), &text) {
            return Some(PeerFailure::Unreachable(f));
        }
        None
    }

    /// The short reason.
    pub fn reason(&self) -> &str {
        match self {
            PeerFailure::Unreachable(r) | PeerFailure::NotGfs(r) => r,
        }
    }
}

/// The status message with its error sources.
pub fn chain_text(s: &Status) -> String {
    let mut text = s.message().to_string();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        let m = e.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        src = e.source();
    }
    text
}

/// The reason of an [`PeerFailure::Unreachable`] whose connection closed.
pub const CLOSED: &str = "the connection was closed";

fn not_gfs(code: Code, t: &str) -> Option<String> {
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if has(&["grpc-status header missing"]) {
        let http = t.split("http status code ").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next());
        return Some(match http {
            Some(n) if !n.is_empty() => format!("it answered HTTP {n}, not gRPC"),
            _ => "it answered HTTP, not gRPC".to_string(),
        });
    }
    if has(&["content-type"]) {
        return Some("it answered with a non-gRPC content-type".to_string());
    }
    if has(&["invalid http version", "http/1"]) {
        return Some("it speaks HTTP/1, not gRPC".to_string());
    }
    if code == Code::Unimplemented {
        return Some("it does not implement the gfs service".to_string());
    }
    if has(&["certificate", "unknownissuer", "unknown issuer", "notvalidforname", "bad certificate"]) {
        return Some(
            "TLS handshake failed: its certificate is not signed by this client's cluster CA (check --tls-dir)"
                .to_string(),
        );
    }
    if has(&["corrupt message", "invalidcontenttype", "wrong version number", "handshake"]) {
        return Some("TLS handshake failed: it does not speak TLS; if it runs without TLS, use --insecure".to_string());
    }
    if has(&["h2 protocol error", "http2 error", "frame_size_error", "frame with invalid size"]) {
        return Some(
            "it does not speak gRPC over HTTP/2; if it is a gfs server that requires TLS, give --tls-dir".to_string(),
        );
    }
    None
}

fn unreachable(code: Code, t: &str) -> Option<String> {
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    let reason = if has(&["connection refused"]) {
        "connection refused"
    } else if has(&["dns error", "failed to lookup", "name or service not known", "no address"]) {
        "cannot resolve the host name"
    } else if has(&["no route to host", "network is unreachable", "host is unreachable"]) {
        "no route to host"
    } else if code == Code::DeadlineExceeded || has(&["timeout", "timed out", "deadline"]) {
        "no answer in time"
    } else if has(&["connection reset", "connection closed", "broken pipe", "unexpected eof", "canceled"]) {
        CLOSED
    } else if matches!(code, Code::Unavailable | Code::Cancelled | Code::Unknown) {
        "no answer"
    } else {
        return None;
    };
    Some(reason.to_string())
}

/// Asks `addr` in plain HTTP/2 what it is, for a plaintext client whose
/// calls there only ever saw the connection close: a server that drops
/// the connection over a protocol error races the failed request, so the
/// request may carry "connection closed" rather than the error itself.
/// Sends the HTTP/2 preface and an empty SETTINGS frame and reads the
/// first bytes of the answer: an HTTP/2 server's first frame is SETTINGS
/// (type 4), so anything else is not a gfs master (the reason, as
/// [`PeerFailure::NotGfs`] gives it). `None` when nothing answered in
/// `wait` or the answer is HTTP/2.
pub async fn probe_http2(addr: &str, wait: std::time::Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let answer = tokio::time::timeout(wait, async {
        let mut sock = tokio::net::TcpStream::connect(addr).await.ok()?;
        sock.write_all(PREFACE).await.ok()?;
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match sock.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Some(head[..got].to_vec())
    })
    .await
    .ok()
    .flatten()?;
    let http2 = answer.len() == 9 && answer[3] == 4;
    if answer.starts_with(b"HTTP/") {
        Some("it speaks HTTP/1, not gRPC".to_string())
    } else if http2 || answer.is_empty() {
        None
    } else {
        Some("it does not speak gRPC over HTTP/2; if it is a gfs server that requires TLS, give --tls-dir".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every connection with `reply` (after reading
    /// what the client sent first), then keeps it open a while.
    async fn serve(reply: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let _ = c.read(&mut buf).await;
                    let _ = c.write_all(reply).await;
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_http2_probe_tells_foreign_servers_from_http2_ones() {
        let wait = std::time::Duration::from_secs(2);
        let http1 = serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(probe_http2(&http1, wait).await.as_deref(), Some("it speaks HTTP/1, not gRPC"));
        let garbage = serve(b"garbage garbage garbage\n").await;
        assert!(probe_http2(&garbage, wait).await.is_some_and(|r| r.contains("does not speak gRPC")));
        // An HTTP/2 server's first frame: SETTINGS (length 0, type 4).
        let h2 = serve(b"\0\0\0\x04\0\0\0\0\0").await;
        assert_eq!(probe_http2(&h2, wait).await, None);
        // Silence or a closed connection tells nothing.
        let silent = serve(b"").await;
        assert_eq!(probe_http2(&silent, std::time::Duration::from_millis(300)).await, None);
    }

    fn of(code: Code, msg: &str) -> Option<PeerFailure> {
        PeerFailure::of(&Status::new(code, msg))
    }

    #[test]
    fn classifies_without_internals() {
        use PeerFailure::*;
        assert_eq!(
            of(Code::Unavailable, "tcp connect error: transport error: Connection refused (os error 111)"),
            Some(Unreachable("connection refused".into()))
        );
        assert_eq!(
            of(Code::Unavailable, "Timeout expired: transport error"),
            Some(Unreachable("no answer in time".into()))
        );
        assert_eq!(
            of(Code::Unknown, "operation was canceled: transport error: connection closed"),
            Some(Unreachable("the connection was closed".into()))
        );
        assert!(matches!(of(Code::Unknown, "h2 protocol error: http2 error"), Some(NotGfs(r)) if r.contains("HTTP/2")));
        assert_eq!(
            of(Code::Unimplemented, "grpc-status header missing, mapped from HTTP status code 404"),
            Some(NotGfs("it answered HTTP 404, not gRPC".into()))
        );
        assert!(matches!(of(Code::Unknown, "invalid content-type: Some(\"text/html\")"), Some(NotGfs(_))));
        assert!(matches!(of(Code::Unimplemented, ""), Some(NotGfs(_))));
        assert!(
            matches!(of(Code::Unavailable, "invalid peer certificate: UnknownIssuer"), Some(NotGfs(r)) if r.contains("CA"))
        );
        for s in [of(Code::Unknown, "h2 protocol error"), of(Code::Unavailable, "Timeout expired")] {
            let r = s.unwrap().reason().to_string();
            assert!(!r.contains("h2") && !r.contains("transport"), "{r}");
        }
        // A gfs answer is not a peer failure.
        let gfs: Status = crate::Error::NotFound { path: "/x".into() }.into();
        assert_eq!(PeerFailure::of(&gfs), None);
        assert_eq!(of(Code::InvalidArgument, "bad"), None);
        // A gfs TLS server's reason for refusing a plaintext client stays.
        assert_eq!(of(Code::Unauthenticated, "accepts only mTLS: give the client a certificate"), None);
        assert!(matches!(
            of(Code::PermissionDenied, "grpc-status header missing, mapped from HTTP status code 403"),
            Some(NotGfs(r)) if r.contains("HTTP 403")
        ));
    }
}

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
        "the connection was closed"
    } else if matches!(code, Code::Unavailable | Code::Cancelled | Code::Unknown) {
        "no answer"
    } else {
        return None;
    };
    Some(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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

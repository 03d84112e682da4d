//! The error type shared by master, chunkserver and client, and its single
//! mapping to and from the wire.
//!
//! A failing RPC carries a `tonic::Status` whose `details` are an encoded
//! [`gfs_proto::ErrorDetail`], so the variant survives the trip and the
//! client can decide whether to retry.

use gfs_proto::ErrorDetail;
pub use gfs_proto::ErrorKind;
use prost::Message;

/// Result alias used across gfs library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error a gfs operation can report.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("chunk {handle:#x}: not found")]
    ChunkNotFound { handle: u64 },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error("{path}: directory not empty (use recursive delete)")]
    DirectoryNotEmpty { path: String },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("too large: {what} is {size} bytes, limit {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// Out of disk space on `server` (a chunkserver's address), or no
    /// server with room at all (`server` unset).
    #[error("no space{}: {detail}", on_server(server))]
    NoSpace { server: Option<String>, detail: String },
    #[error("chunk {handle:#x}: this server is not the primary")]
    NotPrimary { handle: u64, primary: Option<String> },
    #[error("chunk {handle:#x}: stale version (replica has {have}, request wants {want})")]
    StaleVersion { handle: u64, have: u64, want: u64 },
    #[error("chunk {handle:#x}: full, record goes to the next chunk")]
    ChunkFull { handle: u64 },
    #[error("pushed data {data_id}: not found or expired")]
    DataNotFound { data_id: u64 },
    #[error("chunk {handle:#x}: checksum mismatch: {detail}")]
    Corrupt { handle: u64, detail: String },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("stale epoch: request has {have}, server has seen {seen}")]
    StaleEpoch { have: u64, seen: u64 },
    #[error("{}", not_leader_text(leader))]
    NotLeader { leader: Option<String> },
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Register: another live chunkserver (at `holder`) holds this id.
    #[error("chunkserver id {id:?} is registered from live address {holder}; a second server cannot take it over")]
    ServerIdInUse { id: String, holder: String },
    /// The caller gave up on the operation (e.g. Ctrl-C); what it had
    /// started was undone as far as possible.
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn on_server(server: &Option<String>) -> String {
    server.as_ref().map(|s| format!(" on {s}")).unwrap_or_default()
}

fn not_leader_text(leader: &Option<String>) -> String {
    match leader {
        Some(l) => format!("not the leader master; the leader is {l}"),
        None => "not the leader master; no leader is known yet (election in progress)".to_string(),
    }
}

impl Error {
    /// Returns the wire kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } | Error::ChunkNotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::NotADirectory { .. } => ErrorKind::NotADirectory,
            Error::IsADirectory { .. } => ErrorKind::IsADirectory,
            Error::DirectoryNotEmpty { .. } => ErrorKind::DirectoryNotEmpty,
            Error::InvalidPath { .. } => ErrorKind::InvalidPath,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::NotPrimary { .. } => ErrorKind::NotPrimary,
            Error::StaleVersion { .. } => ErrorKind::StaleVersion,
            Error::ChunkFull { .. } => ErrorKind::ChunkFull,
            Error::DataNotFound { .. } => ErrorKind::DataNotFound,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Busy(_) => ErrorKind::Busy,
            Error::StaleEpoch { .. } => ErrorKind::StaleEpoch,
            Error::NotLeader { .. } => ErrorKind::NotLeader,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::ServerIdInUse { .. } => ErrorKind::ServerIdInUse,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Returns true when the same request may succeed if retried later
    /// (possibly after refreshing locations or the lease).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotPrimary { .. }
                | Error::StaleVersion { .. }
                | Error::DataNotFound { .. }
                | Error::Corrupt { .. }
                | Error::Unavailable(_)
                | Error::Busy(_)
                | Error::StaleEpoch { .. }
                | Error::NotLeader { .. }
        )
    }

    /// Builds an `Internal` error from an I/O error, with context; a full
    /// disk (ENOSPC) is `NoSpace`.
    pub fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        if err.raw_os_error() == Some(28) {
            return Error::NoSpace { server: None, detail: format!("{context}: {err}") };
        }
        Error::Internal(format!("{context}: {err}"))
    }

    /// Names `server` in a `NoSpace` that does not name one yet, so the
    /// error says which server is full wherever it ends up; other errors
    /// are returned unchanged.
    pub fn on_server(self, server: &str) -> Self {
        match self {
            Error::NoSpace { server: None, detail } => Error::NoSpace { server: Some(server.to_string()), detail },
            other => other,
        }
    }

    /// Encodes this error as an `ErrorDetail` (for carrying it outside gRPC).
    pub fn to_detail_bytes(&self) -> Vec<u8> {
        self.to_detail().encode_to_vec()
    }

    /// Decodes [`Error::to_detail_bytes`] output.
    pub fn from_detail_bytes(bytes: &[u8]) -> Error {
        match ErrorDetail::decode(bytes) {
            Ok(d) => Error::from_detail(d),
            Err(e) => Error::Internal(format!("undecodable error detail: {e}")),
        }
    }

    fn to_detail(&self) -> ErrorDetail {
        let mut d = ErrorDetail { kind: self.kind() as i32, message: self.to_string(), ..Default::default() };
        match self {
            Error::NotFound { path }
            | Error::AlreadyExists { path }
            | Error::NotADirectory { path }
            | Error::IsADirectory { path }
            | Error::DirectoryNotEmpty { path }
            | Error::InvalidPath { path, .. } => d.path = path.clone(),
            Error::ChunkNotFound { handle } | Error::ChunkFull { handle } => d.handle = *handle,
            Error::Corrupt { handle, detail } => {
                d.handle = *handle;
                d.path = detail.clone();
            }
            Error::TooLarge { what, size, limit } => {
                d.path = what.clone();
                d.have_version = *size;
                d.want_version = *limit;
            }
            Error::NotPrimary { handle, primary } => {
                d.handle = *handle;
                d.primary = primary.clone().unwrap_or_default();
            }
            Error::StaleVersion { handle, have, want } => {
                d.handle = *handle;
                d.have_version = *have;
                d.want_version = *want;
            }
            Error::DataNotFound { data_id } => d.handle = *data_id,
            Error::StaleEpoch { have, seen } => {
                d.have_version = *have;
                d.want_version = *seen;
            }
            Error::NotLeader { leader } => d.leader = leader.clone().unwrap_or_default(),
            Error::ServerIdInUse { id, holder } => {
                d.path = id.clone();
                d.primary = holder.clone();
            }
            Error::NoSpace { server, detail } => {
                d.server = server.clone().unwrap_or_default();
                d.path = detail.clone();
            }
            _ => {}
        }
        d
    }

    fn from_detail(d: ErrorDetail) -> Self {
        let msg = d.message.clone();
        // Strip the "prefix: " that Display added, keeping the free text.
        let tail = |m: &str| m.split_once(": ").map(|x| x.1.to_string()).unwrap_or_else(|| m.to_string());
        match ErrorKind::try_from(d.kind).unwrap_or(ErrorKind::Internal) {
            ErrorKind::NotFound if d.path.is_empty() => Error::ChunkNotFound { handle: d.handle },
            ErrorKind::NotFound => Error::NotFound { path: d.path },
            ErrorKind::AlreadyExists => Error::AlreadyExists { path: d.path },
            ErrorKind::NotADirectory => Error::NotADirectory { path: d.path },
            ErrorKind::IsADirectory => Error::IsADirectory { path: d.path },
            ErrorKind::DirectoryNotEmpty => Error::DirectoryNotEmpty { path: d.path },
            ErrorKind::InvalidPath => Error::InvalidPath {
                reason: msg.rsplit_once(": ").map(|x| x.1.to_string()).unwrap_or(msg),
                path: d.path,
            },
            ErrorKind::InvalidArgument => Error::InvalidArgument(tail(&msg)),
            ErrorKind::TooLarge => Error::TooLarge { what: d.path, size: d.have_version, limit: d.want_version },
            ErrorKind::NoSpace => Error::NoSpace {
                server: (!d.server.is_empty()).then_some(d.server),
                detail: if d.path.is_empty() { tail(&msg) } else { d.path },
            },
            ErrorKind::NotPrimary => {
                Error::NotPrimary { handle: d.handle, primary: (!d.primary.is_empty()).then_some(d.primary) }
            }
            ErrorKind::StaleVersion => {
                Error::StaleVersion { handle: d.handle, have: d.have_version, want: d.want_version }
            }
            ErrorKind::ChunkFull => Error::ChunkFull { handle: d.handle },
            ErrorKind::DataNotFound => Error::DataNotFound { data_id: d.handle },
            ErrorKind::Corrupt => Error::Corrupt { handle: d.handle, detail: d.path },
            ErrorKind::Unavailable => Error::Unavailable(tail(&msg)),
            ErrorKind::Busy => Error::Busy(tail(&msg)),
            ErrorKind::StaleEpoch => Error::StaleEpoch { have: d.have_version, seen: d.want_version },
            ErrorKind::NotLeader => Error::NotLeader { leader: (!d.leader.is_empty()).then_some(d.leader) },
            ErrorKind::PermissionDenied => Error::PermissionDenied(tail(&msg)),
            ErrorKind::Unauthenticated => Error::Unauthenticated(tail(&msg)),
            ErrorKind::ServerIdInUse => Error::ServerIdInUse { id: d.path, holder: d.primary },
            ErrorKind::Cancelled => Error::Cancelled(tail(&msg)),
            ErrorKind::Internal | ErrorKind::Unspecified => Error::Internal(tail(&msg)),
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self.kind() {
            ErrorKind::NotFound | ErrorKind::DataNotFound => Code::NotFound,
            ErrorKind::AlreadyExists | ErrorKind::ServerIdInUse => Code::AlreadyExists,
            ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
            | ErrorKind::DirectoryNotEmpty
            | ErrorKind::ChunkFull
            | ErrorKind::StaleVersion
            | ErrorKind::NotPrimary
            | ErrorKind::StaleEpoch => Code::FailedPrecondition,
            ErrorKind::InvalidPath | ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::TooLarge => Code::OutOfRange,
            ErrorKind::NoSpace | ErrorKind::Busy => Code::ResourceExhausted,
            ErrorKind::Corrupt => Code::DataLoss,
            ErrorKind::Unavailable | ErrorKind::NotLeader => Code::Unavailable,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::Cancelled => Code::Cancelled,
            ErrorKind::Internal | ErrorKind::Unspecified => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let detail = e.to_detail().encode_to_vec();
        tonic::Status::with_details(e.grpc_code(), e.to_string(), detail.into())
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        if !s.details().is_empty()
            && let Ok(d) = ErrorDetail::decode(s.details())
        {
            return Error::from_detail(d);
        }
        // No gfs detail: the failure happened in the transport (connect
        // refused, deadline, reset) or in tonic itself.
        use tonic::Code;
        if let Some(crate::peer::PeerFailure::NotGfs(reason)) = crate::peer::PeerFailure::of(&s)
            && s.code() != Code::Unimplemented
        {
            // Garbage HTTP/2 (e.g. a plaintext client reading a TLS
            // server's alert), HTTP/1, a foreign certificate: the peer is
            // not (or cannot be talked to as) a gfs server.
            return Error::Unavailable(format!("not a gfs server: {reason}"));
        }
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
                Error::Unavailable(s.message().to_string())
            }
            Code::ResourceExhausted => Error::Busy(s.message().to_string()),
            Code::OutOfRange => Error::TooLarge { what: s.message().to_string(), size: 0, limit: 0 },
            Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
            Code::PermissionDenied => Error::PermissionDenied(s.message().to_string()),
            Code::Unauthenticated => Error::Unauthenticated(s.message().to_string()),
            _ => Error::Internal(format!("{}: {}", s.code(), s.message())),
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_wire() {
        let cases = vec![
            Error::NotFound { path: "/a".into() },
            Error::ChunkNotFound { handle: 7 },
            Error::NotPrimary { handle: 3, primary: Some("h:1".into()) },
            Error::NotPrimary { handle: 3, primary: None },
            Error::StaleVersion { handle: 1, have: 2, want: 3 },
            Error::ChunkFull { handle: 9 },
            Error::DataNotFound { data_id: 11 },
            Error::InvalidPath { path: "a/../b".into(), reason: "'..' is not allowed".into() },
            Error::InvalidArgument("bad".into()),
            Error::TooLarge { what: "record".into(), size: 10, limit: 4 },
            Error::Corrupt { handle: 5, detail: "block 3: crc 1 != 2".into() },
            Error::NoSpace { server: None, detail: "no live chunkservers".into() },
            Error::NoSpace { server: Some("10.0.0.7:9800".into()), detail: "write chunk file: disk full".into() },
            Error::Cancelled("put /x interrupted".into()),
            Error::Unavailable("x".into()),
            Error::StaleEpoch { have: 1, seen: 2 },
            Error::NotLeader { leader: Some("10.0.0.2:7000".into()) },
            Error::NotLeader { leader: None },
            Error::PermissionDenied("role client may not call Heartbeat".into()),
            Error::Unauthenticated("no chunk token".into()),
            Error::ServerIdInUse { id: "cs-1".into(), holder: "10.0.0.3:9800".into() },
            Error::Internal("boom".into()),
        ];
        for e in cases {
            let back = Error::from(tonic::Status::from(e.clone()));
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_full_disk_names_its_server() {
        let e = Error::io("write chunk file", std::io::Error::from_raw_os_error(28));
        assert!(matches!(&e, Error::NoSpace { server: None, .. }), "{e:?}");
        let e = e.on_server("10.0.0.7:9800");
        assert!(e.to_string().starts_with("no space on 10.0.0.7:9800: write chunk file: "), "{e}");
        // The first server named stays (a secondary's error forwarded by
        // the primary names the secondary).
        assert_eq!(e.clone().on_server("10.0.0.8:9800"), e);
        assert!(!e.is_retryable());
        let other = Error::io("read", std::io::Error::from_raw_os_error(5));
        assert_eq!(other.clone().on_server("x:1"), other);
    }

    #[test]
    fn transport_failures_are_retryable() {
        let e = Error::from(tonic::Status::unavailable("connection refused"));
        assert!(e.is_retryable());
        let e = Error::from(tonic::Status::deadline_exceeded("slow"));
        assert!(e.is_retryable());
        assert!(!Error::NotFound { path: "/x".into() }.is_retryable());
    }
}

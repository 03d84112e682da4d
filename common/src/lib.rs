//! Shared building blocks for every gfs component.
//!
//! - [`auth`]: roles and identities of callers (certificates or claims).
//! - [`error`]: the one error type that crosses the wire, and its mapping to
//!   and from `tonic::Status`.
//! - [`path`]: the namespace path rules (absolute, no `.`/`..`, no empty parts).
//! - [`perm`]: permission bits (owner/group/other rwx, sticky), `ls -l`
//!   rendering and `chmod` modes.
//! - [`net`]: listeners with a connection limit, channels with deadlines.
//! - [`masters`]: the master addresses (a list or a DNS name) following the
//!   Raft leader.
//! - [`admin_http`]: `/metrics`, `/healthz`, `/readyz` on the admin port.
//! - [`bufpool`]: reusable byte buffers for the data path.
//! - [`dirlock`]: one process per data directory (`flock`).
//! - [`shutdown`]: SIGTERM/SIGINT handling.
//! - [`telemetry`]: tracing setup.
//! - [`throttle`]: byte-rate pacing for background copies.
//! - [`tls`]: mTLS configs (TLS 1.3, cluster CA, roles from certificates);
//!   [`certs`]: issuing certificates (local CA, operator, tests).
//! - [`token`]: chunk access tokens (HMAC-signed by the master, checked by
//!   chunkservers).

pub mod admin_auth;
pub mod admin_http;
pub mod auth;
pub mod bufpool;
pub mod certs;
pub mod dirlock;
pub mod disks;
pub mod error;
pub mod masters;
pub mod net;
pub mod path;
pub mod peer;
pub mod perm;
pub mod profile;
pub mod shutdown;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod token;

pub use error::{Error, ErrorKind, Result};
pub use masters::MasterSet;

/// Size of a checksum block: one CRC32C per 64 KiB of chunk data.
pub const BLOCK_SIZE: u64 = 64 * 1024;

/// Default chunk size, as in GFS.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 * 1024 * 1024;

/// Largest single read or write payload moved in one RPC.
pub const MAX_IO_SIZE: u64 = 8 * 1024 * 1024;

/// Size of one `PushDataFrame` payload.
pub const PUSH_FRAME_SIZE: usize = 1024 * 1024;

/// Largest gRPC message any gfs server accepts (a full MAX_IO_SIZE read plus
/// framing).
pub const MAX_MESSAGE_SIZE: usize = MAX_IO_SIZE as usize + 64 * 1024;

/// Most chunks one lease request may create: the missing chunks before
/// the requested index plus the chunk itself. A write far past the end of
/// a file creates its gap in steps of this many (the client does), so one
/// request never starts an allocation storm.
pub const MAX_NEW_CHUNKS_PER_LEASE: u64 = 64;

/// Most chunks of one file (1 PiB with 64 MiB chunks): chunk offsets
/// (index x chunk size) stay far from `u64` overflow.
pub const MAX_FILE_CHUNKS: u64 = 1 << 24;

/// Most chunk locations in one `GetChunks` reply; a reader asks again from
/// the next index for more.
pub const MAX_LOCATIONS_PER_REPLY: u64 = 4096;

/// Returns the current unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

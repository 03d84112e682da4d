//! Client configuration.

use std::time::Duration;

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Master address, `host:port`.
    pub master: String,
    /// Deadline of metadata RPCs.
    pub rpc_timeout: Duration,
    /// Deadline of data RPCs (push, write, append, read).
    pub data_timeout: Duration,
    /// Attempts for an operation that keeps failing with retryable errors
    /// (exponential backoff 50 ms .. 2 s with jitter between them).
    pub max_attempts: u32,
    /// Bound of the chunk location cache.
    pub cache_entries: u64,
    /// Expiry of chunk location cache entries.
    pub cache_ttl: Duration,
    /// The client's zone: replicas in it are preferred for reads and pushes.
    pub zone: Option<String>,
    /// Pieces in flight for `put`/`get`/multi-piece I/O.
    pub io_parallelism: usize,
}

impl ClientConfig {
    /// Returns the default configuration for the master at `master`.
    pub fn new(master: impl Into<String>) -> Self {
        Self {
            master: master.into(),
            rpc_timeout: Duration::from_secs(10),
            data_timeout: Duration::from_secs(60),
            max_attempts: 8,
            cache_entries: 10_000,
            cache_ttl: Duration::from_secs(60),
            zone: None,
            io_parallelism: 4,
        }
    }
}

/// Connect timeout of every channel.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts when the master cannot be connected to at all.
pub(crate) const MAX_CONNECT_ATTEMPTS: u32 = 3;
/// Chunk locations fetched per `GetChunks`.
pub(crate) const LOCATION_BATCH: u64 = 16;
/// Most channels kept open.
pub(crate) const MAX_CHANNELS: usize = 1024;

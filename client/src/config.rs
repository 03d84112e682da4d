//! Client configuration.

use std::time::Duration;

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Master addresses: one `host:port`, a comma-separated list
    /// `h1:p1,h2:p2,h3:p3` (the master Raft group), or one `name:port` whose
    /// DNS name resolves to every master (a Kubernetes headless Service).
    /// Calls go to the leader and follow it when it changes
    /// ([`gfs_common::MasterSet`]).
    pub master: String,
    /// Deadline of metadata RPCs.
    pub rpc_timeout: Duration,
    /// Deadline of data RPCs (push, write, append, read).
    pub data_timeout: Duration,
    /// Attempts for an operation that keeps failing with retryable errors
    /// (exponential backoff 50 ms .. 2 s with jitter between them).
    /// Failures to find a leader master are bounded by `failover_timeout`
    /// instead.
    pub max_attempts: u32,
    /// How long a master call keeps trying while no leader master answers
    /// (masters unreachable, `NotLeader` during an election), with backoff,
    /// rotating over the masters. After it the call fails with
    /// `Unavailable` naming every master tried. Each master is tried at
    /// least once, and a single one 3 times, even with zero. While no
    /// master ever answered this client (a wrong address, nothing running)
    /// the call does not wait: it fails once each master was tried.
    pub failover_timeout: Duration,
    /// Shadow reads: `stat`, `list` and chunk-location lookups may be
    /// answered by any master, including a follower whose metadata may lag
    /// the leader's (like GFS shadow masters).
    pub allow_stale_reads: bool,
    /// Bound of the chunk location cache.
    pub cache_entries: u64,
    /// Expiry of chunk location cache entries.
    pub cache_ttl: Duration,
    /// The client's zone: replicas in it are preferred for reads and pushes.
    pub zone: Option<String>,
    /// Pieces in flight for `put`/`get`/multi-piece I/O.
    pub io_parallelism: usize,
    /// mTLS material (the identity is the certificate's subject), or
    /// plaintext to masters and chunkservers run with `--insecure`.
    pub security: gfs_common::tls::Security,
    /// The user claimed to an `--insecure` master (default: `$USER`);
    /// ignored by a master that authenticates certificates.
    pub user: String,
    /// The groups claimed with `user`.
    pub groups: Vec<String>,
    /// Permission bits cleared from new files (0666) and directories
    /// (0777); the default 022 gives 0644 and 0755.
    pub umask: u32,
    /// Create files even when their replication is above the number of
    /// chunkservers in service (they stay under-replicated until more
    /// join); by default the master refuses such a create.
    pub allow_under_replicated: bool,
}

impl ClientConfig {
    /// Returns the default configuration for the master(s) at `master`
    /// (see [`ClientConfig::master`]).
    pub fn new(master: impl Into<String>) -> Self {
        Self {
            master: master.into(),
            rpc_timeout: Duration::from_secs(10),
            data_timeout: Duration::from_secs(60),
            max_attempts: 8,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            allow_stale_reads: false,
            cache_entries: 10_000,
            cache_ttl: Duration::from_secs(60),
            zone: None,
            io_parallelism: 4,
            security: Default::default(),
            user: default_user(),
            groups: Vec::new(),
            umask: gfs_common::perm::DEFAULT_UMASK,
            allow_under_replicated: false,
        }
    }
}

/// The login name (`$USER`, else `$LOGNAME`, else the name of this
/// process's uid in `/etc/passwd`, as HDFS takes the OS user) if it is a
/// valid gfs user name, else `anonymous`.
pub fn default_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .chain(passwd_name())
        .find(|u| gfs_common::auth::check_name("user", u).is_ok())
        .unwrap_or_else(|| gfs_common::auth::ANONYMOUS.to_string())
}

/// The `/etc/passwd` name of the uid this process runs as (the owner of
/// `/proc/self`), if there is one.
fn passwd_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let uid_field = fields.nth(1)?;
        (uid_field.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// Default of [`ClientConfig::failover_timeout`]: a Raft election takes
/// about 3-6 s.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// Connect timeout of every channel.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts when a single master cannot be connected to at all (with a zero
/// `failover_timeout`).
pub(crate) const MAX_CONNECT_ATTEMPTS: u32 = 3;
/// Chunk locations fetched per `GetChunks`.
pub(crate) const LOCATION_BATCH: u64 = 16;
/// Most channels kept open.
pub(crate) const MAX_CHANNELS: usize = 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn the_passwd_name_is_the_os_user() {
        let out = std::process::Command::new("id").arg("-un").output().unwrap();
        let os_user = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(super::passwd_name().as_deref(), Some(os_user.as_str()));
    }
}

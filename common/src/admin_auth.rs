//! Bearer-token auth of the admin port, as kube-rbac-proxy puts it in
//! front of `/metrics`: with `--admin-auth-token-file` set, `/metrics` and
//! `/debug/pprof/*` answer only requests carrying
//! `Authorization: Bearer <token>`. `/healthz` and `/readyz` stay open
//! because the kubelet probes them without credentials.
//!
//! The token is a file (a mounted Kubernetes Secret key), read again when
//! it is older than [`TOKEN_RELOAD`], so a rotated Secret takes effect
//! without a restart. A reload that fails keeps the previous token: a
//! half-written Secret must not open the port.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest time a token is used before its file is read again.
pub const TOKEN_RELOAD: Duration = Duration::from_secs(1);

/// The flag every binary with an admin port takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminAuthArgs {
    /// File holding a bearer token that `/metrics` and `/debug/pprof/*` on
    /// the admin port require (`Authorization: Bearer <token>`); re-read
    /// when it changes. `/healthz` and `/readyz` stay open. Unset: the
    /// admin port is open to whoever can reach it.
    #[arg(long, env = "GFS_ADMIN_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub admin_auth_token_file: Option<PathBuf>,
}

impl AdminAuthArgs {
    /// Opens the token file if one was given; an unreadable or empty file
    /// is an error, so a typo cannot leave the port open.
    pub fn open(&self) -> Result<Option<Arc<TokenFile>>> {
        self.admin_auth_token_file.as_deref().map(TokenFile::open).transpose()
    }
}

struct Current {
    token: Vec<u8>,
    read_at: Instant,
}

/// A bearer token kept in a file.
pub struct TokenFile {
    path: PathBuf,
    current: Mutex<Current>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("TokenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

fn read_token(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(format!("read admin token {}", path.display()), e))?;
    // Files written by hand or by `kubectl create secret --from-file`
    // often end in a newline that is not part of the token.
    let token = raw.trim_ascii().to_vec();
    if token.is_empty() {
        return Err(Error::InvalidArgument(format!("admin token file {} is empty", path.display())));
    }
    Ok(token)
}

impl TokenFile {
    /// Reads the token in `path`.
    pub fn open(path: &Path) -> Result<Arc<TokenFile>> {
        let token = read_token(path)?;
        Ok(Arc::new(TokenFile {
            path: path.to_path_buf(),
            current: Mutex::new(Current { token, read_at: Instant::now() }),
        }))
    }

    /// True if `authorization` (the header's value) is `Bearer <token>`
    /// with the current token. The comparison takes the same time for
    /// every token of the right length.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(bearer) else { return false };
        let mut cur = self.current.lock().expect("token lock");
        if cur.read_at.elapsed() >= TOKEN_RELOAD {
            match read_token(&self.path) {
                Ok(t) => cur.token = t,
                Err(e) => tracing::warn!(error = %e, "admin token reload failed; keeping the previous token"),
            }
            cur.read_at = Instant::now();
        }
        constant_time_eq(given.as_bytes(), &cur.token)
    }
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Compares without stopping at the first difference, so response times do
/// not reveal how much of a guessed token was right (only its length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_parsed_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        let t = TokenFile::open(&p).unwrap();
        assert!(t.allows(Some("Bearer s3cret")));
        assert!(t.allows(Some("bearer  s3cret ")));
        for bad in [None, Some(""), Some("Bearer"), Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("Basic s3cret")]
        {
            assert!(!t.allows(bad), "{bad:?}");
        }
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn missing_or_empty_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = TokenFile::open(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("read admin token"), "{e}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let e = TokenFile::open(&dir.path().join("empty")).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "one").unwrap();
        let t = TokenFile::open(&p).unwrap();
        std::fs::write(&p, "two").unwrap();
        std::thread::sleep(TOKEN_RELOAD + Duration::from_millis(100));
        assert!(t.allows(Some("Bearer two")));
        assert!(!t.allows(Some("Bearer one")));
        std::fs::write(&p, "").unwrap();
        std::thread::sleep(TOKEN_RELOAD + Duration::from_millis(100));
        assert!(t.allows(Some("Bearer two")), "an empty file keeps the previous token");
    }
}

//! Chunk access tokens, like HDFS block access tokens.
//!
//! The master signs a token naming a chunk handle, version and rights
//! (read, write) with an HMAC-SHA256 key; chunkservers verify it with the
//! same key before serving a client. Keys are made by the leader master and
//! logged through Raft (every master has them, a new leader keeps signing
//! with them) and reach chunkservers in Register/Heartbeat replies, over
//! mTLS. A token is short-lived; a key lives long enough to verify every
//! token signed with it.
//!
//! The MAC covers a fixed-layout encoding of the fields (not the protobuf
//! bytes, whose encoding is not unique), prefixed with a version tag.

use std::collections::HashMap;
use std::sync::RwLock;

use gfs_proto::{ChunkToken, TokenKey};
use ring::hmac;

use crate::error::{Error, Result};

/// Right to read a chunk.
pub const READ: u32 = 1;
/// Right to mutate a chunk (write, append, pad).
pub const WRITE: u32 = 2;

/// Clock difference between master and chunkserver tolerated on expiry.
pub const CLOCK_SKEW_MS: i64 = 60_000;

/// Longest user name carried in a token.
const MAX_USER: usize = 255;

/// Domain separation for the MAC input.
const TAG: &[u8] = b"gfs-chunk-token-v1";

fn mac_input(t: &ChunkToken) -> Vec<u8> {
    let user = &t.user.as_bytes()[..t.user.len().min(MAX_USER)];
    let mut b = Vec::with_capacity(TAG.len() + 34 + user.len());
    b.extend_from_slice(TAG);
    b.extend_from_slice(&t.key_id.to_be_bytes());
    b.extend_from_slice(&t.handle.to_be_bytes());
    b.extend_from_slice(&t.version.to_be_bytes());
    b.extend_from_slice(&t.rights.to_be_bytes());
    b.extend_from_slice(&t.expires_ms.to_be_bytes());
    b.extend_from_slice(&(user.len() as u16).to_be_bytes());
    b.extend_from_slice(user);
    b
}

/// Generates a key: 32 bytes from the system's secure random source.
pub fn new_key(id: u32, created_ms: i64, expires_ms: i64) -> Result<TokenKey> {
    use ring::rand::SecureRandom;
    let mut secret = vec![0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| Error::Internal("no secure random source for a token key".into()))?;
    Ok(TokenKey { id, secret: secret.into(), created_ms, expires_ms })
}

/// Signs a token for `handle` at `version` with `rights`, valid until
/// `expires_ms`, issued to `user`.
pub fn sign(key: &TokenKey, handle: u64, version: u64, rights: u32, expires_ms: i64, user: &str) -> ChunkToken {
    let user: String = user.chars().take(MAX_USER).collect();
    let mut t = ChunkToken { key_id: key.id, handle, version, rights, expires_ms, user, mac: Default::default() };
    let k = hmac::Key::new(hmac::HMAC_SHA256, &key.secret);
    t.mac = hmac::sign(&k, &mac_input(&t)).as_ref().to_vec().into();
    t
}

/// The keys a chunkserver verifies tokens with (the master's current set).
#[derive(Default)]
pub struct Verifier {
    keys: RwLock<HashMap<u32, (hmac::Key, i64)>>,
}

impl Verifier {
    /// Replaces the key set with the master's (from a Register or
    /// Heartbeat reply). An empty set keeps the old keys: a master that
    /// has none yet (a new group) must not cut off tokens already issued.
    pub fn set(&self, keys: &[TokenKey]) {
        if keys.is_empty() {
            return;
        }
        let map = keys
            .iter()
            .filter(|k| !k.secret.is_empty())
            .map(|k| (k.id, (hmac::Key::new(hmac::HMAC_SHA256, &k.secret), k.expires_ms)))
            .collect();
        *self.keys.write().expect("token keys lock") = map;
    }

    /// True once keys were received.
    pub fn has_keys(&self) -> bool {
        !self.keys.read().expect("token keys lock").is_empty()
    }

    /// Checks that `token` allows `right` on `handle` at `version` now
    /// (`now_ms`, this server's clock). A missing, forged or mismatched
    /// token is `Unauthenticated` (not retryable); an expired token or one
    /// signed with a key this server has not received yet is `Unavailable`
    /// (the client fetches a new token and retries).
    pub fn check(&self, token: Option<&ChunkToken>, handle: u64, version: u64, right: u32, now_ms: i64) -> Result<()> {
        let deny = |why: String| Error::Unauthenticated(format!("chunk {handle:#x}: {why}"));
        let t =
            token.ok_or_else(|| deny("no access token (the master issues one with locations and leases)".into()))?;
        let keys = self.keys.read().expect("token keys lock");
        let Some((key, key_expires)) = keys.get(&t.key_id) else {
            return Err(Error::Unavailable(format!(
                "chunk {handle:#x}: token key {} is not known here yet; retry with a fresh token",
                t.key_id
            )));
        };
        if t.user.len() > MAX_USER || hmac::verify(key, &mac_input(t), &t.mac).is_err() {
            return Err(deny("access token signature is not valid".into()));
        }
        if t.handle != handle || t.version != version {
            return Err(deny(format!(
                "access token is for chunk {:#x} version {}, not version {version}",
                t.handle, t.version
            )));
        }
        if t.rights & right != right {
            let what = if right == WRITE { "write" } else { "read" };
            return Err(deny(format!("access token does not allow {what}")));
        }
        if now_ms > t.expires_ms.min(*key_expires).saturating_add(CLOCK_SKEW_MS) {
            return Err(Error::Unavailable(format!("chunk {handle:#x}: access token expired; retry with a fresh one")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(keys: &[TokenKey]) -> Verifier {
        let v = Verifier::default();
        v.set(keys);
        v
    }

    #[test]
    fn a_signed_token_allows_exactly_what_it_names() {
        let key = new_key(1, 0, 10_000_000).unwrap();
        let v = verifier(std::slice::from_ref(&key));
        let t = sign(&key, 7, 3, READ, 1_000_000, "alice");
        assert_eq!(v.check(Some(&t), 7, 3, READ, 500_000), Ok(()));
        let e = v.check(Some(&t), 7, 3, WRITE, 500_000).unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(ref m) if m.contains("does not allow write")), "{e}");
        let e = v.check(Some(&t), 8, 3, READ, 500_000).unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
        let e = v.check(Some(&t), 7, 4, READ, 500_000).unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(ref m) if m.contains("not version 4")), "{e}");
        let e = v.check(None, 7, 3, READ, 500_000).unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(ref m) if m.contains("no access token")), "{e}");
        let rw = sign(&key, 7, 3, READ | WRITE, 1_000_000, "alice");
        assert_eq!(v.check(Some(&rw), 7, 3, WRITE, 0), Ok(()));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let key = new_key(1, 0, 10_000_000).unwrap();
        let v = verifier(std::slice::from_ref(&key));
        let t = sign(&key, 7, 3, READ, 1_000_000, "alice");
        // Any field changed after signing breaks the MAC.
        let mut up = t.clone();
        up.rights = READ | WRITE;
        let mut later = t.clone();
        later.expires_ms = i64::MAX;
        let mut other = t.clone();
        other.handle = 9;
        let mut who = t.clone();
        who.user = "root".into();
        for bad in [up, later, who] {
            let e = v.check(Some(&bad), bad.handle, bad.version, READ, 0).unwrap_err();
            assert!(matches!(e, Error::Unauthenticated(ref m) if m.contains("signature")), "{e}");
        }
        let e = v.check(Some(&other), 9, 3, READ, 0).unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
        // Signed with a key of the same id but another secret.
        let rogue = new_key(1, 0, 10_000_000).unwrap();
        let forged = sign(&rogue, 7, 3, READ, 1_000_000, "mallory");
        assert!(matches!(v.check(Some(&forged), 7, 3, READ, 0), Err(Error::Unauthenticated(_))));
    }

    #[test]
    fn expired_tokens_and_unknown_keys_ask_for_a_fresh_token() {
        let key = new_key(1, 0, 10_000_000).unwrap();
        let v = verifier(std::slice::from_ref(&key));
        let t = sign(&key, 7, 3, READ, 1_000_000, "alice");
        assert_eq!(v.check(Some(&t), 7, 3, READ, 1_000_000 + CLOCK_SKEW_MS), Ok(()));
        let e = v.check(Some(&t), 7, 3, READ, 1_000_001 + CLOCK_SKEW_MS).unwrap_err();
        assert!(matches!(e, Error::Unavailable(ref m) if m.contains("expired")), "{e}");
        let newer = new_key(2, 0, 10_000_000).unwrap();
        let t2 = sign(&newer, 7, 3, READ, 1_000_000, "alice");
        assert!(matches!(v.check(Some(&t2), 7, 3, READ, 0), Err(Error::Unavailable(_))));
        // A key that expired makes its tokens expire with it.
        let short = new_key(3, 0, 100).unwrap();
        let v = verifier(&[short.clone(), newer]);
        let t3 = sign(&short, 7, 3, READ, 1_000_000, "alice");
        assert!(matches!(v.check(Some(&t3), 7, 3, READ, 101 + CLOCK_SKEW_MS), Err(Error::Unavailable(_))));
        // An empty key set from the master keeps the known keys.
        v.set(&[]);
        assert!(v.has_keys());
    }
}

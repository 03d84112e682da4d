//! Who is calling: roles and a user identity.
//!
//! With TLS (the default) every connection presents a certificate signed by
//! the cluster CA, and the identity comes from it, Kubernetes style:
//! the subject's CN is the user, each O is a group, and each OU is a role
//! (`master`, `chunkserver`, `client`, `admin`). See `docs/SECURITY.md`.
//!
//! A server run with `--insecure` authenticates nobody: every caller may
//! use every RPC, and the user and groups are the caller's word, read from
//! request metadata (`gfs-user`, `gfs-groups`), like HDFS's "simple"
//! authentication. Namespace permissions still apply to that claimed user.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Request metadata key with the caller's user name (insecure mode only).
pub const USER_METADATA: &str = "gfs-user";
/// Request metadata key with the caller's groups, comma separated
/// (insecure mode only).
pub const GROUPS_METADATA: &str = "gfs-groups";

/// Longest user or group name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Most groups one identity may carry.
pub const MAX_GROUPS: usize = 32;

/// What a component is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A member of the master group (Raft, shadow pulls, master -> chunkserver commands).
    Master,
    /// A chunkserver (register, heartbeat, replication between chunkservers).
    Chunkserver,
    /// A user of the file system.
    Client,
    /// An operator of the cluster: maintenance RPCs, and the namespace superuser.
    Admin,
}

impl Role {
    /// Every role, in bit order.
    pub const ALL: [Role; 4] = [Role::Master, Role::Chunkserver, Role::Client, Role::Admin];

    /// Returns the name used in certificates and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Chunkserver => "chunkserver",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// Parses a certificate OU value; None for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Role::Master => 1,
            Role::Chunkserver => 2,
            Role::Client => 4,
            Role::Admin => 8,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// Returns the set holding `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// True if `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// True if no role is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds `role`.
    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Role::ALL.into_iter().filter(|r| self.contains(*r)).map(Role::name).collect();
        if names.is_empty() { f.write_str("(no role)") } else { f.write_str(&names.join(",")) }
    }
}

/// An authenticated peer: from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate subject's CN.
    pub user: String,
    /// The subject's O values.
    pub groups: Vec<String>,
    /// The subject's OU values that name a role.
    pub roles: Roles,
}

/// What the gfs listener knows about a connection; tonic puts it in every
/// request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The peer's certificate identity; None on a plaintext (insecure) server.
    pub identity: Option<Arc<Identity>>,
}

/// True for a valid user or group name: 1 to [`MAX_NAME_LEN`]
/// characters of letters, digits and `._@-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Why `name` is not a valid `what` name (a user, a group), for errors.
pub fn bad_name(what: &str, name: &str) -> String {
    let shown: String = name.chars().take(MAX_NAME_LEN).filter(|c| !c.is_control()).collect();
    format!("bad {what} name {shown:?}: 1 to {MAX_NAME_LEN} letters, digits or ._@-")
}

/// Checks the user or group name of an identity (see [`is_valid_name`]);
/// `Unauthenticated` otherwise.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if is_valid_name(name) { Ok(()) } else { Err(Error::Unauthenticated(bad_name(what, name))) }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name (certificate CN, or the claimed `gfs-user` when insecure).
    pub user: String,
    /// Groups (certificate O values, or the claimed `gfs-groups`).
    pub groups: Vec<String>,
    /// Roles from the certificate; empty when not authenticated.
    pub roles: Roles,
    /// True when the identity comes from a verified certificate.
    pub authenticated: bool,
    /// The peer's address, if known.
    pub remote: Option<SocketAddr>,
}

/// User of an unauthenticated caller that named none.
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// Returns the caller of `req`: the certificate identity the listener
    /// attached, or (plaintext server) the user and groups claimed in the
    /// request metadata. Fails on claimed names that break [`check_name`]
    /// or too many groups.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Caller> {
        let peer = req.extensions().get::<PeerInfo>();
        let remote = peer.and_then(|p| p.remote).or_else(|| req.remote_addr());
        if let Some(id) = peer.and_then(|p| p.identity.as_ref()) {
            return Ok(Caller {
                user: id.user.clone(),
                groups: id.groups.clone(),
                roles: id.roles,
                authenticated: true,
                remote,
            });
        }
        let md = req.metadata();
        let text = |key: &str| -> Result<Option<String>> {
            match md.get(key) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| Error::Unauthenticated(format!("metadata {key} is not ASCII"))),
            }
        };
        let user = text(USER_METADATA)?.unwrap_or_else(|| ANONYMOUS.to_string());
        check_name("user", &user)?;
        let mut groups = Vec::new();
        if let Some(g) = text(GROUPS_METADATA)? {
            for name in g.split(',').filter(|s| !s.is_empty()) {
                if groups.len() == MAX_GROUPS {
                    return Err(Error::Unauthenticated(format!("more than {MAX_GROUPS} groups")));
                }
                check_name("group", name)?;
                groups.push(name.to_string());
            }
        }
        Ok(Caller { user, groups, roles: Roles::default(), authenticated: false, remote })
    }

    /// True if the caller may act as `role`: it holds it (an admin may do
    /// what a client may), or the server authenticates nobody
    /// (`--insecure`).
    pub fn may(&self, role: Role) -> bool {
        !self.authenticated || self.roles.contains(role) || (role == Role::Client && self.roles.contains(Role::Admin))
    }

    /// Fails with `PermissionDenied` unless the caller may act as one of
    /// `allowed` (see [`Caller::may`]).
    pub fn require(&self, method: &str, allowed: &[Role]) -> Result<()> {
        if allowed.iter().any(|r| self.may(*r)) {
            return Ok(());
        }
        let want: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
        Err(Error::PermissionDenied(format!(
            "{method} needs role {} but {} has {}",
            want.join(" or "),
            self.user,
            self.roles
        )))
    }

    /// True if the certificate carries the admin role (never for an
    /// unauthenticated caller).
    pub fn is_admin(&self) -> bool {
        self.authenticated && self.roles.contains(Role::Admin)
    }
}

/// Checks the caller of `req` against `allowed` roles; returns the caller.
pub fn require<T>(req: &tonic::Request<T>, method: &str, allowed: &[Role]) -> Result<Caller> {
    let caller = Caller::of(req)?;
    caller.require(method, allowed)?;
    Ok(caller)
}

/// Adds the user and groups to a request's metadata, for servers that
/// run without TLS (ignored by servers that authenticate certificates).
pub fn claim<T>(req: &mut tonic::Request<T>, user: &str, groups: &[String]) {
    let md = req.metadata_mut();
    if let Ok(v) = user.parse() {
        md.insert(USER_METADATA, v);
    }
    if !groups.is_empty()
        && let Ok(v) = groups.join(",").parse()
    {
        md.insert(GROUPS_METADATA, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(peer: Option<PeerInfo>, user: Option<&str>, groups: Option<&str>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        if let Some(p) = peer {
            req.extensions_mut().insert(p);
        }
        if let Some(u) = user {
            req.metadata_mut().insert(USER_METADATA, u.parse().unwrap());
        }
        if let Some(g) = groups {
            req.metadata_mut().insert(GROUPS_METADATA, g.parse().unwrap());
        }
        req
    }

    #[test]
    fn certificate_identity_wins_over_claims() {
        let id = Identity { user: "alice".into(), groups: vec!["eng".into()], roles: Roles::of(&[Role::Client]) };
        let peer = PeerInfo { remote: None, identity: Some(Arc::new(id)) };
        let req = request_with(Some(peer), Some("root"), Some("wheel"));
        let c = Caller::of(&req).unwrap();
        assert_eq!((c.user.as_str(), c.groups.as_slice()), ("alice", &["eng".to_string()][..]));
        assert!(c.authenticated);
        assert!(c.may(Role::Client));
        assert!(!c.may(Role::Chunkserver));
        let e = c.require("Heartbeat", &[Role::Chunkserver]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("Heartbeat needs role chunkserver but alice has client"), "{e}");
        assert!(!c.is_admin());
        let admin = Identity { user: "root".into(), groups: vec![], roles: Roles::of(&[Role::Admin]) };
        let peer = PeerInfo { remote: None, identity: Some(Arc::new(admin)) };
        let c = Caller::of(&request_with(Some(peer), None, None)).unwrap();
        assert!(c.may(Role::Client) && c.may(Role::Admin) && !c.may(Role::Master) && c.is_admin());
    }

    #[test]
    fn insecure_callers_may_do_anything_but_are_never_admin() {
        let c = Caller::of(&request_with(None, Some("bob"), Some("eng,ops"))).unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(c.groups, vec!["eng".to_string(), "ops".to_string()]);
        assert!(!c.authenticated);
        assert!(Role::ALL.iter().all(|r| c.may(*r)));
        assert!(c.require("MarkLost", &[Role::Admin]).is_ok());
        assert!(!c.is_admin());
        assert_eq!(Caller::of(&request_with(None, None, None)).unwrap().user, ANONYMOUS);
    }

    #[test]
    fn claimed_names_are_checked() {
        for bad in ["", "a b", "x:y", &"u".repeat(MAX_NAME_LEN + 1), "ünï"] {
            let mut req = tonic::Request::new(());
            if let Ok(v) = bad.parse() {
                req.metadata_mut().insert(USER_METADATA, v);
                let e = Caller::of(&req).unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::Unauthenticated, "{bad:?}");
            }
        }
        let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        let e = Caller::of(&request_with(None, Some("u"), Some(&many.join(",")))).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
        let e = Caller::of(&request_with(None, Some("u"), Some("ok,b@d!"))).unwrap_err();
        assert!(e.to_string().contains("bad group name"), "{e}");
    }

    #[test]
    fn claims_round_trip() {
        let mut req = tonic::Request::new(());
        claim(&mut req, "carol", &["a".into(), "b".into()]);
        let c = Caller::of(&req).unwrap();
        assert_eq!((c.user.as_str(), c.groups.len()), ("carol", 2));
        assert_eq!(Role::parse("chunkserver"), Some(Role::Chunkserver));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Roles::of(&[Role::Master, Role::Admin]).to_string(), "master,admin");
    }
}

//! Permissions of namespace entries (HDFS's model): an owner, a group and
//! mode bits on every file and directory, the table of user and group
//! names they refer to, and the pure decisions (may this caller do that
//! to this entry?). `access.rs` applies them to paths of the tree.
//!
//! Names are interned: an entry holds two small integers and the mode
//! (12 bytes), not two strings, since the namespace must hold millions of
//! entries. The table is replicated state: names get the next id when an
//! applied op first uses them, so every master builds the same table, and
//! checkpoints keep it in id order. Ids are never reused or removed.

use std::collections::HashMap;
use std::sync::Arc;

use gfs_common::auth::{Caller, bad_name, is_valid_name};
use gfs_common::perm::{STICKY, access_name, mode_string};
use gfs_common::{Error, Result};

/// The default superuser: owner of the root directory of a new namespace
/// and of entries from before permissions. Any name in the master's
/// `superusers` is a superuser; this one is only the owner of record.
pub const SUPERUSER: &str = "gfs";
/// The group of the root of a new namespace and of pre-permission entries;
/// also the default supergroup.
pub const SUPERGROUP: &str = "supergroup";
/// Mode of the root directory of a new namespace.
pub const ROOT_MODE: u16 = 0o755;
/// Modes of entries from before permissions: everyone keeps the access
/// they had (none was checked).
pub const LEGACY_DIR_MODE: u16 = 0o777;
/// See [`LEGACY_DIR_MODE`].
pub const LEGACY_FILE_MODE: u16 = 0o666;
/// Most distinct user and group names the table holds. Every name costs
/// memory on every master for good, and on an `--insecure` master a
/// caller picks its own name, so the table is bounded.
pub const MAX_NAMES: usize = 1 << 20;

/// Owner, group (ids in [`Names`]) and mode of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// Id of the owning user.
    pub owner: u32,
    /// Id of the group.
    pub group: u32,
    /// rwx bits for owner, group and other, plus [`STICKY`].
    pub mode: u16,
}

impl Perm {
    /// The root of a new namespace: the superuser's, 0755.
    pub fn root() -> Perm {
        Perm { owner: 0, group: 1, mode: ROOT_MODE }
    }

    /// True when the sticky bit is set.
    pub fn is_sticky(self) -> bool {
        u32::from(self.mode) & STICKY != 0
    }
}

/// The table of user and group names entries refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Default for Names {
    /// A new namespace's table: [`SUPERUSER`] is 0, [`SUPERGROUP`] is 1.
    fn default() -> Self {
        let mut n = Names { names: Vec::new(), ids: HashMap::new() };
        for name in [SUPERUSER, SUPERGROUP] {
            n.intern(name).expect("room for the defaults");
        }
        n
    }
}

impl Names {
    /// Rebuilds the table from a checkpoint's list (id = position); an
    /// empty list (a checkpoint from before permissions) gives the default.
    pub fn from_list(list: &[String]) -> Result<Names> {
        if list.is_empty() {
            return Ok(Names::default());
        }
        let mut n = Names { names: Vec::new(), ids: HashMap::new() };
        for name in list {
            let bad = |why: String| Error::Internal(format!("checkpoint name table: {why}; refusing to start"));
            if n.ids.contains_key(name.as_str()) {
                return Err(bad(format!("{name:?} appears twice")));
            }
            n.intern(name).map_err(|e| bad(e.to_string()))?;
        }
        Ok(n)
    }

    /// The names in id order (checkpoint).
    pub fn to_list(&self) -> Vec<String> {
        self.names.iter().map(|n| n.to_string()).collect()
    }

    /// The id of `name`, if any entry ever used it.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of `id` (`?` for an id the table does not hold, which
    /// loading and apply never let an entry have).
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", |n| n)
    }

    /// The id of `name`, adding it when new. Fails for an invalid name or
    /// a full table.
    pub fn intern(&mut self, name: &str) -> Result<u32> {
        if let Some(id) = self.id(name) {
            return Ok(id);
        }
        if !is_valid_name(name) {
            return Err(Error::InvalidArgument(bad_name("user or group", name)));
        }
        self.check_room(1)?;
        let id = self.names.len() as u32;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        Ok(id)
    }

    /// Fails unless the table can take `more` new names.
    pub fn check_room(&self, more: usize) -> Result<()> {
        if self.names.len() + more > MAX_NAMES {
            return Err(Error::InvalidArgument(format!(
                "the master's table of user and group names is full ({MAX_NAMES} names)"
            )));
        }
        Ok(())
    }

    /// Fails unless every one of `names` is known or fits in the table.
    pub fn check_room_for(&self, names: &[&str]) -> Result<()> {
        let mut new: Vec<&str> = names.iter().copied().filter(|n| self.id(n).is_none()).collect();
        new.sort_unstable();
        new.dedup();
        self.check_room(new.len())
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true: the table always holds the defaults.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Resolves `req` against the table, for checks against entries.
    pub fn who<'a>(&self, req: &'a Requester) -> Who<'a> {
        let gids = req.groups.iter().filter_map(|g| self.id(g)).collect();
        Who { req, uid: self.id(&req.user), gids }
    }

    /// `owner:group:mode` of an entry, for messages.
    pub fn describe(&self, perm: Perm, is_dir: bool) -> String {
        let (o, g) = (self.name(perm.owner), self.name(perm.group));
        format!("{o}:{g}:{}", mode_string(is_dir, u32::from(perm.mode)))
    }
}

/// Who asks, as permission checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// User name (certificate CN, or the claim on an insecure master).
    pub user: String,
    /// Groups (certificate O values, or the claim).
    pub groups: Vec<String>,
    /// Bypasses every check (see [`Requester::of`]).
    pub superuser: bool,
}

impl Requester {
    /// The requester behind `caller`. A superuser is a caller with the
    /// admin role (a certificate with OU admin), or whose user is one of
    /// `superusers`, or who is in `supergroup`. On an insecure master the
    /// user and groups are the caller's claim, so anyone can claim to be a
    /// superuser (as with HDFS's simple authentication).
    pub fn of(caller: &Caller, superusers: &[String], supergroup: &str) -> Requester {
        let superuser =
            caller.is_admin() || superusers.contains(&caller.user) || caller.groups.iter().any(|g| g == supergroup);
        Requester { user: caller.user.clone(), groups: caller.groups.clone(), superuser }
    }
}

/// A [`Requester`] resolved against a name table: user and group ids to
/// compare with entries' (a name the table lacks owns nothing).
#[derive(Debug, Clone)]
pub struct Who<'a> {
    /// The requester.
    pub req: &'a Requester,
    uid: Option<u32>,
    gids: Vec<u32>,
}

impl Who<'_> {
    /// True for a superuser.
    pub fn superuser(&self) -> bool {
        self.req.superuser
    }

    /// True when the requester owns an entry with `perm`.
    pub fn owns(&self, perm: Perm) -> bool {
        self.uid == Some(perm.owner)
    }

    /// True when the requester is in `group` (an id).
    pub fn in_group(&self, group: u32) -> bool {
        self.gids.contains(&group)
    }
}

/// True when `who` may `want` (READ | WRITE | EXECUTE bits) an entry with
/// `perm`. As in POSIX and HDFS, only one class applies: the owner's bits
/// for the owner (even if the group's or others' would allow more), else
/// the group's for a member, else the others'. A superuser may do anything.
pub fn permits(perm: Perm, who: &Who, want: u8) -> bool {
    if who.superuser() {
        return true;
    }
    let shift = if who.owns(perm) {
        6
    } else if who.in_group(perm.group) {
        3
    } else {
        0
    };
    let bits = ((perm.mode >> shift) & 7) as u8;
    bits & want == want
}

/// True when the sticky bit of `dir` lets `who` delete or rename its entry
/// `entry`: no sticky bit, or the owner of the entry or of the directory,
/// or a superuser.
pub fn sticky_permits(dir: Perm, entry: Perm, who: &Who) -> bool {
    !dir.is_sticky() || who.superuser() || who.owns(entry) || who.owns(dir)
}

/// The denial of `want` on the entry at `path`, as HDFS words it:
/// `user=bob, access=WRITE, inode="/x":alice:staff:drwxr-xr-x`.
pub fn denied(who: &Who, want: u8, path: &str, what: &str) -> Error {
    let (user, access, path) = (&who.req.user, access_name(want), gfs_common::path::quote(path));
    Error::PermissionDenied(format!("user={user}, access={access}, inode=\"{path}\":{what}"))
}

/// Checks a SetOwner by `who` on an entry with `perm`: the owner may only
/// be changed by a superuser (or "changed" to the current owner by that
/// owner), the group by a superuser or by the owner to one of their own
/// groups. `owner`/`group` None: unchanged.
pub fn check_set_owner(perm: Perm, who: &Who, names: &Names, owner: Option<&str>, group: Option<&str>) -> Result<()> {
    if who.superuser() {
        return Ok(());
    }
    let user = &who.req.user;
    if !who.owns(perm) {
        return Err(Error::PermissionDenied(format!(
            "user={user} is not the owner ({}) and not a superuser",
            names.name(perm.owner)
        )));
    }
    if owner.is_some_and(|o| o != user) {
        return Err(Error::PermissionDenied(format!(
            "user={user} is not a superuser: only a superuser may change an owner"
        )));
    }
    if let Some(g) = group
        && !who.req.groups.iter().any(|mine| mine == g)
    {
        return Err(Error::PermissionDenied(format!("user={user} does not belong to group {g}")));
    }
    Ok(())
}

#[cfg(test)]
#[path = "perm_tests.rs"]
mod tests;

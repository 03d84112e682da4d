//! Permission checks on paths of the tree, as HDFS's NameNode does them
//! (`FSPermissionChecker`): EXECUTE on every directory above a path for
//! any lookup, then what the operation needs on the parent, the entry or
//! the subtree. `perm.rs` decides for one entry.
//!
//! A check runs before the namespace checks of the same call (NotFound,
//! AlreadyExists, ...): a caller without EXECUTE on a directory learns
//! nothing about what is below it, not even whether it exists. A check
//! skips entries that do not exist; the namespace check that follows
//! reports them. Checks are pure reads of the tree; handlers run them
//! under the path locks of their call, so the permissions they saw hold
//! until the call's op is applied (a chmod of any of those entries takes
//! a write lock on it).

use gfs_common::Result;
use gfs_common::path::{ancestors, parent};
use gfs_common::perm::{ALL, EXECUTE, READ, WRITE};

use crate::namespace::{Namespace, Node};
use crate::perm::{Requester, Who, denied, permits, sticky_permits};

impl Namespace {
    /// Checks EXECUTE on every existing directory above `path`, stopping at
    /// the first missing one or file (the lookup reports those).
    pub fn allow_lookup(&self, req: &Requester, path: &str) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        self.traverse(&self.names().who(req), path)
    }

    /// Checks that `req` may look up `path` and, if it exists, `want` it
    /// (READ a file's data for GetChunks, WRITE it for a lease).
    pub fn allow_access(&self, req: &Requester, path: &str, want: u8) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        let who = self.names().who(req);
        self.traverse(&who, path)?;
        self.require(&who, path, want)
    }

    /// Checks a listing: a directory needs READ and EXECUTE (its names,
    /// and their info); listing a file needs only the lookup.
    pub fn allow_list(&self, req: &Requester, path: &str) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        let who = self.names().who(req);
        self.traverse(&who, path)?;
        match self.get(path) {
            Some(Node::Dir { .. }) => self.require(&who, path, READ | EXECUTE),
            _ => Ok(()),
        }
    }

    /// Checks creating `path` (mkdir, create): WRITE on its parent, or with
    /// `parents` on its deepest existing ancestor (whose EXECUTE the lookup
    /// checked). Only the lookup when `path` exists: there is nothing to
    /// create (the namespace check decides between AlreadyExists and the
    /// existing entry).
    pub fn allow_create(&self, req: &Requester, path: &str, parents: bool) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        let who = self.names().who(req);
        self.traverse(&who, path)?;
        if self.get(path).is_some() {
            return Ok(());
        }
        let dir = if parents {
            ancestors(path).into_iter().rev().find(|a| self.get(a).is_some())
        } else {
            parent(path).map(str::to_string)
        };
        match dir {
            Some(d) => self.require(&who, &d, WRITE),
            None => Ok(()),
        }
    }

    /// Checks deleting `path` (or hiding it, or purging it): WRITE on its
    /// parent, the parent's sticky bit, and READ, WRITE and EXECUTE on
    /// every non-empty directory of its subtree, including itself (the
    /// delete empties them; HDFS asks the same). The subtree walk is one
    /// pass over the subtree's keys in the ordered map, as the delete
    /// itself makes, and stops at the first refusal.
    pub fn allow_delete(&self, req: &Requester, path: &str) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        let who = self.names().who(req);
        self.traverse(&who, path)?;
        self.unlink(&who, path)?;
        for (p, n) in self.subtree(path) {
            if let Node::Dir { perm, children, .. } = n
                && !children.is_empty()
                && !permits(*perm, &who, ALL)
            {
                return Err(self.deny(&who, ALL, p, n));
            }
        }
        Ok(())
    }

    /// Checks renaming `src` to `dst` (also an undelete, and a rename over
    /// an existing `dst`): WRITE on both parents and the sticky bit of
    /// each for the entry leaving it (`src`, and `dst` when it exists and
    /// is replaced).
    pub fn allow_rename(&self, req: &Requester, src: &str, dst: &str) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        let who = self.names().who(req);
        self.traverse(&who, src)?;
        self.traverse(&who, dst)?;
        self.unlink(&who, src)?;
        if self.get(dst).is_some() {
            return self.unlink(&who, dst);
        }
        match parent(dst) {
            Some(p) => self.require(&who, p, WRITE),
            None => Ok(()),
        }
    }

    /// Checks a chmod: the lookup, and the owner of the entry or a
    /// superuser.
    pub fn allow_chmod(&self, req: &Requester, path: &str) -> Result<()> {
        if req.superuser {
            return Ok(());
        }
        let who = self.names().who(req);
        self.traverse(&who, path)?;
        match self.get(path) {
            Some(n) if !who.owns(n.perm()) => Err(gfs_common::Error::PermissionDenied(format!(
                "user={}, inode=\"{}\":{}: only its owner or a superuser may change its permissions",
                req.user,
                gfs_common::path::quote(path),
                self.names().describe(n.perm(), n.is_dir())
            ))),
            _ => Ok(()),
        }
    }

    fn traverse(&self, who: &Who, path: &str) -> Result<()> {
        for a in ancestors(path) {
            match self.get(&a) {
                Some(n @ Node::Dir { .. }) if !permits(n.perm(), who, EXECUTE) => {
                    return Err(self.deny(who, EXECUTE, &a, n));
                }
                Some(Node::Dir { .. }) => {}
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// `want` on the entry at `path`, if it exists.
    fn require(&self, who: &Who, path: &str, want: u8) -> Result<()> {
        match self.get(path) {
            Some(n) if !permits(n.perm(), who, want) => Err(self.deny(who, want, path, n)),
            _ => Ok(()),
        }
    }

    /// Taking the entry at `path` out of its directory: WRITE on the
    /// directory, and its sticky bit.
    fn unlink(&self, who: &Who, path: &str) -> Result<()> {
        let Some(dir_path) = parent(path) else { return Ok(()) };
        let (Some(dir), Some(node)) = (self.get(dir_path), self.get(path)) else { return Ok(()) };
        if !permits(dir.perm(), who, WRITE) {
            return Err(self.deny(who, WRITE, dir_path, dir));
        }
        if !sticky_permits(dir.perm(), node.perm(), who) {
            let q = gfs_common::path::quote;
            let names = self.names();
            return Err(gfs_common::Error::PermissionDenied(format!(
                "sticky bit: user={}, inode=\"{}\":{}, parent=\"{}\":{}: only the owner of the entry or of the \
                 directory may delete or rename it",
                who.req.user,
                q(path),
                names.describe(node.perm(), node.is_dir()),
                q(dir_path),
                names.describe(dir.perm(), true)
            )));
        }
        Ok(())
    }

    fn deny(&self, who: &Who, want: u8, path: &str, node: &Node) -> gfs_common::Error {
        denied(who, want, path, &self.names().describe(node.perm(), node.is_dir()))
    }
}

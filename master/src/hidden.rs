//! Hidden names of deleted files awaiting garbage collection.
//!
//! Deleting `/d/name` renames it to `/d/.gfs-deleted.<unix ms>.<name>`; the
//! deletion time is part of the name, so the log and the checkpoint keep it
//! without a new record type. `gfs mv` of the hidden path (or of a path
//! inside a hidden directory) back to a normal name restores it: that is
//! the undelete. The garbage collector deletes it for good once the delay
//! has passed.
//!
//! The prefix is reserved in every component of a caller's new name
//! (mkdir, create, rename destination): a name made to look deleted, or an
//! entry moved into a deleted directory, would be garbage collected.

use gfs_common::path::{file_name, has_hidden_component, join, parent, quote};
use gfs_common::{Error, Result};

/// Prefix of a hidden (deleted) entry's name.
pub const PREFIX: &str = gfs_common::path::HIDDEN_PREFIX;

/// The hidden path for `path` deleted at `deleted_ms`.
pub fn hidden_path(path: &str, deleted_ms: i64) -> String {
    let dir = parent(path).unwrap_or("/");
    join(dir, &format!("{PREFIX}{deleted_ms}.{}", file_name(path)))
}

/// Deletion time of a hidden entry (from its last component), if hidden.
pub fn deleted_at(path: &str) -> Option<i64> {
    let rest = file_name(path).strip_prefix(PREFIX)?;
    let (ms, name) = rest.split_once('.')?;
    if name.is_empty() {
        return None;
    }
    ms.parse().ok()
}

/// True when the entry's own name is hidden.
pub fn is_hidden_name(path: &str) -> bool {
    deleted_at(path).is_some()
}

/// True when the path or any ancestor is hidden.
pub fn is_within_hidden(path: &str) -> bool {
    has_hidden_component(path)
}

/// Refuses a new name (mkdir, create, rename destination) with the
/// reserved hidden prefix in any component.
pub fn check_user_path(path: &str) -> Result<()> {
    if has_hidden_component(path) {
        return Err(Error::InvalidPath {
            path: quote(path),
            reason: format!("names starting with {PREFIX:?} are reserved for deleted files"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detection() {
        let h = hidden_path("/a/b.txt", 1234);
        assert_eq!(h, "/a/.gfs-deleted.1234.b.txt");
        assert_eq!(deleted_at(&h), Some(1234));
        assert!(is_hidden_name(&h));
        assert!(is_within_hidden(&format!("{h}/x")));
        assert!(!is_hidden_name(&format!("{h}/x")));
        assert_eq!(hidden_path("/f", 5), "/.gfs-deleted.5.f");
        assert_eq!(deleted_at("/a/b"), None);
        assert_eq!(deleted_at("/a/.gfs-deleted.x.b"), None);
        assert!(check_user_path("/a/.gfs-deleted.1.b").is_err());
        assert!(check_user_path("/a/.gfs-deleted.1.b/c").is_err(), "inside a deleted directory");
        assert!(check_user_path("/a/.gfs-deleted.x").is_err(), "any name with the prefix");
        assert!(check_user_path("/a/b").is_ok());
    }
}

//! Namespace path rules.
//!
//! A valid path is absolute, uses `/` as separator, has no empty, `.` or
//! `..` components and no NUL bytes. `/` is the root. Trailing slashes are
//! tolerated and removed.

use crate::error::{Error, Result};

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted component, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Returns `path` in canonical form (no trailing slash except for the root),
/// or an `InvalidPath` error saying what is wrong.
pub fn normalize(path: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidPath { path: path.to_string(), reason: reason.to_string() };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad("path longer than 4096 bytes"));
    }
    if !path.starts_with('/') {
        return Err(bad("path must be absolute (start with '/')"));
    }
    if path.contains('\0') {
        return Err(bad("NUL byte in path"));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    for comp in trimmed[1..].split('/') {
        match comp {
            "" => return Err(bad("empty path component ('//')")),
            "." => return Err(bad("'.' is not allowed as a component")),
            ".." => return Err(bad("'..' is not allowed as a component")),
            c if c.len() > MAX_NAME_LEN => return Err(bad("component longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// Returns the parent of a canonical path (`None` for the root).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Returns the last component of a canonical path (`""` for the root).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Returns every proper ancestor of a canonical path, root first.
pub fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = parent(path);
    while let Some(p) = cur {
        out.push(p.to_string());
        cur = parent(p);
    }
    out.reverse();
    out
}

/// Joins a canonical directory path and a child name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}

/// Returns true when `path` equals `dir` or lies below it.
pub fn is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_canonicalizes() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize("///").unwrap(), "/");
    }

    #[test]
    fn rejects_bad_paths() {
        for p in ["", "a/b", "/a//b", "/a/./b", "/a/../b", "/..", "/a\0b"] {
            let e = normalize(p).unwrap_err();
            assert!(matches!(e, Error::InvalidPath { .. }), "{p:?} gave {e:?}");
        }
        assert!(normalize(&format!("/{}", "x".repeat(256))).is_err());
    }

    #[test]
    fn relations() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(ancestors("/a/b/c"), vec!["/", "/a", "/a/b"]);
        assert_eq!(file_name("/a/b"), "b");
        assert!(is_within("/a/b", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}

//! Namespace path rules.
//!
//! A valid path is absolute, uses `/` as separator and has no empty, `.` or
//! `..` components. `/` is the root. Trailing slashes are tolerated and
//! removed. Control characters (NUL, newline, escape, C1 codes...) and the
//! Unicode direction overrides are refused anywhere in a path: they make a
//! name print as another one, in listings and in logs.
//!
//! Limits, checked on every path a caller gives (create, mkdir, rename
//! source and destination, and every path a rename moves): at most
//! [`MAX_PATH_LEN`] bytes, [`MAX_NAME_LEN`] bytes per component and
//! [`MAX_DEPTH`] components. They count names as the user gave them: the
//! prefix a delete adds to a hidden entry (`.gfs-deleted.<ms>.`, see
//! [`HIDDEN_PREFIX`]) does not count, so a deleted entry can always be
//! named again to restore or purge it.
//!
//! An error quotes at most [`ERROR_QUOTE_CHARS`] characters of a bad path,
//! with control characters escaped: a 1 MiB path gets a short answer.

use crate::error::{Error, Result};

/// Longest accepted path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Most components of a path (as HDFS). Every mutation locks each
/// ancestor, so depth is work per call.
pub const MAX_DEPTH: usize = 1000;
/// Prefix of the name of a deleted entry awaiting garbage collection:
/// `.gfs-deleted.<unix ms>.<name>`. Reserved: callers cannot create or
/// move anything to a name with it (the master checks).
pub const HIDDEN_PREFIX: &str = ".gfs-deleted.";
/// Most bytes the hidden prefix adds to a name (prefix, 20 digits, dot).
const HIDDEN_EXTRA: usize = HIDDEN_PREFIX.len() + 21;
/// Longest input looked at: room for hidden prefixes on top of the limit.
const MAX_INPUT_LEN: usize = 4 * MAX_PATH_LEN;
/// Characters of a bad path quoted in an error.
pub const ERROR_QUOTE_CHARS: usize = 128;

/// True for characters refused in paths: control characters and the
/// invisible direction marks and overrides (which make `evil\u{202e}txt.exe`
/// display as another name) and the Unicode line separators.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Returns a short, printable rendering of an untrusted path for errors
/// and logs: at most [`ERROR_QUOTE_CHARS`] characters of it, forbidden
/// ones escaped (an escape counts with its own length), and the total
/// length when cut.
pub fn quote(path: &str) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for c in path.chars() {
        let width = if is_forbidden_char(c) { c.escape_unicode().count() } else { 1 };
        if shown + width > ERROR_QUOTE_CHARS {
            out.push_str(&format!("...({} bytes in all)", path.len()));
            break;
        }
        if width > 1 {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
        shown += width;
    }
    out
}

fn invalid(path: &str, reason: impl Into<String>) -> Error {
    Error::InvalidPath { path: quote(path), reason: reason.into() }
}

/// The length of a component as the user named it: without the hidden
/// prefix a delete added.
fn user_name_len(comp: &str) -> usize {
    let user = comp.strip_prefix(HIDDEN_PREFIX).and_then(|rest| {
        let (ms, name) = rest.split_once('.')?;
        (!ms.is_empty() && ms.len() <= 20 && ms.bytes().all(|b| b.is_ascii_digit())).then_some(name)
    });
    user.unwrap_or(comp).len()
}

/// Checks the limits of a canonical path (see the module docs).
pub fn check_limits(path: &str) -> Result<()> {
    if path == "/" {
        return Ok(());
    }
    let (mut len, mut depth) = (0, 0);
    for comp in path[1..].split('/') {
        let name = user_name_len(comp);
        if name > MAX_NAME_LEN || comp.len() > MAX_NAME_LEN + HIDDEN_EXTRA {
            return Err(invalid(path, format!("a component is longer than {MAX_NAME_LEN} bytes")));
        }
        len += 1 + name;
        depth += 1;
    }
    if len > MAX_PATH_LEN {
        return Err(invalid(path, format!("path is longer than {MAX_PATH_LEN} bytes")));
    }
    if depth > MAX_DEPTH {
        return Err(invalid(path, format!("path is deeper than {MAX_DEPTH} components")));
    }
    Ok(())
}

/// Returns `path` in canonical form (no trailing slash except for the root),
/// or an `InvalidPath` error saying what is wrong.
pub fn normalize(path: &str) -> Result<String> {
    if path.is_empty() {
        return Err(invalid(path, "empty path"));
    }
    if path.len() > MAX_INPUT_LEN {
        return Err(invalid(path, format!("path of {} bytes is longer than {MAX_PATH_LEN} bytes", path.len())));
    }
    if !path.starts_with('/') {
        return Err(invalid(path, "path must be absolute (start with '/')"));
    }
    if let Some((at, c)) = path.char_indices().find(|(_, c)| is_forbidden_char(*c)) {
        return Err(invalid(path, format!("control character {} at byte {at}", c.escape_unicode())));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    for comp in trimmed[1..].split('/') {
        match comp {
            "" => return Err(invalid(path, "empty path component ('//')")),
            "." => return Err(invalid(path, "'.' is not allowed as a component")),
            ".." => return Err(invalid(path, "'..' is not allowed as a component")),
            _ => {}
        }
    }
    check_limits(trimmed)?;
    Ok(trimmed.to_string())
}

/// Returns true when a component of the path has the reserved hidden
/// prefix (the entry is deleted, or inside a deleted directory).
pub fn has_hidden_component(path: &str) -> bool {
    path.split('/').any(|c| c.starts_with(HIDDEN_PREFIX))
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
        for p in ["", "a/b", "/a//b", "/a/./b", "/a/../b", "/..", "/a\0b", "/a\nb", "/a\u{1b}[31m", "/x\u{202e}gpj.exe"]
        {
            let e = normalize(p).unwrap_err();
            assert!(matches!(e, Error::InvalidPath { .. }), "{p:?} gave {e:?}");
        }
        assert!(normalize(&format!("/{}", "x".repeat(256))).is_err());
        assert!(normalize(&format!("/{}", "x".repeat(255))).is_ok());
        assert!(normalize(&"/d".repeat(MAX_DEPTH)).is_ok());
        let e = normalize(&"/d".repeat(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("deeper than 1000"), "{e}");
        let long = format!("/{}", vec!["y".repeat(200); 21].join("/"));
        assert!(normalize(&long).unwrap_err().to_string().contains("longer than 4096"));
    }

    #[test]
    fn hidden_prefixes_do_not_count_against_the_limits() {
        let name = "n".repeat(MAX_NAME_LEN);
        let hidden = format!("/a/{HIDDEN_PREFIX}1700000000000.{name}");
        assert_eq!(normalize(&hidden).unwrap(), hidden);
        // A made-up prefix without a time counts in full.
        assert!(normalize(&format!("/a/{HIDDEN_PREFIX}x.{name}")).is_err());
        assert!(has_hidden_component(&hidden));
        assert!(!has_hidden_component("/a/b"));
    }

    #[test]
    fn errors_quote_a_short_escaped_prefix() {
        let huge = format!("/{}", "z".repeat(1 << 20));
        let e = normalize(&huge).unwrap_err().to_string();
        assert!(e.len() < 400, "{} bytes of error", e.len());
        assert!(e.contains("bytes in all"), "{e}");
        let e = normalize("/a\u{7}b").unwrap_err().to_string();
        assert!(!e.contains('\u{7}') && e.contains("u{7}"), "{e}");
        // Escapes count with their length (found by fuzzing: 128 escaped
        // NULs quoted as 640 characters).
        let nuls = format!("/{}", "\0".repeat(1000));
        let q = quote(&nuls);
        assert!(q.chars().count() <= ERROR_QUOTE_CHARS + 30 && q.ends_with("(1001 bytes in all)"), "{q}");
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

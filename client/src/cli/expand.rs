//! Globs in remote paths, as HDFS's `globStatus`: a remote argument with
//! `*`, `?` or `[` in any component is matched component by component
//! against paged listings (the matcher of [`super::glob`]), and the
//! matches come back sorted. A path without those characters is used as
//! it is (a missing one is then the command's own "not found").

use gfs_common::Error;
use gfs_common::path::{file_name, join};

use super::exit::{self, NOT_FOUND, USAGE};
use super::glob::Glob;
use crate::Client;

/// The most paths one pattern may expand to: a pattern over a directory
/// of millions of entries is refused rather than held in memory.
pub const MAX_MATCHES: usize = 100_000;

/// True when `s` has a glob character.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The remote paths `pattern` names: itself when it has no glob
/// character, else every existing match, sorted; no match is an error
/// `remote PATTERN: no match` (exit code of not found).
pub async fn expand(client: &Client, pattern: &str) -> anyhow::Result<Vec<String>> {
    if !has_glob(pattern) {
        return Ok(vec![pattern.to_string()]);
    }
    if !pattern.starts_with('/') {
        return Err(exit::remote_text(format!("remote {pattern:?}: invalid path: must be absolute"), USAGE));
    }
    let mut cur = vec!["/".to_string()];
    // A literal component after a glob: its paths may not exist.
    let mut unchecked = false;
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        if !has_glob(comp) {
            cur.iter_mut().for_each(|p| *p = join(p, comp));
            unchecked = true;
            continue;
        }
        let glob = Glob::new(comp).map_err(|e| exit::remote_text(format!("remote {pattern}: {e:#}"), USAGE))?;
        let mut next = Vec::new();
        for dir in &cur {
            matches_in(client, dir, &glob, pattern, &mut next).await?;
        }
        cur = next;
        unchecked = false;
        if cur.is_empty() {
            break;
        }
    }
    if unchecked {
        let mut kept = Vec::with_capacity(cur.len());
        for p in cur {
            match client.stat(&p).await {
                Ok(_) => kept.push(p),
                Err(Error::NotFound { .. } | Error::NotADirectory { .. }) => {}
                Err(e) => return Err(exit::remote(e, "")),
            }
        }
        cur = kept;
    }
    if cur.is_empty() {
        return Err(exit::remote_text(format!("remote {pattern}: no match"), NOT_FOUND));
    }
    cur.sort();
    cur.dedup();
    Ok(cur)
}

/// [`expand`] for each argument, in order.
pub async fn expand_all(client: &Client, patterns: &[String]) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    for p in patterns {
        all.extend(expand(client, p).await?);
    }
    Ok(all)
}

/// Adds the entries of directory `dir` whose names match `glob` to `out`
/// (nothing when `dir` is missing or a file).
async fn matches_in(
    client: &Client,
    dir: &str,
    glob: &Glob,
    pattern: &str,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut pages = client.lister(dir, false);
    loop {
        let page = match pages.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) | Err(Error::NotFound { .. } | Error::NotADirectory { .. }) => return Ok(()),
            Err(e) => return Err(exit::remote(e, "")),
        };
        // A file lists as itself: it has no entries to match.
        for e in page.into_iter().filter(|e| e.path != dir && glob.matches(file_name(&e.path))) {
            if out.len() >= MAX_MATCHES {
                let text = format!("remote {pattern}: more than {MAX_MATCHES} matches; narrow the pattern");
                return Err(exit::remote_text(text, exit::FAILURE));
            }
            out.push(e.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters() {
        assert!(has_glob("/a/*.log"));
        assert!(has_glob("/a?/b"));
        assert!(has_glob("/[ab]/c"));
        assert!(!has_glob("/a/b.log"));
    }

    #[tokio::test]
    async fn a_literal_path_is_used_as_is_without_any_rpc() {
        let c = Client::new(crate::ClientConfig::new("127.0.0.1:1")).unwrap();
        assert_eq!(expand(&c, "/a/b").await.unwrap(), ["/a/b"]);
        assert_eq!(expand(&c, "relative").await.unwrap(), ["relative"], "the command reports it");
        let e = expand(&c, "rel/*").await.unwrap_err();
        assert_eq!(exit::code_of(&e), USAGE);
        let e = expand(&c, "/a/[b").await.unwrap_err();
        assert!(e.to_string().contains("unclosed"), "{e}");
    }
}

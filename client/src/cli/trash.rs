//! `gfs trash`: the deleted entries awaiting garbage collection. A delete
//! renames `/d/name` to `/d/.gfs-deleted.<unix ms>.<name>` in the same
//! directory (see the master's `hidden.rs`); listings with
//! `include_hidden` show them. `trash list` prints them, `trash empty`
//! purges them now (a delete of a hidden path removes it for good) and
//! `trash restore` renames one back (the undelete).

use anyhow::bail;
use gfs_common::Error;
use gfs_common::path::{HIDDEN_PREFIX, file_name, join, normalize, parent};

use super::exit;
use super::output::format_time_ms;
use super::verbs::{Out, remote};
use crate::{Client, FileInfo, FileType};

/// The deletion time (unix ms) and original name of a hidden name, by the
/// master's rule: `.gfs-deleted.<ms>.<name>` with a non-empty name.
pub fn parse_hidden(name: &str) -> Option<(i64, &str)> {
    let rest = name.strip_prefix(HIDDEN_PREFIX)?;
    let (ms, original) = rest.split_once('.')?;
    if original.is_empty() || ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, original))
}

/// Visits every deleted entry at or below `top` (not inside deleted
/// directories: each is one entry), a page at a time.
async fn each_deleted<F>(client: &Client, top: &str, mut visit: F) -> anyhow::Result<()>
where
    F: AsyncVisit,
{
    let top = normalize(top).map_err(remote)?;
    let info = client.stat(&top).await.map_err(remote)?.info;
    if info.r#type() != FileType::Directory {
        bail!("trash: remote {top}: not a directory");
    }
    // Directories still to walk; deleted ones are never entered.
    let mut dirs = vec![top];
    while let Some(dir) = dirs.pop() {
        let mut pages = client.lister(&dir, true);
        loop {
            let page = match pages.next_page().await {
                Ok(Some(p)) => p,
                Ok(None) => break,
                // Removed while we walked.
                Err(Error::NotFound { .. }) => break,
                Err(e) => return Err(remote(e)),
            };
            for e in page {
                if parse_hidden(file_name(&e.path)).is_some() {
                    if !visit.visit(client, &e).await? {
                        return Ok(());
                    }
                } else if e.r#type() == FileType::Directory && e.path != dir {
                    dirs.push(e.path);
                }
            }
        }
    }
    Ok(())
}

/// What [`each_deleted`] does with each entry; false stops the walk.
trait AsyncVisit {
    async fn visit(&mut self, client: &Client, e: &FileInfo) -> anyhow::Result<bool>;
}

/// Prints each deleted entry: deletion time, type, original path, hidden path.
struct Lister(Out);

impl AsyncVisit for Lister {
    async fn visit(&mut self, _: &Client, e: &FileInfo) -> anyhow::Result<bool> {
        let (ms, original) = parse_hidden(file_name(&e.path)).expect("checked by the walk");
        let dir = parent(&e.path).unwrap_or("/");
        let kind = if e.r#type() == FileType::Directory { "dir " } else { "file" };
        self.0.print(&format!("{}  {kind}  {}  {}\n", format_time_ms(ms), join(dir, original), e.path))
    }
}

/// Purges each deleted entry, counting them.
struct Purger(u64);

impl AsyncVisit for Purger {
    async fn visit(&mut self, client: &Client, e: &FileInfo) -> anyhow::Result<bool> {
        match client.delete(&e.path, true).await {
            // Collected meanwhile.
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(err) => return Err(remote(err)),
        }
        self.0 += 1;
        Ok(true)
    }
}

/// `gfs trash list [PATH]`.
pub async fn list(client: &Client, path: &str) -> anyhow::Result<()> {
    each_deleted(client, path, Lister(Out::default())).await
}

/// `gfs trash empty [PATH]`: purges every deleted entry at or below PATH.
pub async fn empty(client: &Client, path: &str) -> anyhow::Result<()> {
    let mut purger = Purger(0);
    each_deleted(client, path, &mut purger).await?;
    eprintln!("trash: purged {} deleted entr{}", purger.0, if purger.0 == 1 { "y" } else { "ies" });
    Ok(())
}

impl<T: AsyncVisit> AsyncVisit for &mut T {
    async fn visit(&mut self, client: &Client, e: &FileInfo) -> anyhow::Result<bool> {
        (**self).visit(client, e).await
    }
}

/// `gfs trash restore HIDDEN_PATH [DEST]`: renames a deleted entry back to
/// DEST (default: its original name in the same directory).
pub async fn restore(client: &Client, hidden: &str, dest: Option<&str>) -> anyhow::Result<()> {
    let hidden = normalize(hidden).map_err(remote)?;
    let Some((_, original)) = parse_hidden(file_name(&hidden)) else {
        let text =
            format!("remote {hidden}: not a deleted entry (names start with {HIDDEN_PREFIX}<ms>.; see gfs trash list)");
        return Err(exit::remote_text(text, exit::USAGE));
    };
    let dest = match dest {
        Some(d) => normalize(d).map_err(remote)?,
        None => join(parent(&hidden).unwrap_or("/"), original),
    };
    match client.rename(&hidden, &dest).await {
        Ok(()) => Out::default().print(&format!("restored {hidden} -> {dest}\n")).map(|_| ()),
        Err(Error::AlreadyExists { .. }) => Err(exit::remote_text(
            format!("remote {dest} exists: give another DEST (gfs trash restore {hidden} DEST)"),
            exit::EXISTS,
        )),
        Err(e) => Err(remote(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hidden_names_as_the_master_writes_them() {
        assert_eq!(parse_hidden(".gfs-deleted.1234.b.txt"), Some((1234, "b.txt")));
        assert_eq!(parse_hidden(".gfs-deleted.5.f"), Some((5, "f")));
        for bad in
            ["b.txt", ".gfs-deleted.x.b", ".gfs-deleted.12.", ".gfs-deleted.12", ".gfs-deleted..b", ".gfs-deleted.+1.b"]
        {
            assert_eq!(parse_hidden(bad), None, "{bad}");
        }
    }
}

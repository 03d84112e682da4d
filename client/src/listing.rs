//! Directory listings in pages, as HDFS's `getListing`: the master answers
//! at most a page (1000 entries by default) after a cursor (the name of
//! the last entry seen) and says whether more follow. [`Lister`] follows
//! the pages of one directory, [`TreeLister`] walks a tree (`ls -R`); both
//! hold at most a page per directory level, so a directory of millions of
//! entries streams in bounded memory.
//!
//! Every page is one `List` call through `Client::master_call`, with its
//! retries and leader failover; a retried page asks again after the same
//! cursor, so no entry is skipped or repeated across a failover. Replies
//! are checked before they are followed (entries below the directory, in
//! increasing name order past the cursor): a bad or hostile master cannot
//! make a walk loop.

use std::collections::VecDeque;

use gfs_common::net::with_deadline;
use gfs_common::path::{MAX_DEPTH, file_name, normalize, parent};
use gfs_common::{Error, Result};
use gfs_proto::{FileInfo, FileType, ListRequest};

use super::Client;

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Entries in name order.
    pub entries: Vec<FileInfo>,
    /// More entries follow the last one: ask again with its name as the
    /// cursor.
    pub has_more: bool,
}

impl Client {
    /// Lists a directory, every page of it (see [`Client::lister`] to
    /// take them one at a time).
    pub async fn list(&self, path: &str) -> Result<Vec<FileInfo>> {
        self.list_with(path, false).await
    }

    /// Lists a directory, every page of it, with deleted (hidden) entries
    /// awaiting garbage collection when `include_hidden`.
    pub async fn list_with(&self, path: &str, include_hidden: bool) -> Result<Vec<FileInfo>> {
        let mut lister = self.lister(path, include_hidden);
        let mut all = Vec::new();
        while let Some(page) = lister.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }

    /// One page of a directory listing: at most `limit` entries (0 = the
    /// master's default, 1000; it caps larger ones at 10 000) whose names
    /// come after `start_after` (a name, not a path; empty = from the
    /// start). A file lists as itself.
    pub async fn list_page(&self, path: &str, start_after: &str, limit: u32) -> Result<ListPage> {
        self.list_page_with(path, start_after, limit, false).await
    }

    /// [`Client::list_page`], with deleted (hidden) entries when
    /// `include_hidden`.
    pub async fn list_page_with(
        &self,
        path: &str,
        start_after: &str,
        limit: u32,
        include_hidden: bool,
    ) -> Result<ListPage> {
        let path = normalize(path)?;
        let allow_stale = self.inner.config.allow_stale_reads;
        let resp = self
            .master_call(|mut m, t| {
                let req = ListRequest {
                    path: path.clone(),
                    include_hidden,
                    allow_stale,
                    start_after: start_after.to_string(),
                    limit,
                };
                async move { m.list(with_deadline(req, t)).await }
            })
            .await?;
        Ok(ListPage { entries: resp.entries, has_more: resp.has_more })
    }

    /// Follows the pages of `path`'s listing, one call per page.
    pub fn lister(&self, path: &str, include_hidden: bool) -> Lister {
        Lister { client: self.clone(), path: path.to_string(), include_hidden, limit: 0, cursor: None, done: false }
    }

    /// Walks `path` and everything below it in pre-order (each directory
    /// before its entries), a page at a time.
    pub fn tree_lister(&self, path: &str, include_hidden: bool) -> TreeLister {
        let top = Frame { lister: self.lister(path, include_hidden), pending: VecDeque::new(), dir: None };
        TreeLister { client: self.clone(), include_hidden, stack: vec![top], post_order: false, ready: Vec::new() }
    }

    /// `path` and everything below it (deleted entries excluded), each
    /// entry after everything below it, a page at a time: what `chmod -R`,
    /// `chown -R` and `setrep` walk, so that a change taking a directory's
    /// permissions away comes after the changes inside it, which still
    /// need them. Memory stays at a page per directory level, whatever
    /// the tree's size.
    pub async fn walk_post_order(&self, path: &str) -> Result<TreeLister> {
        let top = self.stat(path).await?.info;
        let mut walk = TreeLister {
            client: self.clone(),
            include_hidden: false,
            stack: Vec::new(),
            post_order: true,
            ready: Vec::new(),
        };
        if top.r#type() == FileType::Directory {
            let lister = self.lister(&top.path, false);
            walk.stack.push(Frame { lister, pending: VecDeque::new(), dir: Some(top) });
        } else {
            walk.ready.push(top);
        }
        Ok(walk)
    }
}

/// The pages of one directory's listing, in name order.
pub struct Lister {
    client: Client,
    path: String,
    include_hidden: bool,
    limit: u32,
    /// The name of the last entry returned.
    cursor: Option<String>,
    done: bool,
}

impl Lister {
    /// Asks for pages of at most `limit` entries (0 = the master's default).
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// The next page, or `None` after the last one. A file lists as itself.
    pub async fn next_page(&mut self) -> Result<Option<Vec<FileInfo>>> {
        if self.done {
            return Ok(None);
        }
        let after = self.cursor.as_deref().unwrap_or("");
        let page = self.client.list_page_with(&self.path, after, self.limit, self.include_hidden).await?;
        self.check(&page)?;
        match page.entries.last() {
            Some(last) if page.has_more => self.cursor = Some(file_name(&last.path).to_string()),
            _ => self.done = true,
        }
        Ok((!page.entries.is_empty()).then_some(page.entries))
    }

    /// A page must move forward: entries directly below the directory in
    /// increasing name order after the cursor, and not empty when more
    /// follow; or the listed file itself, alone.
    fn check(&self, page: &ListPage) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::Internal(format!("the master's listing of {} {why}", gfs_common::path::quote(&self.path))))
        };
        if page.has_more && page.entries.is_empty() {
            return bad("says more entries follow but has none");
        }
        let path = normalize(&self.path)?;
        if let [only] = page.entries.as_slice()
            && only.path == path
            && only.r#type() != FileType::Directory
        {
            return if page.has_more { bad("of a file says more follow") } else { Ok(()) };
        }
        let mut prev = self.cursor.as_deref();
        for e in &page.entries {
            let name = file_name(&e.path);
            if parent(&e.path) != Some(path.as_str()) || name.is_empty() {
                return bad(&format!("has an entry not in it: {}", gfs_common::path::quote(&e.path)));
            }
            if prev.is_some_and(|p| name <= p) {
                return bad("is out of name order, or repeats an entry");
            }
            prev = Some(name);
        }
        Ok(())
    }
}

/// A directory being walked: its lister, what is left of its page and,
/// in a post-order walk, its own entry (given once its listing ends).
struct Frame {
    lister: Lister,
    pending: VecDeque<FileInfo>,
    dir: Option<FileInfo>,
}

/// A walk of a tree, a batch at a time: in pre-order (`ls -R`: each
/// directory before its entries, the top not included) or in post-order
/// ([`Client::walk_post_order`]: each entry after everything below it, the
/// top last). Memory is at most a page per directory level.
pub struct TreeLister {
    client: Client,
    include_hidden: bool,
    stack: Vec<Frame>,
    post_order: bool,
    /// Entries to give before walking on (a post-order walk of a file).
    ready: Vec<FileInfo>,
}

impl TreeLister {
    /// The next entries of the walk, in order, or `None` when it is done.
    /// A batch ends at a directory (its entries come next) or at the end
    /// of a page.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<FileInfo>>> {
        loop {
            if !self.ready.is_empty() {
                return Ok(Some(std::mem::take(&mut self.ready)));
            }
            let Some(top) = self.stack.last_mut() else { return Ok(None) };
            if top.pending.is_empty() {
                match top.lister.next_page().await? {
                    Some(page) => top.pending = page.into(),
                    None => {
                        // In post-order a directory comes once all below it did.
                        if let Some(dir) = self.stack.pop().and_then(|f| f.dir) {
                            return Ok(Some(vec![dir]));
                        }
                        continue;
                    }
                }
            }
            let mut batch = Vec::new();
            while let Some(e) = top.pending.pop_front() {
                if e.r#type() != FileType::Directory {
                    batch.push(e);
                    continue;
                }
                // Its entries come right after it (pre-order), or before
                // it (post-order: it waits in its frame).
                let dir = e.path.clone();
                let own = if self.post_order {
                    Some(e)
                } else {
                    batch.push(e);
                    None
                };
                self.descend(&dir, own)?;
                break;
            }
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
    }

    fn descend(&mut self, dir: &str, own: Option<FileInfo>) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::Internal(format!(
                "listing {}: deeper than {MAX_DEPTH} levels, which no path can be",
                gfs_common::path::quote(dir)
            )));
        }
        let lister = self.client.lister(dir, self.include_hidden);
        self.stack.push(Frame { lister, pending: VecDeque::new(), dir: own });
        Ok(())
    }
}

//! chmod and chown, and the tree walk their `-R` forms use.
//!
//! The master checks who may: the owner or a superuser sets the mode; a
//! superuser sets the owner, and the owner may set the group to one of
//! their own groups (HDFS's rules). Recursion is the client's, as HDFS's
//! shell does it: one call per entry, each checked on its own.

use gfs_common::Result;
use gfs_common::net::with_deadline;
use gfs_common::path::normalize;
use gfs_proto::{FileInfo, FileType, SetOwnerRequest, SetPermissionRequest};

use super::Client;

impl Client {
    /// Sets the mode (permission bits, at most 0o1777) of `path`; returns
    /// its new info.
    pub async fn set_permission(&self, path: &str, mode: u32) -> Result<FileInfo> {
        let path = normalize(path)?;
        let call = self.next_call();
        let resp = self
            .master_call(|mut m, t| {
                let req = SetPermissionRequest { path: path.clone(), mode, call: Some(call) };
                async move { m.set_permission(with_deadline(req, t)).await }
            })
            .await?;
        resp.info.ok_or_else(|| gfs_common::Error::Internal("set permission reply without file info".into()))
    }

    /// Sets the owner and/or the group of `path` (`None`: unchanged);
    /// returns its new info.
    pub async fn set_owner(&self, path: &str, owner: Option<&str>, group: Option<&str>) -> Result<FileInfo> {
        let path = normalize(path)?;
        let call = self.next_call();
        let (owner, group) = (owner.unwrap_or_default().to_string(), group.unwrap_or_default().to_string());
        let resp = self
            .master_call(|mut m, t| {
                let req = SetOwnerRequest {
                    path: path.clone(),
                    owner: owner.clone(),
                    group: group.clone(),
                    call: Some(call),
                };
                async move { m.set_owner(with_deadline(req, t)).await }
            })
            .await?;
        resp.info.ok_or_else(|| gfs_common::Error::Internal("set owner reply without file info".into()))
    }

    /// `path` and everything below it (deleted entries awaiting garbage
    /// collection excluded), each entry after everything below it: a
    /// change that takes a directory's permissions away comes after the
    /// changes inside it, which still need them.
    pub async fn walk(&self, path: &str) -> Result<Vec<FileInfo>> {
        let top = self.stat(path).await?.info;
        let mut pre_order = Vec::new();
        let mut todo = vec![top];
        while let Some(info) = todo.pop() {
            if info.r#type() == FileType::Directory {
                let mut children = self.list(&info.path).await?;
                children.sort_by(|a, b| b.path.cmp(&a.path));
                todo.extend(children);
            }
            pre_order.push(info);
        }
        pre_order.reverse();
        Ok(pre_order)
    }
}

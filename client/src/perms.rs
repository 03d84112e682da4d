//! chmod, chown and setrep, and the tree walk their recursive forms use.
//!
//! The master checks who may: the owner or a superuser sets the mode; a
//! superuser sets the owner, and the owner may set the group to one of
//! their own groups (HDFS's rules). Recursion is the client's, as HDFS's
//! shell does it: one call per entry, each checked on its own.

use gfs_common::Result;
use gfs_common::net::with_deadline;
use gfs_common::path::normalize;
use gfs_proto::{FileInfo, SetOwnerRequest, SetPermissionRequest, SetReplicationRequest};

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

    /// Sets the replication of file `path` (1..=16); repair adds the
    /// replicas or drops the extra ones afterwards. A goal above the
    /// chunkservers in service is refused unless `allow_under_replicated`.
    /// Returns the file's new info.
    pub async fn set_replication(
        &self,
        path: &str,
        replication: u32,
        allow_under_replicated: bool,
    ) -> Result<FileInfo> {
        let path = normalize(path)?;
        let call = self.next_call();
        let resp = self
            .master_call(|mut m, t| {
                let req =
                    SetReplicationRequest { path: path.clone(), replication, call: Some(call), allow_under_replicated };
                async move { m.set_replication(with_deadline(req, t)).await }
            })
            .await?;
        resp.info.ok_or_else(|| gfs_common::Error::Internal("set replication reply without file info".into()))
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
}

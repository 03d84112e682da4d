//! Maintenance calls: decommission, recommission, mark-lost, hidden
//! listings, repair events and master group membership.

use gfs_common::Result;
use gfs_common::net::with_deadline;
use gfs_proto::{
    AddMasterRequest, DecommissionRequest, FileInfo, MarkLostRequest, MasterInfo, MasterStatusRequest,
    MasterStatusResponse, RecommissionRequest, RemoveMasterRequest, RepairEvent, RepairEventsRequest, ServerStatus,
};

use crate::client::Client;

impl Client {
    /// Starts draining `server` (id or address): its replicas are copied
    /// elsewhere and it ends decommissioned.
    pub async fn decommission(&self, server: &str) -> Result<ServerStatus> {
        let resp = self
            .master_call(|mut m, t| {
                let req = DecommissionRequest { server: server.to_string() };
                async move { m.decommission(with_deadline(req, t)).await }
            })
            .await?;
        Ok(resp.server.unwrap_or_default())
    }

    /// Cancels or undoes a decommission (and clears a lost mark).
    pub async fn recommission(&self, server: &str) -> Result<ServerStatus> {
        let resp = self
            .master_call(|mut m, t| {
                let req = RecommissionRequest { server: server.to_string() };
                async move { m.recommission(with_deadline(req, t)).await }
            })
            .await?;
        Ok(resp.server.unwrap_or_default())
    }

    /// Declares `server` lost; returns its status and the chunks queued
    /// for re-replication.
    pub async fn mark_lost(&self, server: &str) -> Result<(ServerStatus, u64)> {
        let resp = self
            .master_call(|mut m, t| {
                let req = MarkLostRequest { server: server.to_string() };
                async move { m.mark_lost(with_deadline(req, t)).await }
            })
            .await?;
        Ok((resp.server.unwrap_or_default(), resp.chunks_queued))
    }

    /// Lists a directory including deleted (hidden) entries.
    pub async fn list_hidden(&self, path: &str) -> Result<Vec<FileInfo>> {
        self.list_with(path, true).await
    }

    /// The master's most recent completed repairs, oldest first.
    pub async fn repair_events(&self) -> Result<Vec<RepairEvent>> {
        let resp = self
            .master_call(|mut m, t| async move { m.repair_events(with_deadline(RepairEventsRequest {}, t)).await })
            .await?;
        Ok(resp.events)
    }

    /// Adds master `id` at `address` to the master group (as a learner
    /// until it caught up, then as a voter). Returns the members after the
    /// change.
    pub async fn add_master(&self, id: u64, address: &str) -> Result<Vec<MasterInfo>> {
        let resp = self
            .master_call(|mut m, t| {
                let req = AddMasterRequest { id, address: address.to_string() };
                async move { m.add_master(with_deadline(req, t)).await }
            })
            .await?;
        Ok(resp.members)
    }

    /// Removes master `id` from the master group. Returns the members
    /// after the change.
    pub async fn remove_master(&self, id: u64) -> Result<Vec<MasterInfo>> {
        let resp = self
            .master_call(|mut m, t| async move { m.remove_master(with_deadline(RemoveMasterRequest { id }, t)).await })
            .await?;
        Ok(resp.members)
    }

    /// The Raft status of the master this client currently talks to (any
    /// master answers about itself).
    pub async fn master_status(&self) -> Result<MasterStatusResponse> {
        self.master_call(|mut m, t| async move { m.master_status(with_deadline(MasterStatusRequest {}, t)).await })
            .await
    }
}

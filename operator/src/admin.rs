//! The master's admin API (ClusterStatus, Decommission, Recommission,
//! MarkLost), each call with a deadline.

use std::time::Duration;

use gfs_common::auth::Role;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::tls::Security;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{
    AddMasterRequest, ClusterStatusRequest, ClusterStatusResponse, DecommissionRequest, MarkLostRequest,
    MarkLostResponse, MasterInfo, RecommissionRequest, RemoveMasterRequest, ServerStatus,
};

use crate::error::{Error, Result};

/// Deadline of every admin RPC.
const DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of a membership change (a learner may need to catch up).
const MEMBER_DEADLINE: Duration = Duration::from_secs(10);

/// Talks to masters; one lazily connected channel per address.
#[derive(Clone)]
pub struct MasterAdmin {
    pool: ChannelPool,
    /// Set when the operator has no usable identity for this cluster
    /// (its admin certificate is missing or broken): every call fails with
    /// this reason instead of dialling, and never falls back to plaintext.
    blocked: Option<std::sync::Arc<str>>,
}

impl Default for MasterAdmin {
    /// Plaintext, for masters run with `--insecure`.
    fn default() -> Self {
        Self::new(&Security::Insecure)
    }
}

impl MasterAdmin {
    /// Talks to masters with `security` (with TLS: an admin certificate,
    /// and masters must present the master role).
    pub fn new(security: &Security) -> Self {
        Self { pool: ChannelPool::new(256, Duration::from_secs(3), security, &[Role::Master]), blocked: None }
    }

    /// An admin client whose every call fails with `reason` (no identity to
    /// call masters with yet).
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self { blocked: Some(reason.into().into()), ..Self::default() }
    }

    fn client(&self, addr: &str) -> Result<MasterServiceClient<tonic::transport::Channel>> {
        if let Some(why) = &self.blocked {
            return Err(Error::Master {
                addr: addr.into(),
                status: Box::new(tonic::Status::unavailable(why.to_string())),
            });
        }
        let channel = self.pool.get(addr).map_err(|e| Error::Master {
            addr: addr.into(),
            status: Box::new(tonic::Status::unavailable(e.to_string())),
        })?;
        Ok(MasterServiceClient::new(channel))
    }

    fn fail(&self, addr: &str, status: tonic::Status) -> Error {
        if status.code() == tonic::Code::Unavailable {
            self.pool.forget(addr);
        }
        Error::Master { addr: addr.into(), status: Box::new(status) }
    }

    /// Returns the master's cluster status.
    pub async fn status(&self, addr: &str) -> Result<ClusterStatusResponse> {
        let mut c = self.client(addr)?;
        c.cluster_status(with_deadline(ClusterStatusRequest {}, DEADLINE))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(addr, s))
    }

    /// Starts draining `server` (id or address); returns its new status.
    pub async fn decommission(&self, addr: &str, server: &str) -> Result<Option<ServerStatus>> {
        let mut c = self.client(addr)?;
        c.decommission(with_deadline(DecommissionRequest { server: server.into() }, DEADLINE))
            .await
            .map(|r| r.into_inner().server)
            .map_err(|s| self.fail(addr, s))
    }

    /// Cancels a drain of `server`.
    pub async fn recommission(&self, addr: &str, server: &str) -> Result<Option<ServerStatus>> {
        let mut c = self.client(addr)?;
        c.recommission(with_deadline(RecommissionRequest { server: server.into() }, DEADLINE))
            .await
            .map(|r| r.into_inner().server)
            .map_err(|s| self.fail(addr, s))
    }

    /// Declares `server` lost so repair starts at once.
    pub async fn mark_lost(&self, addr: &str, server: &str) -> Result<MarkLostResponse> {
        let mut c = self.client(addr)?;
        c.mark_lost(with_deadline(MarkLostRequest { server: server.into() }, DEADLINE))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(addr, s))
    }

    /// Adds master `id` at `address` to the group (through the leader:
    /// a follower's `NotLeader` hint is followed once).
    pub async fn add_master(&self, addr: &str, id: u64, address: &str) -> Result<Vec<MasterInfo>> {
        let req = AddMasterRequest { id, address: address.into() };
        self.to_leader(addr, |mut c| {
            let req = req.clone();
            async move { c.add_master(with_deadline(req, MEMBER_DEADLINE)).await.map(|r| r.into_inner().members) }
        })
        .await
    }

    /// Removes master `id` from the group (through the leader).
    pub async fn remove_master(&self, addr: &str, id: u64) -> Result<Vec<MasterInfo>> {
        self.to_leader(addr, |mut c| async move {
            c.remove_master(with_deadline(RemoveMasterRequest { id }, MEMBER_DEADLINE))
                .await
                .map(|r| r.into_inner().members)
        })
        .await
    }

    async fn to_leader<T, F, Fut>(&self, addr: &str, call: F) -> Result<T>
    where
        F: Fn(MasterServiceClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        match call(self.client(addr)?).await {
            Ok(v) => Ok(v),
            Err(s) => match gfs_common::Error::from(s.clone()) {
                gfs_common::Error::NotLeader { leader: Some(l) } if l != addr => {
                    call(self.client(&l)?).await.map_err(|s| self.fail(&l, s))
                }
                _ => Err(self.fail(addr, s)),
            },
        }
    }
}

//! The master's admin API (ClusterStatus, Decommission, Recommission,
//! MarkLost), each call with a deadline.

use std::time::Duration;

use gfs_common::net::{ChannelPool, with_deadline};
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{
    ClusterStatusRequest, ClusterStatusResponse, DecommissionRequest, MarkLostRequest, MarkLostResponse,
    RecommissionRequest, ServerStatus,
};

use crate::error::{Error, Result};

/// Deadline of every admin RPC.
const DEADLINE: Duration = Duration::from_secs(5);

/// Talks to masters; one lazily connected channel per address.
#[derive(Clone)]
pub struct MasterAdmin {
    pool: ChannelPool,
}

impl Default for MasterAdmin {
    fn default() -> Self {
        Self { pool: ChannelPool::new(256, Duration::from_secs(3)) }
    }
}

impl MasterAdmin {
    fn client(&self, addr: &str) -> Result<MasterServiceClient<tonic::transport::Channel>> {
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
}

//! The master's admin API (ClusterStatus, Decommission, Recommission,
//! MarkLost, membership), each call with a deadline and sent to the
//! leader: a Service address reaches any master, so a follower's
//! `NotLeader` hint is followed and the leader remembered per address.

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
    /// The leader last found behind each address the operator was given.
    leaders: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
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
        Self {
            pool: ChannelPool::new(256, Duration::from_secs(3), security, &[Role::Master]),
            leaders: Default::default(),
            blocked: None,
        }
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
        self.to_leader(addr, |mut c| async move {
            c.cluster_status(with_deadline(ClusterStatusRequest {}, DEADLINE)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Starts draining `server` (id or address); returns its new status.
    pub async fn decommission(&self, addr: &str, server: &str) -> Result<Option<ServerStatus>> {
        self.to_leader(addr, |mut c| async move {
            c.decommission(with_deadline(DecommissionRequest { server: server.into() }, DEADLINE))
                .await
                .map(|r| r.into_inner().server)
        })
        .await
    }

    /// Cancels a drain of `server`.
    pub async fn recommission(&self, addr: &str, server: &str) -> Result<Option<ServerStatus>> {
        self.to_leader(addr, |mut c| async move {
            c.recommission(with_deadline(RecommissionRequest { server: server.into() }, DEADLINE))
                .await
                .map(|r| r.into_inner().server)
        })
        .await
    }

    /// Declares `server` lost so repair starts at once.
    pub async fn mark_lost(&self, addr: &str, server: &str) -> Result<MarkLostResponse> {
        self.to_leader(addr, |mut c| async move {
            c.mark_lost(with_deadline(MarkLostRequest { server: server.into() }, DEADLINE))
                .await
                .map(|r| r.into_inner())
        })
        .await
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

    /// The leader last seen behind `addr`, if any.
    pub fn leader_of(&self, addr: &str) -> Option<String> {
        self.leaders.lock().expect("leaders lock").get(addr).cloned()
    }

    /// Calls the leader behind `addr`: the remembered leader first, then
    /// `addr` itself; a `NotLeader` hint is followed once per attempt.
    async fn to_leader<T, F, Fut>(&self, addr: &str, call: F) -> Result<T>
    where
        F: Fn(MasterServiceClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut tries = Vec::with_capacity(2);
        tries.extend(self.leader_of(addr).filter(|l| l != addr));
        tries.push(addr.to_string());
        let mut last = None;
        for target in tries {
            let status = match call(self.client(&target)?).await {
                Ok(v) => return Ok(self.found(addr, &target, v)),
                Err(s) => s,
            };
            match gfs_common::Error::from(status.clone()) {
                gfs_common::Error::NotLeader { leader: Some(l) } if l != target => match call(self.client(&l)?).await {
                    Ok(v) => return Ok(self.found(addr, &l, v)),
                    Err(s) => last = Some(self.fail(&l, s)),
                },
                _ => last = Some(self.fail(&target, status)),
            }
            self.leaders.lock().expect("leaders lock").remove(addr);
        }
        Err(last.expect("at least one attempt"))
    }

    fn found<T>(&self, addr: &str, leader: &str, v: T) -> T {
        if leader != addr {
            self.leaders.lock().expect("leaders lock").insert(addr.into(), leader.into());
        }
        v
    }
}

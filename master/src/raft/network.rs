//! Raft RPCs between masters: `RaftService` over tonic, payloads are
//! openraft's types encoded with postcard.
//!
//! Every call carries openraft's deadline (`RPCOption::hard_ttl`) and
//! gives up at its soft deadline, dropping the pooled connection so the
//! next call dials the peer's name afresh; a transport failure is reported
//! as `Unreachable`, so openraft backs off instead of hammering a dead
//! peer. [`Faults`] drops traffic to and from chosen peers, for partition
//! tests (`--fault-injection`).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gfs_common::auth::Role;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::tls::Security;
use gfs_common::{Error, MAX_MESSAGE_SIZE};
use gfs_proto::raft_service_client::RaftServiceClient;
use gfs_proto::raft_service_server::RaftService;
use gfs_proto::{PartitionRequest, PartitionResponse, RaftMessage};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{NodeId, Raft, TypeConfig};

/// Peers whose Raft traffic is dropped in both directions (fault injection).
#[derive(Default)]
pub struct Faults {
    enabled: bool,
    blocked: RwLock<HashSet<NodeId>>,
}

impl Faults {
    /// A switch that can be flipped only when `enabled`.
    pub fn new(enabled: bool) -> Arc<Faults> {
        Arc::new(Faults { enabled, blocked: RwLock::default() })
    }

    /// True when traffic with `peer` is dropped.
    pub fn blocks(&self, peer: NodeId) -> bool {
        self.enabled && self.blocked.read().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }

    fn set(&self, peers: HashSet<NodeId>) -> gfs_common::Result<()> {
        if !self.enabled {
            return Err(Error::InvalidArgument(
                "fault injection is off; start the master with --fault-injection to use SetPartition".into(),
            ));
        }
        info!(?peers, "fault injection: dropping raft traffic with these peers");
        *self.blocked.write().unwrap_or_else(|p| p.into_inner()) = peers;
        Ok(())
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(v).map_err(|e| Status::internal(format!("encode raft message: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(b).map_err(|e| Status::invalid_argument(format!("decode raft message: {e}")))
}

/// Serves `RaftService` for the local Raft node.
pub struct RaftServer {
    raft: Raft,
    faults: Arc<Faults>,
}

impl RaftServer {
    /// Serves `raft`, dropping traffic from peers `faults` blocks.
    pub fn new(raft: Raft, faults: Arc<Faults>) -> Self {
        RaftServer { raft, faults }
    }

    fn check(&self, vote: &Vote<NodeId>) -> Result<(), Status> {
        if self.faults.blocks(vote.leader_id.node_id) {
            return Err(Status::unavailable("partitioned from this peer (fault injection)"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        gfs_common::auth::require(&req, "AppendEntries", &[Role::Master])?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.get_ref().payload)?;
        self.check(&rpc.vote)?;
        let res = self.raft.append_entries(rpc).await;
        Ok(Response::new(RaftMessage { payload: encode(&res)?.into() }))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        gfs_common::auth::require(&req, "Vote", &[Role::Master])?;
        let rpc: VoteRequest<NodeId> = decode(&req.get_ref().payload)?;
        self.check(&rpc.vote)?;
        let res = self.raft.vote(rpc).await;
        Ok(Response::new(RaftMessage { payload: encode(&res)?.into() }))
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        gfs_common::auth::require(&req, "InstallSnapshot", &[Role::Master])?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&req.get_ref().payload)?;
        self.check(&rpc.vote)?;
        let res = self.raft.install_snapshot(rpc).await;
        Ok(Response::new(RaftMessage { payload: encode(&res)?.into() }))
    }

    async fn set_partition(&self, req: Request<PartitionRequest>) -> Result<Response<PartitionResponse>, Status> {
        gfs_common::auth::require(&req, "SetPartition", &[Role::Master])?;
        self.faults.set(req.into_inner().blocked.into_iter().collect())?;
        Ok(Response::new(PartitionResponse {}))
    }
}

/// Creates clients to peers (openraft's network factory).
#[derive(Clone)]
pub struct Network {
    pool: Arc<ChannelPool>,
    faults: Arc<Faults>,
}

impl Network {
    /// Peers are dialled through a bounded pool; `faults` may drop traffic.
    pub fn new(faults: Arc<Faults>, connect_timeout: Duration, security: &Security) -> Self {
        Network { pool: Arc::new(ChannelPool::new(64, connect_timeout, security, &[Role::Master])), faults }
    }
}

/// A client to one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    pool: Arc<ChannelPool>,
    faults: Arc<Faults>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.clone(), pool: self.pool.clone(), faults: self.faults.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

/// A call's deadlines: `hard` goes to the peer, `soft` (three quarters of
/// it, openraft's own figure) bounds the wait here.
#[derive(Clone, Copy)]
struct Ttl {
    soft: Duration,
    hard: Duration,
}

impl Ttl {
    fn of(option: &RPCOption) -> Ttl {
        Ttl { soft: option.soft_ttl(), hard: option.hard_ttl() }
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        method: &'static str,
        rpc: &Req,
        ttl: Ttl,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |m: String| RPCError::Unreachable(Unreachable::new(&Transport(m)));
        if self.faults.blocks(self.target) {
            return Err(unreachable(format!("peer {} partitioned (fault injection)", self.target)));
        }
        let payload = postcard::to_allocvec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ch = self.pool.get(&self.addr).map_err(|e| unreachable(e.to_string()))?;
        let mut c = RaftServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let msg = with_deadline(RaftMessage { payload: payload.into() }, ttl.hard);
        let reply = async {
            match method {
                "append" => c.append_entries(msg).await,
                "vote" => c.vote(msg).await,
                _ => c.install_snapshot(msg).await,
            }
        };
        // openraft drops the call at the hard deadline, and a dropped call
        // tells nothing; giving up a little earlier lets a connection that
        // hangs (the peer's pod went away with its address, packets to it
        // vanish) be dropped here, so the next call resolves the name again
        // and dials the peer's new address.
        let Ok(reply) = tokio::time::timeout(ttl.soft, reply).await else {
            self.pool.forget(&self.addr);
            return Err(unreachable(format!(
                "{}: no reply within {} ms; reconnecting",
                self.addr,
                ttl.soft.as_millis()
            )));
        };
        let reply = reply.map_err(|s| {
            if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                self.pool.forget(&self.addr);
            }
            unreachable(format!("{} ({}): {}", self.addr, s.code(), s.message()))
        })?;
        let res: Result<Resp, E> =
            postcard::from_bytes(&reply.get_ref().payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, Ttl::of(&option)).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc, Ttl::of(&option)).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, Ttl::of(&option)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, Request as Req, log_id};
    use openraft::EntryPayload;
    use openraft::error::ForwardToLeader;

    fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(v: &T) {
        let b = postcard::to_allocvec(v).unwrap();
        let back: T = postcard::from_bytes(&b).unwrap();
        assert_eq!(format!("{back:?}"), format!("{v:?}"));
    }

    #[test]
    fn raft_messages_survive_postcard() {
        let vote = Vote::new(4, 2);
        let entries = vec![
            Entry { log_id: log_id(4, 2, 10), payload: EntryPayload::Blank },
            Entry { log_id: log_id(4, 2, 11), payload: EntryPayload::Normal(Req { group: vec![1, 2, 3] }) },
        ];
        round_trip(&AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id(3, 1, 9)),
            entries,
            leader_commit: Some(log_id(3, 1, 9)),
        });
        let ok: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = Ok(AppendEntriesResponse::Success);
        round_trip(&ok);
        let hv: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 3)));
        round_trip(&hv);
        round_trip(&VoteRequest::<NodeId> { vote, last_log_id: Some(log_id(4, 2, 11)) });
        let vr: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Ok(VoteResponse { vote, vote_granted: true, last_log_id: None });
        round_trip(&vr);
        let fwd: RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>> =
            RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(ForwardToLeader {
                leader_id: Some(1),
                leader_node: Some(BasicNode { addr: "a:1".into() }),
            }));
        round_trip(&fwd);
    }
}

//! The master group: who leads, fencing epochs, membership changes and
//! per-master status.
//!
//! A master acts as leader only after openraft made it leader *and* it
//! applied the first entry of its own term (so every entry committed by
//! earlier leaders is in its metadata). Then it:
//! - takes the Raft term as its epoch: every lease grant and version bump
//!   carries it, and chunkservers refuse older epochs, so a deposed leader's
//!   grants are fenced;
//! - raises the chunk-handle counter to `term << HANDLE_EPOCH_SHIFT`, so a
//!   handle an earlier leader allocated but never logged is never reused;
//! - drops all soft state (chunkserver registry, replica locations, leases,
//!   repairs in flight): chunkservers re-register with full chunk reports.
//!
//! It answers as leader only while a quorum acknowledged it within the
//! election timeout (`millis_since_quorum_ack`), so a partitioned old leader
//! stops serving reads, heartbeats and lease extensions before a new leader
//! can be elected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gfs_common::auth::Role;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::shutdown::CancellationToken;
use gfs_common::tls::Security;
use gfs_common::{Error, Result};
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{MasterInfo, MasterRole, MasterStatusRequest, MasterStatusResponse};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::HANDLE_EPOCH_SHIFT;
use crate::raft::NodeId;
use crate::state::Shared;

/// Leadership as the handlers see it.
#[derive(Default)]
pub struct Leadership {
    term: AtomicU64,
    since: Mutex<Option<Instant>>,
}

/// The last namespace digest computed and the applied position it is
/// of. The lock also makes status calls compute one digest at a time: at
/// a million files one takes about a second of a core.
pub type DigestCache = tokio::sync::Mutex<Option<(Option<openraft::LogId<NodeId>>, u32)>>;

fn role_of(s: ServerState) -> MasterRole {
    match s {
        ServerState::Leader => MasterRole::Leader,
        ServerState::Follower => MasterRole::Follower,
        ServerState::Candidate => MasterRole::Candidate,
        ServerState::Learner => MasterRole::Learner,
        ServerState::Shutdown => MasterRole::Shutdown,
    }
}

impl Shared {
    /// The epoch stamped on grants: the Raft term while leader, else 0.
    pub fn epoch(&self) -> u64 {
        self.leadership.term.load(Ordering::Acquire)
    }

    /// How long this master has been the acting leader.
    pub fn leader_for(&self) -> Option<Duration> {
        self.leadership.since.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }

    /// True during the acting leader's warm-up (`leader_warmup_ms` after it
    /// became leader): chunkservers may not all have reported yet.
    pub fn warming_up(&self) -> bool {
        let warm = Duration::from_millis(self.cfg.leader_warmup_ms);
        self.leader_for().is_some_and(|t| t < warm)
    }

    /// Address of master `id` in the current membership.
    pub fn master_addr(&self, id: NodeId) -> Option<String> {
        self.meta().membership.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The leader's address as this master knows it.
    pub fn leader_hint(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.master_addr(leader)
    }

    /// Ok(term) when this master may act as leader now; `NotLeader` naming
    /// the leader otherwise.
    pub fn require_leader(&self) -> Result<u64> {
        let term = self.epoch();
        let m = self.raft.metrics().borrow().clone();
        let voters = m.membership_config.membership().voter_ids().count();
        let fresh =
            voters <= 1 || m.millis_since_quorum_ack.is_some_and(|ms| ms < self.cfg.raft.election_timeout_min_ms);
        if term != 0 && m.state == ServerState::Leader && m.current_term == term && fresh {
            return Ok(term);
        }
        let leader = m.current_leader.filter(|l| *l != self.id).and_then(|l| self.master_addr(l));
        Err(Error::NotLeader { leader })
    }

    /// True when this master is the acting leader.
    pub fn is_leader(&self) -> bool {
        self.require_leader().is_ok()
    }

    /// Maps an openraft write failure to the wire error.
    pub(crate) fn write_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
        write_error(self.id, e)
    }

    fn become_leader(&self, term: u64) {
        {
            let mut meta = self.meta();
            meta.servers = Default::default();
            meta.heal = Default::default();
            meta.allocating.clear();
            meta.chunks.clear_soft_state();
            meta.chunks.bump_next_handle(term << HANDLE_EPOCH_SHIFT);
        }
        *self.leadership.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.leadership.term.store(term, Ordering::Release);
        self.metrics.leader_changes.inc();
        info!(id = self.id, term, "this master is now the leader; chunkservers will re-register");
    }

    fn step_down(&self, reason: &str) {
        if self.leadership.term.swap(0, Ordering::AcqRel) != 0 {
            *self.leadership.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let mut meta = self.meta();
            meta.servers = Default::default();
            meta.heal = Default::default();
            meta.chunks.clear_soft_state();
            info!(id = self.id, reason, "this master is no longer the leader");
        }
    }

    /// Follows openraft's metrics: becomes the acting leader once its term's
    /// first entry is applied, steps down when openraft says so.
    pub async fn watch_leadership(self: Arc<Self>, stop: CancellationToken) {
        let mut rx = self.raft.metrics();
        loop {
            let (state, term, applied) = {
                let m = rx.borrow_and_update();
                (m.state, m.current_term, m.last_applied)
            };
            self.metrics.raft_term.set(term as i64);
            self.metrics.raft_is_leader.set(i64::from(state == ServerState::Leader && self.epoch() == term));
            let mine = self.epoch();
            if state == ServerState::Leader {
                if mine != term && applied.is_some_and(|a| a.leader_id.term == term) {
                    self.step_down("new term");
                    self.become_leader(term);
                }
            } else if mine != 0 {
                self.step_down("raft state changed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// The digest of the replicated state as last applied
    /// ([`crate::frozen::Frozen::digest`]): frozen under the metadata
    /// lock, computed without it on a blocking thread, and kept until the
    /// next applied entry.
    async fn namespace_digest(&self) -> u32 {
        let mut cache = self.digest.lock().await;
        let applied = self.meta().applied;
        if let Some((at, digest)) = *cache
            && at == applied
        {
            return digest;
        }
        let frozen = self.meta().freeze();
        let at = frozen.applied();
        match tokio::task::spawn_blocking(move || frozen.digest()).await {
            Ok(digest) => {
                *cache = Some((at, digest));
                digest
            }
            // Only a panic in the digest (none is known): no digest.
            Err(_) => 0,
        }
    }

    /// This master's view of itself and the group.
    pub async fn master_status(&self) -> MasterStatusResponse {
        let digest = self.namespace_digest().await;
        MasterStatusResponse { namespace_digest: digest, ..self.group_view() }
    }

    /// [`Shared::master_status`] without the namespace digest (which
    /// encodes the whole namespace once per applied entry): for readers
    /// that only show roles and the leader, such as the status page.
    pub fn group_view(&self) -> MasterStatusResponse {
        let m = self.raft.metrics().borrow().clone();
        let members = {
            let meta = self.meta();
            let mem = meta.membership.membership();
            let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
            mem.nodes()
                .map(|(id, n)| MasterInfo {
                    id: *id,
                    address: n.addr.clone(),
                    voter: voters.contains(id),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        let leader_id = m.current_leader.unwrap_or(0);
        MasterStatusResponse {
            this: Some(MasterInfo {
                id: self.id,
                address: self.master_addr(self.id).unwrap_or_default(),
                role: role_of(m.state) as i32,
                term: m.current_term,
                voter: m.membership_config.membership().voter_ids().any(|v| v == self.id),
                last_applied: m.last_applied.map_or(0, |l| l.index),
                reachable: true,
            }),
            leader_id,
            leader_address: m.current_leader.and_then(|l| self.master_addr(l)).unwrap_or_default(),
            members,
            namespace_digest: 0,
            millis_since_quorum_ack: m.millis_since_quorum_ack.unwrap_or(0),
        }
    }

    /// Every member's own status (asked over RPC; unreachable ones marked).
    pub async fn masters(&self) -> Vec<MasterInfo> {
        let me = self.master_status().await;
        let mut out = Vec::new();
        for member in me.members {
            if member.id == self.id {
                out.push(me.this.clone().unwrap_or_default());
                continue;
            }
            let addr = member.address.clone();
            let timeout = Duration::from_millis(self.cfg.rpc_timeout_ms.min(2_000));
            let asked = master_status_of(&self.peers, &addr, timeout);
            match asked.await {
                Some(r) => {
                    let mut info = r.this.unwrap_or_default();
                    info.voter = member.voter;
                    info.address = addr;
                    out.push(info);
                }
                _ => out.push(MasterInfo { reachable: false, ..member }),
            }
        }
        out.sort_by_key(|m| m.id);
        out
    }

    /// Adds master `id` at `address`: as a learner first, then, once it
    /// has caught up (by snapshot if it is far behind), as a voter. Waits
    /// at most `rpc_timeout_ms` for the catch-up; a learner still behind
    /// then gives `Unavailable` and the call is simply retried.
    pub async fn add_master(&self, id: NodeId, address: &str) -> Result<()> {
        self.require_leader()?;
        if address.trim().is_empty() || !address.contains(':') {
            return Err(Error::InvalidArgument(format!("master address {address:?} must be host:port")));
        }
        let mem = self.meta().membership.membership().clone();
        if mem.voter_ids().any(|v| v == id) {
            return Err(Error::AlreadyExists { path: format!("master {id}") });
        }
        if mem.get_node(&id).is_none_or(|n| n.addr != address) {
            info!(id, address, "adding master as learner");
            self.raft.add_learner(id, BasicNode { addr: address.to_string() }, false).await.map_err(|e| match e {
                RaftError::APIError(e) => Error::Unavailable(format!("add learner {id}: {e}")),
                RaftError::Fatal(f) => Error::Unavailable(format!("raft stopped: {f}")),
            })?;
        }
        let deadline = Instant::now() + Duration::from_millis(self.cfg.rpc_timeout_ms);
        loop {
            let m = self.raft.metrics().borrow().clone();
            let last = m.last_log_index.unwrap_or(0);
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index);
            if matched.is_some_and(|i| i + 1 >= last) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "master {id} at {address} is a learner still catching up (at {matched:?} of {last}); retry"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        info!(id, "learner caught up; promoting to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// Removes master `id` from the group.
    pub async fn remove_master(&self, id: NodeId) -> Result<()> {
        self.require_leader()?;
        let mem = self.meta().membership.membership().clone();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        if !mem.nodes().any(|(n, _)| *n == id) {
            return Err(Error::NotFound { path: format!("master {id}") });
        }
        if voters.len() == 1 && voters.contains(&id) {
            return Err(Error::InvalidArgument(format!("master {id} is the only voter; cannot remove it")));
        }
        info!(id, "removing master");
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        if self.meta().membership.membership().nodes().any(|(n, _)| *n == id) {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        if id == self.id {
            warn!("this master removed itself from the group");
        }
        Ok(())
    }
}

/// True when some master at `spec` (a list or a DNS name, as clients take
/// it) belongs to an initialized group. Lets a founder whose data is gone
/// (a recreated pod 0 with a fresh volume) wait for the group's leader
/// instead of founding a second group.
pub async fn group_exists(spec: &str, me: &str, security: &Security) -> bool {
    let Ok(set) = gfs_common::MasterSet::parse(spec) else { return false };
    set.refresh().await;
    let timeout = Duration::from_secs(2);
    let pool = ChannelPool::new(8, timeout, security, &[Role::Master]);
    for addr in set.all().into_iter().filter(|a| a != me) {
        if let Some(st) = master_status_of(&pool, &addr, timeout).await
            && !st.members.is_empty()
        {
            info!(addr, leader = st.leader_address, "an initialized master group answered");
            return true;
        }
    }
    false
}

/// A `MasterService` client to another master through `pool` (channels
/// are reused; connects are lazy and bounded by the pool's timeout).
pub(crate) fn master_client(pool: &ChannelPool, addr: &str) -> Result<MasterServiceClient<Channel>> {
    Ok(MasterServiceClient::new(pool.get(addr)?).max_decoding_message_size(gfs_common::MAX_MESSAGE_SIZE))
}

/// `MasterStatus` of the master at `addr` within `timeout`; `None` (and
/// the channel forgotten) when it does not answer.
async fn master_status_of(pool: &ChannelPool, addr: &str, timeout: Duration) -> Option<MasterStatusResponse> {
    let mut c = master_client(pool, addr).ok()?;
    match c.master_status(with_deadline(MasterStatusRequest {}, timeout)).await {
        Ok(r) => Some(r.into_inner()),
        Err(_) => {
            pool.forget(addr);
            None
        }
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(spec: &str) -> Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| Error::InvalidArgument(format!("--peers entry {part:?}: {why} (want ID=HOST:PORT)"));
        let (id, addr) = part.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let id: NodeId = id.trim().parse().map_err(|_| bad("id is not a number"))?;
        let addr = addr.trim();
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("bad host or port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(bad("duplicate id"));
        }
    }
    Ok(out)
}

/// Maps an openraft write failure of master `me` to the wire error.
pub(crate) fn write_error(me: NodeId, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Error::NotLeader { leader: f.leader_node.map(|n| n.addr).filter(|_| f.leader_id != Some(me)) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Error::InvalidArgument(format!("membership change refused: {c}"))
        }
        RaftError::Fatal(f) => Error::Unavailable(format!("raft stopped: {f}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_are_named() {
        let p = parse_peers("1=a:1, 2=b:2,3=127.0.0.1:9700").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&3], "127.0.0.1:9700");
        // Pod ordinals start at 0.
        assert_eq!(parse_peers("0=m-0.m.ns.svc:9700").unwrap()[&0], "m-0.m.ns.svc:9700");
        for (bad, why) in
            [("1a:1", "missing '='"), ("x=a:1", "not a number"), ("1=a", "missing port"), ("1=a:1,1=b:2", "duplicate")]
        {
            let e = parse_peers(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

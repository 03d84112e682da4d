//! Outgoing RPCs to peer chunkservers and the master, through one channel
//! pool and always with a deadline. Master RPCs go to the leader of the
//! master group ([`MasterSet`]).

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use gfs_common::auth::Role;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::tls::Security;
use gfs_common::{Error, MAX_MESSAGE_SIZE, MasterSet, Result};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::*;
use tonic::transport::Channel;

/// Longest TCP + TLS connect to a master or peer (as the client library's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Client side of every RPC this chunkserver makes.
#[derive(Clone)]
pub struct Rpc {
    pool: ChannelPool,
    masters: MasterSet,
    timeout: Duration,
}

/// True when a master call got no answer from the master (unreachable, or
/// no reply in time): try another master next time.
fn master_unreachable(s: &tonic::Status) -> bool {
    s.details().is_empty()
        && matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
}

impl Rpc {
    /// Returns an RPC helper with per-call `timeout`, talking to the leader
    /// of `masters`.
    pub fn new(masters: MasterSet, timeout: Duration, security: &Security) -> Self {
        // One pool dials both the masters and peer chunkservers. A connect
        // is bounded apart from the call: a master pod recreated with a new
        // address leaves its old one silent (SYNs unanswered), and a
        // heartbeat must not wait the whole call deadline on it before the
        // name is resolved again.
        let pool = ChannelPool::new(256, timeout.min(CONNECT_TIMEOUT), security, &[Role::Master, Role::Chunkserver]);
        Self { pool, masters, timeout }
    }

    /// The master addresses and the leader followed.
    pub fn masters(&self) -> &MasterSet {
        &self.masters
    }

    fn chunk(&self, addr: &str) -> Result<ChunkServiceClient<Channel>> {
        Ok(ChunkServiceClient::new(self.pool.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    fn master(&self, addr: &str) -> Result<MasterServiceClient<Channel>> {
        Ok(MasterServiceClient::new(self.pool.get(addr)?))
    }

    /// One master RPC to the leader: `NotLeader` with the leader's address
    /// switches to it and retries at once (at most `2 x masters` times);
    /// `NotLeader` without one or no answer rotates to the next master and
    /// fails (the heartbeat loop retries). Returns the answer and the
    /// address of the master that gave it.
    async fn master_call<T, F, Fut>(&self, mut call: F) -> Result<(T, String)>
    where
        F: FnMut(MasterServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut hops = 0;
        loop {
            self.masters.refresh().await;
            let addr = self.masters.current();
            let status = match call(self.master(&addr)?).await {
                Ok(r) => {
                    self.masters.note_success(&addr);
                    return Ok((r.into_inner(), addr));
                }
                Err(s) => s,
            };
            if master_unreachable(&status) {
                self.pool.forget(&addr);
                self.masters.note_unreachable(&addr);
                return Err(Error::Unavailable(format!("master {addr}: {}", status.message())));
            }
            let err = Error::from(status);
            if let Error::NotLeader { leader } = &err {
                self.masters.note_not_leader(&addr, leader.as_deref());
                if leader.is_some() && hops < 2 * self.masters.len() {
                    hops += 1;
                    tracing::debug!(tried = %addr, leader = ?leader, "not the leader master, switching");
                    continue;
                }
            }
            return Err(err);
        }
    }

    /// Maps a failed call to an error, forgetting the channel on transport
    /// failures so the next call reconnects.
    fn fail(&self, addr: &str, status: tonic::Status) -> Error {
        let err = Error::from(status);
        if matches!(err, Error::Unavailable(_)) {
            self.pool.forget(addr);
        }
        err
    }

    /// Primary -> secondary mutation.
    pub async fn apply_mutation(&self, addr: &str, req: ApplyMutationRequest) -> Result<ApplyMutationResponse> {
        let mut c = self.chunk(addr)?;
        c.apply_mutation(with_deadline(req, self.timeout)).await.map(|r| r.into_inner()).map_err(|s| self.fail(addr, s))
    }

    /// Forwards a push stream to the next hop; `deadline` bounds the whole
    /// stream.
    pub async fn push_data<S>(&self, addr: &str, frames: S, deadline: Duration) -> Result<PushDataResponse>
    where
        S: Stream<Item = PushDataFrame> + Send + 'static,
    {
        let mut c = self.chunk(addr)?;
        c.push_data(with_deadline(frames, deadline)).await.map(|r| r.into_inner()).map_err(|s| self.fail(addr, s))
    }

    /// Reads from a peer replica (clone source).
    pub async fn read(&self, addr: &str, req: ReadRequest) -> Result<ReadResponse> {
        let mut c = self.chunk(addr)?;
        c.read(with_deadline(req, self.timeout)).await.map(|r| r.into_inner()).map_err(|s| self.fail(addr, s))
    }

    /// Registers with the leader master; returns the reply and the master
    /// that gave it.
    pub async fn register(&self, req: RegisterRequest) -> Result<(RegisterResponse, String)> {
        let t = self.timeout;
        self.master_call(|mut c| {
            let req = req.clone();
            async move { c.register(with_deadline(req, t)).await }
        })
        .await
    }

    /// Sends a heartbeat to the leader master; returns the reply and the
    /// master that gave it.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<(HeartbeatResponse, String)> {
        let t = self.timeout;
        self.master_call(|mut c| {
            let req = req.clone();
            async move { c.heartbeat(with_deadline(req, t)).await }
        })
        .await
    }

    /// The leader master's epoch (to confirm a newer one seen on a request).
    pub async fn leader_epoch(&self) -> Result<u64> {
        let t = self.timeout;
        self.master_call(|mut c| async move { c.leader_epoch(with_deadline(LeaderEpochRequest {}, t)).await })
            .await
            .map(|(r, _)| r.epoch)
    }

    /// Reports a corrupt replica to the leader master.
    pub async fn report_corrupt(&self, req: ReportCorruptRequest) -> Result<()> {
        let t = self.timeout;
        self.master_call(|mut c| {
            let req = req.clone();
            async move { c.report_corrupt(with_deadline(req, t)).await }
        })
        .await
        .map(|_| ())
    }
}

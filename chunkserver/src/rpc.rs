//! Outgoing RPCs to peer chunkservers and the master, through one channel
//! pool and always with a deadline.

use std::time::Duration;

use futures::Stream;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::{Error, MAX_MESSAGE_SIZE, Result};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::*;
use tonic::transport::Channel;

/// Client side of every RPC this chunkserver makes.
#[derive(Clone)]
pub struct Rpc {
    pool: ChannelPool,
    master: String,
    timeout: Duration,
}

impl Rpc {
    /// Returns an RPC helper with per-call `timeout`, talking to `master`.
    pub fn new(master: String, timeout: Duration) -> Self {
        Self { pool: ChannelPool::new(256, timeout), master, timeout }
    }

    fn chunk(&self, addr: &str) -> Result<ChunkServiceClient<Channel>> {
        Ok(ChunkServiceClient::new(self.pool.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    fn master(&self) -> Result<MasterServiceClient<Channel>> {
        Ok(MasterServiceClient::new(self.pool.get(&self.master)?))
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

    /// Registers with the master.
    pub async fn register(&self, req: RegisterRequest) -> Result<RegisterResponse> {
        let mut c = self.master()?;
        let res = c.register(with_deadline(req, self.timeout)).await;
        res.map(|r| r.into_inner()).map_err(|s| self.fail(&self.master, s))
    }

    /// Sends a heartbeat to the master.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatResponse> {
        let mut c = self.master()?;
        let res = c.heartbeat(with_deadline(req, self.timeout)).await;
        res.map(|r| r.into_inner()).map_err(|s| self.fail(&self.master, s))
    }

    /// Reports a corrupt replica to the master.
    pub async fn report_corrupt(&self, req: ReportCorruptRequest) -> Result<()> {
        let mut c = self.master()?;
        let res = c.report_corrupt(with_deadline(req, self.timeout)).await;
        res.map(|_| ()).map_err(|s| self.fail(&self.master, s))
    }
}

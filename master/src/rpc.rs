//! Master -> chunkserver RPCs, with a channel pool and deadlines.

use std::time::Duration;

use gfs_common::auth::Role;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::tls::Security;
use gfs_common::{Error, MAX_MESSAGE_SIZE, Result};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::{
    CloneChunkRequest, CloneChunkResponse, GrantLeaseRequest, GrantLeaseResponse, VerifyChunkRequest,
    VerifyChunkResponse,
};

/// Client side of the master's calls to chunkservers.
#[derive(Clone)]
pub struct ChunkRpc {
    pool: ChannelPool,
    timeout: Duration,
}

impl ChunkRpc {
    /// Builds the helper; every call carries `timeout` as deadline.
    pub fn new(timeout: Duration, security: &Security) -> Self {
        // A connect is bounded apart from the call (a chunkserver pod
        // recreated elsewhere leaves its old address silent).
        let connect = timeout.min(Duration::from_secs(2));
        ChunkRpc { pool: ChannelPool::new(4096, connect, security, &[Role::Chunkserver]), timeout }
    }

    /// Sends `GrantLease` to the chunkserver at `addr`.
    pub async fn grant_lease(&self, addr: &str, req: GrantLeaseRequest) -> Result<GrantLeaseResponse> {
        let mut client = self.client(addr)?;
        let res = client.grant_lease(with_deadline(req, self.timeout)).await;
        self.finish(addr, res)
    }

    /// Asks the chunkserver at `addr` to clone a chunk; `deadline` covers
    /// the whole throttled copy.
    pub async fn clone_chunk(
        &self,
        addr: &str,
        req: CloneChunkRequest,
        deadline: Duration,
    ) -> Result<CloneChunkResponse> {
        let mut client = self.client(addr)?;
        let res = client.clone_chunk(with_deadline(req, deadline)).await;
        self.finish(addr, res)
    }

    /// Asks the chunkserver at `addr` to verify its replica; `deadline`
    /// covers the whole paced read.
    pub async fn verify_chunk(
        &self,
        addr: &str,
        req: VerifyChunkRequest,
        deadline: Duration,
    ) -> Result<VerifyChunkResponse> {
        let mut client = self.client(addr)?;
        let res = client.verify_chunk(with_deadline(req, deadline)).await;
        self.finish(addr, res)
    }

    fn client(&self, addr: &str) -> Result<ChunkServiceClient<tonic::transport::Channel>> {
        Ok(ChunkServiceClient::new(self.pool.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    /// Maps the reply to the typed error; an unreachable peer's channel is
    /// dropped so the next call reconnects.
    fn finish<T>(&self, addr: &str, res: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
        res.map(tonic::Response::into_inner).map_err(|s| {
            let e = Error::from(s);
            if matches!(e, Error::Unavailable(_)) {
                self.pool.forget(addr);
            }
            e
        })
    }
}

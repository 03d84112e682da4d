//! Master -> chunkserver RPCs, with a channel pool and deadlines.

use std::time::Duration;

use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::{Error, MAX_MESSAGE_SIZE, Result};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::{CloneChunkRequest, CloneChunkResponse, GrantLeaseRequest, GrantLeaseResponse};

/// Client side of the master's calls to chunkservers.
#[derive(Clone)]
pub struct ChunkRpc {
    pool: ChannelPool,
    timeout: Duration,
}

impl ChunkRpc {
    /// Builds the helper; every call carries `timeout` as deadline.
    pub fn new(timeout: Duration) -> Self {
        ChunkRpc { pool: ChannelPool::new(4096, timeout), timeout }
    }

    /// Sends `GrantLease` to the chunkserver at `addr`.
    pub async fn grant_lease(&self, addr: &str, req: GrantLeaseRequest) -> Result<GrantLeaseResponse> {
        let channel = self.pool.get(addr)?;
        let mut client = ChunkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        match client.grant_lease(with_deadline(req, self.timeout)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                let e = Error::from(s);
                if matches!(e, Error::Unavailable(_)) {
                    self.pool.forget(addr);
                }
                Err(e)
            }
        }
    }

    /// Asks the chunkserver at `addr` to clone a chunk; `deadline` covers
    /// the whole throttled copy.
    pub async fn clone_chunk(
        &self,
        addr: &str,
        req: CloneChunkRequest,
        deadline: Duration,
    ) -> Result<CloneChunkResponse> {
        let channel = self.pool.get(addr)?;
        let mut client = ChunkServiceClient::new(channel);
        match client.clone_chunk(with_deadline(req, deadline)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                let e = Error::from(s);
                if matches!(e, Error::Unavailable(_)) {
                    self.pool.forget(addr);
                }
                Err(e)
            }
        }
    }
}

//! The data-flow pipeline: store pushed frames and forward them to the next
//! hop of the chain while still receiving.

use gfs_common::{Error, Result};
use gfs_proto::{PushDataFrame, PushDataResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::pushbuf::PushWriter;
use crate::service::Shared;

/// Frames queued towards the next hop; bounds memory when it is slower.
const FORWARD_QUEUE: usize = 4;

impl Shared {
    /// Receives a push stream; see `ChunkService::push_data`.
    pub(crate) async fn push_data(&self, mut stream: Streaming<PushDataFrame>) -> Result<PushDataResponse> {
        let first = stream.message().await?.ok_or_else(|| Error::InvalidArgument("empty push stream".into()))?;
        let mut writer = self.pushbuf.begin(first.data_id, first.total_len)?;
        writer.append(&first.data)?;
        let Some(next) = first.chain.first().cloned() else {
            receive_rest(&mut stream, &mut writer, None).await?;
            return Ok(PushDataResponse { received: writer.finish()? });
        };
        let data_id = first.data_id;
        let (tx, rx) = mpsc::channel::<PushDataFrame>(FORWARD_QUEUE);
        let head = PushDataFrame {
            data_id: first.data_id,
            chain: first.chain[1..].to_vec(),
            total_len: first.total_len,
            data: first.data,
        };
        let forward = async {
            let res = self.rpc.push_data(&next, ReceiverStream::new(rx), self.push_timeout).await;
            res.map_err(|e| {
                tracing::warn!(data_id, hop = %next, error = %e, "push forward failed");
                Error::Unavailable(format!("push to {next} failed: {e}"))
            })
        };
        let receive = async {
            let tx = if tx.send(head).await.is_ok() { Some(tx) } else { None };
            receive_rest(&mut stream, &mut writer, tx).await
        };
        let (_, downstream) = tokio::try_join!(receive, forward)?;
        let received = writer.finish()?;
        if downstream.received != received {
            return Err(Error::Unavailable(format!(
                "push to {next}: hop received {} of {received} bytes",
                downstream.received
            )));
        }
        Ok(PushDataResponse { received })
    }
}

/// Stores the remaining frames, forwarding each while the next hop accepts.
async fn receive_rest(
    stream: &mut Streaming<PushDataFrame>,
    writer: &mut PushWriter,
    mut tx: Option<mpsc::Sender<PushDataFrame>>,
) -> Result<()> {
    while let Some(frame) = stream.message().await? {
        writer.append(&frame.data)?;
        if let Some(t) = &tx {
            let out = PushDataFrame { data: frame.data, ..Default::default() };
            if t.send(out).await.is_err() {
                // The forward side failed; its error is reported instead.
                tx = None;
            }
        }
    }
    Ok(())
}

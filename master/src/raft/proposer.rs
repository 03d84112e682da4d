//! Proposal batching: the batches of concurrent callers go into Raft as
//! one entry.
//!
//! openraft 0.9 appends a leader's entries one `append` at a time and waits
//! for each flush before it takes the next request, so one entry per caller
//! means one fsync per caller, one after another (creates measured 2.6 k/s
//! with 8 concurrent clients, every create its own fsync). The proposer task
//! collects what callers queued while the previous entries were in flight
//! and proposes it as one `LogGroup`: one append, one fsync, one
//! replication round for the lot. At most [`IN_FLIGHT`] entries are
//! outstanding, so under load the groups grow instead of the Raft queue.
//!
//! Callers learn their outcome from their continuation in the state machine
//! (`Machine::expect`): it runs when their batch is applied, or with an
//! error when the entry fails before that (`Machine::fail`).

use std::sync::Arc;
use std::time::Duration;

use gfs_common::Error;
use gfs_proto::LogBatch;
use openraft::error::RaftError;
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tracing::debug;

use super::state_machine::Machine;
use super::{NodeId, Raft, Request};

/// Entries proposed and not yet answered by openraft.
pub const IN_FLIGHT: usize = 2;
/// Most callers' batches in one entry.
pub const MAX_GROUP: usize = 512;
/// Most encoded bytes in one entry (a single larger batch still goes alone).
pub const MAX_GROUP_BYTES: usize = 1 << 20;
/// Callers' batches queued for the proposer; senders wait beyond it.
pub const QUEUE: usize = 4096;

/// The handle callers queue their batches on.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<LogBatch>,
}

impl Proposer {
    /// Starts the proposer task of master `me`. A failed entry fails its
    /// callers through `machine`; `timeout` bounds how long one entry may
    /// hold an in-flight slot; `sizes` records the batches per entry.
    pub fn start(me: NodeId, raft: Raft, machine: Arc<Machine>, timeout: Duration, sizes: Histogram) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(me, raft, machine, timeout, sizes, rx));
        Proposer { tx }
    }

    /// Queues `batch`, whose continuation is registered under its
    /// `request_id`.
    pub async fn propose(&self, batch: LogBatch) -> gfs_common::Result<()> {
        self.tx.send(batch).await.map_err(|_| Error::Unavailable("this master is shutting down".into()))
    }
}

async fn run(
    me: NodeId,
    raft: Raft,
    machine: Arc<Machine>,
    timeout: Duration,
    sizes: Histogram,
    mut rx: mpsc::Receiver<LogBatch>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<LogBatch> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carry.take() {
            Some(b) => b,
            None => match rx.recv().await {
                Some(b) => b,
                None => return,
            },
        };
        let mut bytes = first.encoded_len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(b) if bytes + b.encoded_len() > MAX_GROUP_BYTES => {
                    carry = Some(b);
                    break;
                }
                Ok(b) => {
                    bytes += b.encoded_len();
                    group.push(b);
                }
                Err(_) => break,
            }
        }
        let ids: Vec<u64> = group.iter().map(|b| b.request_id).collect();
        sizes.observe(ids.len() as f64);
        debug!(batches = ids.len(), bytes, "proposing");
        let responder = match raft.client_write_ff(Request::of(group)).await {
            Ok(r) => r,
            Err(fatal) => {
                for id in ids {
                    machine.fail(id, Error::Unavailable(format!("raft stopped: {fatal}")));
                }
                continue;
            }
        };
        let machine = machine.clone();
        // The slot is held until openraft answers (applied, or refused), or
        // for `timeout`: a leader without a quorum never answers, and its
        // callers time out on their own.
        tokio::spawn(async move {
            let res = tokio::time::timeout(timeout, responder).await;
            drop(slot);
            let err = match res {
                Ok(Ok(Ok(_))) | Err(_) => return,
                Ok(Ok(Err(e))) => crate::group::write_error(me, RaftError::APIError(e)),
                Ok(Err(_)) => Error::Unavailable("raft dropped the write (shutting down)".into()),
            };
            for id in ids {
                machine.fail(id, err.clone());
            }
        });
    }
}

//! Raft RPC payloads (postcard) as `RaftServer` decodes them from a peer
//! master: AppendEntries, Vote and InstallSnapshot requests. The first
//! byte picks the message. Whatever decodes encodes again, and that
//! encoding decodes and encodes to the same bytes.
#![no_main]

use gfs_master::raft::{NodeId, TypeConfig};
use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(v) = postcard::from_bytes::<T>(bytes) else { return };
    let again = postcard::to_allocvec(&v).expect("a decoded message encodes");
    let back: T = postcard::from_bytes(&again).expect("an encoded message decodes");
    assert_eq!(postcard::to_allocvec(&back).expect("encodes"), again, "round trip changed the message");
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 3 {
        0 => round_trip::<AppendEntriesRequest<TypeConfig>>(bytes),
        1 => round_trip::<VoteRequest<NodeId>>(bytes),
        _ => round_trip::<InstallSnapshotRequest<TypeConfig>>(bytes),
    }
});

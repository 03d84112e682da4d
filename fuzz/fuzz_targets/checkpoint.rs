//! A checkpoint (Raft snapshot) as a master loads it from its disk at
//! start or receives it from the leader in InstallSnapshot. Loading must
//! refuse what is inconsistent with an error, never panic, and what loads
//! must checkpoint and load again to the same state.
#![no_main]

use gfs_master::state::Meta;
use gfs_proto::Checkpoint;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(cp) = Checkpoint::decode(data) else { return };
    let Ok(m) = Meta::from_checkpoint(&cp) else { return };
    let again = m.snapshot();
    let back = Meta::from_checkpoint(&again).unwrap_or_else(|e| panic!("a loaded checkpoint does not reload: {e}"));
    assert_eq!(back.snapshot(), again, "a checkpoint round trip changed the state");
});

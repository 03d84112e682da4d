//! A committed Raft entry's payload (`LogGroup`), applied to the master's
//! state machine the way every master of the group applies it. A leader
//! only proposes checked operations, but the state machine must not panic
//! on any entry (a panic there stops every master at once), and whatever
//! state results must survive a checkpoint (snapshot, then reload on a
//! follower or after a restart) unchanged.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gfs_master::raft::state_machine::Machine;
use gfs_master::state::Meta;
use gfs_proto::LogGroup;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(group) = LogGroup::decode(data) else { return };
    let meta = Arc::new(Mutex::new(Meta::new()));
    let machine = Machine::new(meta.clone(), PathBuf::from("/nonexistent"), 1);
    let mut m = meta.lock().unwrap();
    machine.apply_group(&mut m, &group);
    // The same entry again (a retried proposal) changes nothing new.
    machine.apply_group(&mut m, &group);
    let cp = m.snapshot();
    let back =
        Meta::from_checkpoint(&cp).unwrap_or_else(|e| panic!("a checkpoint of applied state does not load: {e}"));
    assert_eq!(back.snapshot(), cp, "a checkpoint round trip changed the state");
    assert_eq!(back.digest(), m.digest());
});

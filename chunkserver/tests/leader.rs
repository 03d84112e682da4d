//! A chunkserver and a group of fake masters: Register and Heartbeat follow
//! `NotLeader` hints and failures to the leader, re-register at a new leader
//! and adopt its higher epoch.

mod common;

use common::*;
use gfs_common::Error;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::*;

fn registered_at(m: &FakeMaster, id: &str) -> usize {
    m.seen.lock().unwrap().registers.iter().filter(|r| r.server.as_ref().is_some_and(|s| s.id == id)).count()
}

fn heartbeats(m: &FakeMaster) -> usize {
    m.seen.lock().unwrap().heartbeats.len()
}

fn redirected(m: &FakeMaster) -> Vec<&'static str> {
    m.seen.lock().unwrap().redirected.clone()
}

async fn grant(addr: &str, handle: u64, epoch: u64) -> Result<(), Error> {
    let req = GrantLeaseRequest { handle, version: 1, lease_ms: 0, create: true, epoch };
    client(addr).await.grant_lease(req).await.map(|_| ()).map_err(Error::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_follows_the_not_leader_hint() {
    let token = CancellationToken::new();
    let b = FakeMaster { epoch: 3, ..Default::default() };
    let b_addr = start_master(b.clone(), token.clone()).await;
    let a = FakeMaster { epoch: 3, ..Default::default() };
    a.set_not_leader(Some(Some(b_addr.clone())));
    let a_addr = start_master(a.clone(), token.clone()).await;

    // Only the follower is configured: the leader comes from its hint.
    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&a_addr, dir.path()), token.clone()).await.unwrap();
    assert!(eventually(|| registered_at(&b, &cs.id) == 1 && heartbeats(&b) >= 3).await, "not registered at b");
    assert!(cs.is_registered());
    assert!(a.seen.lock().unwrap().registers.is_empty());
    // One redirect, then every call goes straight to the leader.
    assert_eq!(redirected(&a), vec!["register"]);
    assert!(a.seen.lock().unwrap().heartbeats.is_empty());
    // The registration's epoch is adopted: older grants are fenced.
    assert_eq!(grant(&cs.addr.to_string(), 1, 2).await.unwrap_err(), Error::StaleEpoch { have: 2, seen: 3 });
    token.cancel();
    cs.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_gets_a_full_report_and_its_higher_epoch_is_adopted() {
    let token = CancellationToken::new();
    let a = FakeMaster { epoch: 1, known_only: true, ..Default::default() };
    let a_addr = start_master(a.clone(), token.clone()).await;
    let b = FakeMaster { epoch: 2, known_only: true, ..Default::default() };
    b.set_not_leader(Some(Some(a_addr.clone())));
    let b_addr = start_master(b.clone(), token.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&format!("{a_addr},{b_addr}"), dir.path()), token.clone()).await.unwrap();
    let cs_addr = cs.addr.to_string();
    assert!(eventually(|| registered_at(&a, &cs.id) == 1).await, "not registered at a");
    grant(&cs_addr, 7, 1).await.unwrap();
    assert!(eventually(|| heartbeats(&a) >= 2).await);

    // Leadership moves to b (new term 2); a now redirects to it.
    b.set_not_leader(None);
    a.set_not_leader(Some(Some(b_addr.clone())));
    assert!(eventually(|| registered_at(&b, &cs.id) == 1).await, "not registered at b");
    let report = b.seen.lock().unwrap().registers[0].clone();
    assert_eq!(report.chunks.iter().map(|c| c.handle).collect::<Vec<_>>(), vec![7], "full chunk report");
    // b did not know the server: its first heartbeat got `reregister`.
    assert!(heartbeats(&b) >= 1);
    assert!(redirected(&a).contains(&"heartbeat"));
    assert!(eventually(|| heartbeats(&b) >= 4).await, "heartbeats go on at b");
    assert!(cs.is_registered());
    // Term 2 is adopted: grants stamped by the old leader are fenced.
    assert_eq!(grant(&cs_addr, 8, 1).await.unwrap_err(), Error::StaleEpoch { have: 1, seen: 2 });
    grant(&cs_addr, 8, 2).await.unwrap();
    token.cancel();
    cs.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_leader_is_replaced_by_the_next_master() {
    let a_token = CancellationToken::new();
    let token = CancellationToken::new();
    let a = FakeMaster { epoch: 1, known_only: true, ..Default::default() };
    let a_addr = start_master(a.clone(), a_token.clone()).await;
    let b = FakeMaster { epoch: 2, known_only: true, ..Default::default() };
    // An election is going on at b: no leader known.
    b.set_not_leader(Some(None));
    let b_addr = start_master(b.clone(), token.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&format!("{a_addr},{b_addr}"), dir.path()), token.clone()).await.unwrap();
    assert!(eventually(|| registered_at(&a, &cs.id) == 1 && heartbeats(&a) >= 1).await);

    // a dies; b keeps answering NotLeader(None) for a while, then wins.
    a_token.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(registered_at(&b, &cs.id), 0);
    b.set_not_leader(None);
    assert!(eventually(|| registered_at(&b, &cs.id) == 1 && heartbeats(&b) >= 2).await, "not registered at b");
    assert!(redirected(&b).iter().any(|r| *r == "heartbeat" || *r == "register"), "b was tried during the election");
    assert!(cs.is_registered());
    token.cancel();
    cs.wait().await.unwrap();
}

//! `gfs fsck` run as the real binary against an in-process cluster: it
//! reports what the cluster's replicas really are as servers go away.

use std::time::{Duration, Instant};

use gfs_e2e::gfs_cli::run;
use gfs_testkit::{Cluster, ClusterOptions};

fn report(master: &str) -> (i32, serde_json::Value) {
    let out = run(master, &["fsck", "--json", "/h"]);
    let v =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

/// Polls fsck until `done` holds for its report (a server's death is seen
/// after the master's dead_after).
fn wait_report(master: &str, done: impl Fn(i32, &serde_json::Value) -> bool) -> (i32, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v) = report(master);
        if done(code, &v) {
            return (code, v);
        }
        assert!(Instant::now() < deadline, "fsck never showed it: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsck_reports_under_replicated_then_missing_files() {
    let opts = ClusterOptions { chunkservers: 2, replication: 2, chunk_size: 1 << 20, ..Default::default() };
    let mut cluster = Cluster::start(opts).await.unwrap();
    let c = cluster.client();
    c.mkdir("/h/sub", true).await.unwrap();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    c.put("/h/big", &data[..], None).await.unwrap();
    c.put("/h/sub/small", &b"tiny"[..], None).await.unwrap();
    c.create("/h/sub/empty", None).await.unwrap();
    let m = cluster.master_addr().to_string();

    let (code, v) = report(&m);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "HEALTHY");
    assert_eq!((v["files"].as_u64(), v["directories"].as_u64()), (Some(3), Some(2)), "{v}");
    assert_eq!((v["chunks"].as_u64(), v["bytes"].as_u64()), (Some(4), Some(2_500_004)), "{v}");
    let text = String::from_utf8(run(&m, &["fsck", "/h"]).stdout).unwrap();
    assert!(text.contains("is HEALTHY") && text.contains("Total files:\t3"), "{text}");

    // One of two servers gone: every chunk is short, none is missing.
    cluster.stop_chunkserver(1).await.unwrap();
    let (code, v) = wait_report(&m, |_, v| v["under_replicated_files"].as_u64() == Some(2));
    assert_eq!((code, v["missing_files"].as_u64(), v["status"].as_str()), (0, Some(0), Some("HEALTHY")), "{v}");

    // Both gone: the data cannot be read: CORRUPT, exit 8, each file named.
    cluster.stop_chunkserver(0).await.unwrap();
    let (code, v) = wait_report(&m, |_, v| v["missing_files"].as_u64() == Some(2));
    assert_eq!((code, v["status"].as_str()), (8, Some("CORRUPT")), "{v}");
    let mut named: Vec<&str> = v["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    named.sort();
    assert_eq!(named, ["/h/big", "/h/sub/small"]);
    let big = v["problems"].as_array().unwrap().iter().find(|p| p["path"] == "/h/big").unwrap();
    assert_eq!(big["missing_chunks"], serde_json::json!([0, 1, 2]));
    let out = run(&m, &["fsck", "/h/big"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("/h/big: MISSING chunks [0, 1, 2]") && text.contains("is CORRUPT"), "{text}");
    assert_eq!(out.status.code(), Some(8));
    // A path that is not there.
    assert_eq!(run(&m, &["fsck", "/nope"]).status.code(), Some(3));
}

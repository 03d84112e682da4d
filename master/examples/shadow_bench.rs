//! Cost of a follower's shadow pull (`shadow::ShadowSync`, every two
//! heartbeats) on the leader, for N chunks: the full pull a follower makes
//! after a leader change, and the steady pull after 1% of the chunks
//! changed. The baseline, measured in the same run, is listing every
//! chunk's location in one pass over the same table (the least a pull of
//! everything costs). The leader holds its metadata lock for each page, so
//! the longest page is printed too; the follower's apply is timed apart.
//!
//! `cargo run --release -p gfs-master --example shadow_bench -- [chunks] [deleted-every]`
//! (defaults 1000000 and 10: every 10th handle is deleted, as after churn).

use std::time::{Duration, Instant};

use gfs_master::shadow::{PAGE, Pull};
use gfs_master::state::Meta;
use gfs_proto::log_record::Op;
use gfs_proto::{AddChunkOp, CreateOp, ServerInfo};

fn build(n: u64, gap: u64, replicas: bool) -> Meta {
    let mut m = Meta::new();
    m.apply(&Op::Create(CreateOp { path: "/f".into(), replication: 3, chunk_size: 64 << 20, ..Default::default() }), 1)
        .unwrap();
    let now = tokio::time::Instant::now();
    for id in ["a", "b", "c"] {
        let info = ServerInfo { id: id.into(), address: format!("{id}:1"), zone: id.into() };
        m.servers.register(info, 1 << 50, 0, now);
    }
    let (mut h, mut index) = (0u64, 0u64);
    while index < n {
        h += 1;
        let handle = m.chunks.allocate_handle();
        if gap > 0 && h % gap == 0 {
            continue;
        }
        m.apply(&Op::AddChunk(AddChunkOp { path: "/f".into(), index, handle, version: 1 }), 1).unwrap();
        if replicas {
            for s in ["a", "b", "c"] {
                m.add_replica(handle, s);
            }
        }
        index += 1;
    }
    m
}

/// One pull through pages; returns (leader time, longest page, changes, follower apply time).
fn pull(leader: &Meta, follower: &mut Meta, cursor: &mut (u64, u64)) -> (Duration, Duration, usize, Duration) {
    let mut p = Pull::new(*cursor);
    let (mut total, mut longest) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t = Instant::now();
        let page = leader.shadow_page(p.stream, p.after, PAGE);
        let d = t.elapsed();
        total += d;
        longest = longest.max(d);
        if p.take(page).expect("page") {
            break;
        }
    }
    let n = p.changes.len();
    let t = Instant::now();
    let (_, next) = p.apply(follower, tokio::time::Instant::now());
    *cursor = next;
    (total, longest, n, t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(1_000_000, |a| a.parse().expect("chunks"));
    let gap: u64 = args.next().map_or(10, |a| a.parse().expect("deleted-every"));
    let mut leader = build(n, gap, true);
    let mut follower = build(n, gap, false);
    let handles: Vec<u64> = leader.chunks.iter().map(|(h, _)| *h).collect();

    for round in 1..=3 {
        let t = Instant::now();
        let all: Vec<_> = leader.chunks.iter().map(|(h, _)| leader.location(0, *h)).collect();
        let one_pass = t.elapsed();
        assert_eq!(all.len() as u64, n);
        drop(all);

        let mut cursor = (0, 0);
        let (full, full_longest, got, full_apply) = pull(&leader, &mut follower, &mut cursor);
        assert_eq!(got as u64, n);
        let (idle, _, none, _) = pull(&leader, &mut follower, &mut cursor);
        assert_eq!(none, 0);
        let changed = (n / 100).max(1) as usize;
        for h in handles.iter().step_by(handles.len() / changed).take(changed) {
            leader.chunks.get_mut(*h).unwrap().length += 1;
        }
        let (steady, steady_longest, got, steady_apply) = pull(&leader, &mut follower, &mut cursor);
        assert_eq!(got, changed);
        println!(
            "round {round}: {n} chunks; one-pass listing {:.1} ms (baseline); full pull {:.1} ms ({:.2}), \
             longest page {:.2} ms, follower apply {:.1} ms; idle pull {:.3} ms; \
             pull of {changed} changed {:.2} ms ({:.4}), longest page {:.2} ms, follower apply {:.2} ms",
            ms(one_pass),
            ms(full),
            full.as_secs_f64() / one_pass.as_secs_f64(),
            ms(full_longest),
            ms(full_apply),
            ms(idle),
            ms(steady),
            steady.as_secs_f64() / one_pass.as_secs_f64(),
            ms(steady_longest),
            ms(steady_apply),
        );
        // The next round starts with a new stream, as after a leader change.
        leader.chunks.clear_soft_state();
        for h in &handles {
            for s in ["a", "b", "c"] {
                leader.add_replica(*h, s);
            }
        }
    }
}

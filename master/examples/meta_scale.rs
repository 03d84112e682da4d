//! Master metadata at scale: memory per file and per chunk, and what the
//! repair worker's background work costs with N files, next to the
//! baseline of a full walk of every chunk under the lock (what each repair
//! step did before the event-driven index).
//!
//! `cargo run --release -p gfs-master --example meta_scale -- [FILES]`
//! (default 1 000 000 files of one chunk each, 3 replicas on 3 servers).

use std::time::{Duration, Instant};

use gfs_master::config::Config;
use gfs_master::namespace::Node;
use gfs_master::state::Meta;
use gfs_proto::log_record::Op;
use gfs_proto::{AddChunkOp, CreateOp, MkdirOp, ServerInfo};

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn per(bytes_before: u64, bytes_after: u64, n: u64) -> f64 {
    bytes_after.saturating_sub(bytes_before) as f64 / n as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let files: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dirs = files.div_ceil(1000);
    let cfg = Config::default();
    let base = rss();
    let mut m = Meta::new();
    let servers = ["cs-0", "cs-1", "cs-2"];
    for s in servers {
        let info = ServerInfo { id: s.into(), address: format!("{s}:9801"), zone: s.into() };
        m.servers.register(info, 1 << 50, 0, tokio::time::Instant::now());
    }
    for d in 0..dirs {
        m.apply(&Op::Mkdir(MkdirOp { path: format!("/d{d}"), ..Default::default() }), 1).expect("mkdir");
    }
    let t = Instant::now();
    for f in 0..files {
        let path = format!("/d{}/file-{f:08}", f / 1000);
        m.apply(&Op::Create(CreateOp { path, replication: 3, chunk_size: 64 << 20, ..Default::default() }), 1)
            .expect("create");
    }
    let created = t.elapsed();
    let after_files = rss();
    for f in 0..files {
        let path = format!("/d{}/file-{f:08}", f / 1000);
        m.apply(&Op::AddChunk(AddChunkOp { path, index: 0, handle: f + 1, version: 1 }), 1).expect("chunk");
        for s in servers {
            m.add_replica(f + 1, s);
        }
    }
    let after_chunks = rss();
    println!(
        "files {files} in {dirs} directories, one chunk of 3 replicas each (built in {:.1} s)",
        created.as_secs_f64()
    );
    println!(
        "master RSS: empty {:.1} MiB, files {:.1} MiB, chunks {:.1} MiB",
        base as f64 / 1048576.0,
        after_files as f64 / 1048576.0,
        after_chunks as f64 / 1048576.0
    );
    println!(
        "per empty file: {:.0} B (goal <= 100 B); per chunk with 3 replicas: {:.0} B (goal <= 64 B)",
        per(base, after_files, files),
        per(after_files, after_chunks, files)
    );

    // Baseline: what each repair step did before the index: a view of
    // every chunk of every file, under one hold of the lock.
    let t = Instant::now();
    let now = tokio::time::Instant::now();
    let mut views = 0usize;
    for (_, node) in m.ns.iter() {
        if let Node::File(f) = node {
            views += f.chunks.iter().filter_map(|h| m.chunk_view(*h, &cfg, now, 3)).count();
        }
    }
    let full = t.elapsed();
    assert_eq!(views as u64, files);
    let t = Instant::now();
    m.refresh_index_now(&cfg);
    let first = t.elapsed();
    println!("a new leader's first index pass (slices, lock released between): {:.1} ms", ms(first));

    // Status counts and the garbage collector's look-up: a walk of every
    // entry each (before) vs the namespace's index (now).
    let t = Instant::now();
    let visible = m.ns.iter().filter(|(p, _)| !gfs_master::hidden::is_within_hidden(p)).count();
    let expired = m.ns.iter().filter(|(p, _)| gfs_master::hidden::is_hidden_name(p)).count();
    let walk = t.elapsed();
    let t = Instant::now();
    let (f, d) = m.ns.counts();
    let due = m.ns.deleted_before(i64::MAX, 1000).len();
    let indexed = t.elapsed();
    assert_eq!((f + d) as usize, visible);
    assert_eq!(due, expired);
    println!(
        "status counts + GC look-up: walk of every entry {:.1} ms, index {:.4} ms; ratio {:.0}x",
        ms(walk),
        ms(indexed),
        ms(walk) / ms(indexed).max(1e-6)
    );

    // A checkpoint: the lock is held only to freeze the replicated state
    // (persistent maps); the encoding, which used to run under the lock
    // (the baseline), runs after it is released.
    let t = Instant::now();
    let frozen = m.freeze();
    let held = t.elapsed();
    let t = Instant::now();
    let cp = frozen.checkpoint();
    let encoded = t.elapsed();
    println!(
        "checkpoint: lock held {:.3} ms to freeze vs {:.0} ms to build ({} entries, built outside the lock); ratio {:.0}x",
        ms(held),
        ms(encoded),
        cp.entries.len(),
        ms(encoded) / ms(held).max(1e-6)
    );
    drop(cp);
    // What a frozen view costs the changes made meanwhile: each first
    // change to a tree node copies it.
    let creates = |m: &mut Meta, tag: &str| {
        let t = Instant::now();
        for f in 0..10_000u64 {
            let path = format!("/d{}/{tag}-{f:05}", (f * 7919) % dirs);
            m.apply(&Op::Create(CreateOp { path, replication: 3, chunk_size: 64 << 20, ..Default::default() }), 1)
                .expect("create");
        }
        t.elapsed()
    };
    let shared = creates(&mut m, "frozen");
    drop(frozen);
    let alone = creates(&mut m, "alone");
    println!(
        "10 000 creates across {dirs} directories: {:.1} ms while a checkpoint view is held, {:.1} ms without; ratio {:.2}",
        ms(shared),
        ms(alone),
        ms(shared) / ms(alone).max(1e-6)
    );

    // Steady repair steps: nothing changed, then 1 000 chunks lost a replica.
    let steps = 20;
    let (mut total, mut longest) = (Duration::ZERO, Duration::ZERO);
    for i in 0..steps {
        if i == steps / 2 {
            for h in 1..=1000 {
                m.remove_replica(h, "cs-2");
            }
        }
        let step = Instant::now();
        let mut slice = Instant::now();
        m.index_begin(&cfg, true);
        let mut more = true;
        while more {
            more = m.index_slice(&cfg, tokio::time::Instant::now());
            longest = longest.max(slice.elapsed());
            // The worker releases the lock here.
            slice = Instant::now();
        }
        total += step.elapsed();
    }
    let queued = m.heal.index.totals().chunks;
    println!("repair index: {queued} chunks short after 1000 lost replicas (must be 1000)");
    println!(
        "every chunk's view under one lock hold (each step before): {:.1} ms; event-driven step: mean {:.2} ms, longest lock hold {:.2} ms; ratio {:.0}x",
        ms(full),
        ms(total) / steps as f64,
        ms(longest),
        ms(full) / (ms(total) / steps as f64)
    );
}

//! `gfs bench`: throughput and metadata rates through the client, next to
//! a plain-disk baseline measured in the same run on the same disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::{StreamExt, TryStreamExt, stream};
use gfs_common::MAX_IO_SIZE;
use gfs_common::shutdown::CancellationToken;
use rand::RngCore;
use serde_json::json;

use super::output::table;
use crate::local_cluster::{LocalCluster, LocalClusterOptions};
use crate::size::parse_size;
use crate::{Client, ClientConfig};

/// Concurrency of the metadata benchmarks and of the concurrent appenders.
const PARALLELISM: usize = 8;

/// Flags of `gfs bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Start an in-process cluster on this dir [default: a temp dir, unless
    /// --master/GFS_MASTER is given].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bytes written and read (appends move a quarter of it per run).
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "BYTES")]
    pub size: u64,
    /// Record size of the append runs.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "BYTES")]
    pub record_size: u64,
    /// Files created (and stat'ed) by the metadata runs.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub files: u64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Instead of the plain-disk baseline: write and read through an
    /// in-process cluster with mTLS and one without (the baseline), in
    /// alternating rounds, and print the ratio.
    #[arg(long)]
    pub tls_cost: bool,
    /// Rounds of `--tls-cost` (each runs both clusters).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: u32,
}

struct Metric {
    name: &'static str,
    key: &'static str,
    gfs: f64,
    baseline: Option<f64>,
}

fn rate(amount: f64, took: Duration) -> f64 {
    amount / took.as_secs_f64().max(1e-9)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Runs the benchmark.
/// Runs the benchmark against `external` (the master and identity given
/// on the command line), or else an in-process cluster (TLS unless
/// `insecure`).
pub async fn run(args: BenchArgs, external: Option<ClientConfig>, insecure: bool) -> anyhow::Result<()> {
    if args.tls_cost {
        return super::bench_tls::run(&args).await;
    }
    if args.size == 0 || args.record_size == 0 || args.files == 0 {
        bail!("--size, --record-size and --files must be positive");
    }
    let token = CancellationToken::new();
    let mut tmp_root = None;
    let mut cluster = None;
    let external = external.filter(|_| args.data_dir.is_none());
    let (config, baseline_parent) = if let Some(config) = external {
        (config, std::env::temp_dir())
    } else {
        let dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile::Builder::new().prefix("gfs-bench-").tempdir().context("temp dir")?;
                let d = t.path().join("cluster");
                tmp_root = Some(t);
                d
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let mut opts = LocalClusterOptions::new(&dir);
        opts.tls = !insecure;
        let c = LocalCluster::start(opts, token.clone()).await?;
        let config = c.client_config();
        cluster = Some(c);
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        (config, parent)
    };
    let addr = config.master.clone();
    let baseline_dir = tempfile::Builder::new()
        .prefix("gfs-bench-baseline-")
        .tempdir_in(&baseline_parent)
        .with_context(|| baseline_parent.display().to_string())?;

    let client = Client::new(config)?;
    let res = measure(&client, &args, baseline_dir.path()).await;
    if let Some(c) = cluster {
        c.stop().await?;
    }
    drop(tmp_root);
    let metrics = res?;
    print(&args, &addr, &metrics)
}

async fn measure(client: &Client, args: &BenchArgs, baseline: &Path) -> anyhow::Result<Vec<Metric>> {
    let mut data = vec![0u8; args.size as usize];
    rand::rng().fill_bytes(&mut data);
    let data = Arc::new(data);
    let base = format!("/bench-{:016x}", rand::random::<u64>());
    client.mkdir(&base, true).await?;
    let res = measure_gfs(client, args, &base, data.clone()).await;
    if let Err(e) = client.delete(&base, true).await {
        tracing::warn!(error = %e, "cannot remove {base}");
    }
    let gfs = res?;
    let dir = baseline.to_path_buf();
    let files = args.files;
    let record_len = args.record_size.min(args.size) as usize;
    let append_total = (args.size / 4).max(args.record_size);
    let base_res = tokio::task::spawn_blocking(move || measure_baseline(&dir, &data, files, record_len, append_total))
        .await
        .context("baseline task")??;
    Ok(vec![
        Metric { name: "write MB/s", key: "write_mb_s", gfs: gfs.write, baseline: Some(base_res.write) },
        Metric { name: "read MB/s", key: "read_mb_s", gfs: gfs.read, baseline: Some(base_res.read) },
        Metric {
            name: "append MB/s (1 appender)",
            key: "append_1_mb_s",
            gfs: gfs.append1,
            baseline: Some(base_res.append),
        },
        Metric {
            name: "append MB/s (8 appenders)",
            key: "append_8_mb_s",
            gfs: gfs.append8,
            baseline: Some(base_res.append),
        },
        Metric { name: "creates/s", key: "creates_per_s", gfs: gfs.creates, baseline: Some(base_res.creates) },
        Metric { name: "stats/s", key: "stats_per_s", gfs: gfs.stats, baseline: Some(base_res.stats) },
    ])
}

struct GfsRates {
    write: f64,
    read: f64,
    append1: f64,
    append8: f64,
    creates: f64,
    stats: f64,
}

async fn measure_gfs(client: &Client, args: &BenchArgs, base: &str, data: Arc<Vec<u8>>) -> anyhow::Result<GfsRates> {
    let file = format!("{base}/data");
    let t = Instant::now();
    client.put(&file, &data[..], None).await?;
    let write = rate(mb(args.size), t.elapsed());

    let t = Instant::now();
    let n = client.get(&file, tokio::io::sink(), None).await?;
    let read = rate(mb(n), t.elapsed());
    if n != args.size {
        bail!("read back {n} bytes of {}", args.size);
    }

    let append_total = (args.size / 4).max(args.record_size);
    let record_len = args.record_size.min(args.size) as usize;
    let append1 = append_run(client, &format!("{base}/append-1"), &data, record_len, append_total, 1).await?;
    let append8 = append_run(client, &format!("{base}/append-8"), &data, record_len, append_total, PARALLELISM).await?;

    let dir = format!("{base}/meta");
    client.mkdir(&dir, false).await?;
    let t = Instant::now();
    stream::iter(0..args.files)
        .map(|i| {
            let path = format!("{dir}/f{i}");
            async move { client.create(&path, None).await }
        })
        .buffer_unordered(PARALLELISM)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let creates = rate(args.files as f64, t.elapsed());

    let t = Instant::now();
    stream::iter(0..args.files)
        .map(|i| {
            let path = format!("{dir}/f{i}");
            async move { client.stat(&path).await }
        })
        .buffer_unordered(PARALLELISM)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let stats = rate(args.files as f64, t.elapsed());
    Ok(GfsRates { write, read, append1, append8, creates, stats })
}

/// Appends records of `record_len` bytes with `appenders` concurrent tasks
/// until `total` bytes went in; returns MB/s.
async fn append_run(
    client: &Client,
    path: &str,
    data: &Arc<Vec<u8>>,
    record_len: usize,
    total: u64,
    appenders: usize,
) -> anyhow::Result<f64> {
    client.create(path, None).await?;
    let records = total.div_ceil(record_len as u64);
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let client = client.clone();
            let path = path.to_string();
            let data = data.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= records {
                        return Ok::<_, gfs_common::Error>(());
                    }
                    let start = (i as usize * record_len) % (data.len() - record_len + 1);
                    client.append(&path, &data[start..start + record_len]).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("append task")??;
    }
    Ok(rate(mb(records * record_len as u64), t.elapsed()))
}

struct BaselineRates {
    write: f64,
    read: f64,
    append: f64,
    creates: f64,
    stats: f64,
}

/// The same work on plain files: three copies written piece by piece with
/// an fsync after each piece, one copy read back, records appended to three
/// files with an fsync after each, N create+fsync, N stats.
fn measure_baseline(
    dir: &Path,
    data: &[u8],
    files: u64,
    record_len: usize,
    append_total: u64,
) -> anyhow::Result<BaselineRates> {
    let ctx = |p: &Path| p.display().to_string();
    let paths: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("replica-{i}"))).collect();
    let mut handles = Vec::new();
    for p in &paths {
        handles.push(std::fs::File::create(p).with_context(|| ctx(p))?);
    }
    let t = Instant::now();
    for piece in data.chunks(MAX_IO_SIZE as usize) {
        for (f, p) in handles.iter_mut().zip(&paths) {
            f.write_all(piece).with_context(|| ctx(p))?;
            f.sync_data().with_context(|| ctx(p))?;
        }
    }
    let write = rate(mb(data.len() as u64), t.elapsed());
    drop(handles);

    let t = Instant::now();
    let mut f = std::fs::File::open(&paths[0]).with_context(|| ctx(&paths[0]))?;
    let mut buf = vec![0u8; MAX_IO_SIZE as usize];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).with_context(|| ctx(&paths[0]))?;
        if r == 0 {
            break;
        }
        n += r as u64;
    }
    let read = rate(mb(n), t.elapsed());
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }

    // Record append: each record lands durably on three copies before the
    // next one, as a 3-replica append does.
    let mut handles = Vec::new();
    for p in &paths {
        handles.push(std::fs::File::create(p).with_context(|| ctx(p))?);
    }
    let records = append_total.div_ceil(record_len as u64);
    let t = Instant::now();
    for i in 0..records {
        let start = (i as usize * record_len) % (data.len() - record_len + 1);
        for (f, p) in handles.iter_mut().zip(&paths) {
            f.write_all(&data[start..start + record_len]).with_context(|| ctx(p))?;
            f.sync_data().with_context(|| ctx(p))?;
        }
    }
    let append = rate(mb(records * record_len as u64), t.elapsed());
    drop(handles);
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }

    let meta = dir.join("meta");
    std::fs::create_dir(&meta).with_context(|| ctx(&meta))?;
    let t = Instant::now();
    for i in 0..files {
        let p = meta.join(format!("f{i}"));
        let f = std::fs::File::create(&p).with_context(|| ctx(&p))?;
        f.sync_all().with_context(|| ctx(&p))?;
    }
    std::fs::File::open(&meta).and_then(|d| d.sync_all()).with_context(|| ctx(&meta))?;
    let creates = rate(files as f64, t.elapsed());

    let t = Instant::now();
    for i in 0..files {
        let p = meta.join(format!("f{i}"));
        std::fs::metadata(&p).with_context(|| ctx(&p))?;
    }
    let stats = rate(files as f64, t.elapsed());
    Ok(BaselineRates { write, read, append, creates, stats })
}

fn print(args: &BenchArgs, master: &str, metrics: &[Metric]) -> anyhow::Result<()> {
    let ratio = |m: &Metric| m.baseline.filter(|b| *b > 0.0).map(|b| m.gfs / b);
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = json!({
            "master": master,
            "size": args.size,
            "record_size": args.record_size,
            "files": args.files,
            "metrics": metrics.iter().map(|m| json!({
                "metric": m.key,
                "gfs": m.gfs,
                "baseline": m.baseline,
                "ratio": ratio(m),
            })).collect::<Vec<_>>(),
            "note": "page caches are not dropped: reads may hit the cache for both gfs and the baseline",
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let rows: Vec<[String; 4]> = metrics
        .iter()
        .map(|m| {
            [
                m.name.to_string(),
                format!("{:.1}", m.gfs),
                m.baseline.map(|b| format!("{b:.1}")).unwrap_or_else(|| "-".into()),
                ratio(m).map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    write!(out, "{}", table(&["metric", "gfs", "baseline", "ratio"], &rows))?;
    writeln!(
        out,
        "\nsize {}, record size {}, {} files; master {master}.\nbaseline: 3 plain files with fsync per {} piece, \
         read of one copy, records appended to 3 files with fsync each, create+fsync of empty files.\nnote: page caches are not dropped, reads may hit the cache \
         for both.",
        crate::size::format_size(args.size),
        crate::size::format_size(args.record_size),
        args.files,
        crate::size::format_size(MAX_IO_SIZE),
    )?;
    Ok(())
}

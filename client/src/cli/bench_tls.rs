//! `gfs bench --tls-cost`: what mTLS costs on the data path. Write and read
//! MB/s through an in-process cluster with TLS and one without, in the
//! same run, alternating which goes first in each round so that drift on a
//! shared machine hits both alike; prints the medians and their ratio.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use gfs_common::shutdown::CancellationToken;
use rand::RngCore;
use serde_json::json;

use super::bench::BenchArgs;
use super::output::table;
use crate::Client;
use crate::local_cluster::{LocalCluster, LocalClusterOptions};

/// Write and read rates of one cluster, MB/s.
#[derive(Debug, Clone, Copy)]
struct Rates {
    write: f64,
    read: f64,
}

/// Runs the comparison.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.size == 0 {
        bail!("--rounds and --size must be positive");
    }
    let parent = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent).with_context(|| parent.display().to_string())?;
    let mut data = vec![0u8; args.size as usize];
    rand::rng().fill_bytes(&mut data);
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Even rounds plaintext first, odd rounds TLS first.
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for tls_on in order {
            let r = one_cluster(&parent, tls_on, &data).await?;
            if !args.json {
                let mode = if tls_on { "mTLS" } else { "plaintext" };
                eprintln!("round {}: {mode:<9} write {:.1} MB/s, read {:.1} MB/s", round + 1, r.write, r.read);
            }
            if tls_on { tls.push(r) } else { plain.push(r) }
        }
    }
    print(args, &plain, &tls)
}

/// Starts a 3-chunkserver cluster (TLS or not) in a temporary folder under
/// `parent`, puts `data` and gets it back, and stops the cluster.
async fn one_cluster(parent: &Path, tls: bool, data: &[u8]) -> anyhow::Result<Rates> {
    let dir = tempfile::Builder::new().prefix("gfs-bench-tls-").tempdir_in(parent).context("temp dir")?;
    let token = CancellationToken::new();
    let mut opts = LocalClusterOptions::new(dir.path().join("cluster"));
    opts.tls = tls;
    let cluster = LocalCluster::start(opts, token).await?;
    let client = Client::new(cluster.client_config())?;
    let res = async {
        let t = Instant::now();
        client.put("/bench", data, None).await?;
        let write = data.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let n = client.get("/bench", tokio::io::sink(), None).await?;
        let read = n as f64 / 1e6 / t.elapsed().as_secs_f64();
        if n != data.len() as u64 {
            bail!("read back {n} bytes of {}", data.len());
        }
        Ok(Rates { write, read })
    }
    .await;
    cluster.stop().await?;
    res
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn print(args: &BenchArgs, plain: &[Rates], tls: &[Rates]) -> anyhow::Result<()> {
    use std::io::Write;
    let rows = [
        ("write MB/s", median(plain.iter().map(|r| r.write).collect()), median(tls.iter().map(|r| r.write).collect())),
        ("read MB/s", median(plain.iter().map(|r| r.read).collect()), median(tls.iter().map(|r| r.read).collect())),
    ];
    let mut out = std::io::stdout().lock();
    if args.json {
        let metrics: Vec<_> = rows
            .iter()
            .map(|(name, p, t)| json!({ "metric": name, "plaintext": p, "mtls": t, "ratio": t / p }))
            .collect();
        let v = json!({ "size": args.size, "rounds": args.rounds, "metrics": metrics });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|(name, p, t)| [name.to_string(), format!("{t:.1}"), format!("{p:.1}"), format!("{:.2}", t / p)])
        .collect();
    write!(out, "{}", table(&["metric", "mTLS", "plaintext (baseline)", "ratio"], &cells))?;
    writeln!(
        out,
        "\nmedians of {} rounds, {} each; same machine, same run, alternating which goes first.",
        args.rounds,
        crate::size::format_size(args.size)
    )?;
    Ok(())
}

//! Load driver of `scripts/bench-peers.sh`: one metadata or small-file
//! workload against gfs (through its client library), the SeaweedFS filer
//! (its HTTP API) or HDFS (WebHDFS), with `--clients` concurrent clients,
//! each with its own connection(s) and one request in flight.
//!
//! Files are `DIR/fNNNNNN`, spread over the clients by index. Every answer
//! is checked (status code, and for reads the exact bytes written: a file's
//! bytes are a function of its index), so a system that drops work fails
//! the run instead of looking fast. Prints one JSON line with the rate.
//!
//! ```sh
//! peer_load --system gfs --addr 127.0.0.1:9000 --op create --dir /meta
//! peer_load --system filer --addr 127.0.0.1:8888 --op stat --dir /meta
//! peer_load --system webhdfs --addr 127.0.0.1:9870 --op write --size 4096 --dir /small
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use gfs_client::{Client, ClientConfig};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Deadline of one operation (a request and its redirect).
const OP_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum System {
    /// gfs through `gfs_client::Client` (plaintext: start it `--insecure`).
    Gfs,
    /// The SeaweedFS filer's HTTP API (PUT, HEAD, GET).
    Filer,
    /// HDFS's WebHDFS REST API on the NameNode's HTTP port (the data of
    /// CREATE and OPEN goes through the DataNode it redirects to).
    Webhdfs,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Op {
    /// Create empty files.
    Create,
    /// Stat the files `create` made.
    Stat,
    /// Write files of `--size` bytes.
    Write,
    /// Read back the files `write` made and compare their bytes.
    Read,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    system: System,
    /// gfs: the master; filer: the filer's HTTP address; webhdfs: the
    /// NameNode's HTTP address.
    #[arg(long)]
    addr: String,
    #[arg(long, value_enum)]
    op: Op,
    /// Folder of the files (absolute).
    #[arg(long)]
    dir: String,
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Bytes per file of `write` and `read`.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.files == 0 || !args.dir.starts_with('/') {
        bail!("--clients and --files must be positive and --dir absolute");
    }
    let dir = args.dir.trim_end_matches('/').to_string();
    if let (System::Gfs, Op::Create | Op::Write) = (args.system, args.op) {
        let c = Client::new(ClientConfig::new(args.addr.clone()))?;
        c.mkdir(&dir, true).await?;
    }
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..args.clients {
        let mut worker = Worker::new(args.system, &args.addr)?;
        let (op, size, files, clients, dir) = (args.op, args.size, args.files, args.clients, dir.clone());
        workers.spawn(async move {
            for i in (k..files).step_by(clients) {
                let path = format!("{dir}/f{i:06}");
                tokio::time::timeout(OP_DEADLINE, worker.run(op, &path, i, size))
                    .await
                    .map_err(|_| anyhow!("{op:?} {path}: no answer in {OP_DEADLINE:?}"))?
                    .with_context(|| format!("{op:?} {path}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let secs = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "system": format!("{:?}", args.system).to_lowercase(),
        "op": format!("{:?}", args.op).to_lowercase(),
        "files": args.files,
        "clients": args.clients,
        "seconds": secs,
        "ops_per_s": args.files as f64 / secs,
    });
    println!("{line}");
    Ok(())
}

/// The bytes of file `i` of a `write` run.
fn content(i: usize, size: usize) -> Bytes {
    let seed = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut x = seed;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// One client: a gfs client of its own, or HTTP/1.1 keep-alive connections
/// of its own, one per host it was sent to.
enum Worker {
    Gfs(Client),
    Http { system: System, addr: String, conns: HashMap<String, SendRequest<Full<Bytes>>> },
}

impl Worker {
    fn new(system: System, addr: &str) -> anyhow::Result<Self> {
        Ok(match system {
            System::Gfs => Worker::Gfs(Client::new(ClientConfig::new(addr))?),
            _ => Worker::Http { system, addr: addr.to_string(), conns: HashMap::new() },
        })
    }

    async fn run(&mut self, op: Op, path: &str, i: usize, size: usize) -> anyhow::Result<()> {
        match self {
            Worker::Gfs(c) => gfs_op(c, op, path, i, size).await,
            Worker::Http { system, addr, conns } => http_op(conns, *system, addr, op, path, i, size).await,
        }
    }
}

async fn gfs_op(c: &Client, op: Op, path: &str, i: usize, size: usize) -> anyhow::Result<()> {
    match op {
        Op::Create => {
            c.create(path, None).await?;
        }
        Op::Stat => {
            c.stat(path).await?;
        }
        // Create and write in place, as HDFS's create-write-close and the
        // filer's PUT (`gfs put` would also write a temporary name and
        // rename it).
        Op::Write => {
            c.create(path, None).await?;
            c.write_at(path, 0, &content(i, size)).await?;
        }
        Op::Read => {
            let got = c.read_all(path).await?;
            if got != content(i, size) {
                bail!("read {} bytes that differ from those written", got.len());
            }
        }
    }
    Ok(())
}

async fn http_op(
    conns: &mut HashMap<String, SendRequest<Full<Bytes>>>,
    system: System,
    addr: &str,
    op: Op,
    path: &str,
    i: usize,
    size: usize,
) -> anyhow::Result<()> {
    let body = match op {
        Op::Write => content(i, size),
        _ => Bytes::new(),
    };
    // WebHDFS's simple auth: the user the cluster runs as (its superuser).
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let (method, url) = match (system, op) {
        (System::Filer, Op::Create | Op::Write) => (Method::PUT, format!("http://{addr}{path}")),
        (System::Filer, Op::Stat) => (Method::HEAD, format!("http://{addr}{path}")),
        (System::Filer, Op::Read) => (Method::GET, format!("http://{addr}{path}")),
        (_, Op::Create | Op::Write) => {
            (Method::PUT, format!("http://{addr}/webhdfs/v1{path}?op=CREATE&overwrite=false&user.name={user}"))
        }
        (_, Op::Stat) => (Method::GET, format!("http://{addr}/webhdfs/v1{path}?op=GETFILESTATUS&user.name={user}")),
        (_, Op::Read) => (Method::GET, format!("http://{addr}/webhdfs/v1{path}?op=OPEN&user.name={user}")),
    };
    let mut url = url;
    // WebHDFS answers CREATE and OPEN with a redirect to a DataNode.
    for _ in 0..2 {
        let (status, headers, got) = send(conns, method.clone(), &url, body.clone()).await?;
        if status == StatusCode::TEMPORARY_REDIRECT {
            url = headers
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("redirect without a location"))?
                .to_string();
            continue;
        }
        let want = if matches!(op, Op::Create | Op::Write) { StatusCode::CREATED } else { StatusCode::OK };
        if status != want {
            bail!("{method} {url}: {status}: {}", String::from_utf8_lossy(&got));
        }
        if op == Op::Read && got != content(i, size) {
            bail!("read {} bytes that differ from those written", got.len());
        }
        return Ok(());
    }
    bail!("{method} {url}: redirected more than once")
}

/// One request on the worker's connection to the URL's host (made on
/// first use, and again when the server closed it).
async fn send(
    conns: &mut HashMap<String, SendRequest<Full<Bytes>>>,
    method: Method,
    url: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("url {url}"))?;
    let host = uri.authority().ok_or_else(|| anyhow!("url {url} without a host"))?.to_string();
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    if conns.get(&host).is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(&host).await.with_context(|| format!("connect {host}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        conns.insert(host.clone(), sender);
    }
    let sender = conns.get_mut(&host).expect("just made");
    sender.ready().await?;
    let req = Request::builder()
        .method(method)
        .uri(target)
        .header(hyper::header::HOST, &host)
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let got = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, got))
}

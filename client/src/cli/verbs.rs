//! The everyday verbs of `hdfs dfs` that act on one file at a time:
//! `gfs touch`, `gfs test`, `gfs tail`, `gfs checksum` and `gfs rm -f`,
//! plus the dispatch of every verb added with them (`du`, `df`, `count`,
//! `find` in `tree_ops`, `cp` in `copy`).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use gfs_common::Error;
use gfs_common::shutdown::CancellationToken;
use tokio::io::AsyncWrite;

use super::Command;
use super::tree_ops::{self, FindFilter};
use crate::{Client, FileInfo, FileType};

/// Bytes `gfs tail` prints, as `hdfs dfs -tail`.
pub const TAIL_BYTES: u64 = 1024;

/// How often `gfs tail -f` looks for growth.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// The most `gfs tail -f` reads in one call.
const FOLLOW_READ: u64 = 1 << 20;

/// Ends the CLI with this exit code and no message (`gfs test`'s answer).
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Exit code of `gfs test` when the answer is "no".
pub const TEST_FALSE: u8 = 1;

/// Names the side of an error that carries a path: every path of these
/// verbs is a gfs (remote) path, never a local one.
pub fn remote(e: Error) -> anyhow::Error {
    super::exit::remote(e, "")
}

/// Stdout, stopping quietly once the reader is gone (`gfs find | head`).
#[derive(Debug, Default)]
pub struct Out {
    closed: bool,
}

impl Out {
    /// Writes and flushes `text`; false once stdout is closed.
    pub fn print(&mut self, text: &str) -> anyhow::Result<bool> {
        self.write(text.as_bytes())
    }

    /// [`Out::print`] for bytes.
    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(data).and_then(|_| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(anyhow!("stdout: {e}")),
        }
    }
}

/// Runs one of the verbs of this module and `tree_ops`/`copy`.
pub async fn run(client: &Client, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Du { summary, human, paths, .. } => {
            let paths = super::expand::expand_all(client, &paths).await?;
            tree_ops::du(client, summary, human, &paths).await
        }
        Command::Df { human, .. } => tree_ops::df(client, human).await,
        Command::Count { quotas, human, paths, .. } => {
            let paths = super::expand::expand_all(client, &paths).await?;
            tree_ops::count(client, quotas, human, &paths).await
        }
        Command::Find { path, expression } => {
            let filter = FindFilter::parse(&expression)?;
            tree_ops::find(client, &path, &filter).await
        }
        Command::Touch { paths } => touch(client, &paths).await,
        Command::Test { exists, dir, file, zero, path } => {
            test(client, TestKind::of(exists, dir, file, zero), &path).await
        }
        Command::Tail { follow, path } => tail(client, follow, &path).await,
        Command::Cp { recursive, force, paths } => super::copy::cp(client, recursive, force, &paths).await,
        Command::Checksum { paths } => checksum(client, &paths).await,
        Command::Rm { recursive, force, skip_trash, path } => rm(client, recursive, force, skip_trash, &path).await,
        other => unreachable!("not a verb of this module: {other:?}"),
    }
}

/// `gfs rm [-r] [-f] [--skip-trash] PATH` (globs allowed): each match
/// goes to the trash, or is removed at once with `--skip-trash`.
async fn rm(client: &Client, recursive: bool, force: bool, skip_trash: bool, path: &str) -> anyhow::Result<()> {
    let paths = match super::expand::expand(client, path).await {
        Err(e) if force && crate::cli::exit::code_of(&e) == crate::cli::exit::NOT_FOUND => return Ok(()),
        other => other?,
    };
    for p in paths {
        let res = if skip_trash { client.delete_now(&p, recursive).await } else { client.delete(&p, recursive).await };
        match res {
            Err(Error::NotFound { .. }) if force => {}
            other => other.map_err(remote)?,
        }
    }
    Ok(())
}

/// `gfs touch PATH...`: an empty file where nothing is; an existing file
/// is left as it is; a directory is an error.
async fn touch(client: &Client, paths: &[String]) -> anyhow::Result<()> {
    for p in paths {
        client.open_or_create(p, None).await.map_err(remote)?;
    }
    Ok(())
}

/// What `gfs test` asks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TestKind {
    Exists,
    Dir,
    File,
    Zero,
}

impl TestKind {
    fn of(_exists: bool, dir: bool, file: bool, zero: bool) -> TestKind {
        // clap makes exactly one of the flags true.
        match (dir, file, zero) {
            (true, _, _) => TestKind::Dir,
            (_, true, _) => TestKind::File,
            (_, _, true) => TestKind::Zero,
            _ => TestKind::Exists,
        }
    }

    fn holds(self, e: &FileInfo) -> bool {
        match self {
            TestKind::Exists => true,
            TestKind::Dir => e.r#type() == FileType::Directory,
            TestKind::File => e.r#type() == FileType::File,
            // As HDFS: zero length (a directory has none).
            TestKind::Zero => e.size == 0,
        }
    }
}

/// `gfs test`: exits 0 when true, 1 when false, without output; a failure
/// to answer is an error like any other (its message and the exit code of
/// its kind: `exit.rs`).
async fn test(client: &Client, kind: TestKind, path: &str) -> anyhow::Result<()> {
    let answer = match client.stat(path).await {
        Ok(st) => kind.holds(&st.info),
        // A missing entry, or a file where a directory should be on the way.
        Err(Error::NotFound { .. } | Error::NotADirectory { .. }) => false,
        // "Cannot tell" must not read as "no": a bad path is bad usage.
        Err(e @ (Error::InvalidPath { .. } | Error::InvalidArgument(_))) => {
            return Err(crate::cli::exit::remote_text(format!("remote {e}"), crate::cli::exit::USAGE));
        }
        Err(e) => return Err(e.into()),
    };
    if answer { Ok(()) } else { Err(Exit(TEST_FALSE).into()) }
}

/// A token cancelled by the first SIGINT or SIGTERM; the handlers are
/// installed before this returns, so a signal from then on never kills the
/// process with the default action. A second signal prints `gfs: {what}`
/// and exits at once (130).
pub fn stop_on_signals(what: &'static str) -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        t.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        eprintln!("gfs: {what}");
        std::process::exit(crate::cli::exit::INTERRUPTED.into());
    });
    Ok(token)
}

/// The file at `path`, or an error for a directory.
async fn stat_file(client: &Client, path: &str) -> anyhow::Result<FileInfo> {
    let info = client.stat(path).await.map_err(remote)?.info;
    if info.r#type() == FileType::Directory {
        return Err(remote(Error::IsADirectory { path: info.path }));
    }
    Ok(info)
}

/// Prints bytes `[from, to)` of `path` in reads of at most
/// [`FOLLOW_READ`]; returns where it stopped (short of `to` only when the
/// file ended first) and false once stdout is closed.
async fn print_range(client: &Client, path: &str, from: u64, to: u64, out: &mut Out) -> anyhow::Result<(u64, bool)> {
    let mut pos = from;
    while pos < to {
        let data = client.read_at(path, pos, (to - pos).min(FOLLOW_READ)).await.map_err(remote)?;
        if data.is_empty() {
            break;
        }
        pos += data.len() as u64;
        if !out.write(&data)? {
            return Ok((pos, false));
        }
    }
    Ok((pos, true))
}

/// `gfs tail [-f] PATH`: the last [`TAIL_BYTES`] of the file; `-f` then
/// prints what is appended, checking the size every second, until
/// SIGINT/SIGTERM (which ends it with exit code 0).
async fn tail(client: &Client, follow: bool, path: &str) -> anyhow::Result<()> {
    let stop = if follow { Some(stop_on_signals("tail -f: interrupted again: exiting")?) } else { None };
    let info = stat_file(client, path).await?;
    let mut out = Out::default();
    let (mut pos, open) =
        print_range(client, &info.path, info.size.saturating_sub(TAIL_BYTES), info.size, &mut out).await?;
    let Some(stop) = stop else { return Ok(()) };
    if !open {
        return Ok(());
    }
    loop {
        let step = async {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            let size = stat_file(client, &info.path).await?.size;
            if size < pos {
                eprintln!("gfs: tail: {}: file shrank (replaced?); following from its end", info.path);
                return Ok((size, true));
            }
            print_range(client, &info.path, pos, size, &mut out).await
        };
        let r: anyhow::Result<(u64, bool)> = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            r = step => r,
        };
        let (p, open) = r?;
        if !open {
            return Ok(());
        }
        pos = p;
    }
}

/// Computes CRC32C and a byte count over what is written to it.
#[derive(Debug, Default)]
struct CrcWriter {
    crc: u32,
    len: u64,
}

impl AsyncWrite for CrcWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.len += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `gfs checksum PATH...`: `PATH  CRC32C  <hex>  <size>`, the CRC32C of
/// the whole file's bytes as the client reads them.
async fn checksum(client: &Client, paths: &[String]) -> anyhow::Result<()> {
    let mut out = Out::default();
    for p in paths {
        let info = stat_file(client, p).await?;
        let mut w = CrcWriter::default();
        client.get(&info.path, &mut w, None).await.map_err(remote)?;
        if !out.print(&format!("{}  CRC32C  {:08x}  {}\n", info.path, w.crc, w.len))? {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn crc_writer_matches_one_shot_crc32c() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = CrcWriter::default();
        for part in data.chunks(4093) {
            w.write_all(part).await.unwrap();
        }
        assert_eq!((w.crc, w.len), (crc32c::crc32c(&data), data.len() as u64));
        assert_eq!(CrcWriter::default().crc, crc32c::crc32c(b""));
    }

    #[test]
    fn test_kinds() {
        let f = FileInfo { r#type: FileType::File as i32, size: 3, ..Default::default() };
        let empty = FileInfo { r#type: FileType::File as i32, ..Default::default() };
        let d = FileInfo { r#type: FileType::Directory as i32, ..Default::default() };
        assert_eq!(TestKind::of(true, false, false, false), TestKind::Exists);
        assert!(TestKind::Dir.holds(&d) && !TestKind::Dir.holds(&f));
        assert!(TestKind::File.holds(&f) && !TestKind::File.holds(&d));
        assert!(TestKind::Zero.holds(&empty) && !TestKind::Zero.holds(&f));
        assert!(TestKind::Exists.holds(&f) && TestKind::Exists.holds(&d));
    }

    #[test]
    fn path_errors_say_remote() {
        let e = remote(Error::NotFound { path: "/x".into() });
        assert_eq!(e.to_string(), "remote /x: not found");
        let e = remote(Error::Unavailable("down".into()));
        assert!(e.downcast_ref::<Error>().is_some(), "other errors keep their type");
    }
}

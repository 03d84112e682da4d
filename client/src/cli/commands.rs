//! File and admin commands.

use std::io::Write;

use anyhow::{anyhow, bail};
use gfs_common::Error;
use tokio::io::AsyncReadExt;

use super::exit;
use super::local_io::{ErrorSlot, Tracked};
use super::output;
use super::progress::Transfer;
use super::{AdminCommand, Command, TrashCommand};
use crate::{COPYING_SUFFIX, Client, ClientConfig, FileType, PutOptions};
use gfs_common::shutdown::CancellationToken;

/// Runs a file or admin command with a client built from `config`.
pub async fn run(mut config: ClientConfig, command: Command) -> anyhow::Result<()> {
    if let Command::Put { allow_under_replicated: true, .. } = command {
        config.allow_under_replicated = true;
    }
    let client = Client::new(config)?;
    match command {
        Command::Put { force, recursive, paths, .. } => super::transfer::put(&client, force, recursive, &paths).await,
        Command::Get { force, recursive, paths } => super::transfer::get(&client, force, recursive, &paths).await,
        Command::Cat { remote } => {
            for p in super::expand::expand(&client, &remote).await? {
                get_file(&client, false, &p, "-").await?;
            }
            Ok(())
        }
        Command::Append { remote, local } => {
            let data = read_local(&local).await?;
            // Like `>>` (and HDFS appendToFile): the first append creates the
            // file, unless the record is over the limit anyway.
            if let Err(Error::NotFound { .. }) = client.stat(&remote).await {
                let limit = client.cluster_status().await?.chunk_size / 4;
                if data.len() as u64 > limit {
                    bail!(Error::TooLarge { what: "record".into(), size: data.len() as u64, limit });
                }
                client.open_or_create(&remote, None).await?;
            }
            let offset = client.append(&remote, &data).await?;
            println!("{offset}");
            Ok(())
        }
        Command::Ls { long, json, all, recursive, path } => {
            let full_paths = super::expand::has_glob(&path);
            let paths = super::expand::expand(&client, &path).await?;
            super::ls::run(&client, &paths, super::ls::Format { long, json, all, recursive, full_paths }).await
        }
        Command::Stat { json, path } => {
            for p in super::expand::expand(&client, &path).await? {
                let st = client.stat(&p).await?;
                let out = if json {
                    serde_json::to_string_pretty(&output::stat_json(&st.info, &st.chunks))? + "\n"
                } else {
                    output::stat_text(&st.info, &st.chunks)
                };
                print_stdout(&out)?;
            }
            Ok(())
        }
        Command::Mkdir { parents, path } => Ok(client.mkdir(&path, parents).await?),
        c @ (Command::Rm { .. }
        | Command::Du { .. }
        | Command::Df { .. }
        | Command::Count { .. }
        | Command::Find { .. }
        | Command::Touch { .. }
        | Command::Test { .. }
        | Command::Tail { .. }
        | Command::Cp { .. }
        | Command::Checksum { .. }) => super::verbs::run(&client, c).await,
        Command::Fsck { json, path } => super::fsck::fsck(&client, &path, json).await,
        Command::Mv { src, dst } => Ok(client.rename(&src, &dst).await?),
        Command::Chmod { recursive, mode, path } => chmod(&client, recursive, &mode, &path).await,
        Command::Chown { recursive, owner, path } => chown(&client, recursive, &owner, &path).await,
        Command::Setrep { wait, allow_under_replicated, replication, path } => {
            setrep(&client, replication, &path, allow_under_replicated, wait).await
        }
        Command::Admin { command: AdminCommand::Status { json } } => {
            let st = client.cluster_status().await?;
            let out = if json {
                serde_json::to_string_pretty(&output::status_json(&st))? + "\n"
            } else {
                output::status_text(&st)
            };
            print_stdout(&out)
        }
        Command::Admin { command } => admin(&client, command).await,
        Command::Trash { command: TrashCommand::List { path } } => super::trash::list(&client, &path).await,
        Command::Trash { command: TrashCommand::Empty { path } } => super::trash::empty(&client, &path).await,
        Command::Trash { command: TrashCommand::Restore { hidden, dest } } => {
            super::trash::restore(&client, &hidden, dest.as_deref()).await
        }
        Command::Server(_) | Command::Bench(_) | Command::Cert { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled by the caller")
        }
    }
}

async fn admin(client: &Client, command: AdminCommand) -> anyhow::Result<()> {
    let (st, note) = match command {
        AdminCommand::Status { .. } => unreachable!("handled above"),
        AdminCommand::AddMaster { id, address } => {
            let members = client.add_master(id, &address).await?;
            return print_stdout(&format!("added master {id} ({address})\n{}", output::masters_text(&members)));
        }
        AdminCommand::RemoveMaster { id } => {
            let members = client.remove_master(id).await?;
            return print_stdout(&format!("removed master {id}\n{}", output::masters_text(&members)));
        }
        AdminCommand::Decommission { server } => (client.decommission(&server).await?, String::new()),
        AdminCommand::Recommission { server } => (client.recommission(&server).await?, String::new()),
        AdminCommand::MarkLost { server } => {
            let (st, n) = client.mark_lost(&server).await?;
            (st, format!(", {n} chunk(s) queued for re-replication"))
        }
    };
    let info = st.server.clone().unwrap_or_default();
    print_stdout(&format!("{} ({}): {}{note}\n", info.id, info.address, output::state_name(st.state())))
}

/// The entries a chmod/chown/setrep touches, a batch at a time: PATH, or
/// with `-R` everything at and below it, each after what is below it
/// (see [`Client::walk_post_order`]), in memory bounded by the tree's depth.
enum Targets {
    One(Option<crate::FileInfo>),
    Tree(crate::TreeLister),
}

impl Targets {
    async fn of(client: &Client, recursive: bool, path: &str) -> anyhow::Result<Targets> {
        Ok(if recursive {
            Targets::Tree(client.walk_post_order(path).await?)
        } else {
            Targets::One(Some(client.stat(path).await?.info))
        })
    }

    async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<crate::FileInfo>>> {
        Ok(match self {
            Targets::One(one) => one.take().map(|e| vec![e]),
            Targets::Tree(walk) => walk.next_batch().await?,
        })
    }
}

/// `gfs chmod`: the mode is parsed against each entry's current one
/// (symbolic modes depend on it). Stops at the first refusal.
async fn chmod(client: &Client, recursive: bool, spec: &str, path: &str) -> anyhow::Result<()> {
    // A bad mode fails before anything changes.
    gfs_common::perm::parse_mode(spec, 0, false)?;
    let mut targets = Targets::of(client, recursive, path).await?;
    while let Some(batch) = targets.next_batch().await? {
        for e in batch {
            let dir = e.r#type() == FileType::Directory;
            let mode = gfs_common::perm::parse_mode(spec, e.mode, dir)?;
            client.set_permission(&e.path, mode).await?;
        }
    }
    Ok(())
}

/// `gfs setrep`: every file at or below PATH, then with `-w` a wait until
/// each of their chunks has exactly that many live replicas.
async fn setrep(client: &Client, replication: u32, path: &str, allow: bool, wait: bool) -> anyhow::Result<()> {
    // With -w, the files' paths are kept for the wait that follows.
    let mut files = Vec::new();
    let mut targets = Targets::of(client, true, path).await?;
    while let Some(batch) = targets.next_batch().await? {
        for f in batch.into_iter().filter(|e| e.r#type() == FileType::File) {
            client.set_replication(&f.path, replication, allow).await?;
            print_stdout(&format!("Replication {replication} set: {}\n", f.path))?;
            if wait {
                files.push(f.path);
            }
        }
    }
    for f in &files {
        let mut told = false;
        loop {
            let st = client.stat(f).await?;
            if st.chunks.iter().all(|c| c.replicas.len() == replication as usize) {
                break;
            }
            if !told {
                eprintln!("Waiting for {f} ...");
                told = true;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

/// Splits `OWNER`, `OWNER:GROUP`, `:GROUP` (an empty part: unchanged).
pub(crate) fn owner_spec(spec: &str) -> anyhow::Result<(Option<&str>, Option<&str>)> {
    let (owner, group) = spec.split_once(':').unwrap_or((spec, ""));
    let (owner, group) = ((!owner.is_empty()).then_some(owner), (!group.is_empty()).then_some(group));
    if owner.is_none() && group.is_none() {
        bail!("chown {spec:?}: give OWNER, OWNER:GROUP or :GROUP");
    }
    Ok((owner, group))
}

/// `gfs chown`. Stops at the first refusal.
async fn chown(client: &Client, recursive: bool, spec: &str, path: &str) -> anyhow::Result<()> {
    let (owner, group) = owner_spec(spec)?;
    let mut targets = Targets::of(client, recursive, path).await?;
    while let Some(batch) = targets.next_batch().await? {
        for e in batch {
            client.set_owner(&e.path, owner, group).await?;
        }
    }
    Ok(())
}

fn print_stdout(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow!("stdout: {e}")),
    }
}

/// Reads a whole local file (`-` = stdin).
async fn read_local(local: &str) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if local == "-" {
        tokio::io::stdin().read_to_end(&mut data).await.map_err(|e| exit::local_io("stdin", &e))?;
    } else {
        data = tokio::fs::read(local).await.map_err(|e| exit::local_io(local, &e))?;
    }
    Ok(data)
}

/// Turns a library error into the CLI error, naming the local path when
/// the local side failed.
fn local_or_remote(e: Error, slot: &ErrorSlot, local: &str) -> anyhow::Error {
    match slot.take() {
        Some((kind, msg)) => exit::local(local, kind, &msg),
        None => e.into(),
    }
}

/// Returns a token cancelled by the first SIGINT or SIGTERM, so that an
/// upload or download stops and removes its temporary file; a second one
/// exits at once.
///
/// One token per process: every file of a `put -r` or `get -r` shares it
/// (one signal handler task, however many files).
fn interrupt_token() -> anyhow::Result<CancellationToken> {
    static TOKEN: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    if let Some(t) = TOKEN.get() {
        return Ok(t.clone());
    }
    let t = super::verbs::stop_on_signals("interrupted again: exiting without removing the temporary file")?;
    Ok(TOKEN.get_or_init(|| t).clone())
}

/// One file of `gfs put`: uploads through `REMOTE._COPYING_` (see
/// [`crate::PutOptions`]); `-f` replaces an existing REMOTE only once the
/// new copy is complete. Returns the bytes uploaded.
pub(super) async fn put_file(client: &Client, force: bool, local: &str, remote: &str) -> anyhow::Result<u64> {
    gfs_common::path::normalize(remote)?;
    let (reader, size): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if local == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(local).await.map_err(|e| exit::local_io(local, &e))?;
        let meta = file.metadata().await.map_err(|e| exit::local_io(local, &e))?;
        if meta.is_dir() {
            return Err(exit::local(local, std::io::ErrorKind::IsADirectory, "is a directory"));
        }
        (Box::new(file), Some(meta.len()))
    };
    let opts = PutOptions { overwrite: force, replication: None, cancel: Some(interrupt_token()?) };
    let (reader, slot) = Tracked::new(reader);
    let bar = Transfer::start(local, size);
    let cb = |n: u64| {
        if let Some(b) = &bar {
            b.set(n);
        }
    };
    let res = client.put_with(remote, reader, opts, Some(&cb)).await;
    if let Some(b) = bar {
        b.finish(res.as_ref().ok().copied());
    }
    res.map_err(|e| match e {
        Error::AlreadyExists { path } if path.ends_with(COPYING_SUFFIX) => exit::remote_text(
            format!(
                "remote {path} exists: an interrupted put left it, or another put to {remote} is running; \
                 remove it (gfs rm) or replace it with put -f"
            ),
            super::exit::EXISTS,
        ),
        e => local_or_remote(e, &slot, local),
    })
}

/// One file of `gfs get`/`gfs cat` (`-` = stdout): a local file is
/// written to `LOCAL._COPYING_` and renamed to LOCAL once complete, so
/// LOCAL is never a partial copy; an existing LOCAL is replaced only with
/// `force`. Returns the bytes written.
pub(super) async fn get_file(client: &Client, force: bool, remote: &str, local: &str) -> anyhow::Result<u64> {
    // Stat first so that a failing remote never creates the local file.
    let st = client.stat(remote).await?;
    if st.info.r#type() == FileType::Directory {
        return Err(Error::IsADirectory { path: st.info.path }.into());
    }
    let bar = if local == "-" { None } else { Transfer::start(remote, Some(st.info.size)) };
    let cb = |n: u64| {
        if let Some(b) = &bar {
            b.set(n);
        }
    };
    let res = if local == "-" {
        let (w, slot) = Tracked::new(tokio::io::stdout());
        match client.get(remote, w, Some(&cb)).await {
            Ok(n) => Ok(n),
            Err(e) => match slot.take() {
                Some((std::io::ErrorKind::BrokenPipe, _)) => Ok(0),
                Some((_, msg)) => Err(anyhow!("stdout: {msg}")),
                None => Err(e.into()),
            },
        }
    } else {
        get_local(client, force, remote, local, &cb).await
    };
    if let Some(b) = bar {
        b.finish(res.as_ref().ok().copied());
    }
    res
}

/// [`get_file`] to a local path, through `LOCAL._COPYING_`.
async fn get_local(
    client: &Client,
    force: bool,
    remote: &str,
    local: &str,
    cb: crate::Progress<'_>,
) -> anyhow::Result<u64> {
    match tokio::fs::symlink_metadata(local).await {
        Ok(m) if m.is_dir() => return Err(exit::local(local, std::io::ErrorKind::IsADirectory, "is a directory")),
        Ok(_) if !force => {
            return Err(exit::local(local, std::io::ErrorKind::AlreadyExists, "exists (use -f to overwrite)"));
        }
        _ => {}
    }
    let tmp = format!("{local}{COPYING_SUFFIX}");
    let mut open = tokio::fs::OpenOptions::new();
    open.write(true).create_new(true);
    let file = match open.open(&tmp).await {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && force => {
            tokio::fs::remove_file(&tmp).await.map_err(|e| exit::local_io(&tmp, &e))?;
            open.open(&tmp).await
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let msg = "exists: an interrupted get left it, or another get is running; remove it or use get -f";
            return Err(exit::local(&tmp, e.kind(), msg));
        }
        other => other,
    }
    .map_err(|e| exit::local_io(&tmp, &e))?;
    let (w, slot) = Tracked::new(tokio::io::BufWriter::with_capacity(1 << 20, file));
    let stop = interrupt_token()?;
    let got = tokio::select! {
        biased;
        _ = stop.cancelled() => Err(Error::Cancelled(format!("get {remote} interrupted; local {tmp} removed")).into()),
        r = client.get(remote, w, Some(cb)) => r.map_err(|e| local_or_remote(e, &slot, &tmp)),
    };
    let r = match got {
        Ok(n) => tokio::fs::rename(&tmp, local).await.map(|()| n).map_err(|e| exit::local_io(local, &e)),
        Err(e) => Err(e),
    };
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    r
}

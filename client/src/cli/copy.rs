//! `gfs cp SRC... DST`: copies within gfs through the client. Each file
//! is read with [`Client::get`] and written with [`Client::put_with`], the
//! upload path of `gfs put`: the copy goes to `DST._COPYING_`, renamed to
//! DST only once every byte is there, so a partly copied file is never
//! visible under its name. A failed read cancels the upload (which then
//! removes its temporary file) before the upload can see the end of its
//! input, so a short read never becomes a short file.

use anyhow::{anyhow, bail};
use gfs_common::Error;
use gfs_common::path::{file_name, is_within, join, normalize};
use gfs_common::shutdown::CancellationToken;

use super::verbs::{remote, stop_on_signals};
use crate::{Client, FileInfo, FileType, PutOptions};

/// Bytes buffered between the read of the source and the upload.
const PIPE_BYTES: usize = 4 << 20;

fn is_dir(e: &FileInfo) -> bool {
    e.r#type() == FileType::Directory
}

/// `gfs cp [-r] [-f] SRC... DST`. With several sources DST must be an
/// existing directory; a directory source needs `-r`; an existing
/// destination file is replaced only with `-f`.
pub async fn cp(client: &Client, recursive: bool, force: bool, paths: &[String]) -> anyhow::Result<()> {
    let Some((dst, patterns)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        bail!("cp: give at least one SRC and a DST");
    };
    let srcs = super::expand::expand_all(client, patterns).await?;
    let dst = normalize(dst).map_err(remote)?;
    let dst_is_dir = match client.stat(&dst).await {
        Ok(st) => is_dir(&st.info),
        Err(Error::NotFound { .. }) => false,
        Err(e) => return Err(remote(e)),
    };
    if srcs.len() > 1 && !dst_is_dir {
        bail!("cp: remote {dst}: not an existing directory (needed with several sources)");
    }
    let cancel = stop_on_signals("cp: interrupted again: exiting")?;
    for src in &srcs {
        let info = client.stat(src).await.map_err(remote)?.info;
        let target = if dst_is_dir { join(&dst, file_name(&info.path)) } else { dst.clone() };
        if is_dir(&info) {
            if !recursive {
                bail!("cp: remote {}: is a directory (use -r)", info.path);
            }
            copy_tree(client, &info, &target, force, &cancel).await?;
        } else {
            copy_file(client, &info.path, &target, force, &cancel).await?;
        }
    }
    Ok(())
}

/// Copies the tree at `top` to `target`, walking the source a page at a
/// time: each directory is made before what is in it.
async fn copy_tree(
    client: &Client,
    top: &FileInfo,
    target: &str,
    force: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if is_within(target, &top.path) {
        bail!("cp: cannot copy remote directory {} into itself ({target})", top.path);
    }
    ensure_dir(client, target).await?;
    let mut walk = client.tree_lister(&top.path, false);
    while let Some(batch) = walk.next_batch().await.map_err(remote)? {
        for e in batch {
            // Below `top` (never the root: `target` would be within it).
            let to = format!("{target}{}", &e.path[top.path.len()..]);
            if is_dir(&e) {
                ensure_dir(client, &to).await?;
            } else {
                copy_file(client, &e.path, &to, force, cancel).await?;
            }
        }
    }
    Ok(())
}

/// Makes directory `path` (its parent must exist); an existing directory
/// is fine, an existing file is an error.
async fn ensure_dir(client: &Client, path: &str) -> anyhow::Result<()> {
    match client.mkdir(path, false).await {
        Ok(()) => Ok(()),
        Err(Error::AlreadyExists { .. }) => match client.stat(path).await.map_err(remote)?.info {
            i if is_dir(&i) => Ok(()),
            _ => bail!("cp: remote {path}: exists and is not a directory"),
        },
        Err(e) => Err(remote(e)),
    }
}

/// Copies one file through a bounded pipe: the source is read while the
/// upload writes. Returns the bytes copied.
async fn copy_file(
    client: &Client,
    src: &str,
    dst: &str,
    force: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    if src == dst {
        bail!("cp: remote {src}: source and destination are the same file");
    }
    let token = cancel.child_token();
    let (w, r) = tokio::io::duplex(PIPE_BYTES);
    let reading = async {
        let mut w = w;
        let res = client.get(src, &mut w, None).await;
        if res.is_err() {
            // Before the upload can see the end of its input.
            token.cancel();
        }
        drop(w);
        res
    };
    let opts = PutOptions { overwrite: force, replication: None, cancel: Some(token.clone()) };
    let (got, put) = tokio::join!(reading, client.put_with(dst, r, opts, None));
    match (got, put) {
        (Ok(read), Ok(written)) if read == written => Ok(written),
        (Ok(read), Ok(written)) => Err(anyhow!("cp: {src} -> {dst}: read {read} bytes but wrote {written}")),
        (_, Err(Error::AlreadyExists { path })) if path == dst => {
            bail!("cp: remote {dst}: already exists (use -f to replace it)")
        }
        // Interrupted: the upload removed its temporary file.
        (_, Err(e @ Error::Cancelled(_))) if cancel.is_cancelled() => Err(e.into()),
        // The read failed and cancelled the upload.
        (Err(e), Err(Error::Cancelled(_)) | Ok(_)) => {
            Err(anyhow::Error::from(e).context(format!("cp: reading remote {src}")))
        }
        // The upload failed (the read then saw a closed pipe).
        (_, Err(e)) => Err(anyhow::Error::from(e).context(format!("cp: writing remote {dst}"))),
    }
}

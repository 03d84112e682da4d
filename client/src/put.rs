//! `put`: upload a stream as a new file, never leaving a partial file
//! under the final name.
//!
//! As HDFS's `put` does, the data goes to `<dst>._COPYING_` first, which
//! is renamed to `<dst>` only once every byte is written. A failed or
//! cancelled upload removes its temporary file at once (an immediate
//! delete: nothing in the trash, its chunks freed at the next heartbeats).
//! A client killed outright (SIGKILL, power loss) leaves only the
//! `._COPYING_` file, which `ls` shows as is; the final name is never a
//! truncated file.

use bytes::Bytes;
use futures::{TryStreamExt, stream};
use gfs_common::path::normalize;
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_IO_SIZE, Result};
use gfs_proto::FileType;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Client, Progress, chunk_size_of};
use crate::pieces::{Piece, next_piece_len};

/// Suffix of the temporary name an upload writes to.
pub const COPYING_SUFFIX: &str = "._COPYING_";

/// The temporary name an upload to `path` writes to.
pub fn copying_path(path: &str) -> String {
    format!("{path}{COPYING_SUFFIX}")
}

/// How [`Client::put_with`] uploads.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Replace a file already at the destination (never a directory). The
    /// old file goes to the trash as by `delete`, in the same step that
    /// puts the new one in its place. A leftover temporary file of an
    /// interrupted upload is replaced too.
    pub overwrite: bool,
    /// Replication of the new file (`None`: the master's default).
    pub replication: Option<u32>,
    /// Cancelling this stops the upload and removes its temporary file;
    /// the call then fails with `Cancelled`.
    pub cancel: Option<CancellationToken>,
}

/// Resolves when `cancel` is cancelled; never without one.
async fn cancelled(cancel: Option<&CancellationToken>) {
    match cancel {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

impl Client {
    /// Creates `path` (`AlreadyExists` if present) and streams `reader` into
    /// it with up to `io_parallelism` pieces in flight. Returns the bytes
    /// written. See [`Client::put_with`].
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        path: &str,
        reader: R,
        progress: Option<Progress<'_>>,
    ) -> Result<u64> {
        self.put_with(path, reader, PutOptions::default(), progress).await
    }

    /// Streams `reader` into a new file `path` through the temporary file
    /// [`copying_path`]`(path)`, renamed to `path` once complete. Returns
    /// the bytes written. On any failure (or `opts.cancel`) the temporary
    /// file is deleted at once and `path` is untouched.
    pub async fn put_with<R: AsyncRead + Unpin + Send>(
        &self,
        path: &str,
        reader: R,
        opts: PutOptions,
        progress: Option<Progress<'_>>,
    ) -> Result<u64> {
        let path = normalize(path)?;
        let tmp = normalize(&copying_path(&path)).map_err(|e| match e {
            Error::InvalidPath { reason, .. } => Error::InvalidPath {
                path: path.clone(),
                reason: format!("{reason} with the upload's temporary suffix {COPYING_SUFFIX:?}"),
            },
            other => other,
        })?;
        self.check_destination(&path, opts.overwrite).await?;
        let cs = self.create_temporary(&tmp, &opts).await?;
        let res = match self.put_body(&tmp, cs, reader, progress, opts.cancel.as_ref()).await {
            Ok(n) if opts.overwrite => self.rename_over(&tmp, &path).await.map(|()| n),
            Ok(n) => self.rename(&tmp, &path).await.map(|()| n),
            Err(e) => Err(e),
        };
        let Err(e) = res else { return res };
        let removed = match self.delete_now(&tmp, false).await {
            Ok(()) | Err(Error::NotFound { .. }) => "removed".to_string(),
            Err(de) => {
                tracing::warn!(path = %tmp, error = %de, "cannot remove the temporary file of a failed upload");
                format!("left behind (cannot remove it: {de})")
            }
        };
        Err(match e {
            Error::Cancelled(at) => Error::Cancelled(format!("put {path} interrupted {at}; {tmp} {removed}")),
            other => other,
        })
    }

    /// Fails early when `path` is taken: by a directory, or by a file
    /// unless `overwrite` (the final rename checks again).
    async fn check_destination(&self, path: &str, overwrite: bool) -> Result<()> {
        match self.stat(path).await {
            Ok(st) if st.info.r#type() == FileType::Directory && overwrite => {
                Err(Error::IsADirectory { path: path.to_string() })
            }
            Ok(_) if !overwrite => Err(Error::AlreadyExists { path: path.to_string() }),
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the temporary file; returns its chunk size. A leftover one
    /// (an upload killed before it could clean up) is replaced only with
    /// `overwrite`: it may be another upload's, still running.
    async fn create_temporary(&self, tmp: &str, opts: &PutOptions) -> Result<u64> {
        let info = match self.create(tmp, opts.replication).await {
            Err(Error::AlreadyExists { .. }) if opts.overwrite => {
                tracing::info!(path = tmp, "replacing a leftover temporary upload file");
                self.delete_now(tmp, false).await?;
                self.create(tmp, opts.replication).await?
            }
            other => other?,
        };
        chunk_size_of(tmp, &info)
    }

    async fn put_body<R: AsyncRead + Unpin + Send>(
        &self,
        path: &str,
        cs: u64,
        reader: R,
        progress: Option<Progress<'_>>,
        cancel: Option<&CancellationToken>,
    ) -> Result<u64> {
        let bufs = self.inner.bufs.clone();
        let source = stream::try_unfold((reader, 0u64, false), move |(mut reader, pos, done)| {
            let bufs = bufs.clone();
            async move {
                if done {
                    return Ok(None);
                }
                let want = next_piece_len(pos, cs, MAX_IO_SIZE) as usize;
                let mut buf = bufs.get();
                buf.reserve(want);
                while buf.len() < want {
                    let n = (&mut reader)
                        .take((want - buf.len()) as u64)
                        .read_buf(&mut *buf)
                        .await
                        .map_err(|e| Error::io("read input", e))?;
                    if n == 0 {
                        break;
                    }
                }
                let n = buf.len() as u64;
                if n == 0 {
                    return Ok(None);
                }
                Ok(Some(((pos, buf.freeze()), (reader, pos + n, (n as usize) < want))))
            }
        });
        let writes = source
            .map_ok(|(pos, data): (u64, Bytes)| {
                let p = Piece { index: pos / cs, offset_in_chunk: pos % cs, file_offset: pos, len: data.len() as u64 };
                async move { self.write_piece(path, p, data, cs).await.map(|_| p.len) }
            })
            .try_buffered(self.inner.config.io_parallelism);
        let mut writes = std::pin::pin!(writes);
        let mut total = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                _ = cancelled(cancel) => {
                    return Err(Error::Cancelled(format!("after {total} bytes")));
                }
                next = writes.try_next() => next?,
            };
            let Some(n) = next else { return Ok(total) };
            total += n;
            if let Some(f) = progress {
                f(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        assert_eq!(copying_path("/a/b"), "/a/b._COPYING_");
        assert!(normalize(&copying_path(&format!("/{}", "x".repeat(250)))).is_err());
    }

    #[tokio::test]
    async fn a_name_too_long_for_the_suffix_is_refused_before_any_rpc() {
        let c = Client::new(crate::ClientConfig::new("127.0.0.1:1")).unwrap();
        let long = format!("/{}", "x".repeat(250));
        match c.put(&long, &b"data"[..], None).await {
            Err(Error::InvalidPath { path, reason }) => {
                assert_eq!(path, long);
                assert!(reason.contains("._COPYING_"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

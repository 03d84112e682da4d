//! `gfs ls`: prints each page of a listing as it arrives (a page is at
//! most 1000 entries), so a directory of millions of entries lists in
//! bounded memory; `-R` walks the tree the same way.

use std::io::Write;

use anyhow::anyhow;

use super::output::{JsonArray, LongFormat};
use crate::{Client, FileInfo};

/// How `ls` prints.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// `-l`.
    pub long: bool,
    /// `--json`.
    pub json: bool,
    /// `-a`: deleted entries too.
    pub all: bool,
    /// `-R`.
    pub recursive: bool,
    /// Names as full paths (always with `-R`; for the matches of a glob).
    pub full_paths: bool,
}

/// Where the pages go, formatted as asked.
struct Printer {
    format: Format,
    long: LongFormat,
    json: JsonArray,
}

impl Printer {
    /// Prints a page; false once stdout is closed (`gfs ls | head`): the
    /// listing stops there.
    fn page(&mut self, entries: &[FileInfo]) -> anyhow::Result<bool> {
        let text = match (self.format.json, self.format.long) {
            (true, _) => self.json.items(entries)?,
            (false, true) => self.long.rows(entries),
            (false, false) => self.long.names(entries),
        };
        write(&text)
    }

    fn end(&self) -> anyhow::Result<()> {
        if self.format.json {
            write(self.json.end())?;
        }
        Ok(())
    }
}

/// Writes to stdout and flushes; false when the reader went away.
fn write(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow!("stdout: {e}")),
    }
}

/// Lists each of `paths` in turn (the matches of a glob), a page at a
/// time; with `--json` all in one array.
pub async fn run(client: &Client, paths: &[String], format: Format) -> anyhow::Result<()> {
    let mut printer =
        Printer { format, long: LongFormat::new(format.recursive || format.full_paths), json: JsonArray::default() };
    for path in paths {
        if !list_one(client, path, &mut printer).await? {
            return Ok(());
        }
    }
    printer.end()
}

/// Lists `path` into `printer`; false once stdout is closed.
async fn list_one(client: &Client, path: &str, printer: &mut Printer) -> anyhow::Result<bool> {
    let format = printer.format;
    if format.recursive {
        let mut walk = client.tree_lister(path, format.all);
        while let Some(batch) = walk.next_batch().await? {
            if !printer.page(&batch)? {
                return Ok(false);
            }
        }
    } else {
        let mut pages = client.lister(path, format.all);
        while let Some(page) = pages.next_page().await? {
            if !printer.page(&page)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

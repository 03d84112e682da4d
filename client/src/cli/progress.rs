//! Progress bars of `gfs put` and `gfs get` and the log writer that keeps
//! log lines off them.
//!
//! A bar is drawn on stderr only when stderr is a terminal and the file is
//! larger than [`PROGRESS_THRESHOLD`]: the file's name, the percent, the
//! bar, bytes so far of the total, the rate and the time left. When the
//! copy ends the bar is cleared and one summary line stays (name, size,
//! seconds, rate). Log lines go through [`LogWriter`], which hides the
//! bars while a line is written and draws them again below it.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use super::PROGRESS_THRESHOLD;

/// Every bar of this process: log lines are written between its redraws.
static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// Widest name shown in front of a bar; longer ones keep their end.
const NAME_WIDTH: usize = 32;

/// The bar of one file copy; [`Transfer::finish`] leaves its summary line.
pub struct Transfer {
    bar: ProgressBar,
    name: String,
    start: Instant,
}

impl Transfer {
    /// A bar for copying `size` bytes of `name`, or `None` when stderr is
    /// not a terminal or the size is unknown or small.
    pub fn start(name: &str, size: Option<u64>) -> Option<Transfer> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let size = size.filter(|s| *s > PROGRESS_THRESHOLD)?;
        let bar = BARS.add(ProgressBar::new(size));
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {percent:>3}% [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(shorten(name, NAME_WIDTH));
        bar.enable_steady_tick(Duration::from_millis(250));
        Some(Transfer { bar, name: name.to_string(), start: Instant::now() })
    }

    /// Bytes copied so far.
    pub fn set(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// Clears the bar; after a complete copy of `bytes`, prints its summary.
    pub fn finish(self, bytes: Option<u64>) {
        self.bar.finish_and_clear();
        BARS.remove(&self.bar);
        if let Some(bytes) = bytes {
            let line = summary(&self.name, bytes, self.start.elapsed());
            let _ = BARS.println(line);
        }
    }
}

/// "NAME: 256.00 MiB in 3.2 s (80.00 MiB/s)".
fn summary(name: &str, bytes: u64, took: Duration) -> String {
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 { (bytes as f64 / secs) as u64 } else { bytes };
    format!("{name}: {} in {secs:.1} s ({}/s)", HumanBytes(bytes), HumanBytes(rate))
}

/// The last `width` characters of `name`, marked with "..." when cut.
fn shorten(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_string();
    }
    let keep: String = name.chars().skip(n - (width - 3)).collect();
    format!("...{keep}")
}

/// Writes log lines to stderr with the bars hidden meanwhile (the
/// subscriber writes a whole line per call).
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'w self) -> LogWriter {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_end() {
        assert_eq!(shorten("a.bin", 10), "a.bin");
        assert_eq!(shorten("/data/very/long/path/file.bin", 12), ".../file.bin");
        assert_eq!(shorten("/data/very/long/path/file.bin", 12).chars().count(), 12);
        // Characters, not bytes: a cut never splits one.
        assert_eq!(shorten("ééééééé", 5), "...éé");
    }

    #[test]
    fn the_summary_gives_size_time_and_rate() {
        let s = summary("big.bin", 256 << 20, Duration::from_secs(4));
        assert_eq!(s, "big.bin: 256.00 MiB in 4.0 s (64.00 MiB/s)");
    }
}

//! Tracing setup shared by the binaries.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
/// Logs go to stderr so that stdout stays clean for CLI output.
pub fn init(format: LogFormat, default_filter: &str) {
    init_to(format, default_filter, std::io::stderr);
}

/// [`init`] with another writer for the log lines: the CLI's writes
/// through its progress bars, so that a line never lands on a bar.
///
/// Colour codes are written only to a terminal (stderr is one) and never
/// with `NO_COLOR` set: a log that goes to a file, a pipe or
/// `kubectl logs` stays plain text.
pub fn init_to<W>(format: LogFormat, default_filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").is_some());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether log lines carry colour codes: on a terminal, unless `NO_COLOR`
/// (<https://no-color.org>) is set.
fn colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

/// Makes any panic abort the process after logging it, so a supervisor
/// restarts the server from a known state instead of running half-broken.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!(panic = %info, "panic, aborting");
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, false));
        assert!(!super::colour(false, false), "a file or pipe got colour codes");
        assert!(!super::colour(true, true), "NO_COLOR was ignored");
    }
}

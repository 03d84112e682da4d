//! `gfs completions SHELL` (a completion script) and `gfs man` (a roff
//! man page), both generated from the clap definition.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "gfs", out);
}

/// Writes the `gfs(1)` man page to `out`.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Runs `gfs completions` / `gfs man` on stdout.
pub fn print(shell: Option<Shell>) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    match shell {
        Some(shell) => completions(shell, &mut buf),
        None => man(&mut buf)?,
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(&buf).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(super::exit::local_io("stdout", &e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_names_the_subcommands() {
        let mut buf = Vec::new();
        completions(Shell::Bash, &mut buf);
        let s = String::from_utf8(buf).unwrap();
        for word in ["gfs", "put", "get", "mkdir", "completions", "--master"] {
            assert!(s.contains(word), "bash completion lacks {word}");
        }
        for shell in [Shell::Zsh, Shell::Fish, Shell::PowerShell, Shell::Elvish] {
            let mut buf = Vec::new();
            completions(shell, &mut buf);
            assert!(String::from_utf8(buf).unwrap().contains("gfs"), "{shell}");
        }
    }

    #[test]
    fn man_page_is_roff() {
        let mut buf = Vec::new();
        man(&mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        // clap_mangen defines the quote string first, then the title.
        let first_macro = s.lines().find(|l| !l.starts_with(".ie") && !l.starts_with(".el")).unwrap();
        assert!(first_macro.starts_with(".TH gfs 1"), "{first_macro}");
        assert!(s.contains("Exit status"), "the man page lacks the exit codes");
    }
}

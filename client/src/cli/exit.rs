//! Exit codes of the `gfs` command and its one-line error messages.
//!
//! Every failure goes through [`report`]: one line `gfs: <message>` on
//! stderr and the code from the table in [`exit_code`]. Messages about a
//! path say whether it is local or remote, with a hint where a flag helps.

use std::process::ExitCode;

use gfs_common::{Error, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// Any other failure.
pub const FAILURE: u8 = 1;
/// Bad usage (clap's code for a wrong flag or argument).
pub const USAGE: u8 = 2;
/// A path (remote or local) does not exist.
pub const NOT_FOUND: u8 = 3;
/// A path (remote or local) exists already.
pub const EXISTS: u8 = 4;
/// Permission denied or not authenticated.
pub const PERMISSION: u8 = 5;
/// The master or chunkservers cannot be reached, or did not answer in time.
pub const UNAVAILABLE: u8 = 6;
/// No space left (on a chunkserver, or locally).
pub const NO_SPACE: u8 = 7;
/// Corrupt data: a checksum mismatch or lost data.
pub const CORRUPT: u8 = 8;
/// Interrupted (SIGINT/SIGTERM) and cleaned up: the shell's code for a
/// command ended by SIGINT.
pub const INTERRUPTED: u8 = 130;

/// The exit status table, shown after `gfs --help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    failure (other than below)
  2    bad usage (unknown flag, missing or invalid argument)
  3    not found (remote or local path)
  4    already exists (remote or local path)
  5    permission denied or not authenticated
  6    master or chunkservers unavailable, unreachable or not answering in time
  7    no space left
  8    corrupt data (checksum mismatch, data loss)
  130  interrupted (Ctrl-C or SIGTERM); a partial upload was removed";

/// The exit code for a gfs error.
pub fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::ServerIdInUse => EXISTS,
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => PERMISSION,
        ErrorKind::Unavailable | ErrorKind::NotLeader | ErrorKind::Busy | ErrorKind::StaleEpoch => UNAVAILABLE,
        ErrorKind::NoSpace => NO_SPACE,
        ErrorKind::Corrupt => CORRUPT,
        ErrorKind::Cancelled => INTERRUPTED,
        _ => FAILURE,
    }
}

/// The exit code for a local I/O error.
pub fn io_exit_code(kind: std::io::ErrorKind) -> u8 {
    use std::io::ErrorKind as K;
    match kind {
        K::NotFound => NOT_FOUND,
        K::AlreadyExists => EXISTS,
        K::PermissionDenied => PERMISSION,
        K::StorageFull | K::QuotaExceeded => NO_SPACE,
        _ => FAILURE,
    }
}

/// An error worded for the user, with its exit code.
#[derive(Debug)]
pub struct UserError {
    text: String,
    code: u8,
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for UserError {}

/// A failure on the local side: `local PATH: reason` (`stdin`/`stdout`
/// for `-`).
pub fn local(path: &str, kind: std::io::ErrorKind, msg: &str) -> anyhow::Error {
    let msg = match msg.rfind(" (os error ") {
        Some(i) if msg.ends_with(')') => &msg[..i],
        _ => msg,
    };
    let text = match path {
        "-" | "stdin" | "stdout" | "stdio" => format!("{}: {msg}", if path == "-" { "stdio" } else { path }),
        _ => format!("local {path}: {msg}"),
    };
    UserError { text, code: io_exit_code(kind) }.into()
}

/// An error worded by the caller, with its exit code.
pub fn remote_text(text: String, code: u8) -> anyhow::Error {
    UserError { text, code }.into()
}

/// [`local`] for an `io::Error`.
pub fn local_io(path: &str, e: &std::io::Error) -> anyhow::Error {
    local(path, e.kind(), &e.to_string())
}

/// A gfs error about a path of the cluster, worded as `remote PATH ...`
/// with a hint for `command` (the subcommand's name) where one helps.
/// Errors without a path stay as they are.
pub fn remote(e: Error, command: &str) -> anyhow::Error {
    let hint = match (command, &e) {
        ("put", Error::AlreadyExists { .. }) => " (use -f to overwrite)",
        ("mkdir", Error::NotFound { .. }) => " (use mkdir -p to create missing parents)",
        ("rm", Error::DirectoryNotEmpty { path }) => {
            let text = format!("remote {path}: directory not empty (use rm -r)");
            return UserError { text, code: exit_code(&e) }.into();
        }
        _ => "",
    };
    let text = match &e {
        Error::NotFound { path } => format!("remote {path}: not found{hint}"),
        Error::AlreadyExists { path } => format!("remote {path} exists{hint}"),
        Error::NotADirectory { .. }
        | Error::IsADirectory { .. }
        | Error::DirectoryNotEmpty { .. }
        | Error::InvalidPath { .. } => format!("remote {e}{hint}"),
        _ => return e.into(),
    };
    UserError { text, code: exit_code(&e) }.into()
}

/// Rewords a failed command's error: a bare gfs error about a path becomes
/// a [`remote`] one.
pub fn locate(e: anyhow::Error, command: &str) -> anyhow::Error {
    match e.downcast::<Error>() {
        Ok(g) => remote(g, command),
        Err(e) => e,
    }
}

/// The exit code of a failed command: that of the first error in the chain
/// the table knows.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            return u.code;
        }
        if let Some(g) = cause.downcast_ref::<Error>() {
            return exit_code(g);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_exit_code(io.kind());
        }
    }
    FAILURE
}

/// The one-line message. An unreachable or foreign master is reported as
/// such, without the generic `unavailable:` prefix.
pub fn message(e: &anyhow::Error) -> String {
    let text = match e.downcast_ref::<Error>() {
        Some(Error::Unavailable(m)) if m.starts_with("cannot reach a ") || m.contains(" is not a gfs master (") => {
            m.clone()
        }
        _ => format!("{e:#}"),
    };
    text.replace(['\n', '\r'], " ")
}

/// Prints `gfs: <message>` for the failed `command` and returns its exit
/// code.
pub fn report(e: anyhow::Error, command: &str) -> ExitCode {
    let e = locate(e, command);
    eprintln!("gfs: {}", message(&e));
    ExitCode::from(code_of(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_per_kind() {
        let nf = Error::NotFound { path: "/a".into() };
        let cases = [
            (nf.clone(), NOT_FOUND),
            (Error::AlreadyExists { path: "/a".into() }, EXISTS),
            (Error::PermissionDenied("x".into()), PERMISSION),
            (Error::Unauthenticated("x".into()), PERMISSION),
            (Error::Unavailable("x".into()), UNAVAILABLE),
            (Error::NotLeader { leader: None }, UNAVAILABLE),
            (Error::NoSpace { server: None, detail: "x".into() }, NO_SPACE),
            (Error::Corrupt { handle: 1, detail: "x".into() }, CORRUPT),
            (Error::Cancelled("x".into()), INTERRUPTED),
            (Error::InvalidArgument("x".into()), FAILURE),
        ];
        for (e, code) in cases {
            assert_eq!(exit_code(&e), code, "{e:?}");
            assert_eq!(code_of(&locate(e.clone().into(), "ls")), code, "{e:?}");
        }
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(code_of(&anyhow::Error::from(io).context("x")), NOT_FOUND);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), FAILURE);
        let mut all = [OK, FAILURE, USAGE, NOT_FOUND, EXISTS, PERMISSION, UNAVAILABLE, NO_SPACE, CORRUPT, INTERRUPTED];
        all.sort();
        assert!(all.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn messages_say_local_or_remote_with_hints() {
        let exists = Error::AlreadyExists { path: "/a/b".into() };
        let e = locate(exists.clone().into(), "put");
        assert_eq!(message(&e), "remote /a/b exists (use -f to overwrite)");
        assert_eq!(code_of(&e), EXISTS);
        assert_eq!(message(&locate(exists.into(), "mv")), "remote /a/b exists");
        let e = locate(Error::NotFound { path: "/x".into() }.into(), "mkdir");
        assert_eq!(message(&e), "remote /x: not found (use mkdir -p to create missing parents)");
        let e = locate(Error::DirectoryNotEmpty { path: "/d".into() }.into(), "rm");
        assert_eq!(message(&e), "remote /d: directory not empty (use rm -r)");
        let io = std::io::Error::from_raw_os_error(2);
        let e = local_io("./x", &io);
        assert_eq!(message(&e), "local ./x: No such file or directory");
        assert_eq!(code_of(&e), NOT_FOUND);
        let e: anyhow::Error = Error::Unavailable("cannot reach a gfs master at h:1: connection refused".into()).into();
        assert_eq!(message(&e), "cannot reach a gfs master at h:1: connection refused");
        let e: anyhow::Error = Error::Unavailable("chunkserver h:2: no answer".into()).into();
        assert_eq!(message(&e), "unavailable: chunkserver h:2: no answer");
    }
}

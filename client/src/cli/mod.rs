//! The `gfs` command line: file commands against a master, `gfs server`
//! (an all-in-one cluster in this process) and `gfs bench`.
//!
//! Errors print as exactly one line, `gfs: <message>`, with the exit code
//! of the table in [`exit`]; usage errors exit with 2 (clap).

mod bench;
mod bench_tls;
mod cert;
mod commands;
mod completions;
mod copy;
pub mod exit;
mod expand;
mod fsck;
mod glob;
mod local_io;
mod ls;
mod output;
mod progress;
mod server;
mod transfer;
mod trash;
mod tree_ops;
mod verbs;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gfs_common::telemetry::{self, LogFormat};

use crate::ClientConfig;

/// Master address used when neither `--master` nor `GFS_MASTER` is set.
pub const DEFAULT_MASTER: &str = "127.0.0.1:9700";

/// The admin identity `gfs server --data-dir ./gfs-data` writes; the CLI
/// uses it when no TLS flag is given.
pub const LOCAL_TLS_DIR: &str = "gfs-data/tls/admin";

/// Files larger than this get a progress bar (when stderr is a terminal).
pub(crate) const PROGRESS_THRESHOLD: u64 = 4 * 1024 * 1024;

/// `gfs --version`: the crate version, the commit and its date (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GFS_COMMIT"), env!("GFS_VERSION_SUFFIX"), ")");

/// gfs: a distributed file system in the design of GFS.
#[derive(Debug, Parser)]
#[command(name = "gfs", version = VERSION, about, propagate_version = true, after_help = exit::EXIT_STATUS_HELP)]
pub struct Cli {
    /// Master address(es): host:port, a list h1:p1,h2:p2,h3:p3 (the master
    /// group; calls follow the leader), or one name:port whose DNS name
    /// resolves to every master [default: 127.0.0.1:9700]
    #[arg(long, global = true, env = "GFS_MASTER", value_name = "ADDRS")]
    pub master: Option<String>,
    /// Allow possibly stale metadata reads from follower masters (stat, ls,
    /// chunk locations of get/cat).
    #[arg(long, global = true, env = "GFS_STALE")]
    pub stale: bool,
    /// Log format on stderr: text or json.
    #[arg(long, global = true, default_value = "text", value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// TLS identity. Without any TLS flag, `./gfs-data/tls/admin` (written
    /// by `gfs server --data-dir ./gfs-data`) is used when it exists.
    #[command(flatten)]
    pub tls: gfs_common::tls::TlsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload LOCAL (`-` = stdin) to a new file REMOTE, or several into
    /// the directory REMOTE. Each file goes to REMOTE._COPYING_ first,
    /// renamed to REMOTE once complete; a failed or interrupted (Ctrl-C)
    /// upload removes it.
    Put {
        /// Replace REMOTE if it exists (once the new copy is complete; the
        /// old file goes to the trash), and a leftover REMOTE._COPYING_.
        #[arg(short, long)]
        force: bool,
        /// Create REMOTE even if its replication is above the number of
        /// live chunkservers (it stays under-replicated until more join;
        /// `gfs stat` shows it).
        #[arg(long)]
        allow_under_replicated: bool,
        /// Upload directories and everything below them (symbolic links
        /// and special files inside are skipped).
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        #[arg(required = true, num_args = 2.., value_name = "LOCAL... REMOTE")]
        paths: Vec<String>,
    },
    /// Download REMOTE (globs allowed) to LOCAL (`-` = stdout), or several
    /// into the directory LOCAL. Each file goes to LOCAL._COPYING_ first,
    /// renamed to LOCAL once complete.
    Get {
        /// Replace an existing local file.
        #[arg(short, long)]
        force: bool,
        /// Download directories and everything below them.
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        #[arg(required = true, num_args = 2.., value_name = "REMOTE... LOCAL")]
        paths: Vec<String>,
    },
    /// Print REMOTE (globs allowed: each match in turn) to stdout.
    Cat { remote: String },
    /// Append LOCAL's bytes (`-` = stdin) as one record; prints its offset.
    Append { remote: String, local: String },
    /// List a directory (streamed a page of 1000 entries at a time).
    Ls {
        /// Long format: permissions, replication, owner, group, size, mtime,
        /// name.
        #[arg(short = 'l')]
        long: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Also show deleted files awaiting garbage collection (restore
        /// one with `gfs mv HIDDEN_NAME NAME`).
        #[arg(short = 'a', long = "all")]
        all: bool,
        /// Recursive, as `hdfs dfs -ls -R`: every entry below PATH by its
        /// full path, each directory before its entries.
        #[arg(short = 'R', long = "recursive")]
        recursive: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show a file's or directory's metadata and chunks.
    Stat {
        /// JSON output.
        #[arg(long)]
        json: bool,
        path: String,
    },
    /// Create a directory.
    Mkdir {
        /// Create missing parents; no error if it exists.
        #[arg(short, long)]
        parents: bool,
        path: String,
    },
    /// Remove a file or directory.
    Rm {
        /// Remove a directory and everything below it.
        #[arg(short, long)]
        recursive: bool,
        /// A missing PATH is not an error (exit 0, no message), as
        /// `hdfs dfs -rm -f`.
        #[arg(short, long)]
        force: bool,
        /// Remove at once instead of moving to the trash (no restore).
        #[arg(long)]
        skip_trash: bool,
        path: String,
    },
    /// Deleted entries awaiting garbage collection.
    Trash {
        #[command(subcommand)]
        command: TrashCommand,
    },
    /// Rename SRC to DST.
    Mv { src: String, dst: String },
    /// Change the mode of PATH (its owner or a superuser may): octal
    /// (755, 0640, 1777 with the sticky bit) or symbolic (u+x, go-w, a=rX,
    /// +t; several joined by commas).
    Chmod {
        /// Also everything below PATH.
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(allow_hyphen_values = true)]
        mode: String,
        path: String,
    },
    /// Change the owner and/or group of PATH: OWNER, OWNER:GROUP or :GROUP.
    /// Only a superuser changes an owner; the owner may set the group to
    /// one of their own groups.
    Chown {
        /// Also everything below PATH.
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(value_name = "[OWNER][:GROUP]")]
        owner: String,
        path: String,
    },
    /// Set the replication of PATH (every file below it for a directory),
    /// as HDFS's `setrep`. Repair makes the new replicas or drops the
    /// extra ones in the background.
    Setrep {
        /// Wait until every chunk has exactly REPLICATION live replicas.
        #[arg(short = 'w')]
        wait: bool,
        /// Allow a replication above the number of chunkservers in service
        /// (the files stay under-replicated until more join).
        #[arg(long)]
        allow_under_replicated: bool,
        #[arg(value_parser = clap::value_parser!(u32).range(1..=16))]
        replication: u32,
        path: String,
    },
    /// Health of every file at or below PATH, as `hdfs fsck`: files with a
    /// chunk no live server holds (MISSING: exit 8) and files short of
    /// their replication (under-replicated: the master is repairing them).
    Fsck {
        /// A JSON report.
        #[arg(long)]
        json: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Bytes of each entry of a directory (a directory: the sum of the
    /// files below it), as `hdfs dfs -du`: SIZE, SIZE counting every
    /// replica, PATH.
    #[command(disable_help_flag = true)]
    Du {
        /// One line per PATH: the total below it.
        #[arg(short = 's')]
        summary: bool,
        /// Sizes in KiB, MiB, GiB.
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// Print help (`-h` is human-readable sizes here, as in HDFS).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Capacity, used, available and use% of the live chunkservers (from
    /// the master's cluster status). Available is the sum of each live
    /// server's reported free bytes; two servers sharing one disk would
    /// count it twice, which the master cannot tell.
    #[command(disable_help_flag = true)]
    Df {
        /// Sizes in KiB, MiB, GiB.
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// Print help (`-h` is human-readable sizes here, as in HDFS).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// DIR_COUNT FILE_COUNT CONTENT_SIZE PATH for each PATH, as `hdfs dfs
    /// -count` (a directory counts itself).
    #[command(disable_help_flag = true)]
    Count {
        /// Also the quota columns first (gfs has no quotas: none inf none
        /// inf).
        #[arg(short = 'q')]
        quotas: bool,
        /// Sizes in KiB, MiB, GiB.
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// Print help (`-h` is human-readable sizes here, as in HDFS).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print the full path of every entry at or below PATH that matches:
    /// `-name GLOB` (the last component; `*`, `?`, `[a-z]`, `[!a]`) and
    /// `-type f|d`, streamed as the walk goes.
    Find {
        path: String,
        /// `-name GLOB`, `-type f|d`.
        #[arg(value_name = "EXPRESSION", trailing_var_arg = true, allow_hyphen_values = true)]
        expression: Vec<String>,
    },
    /// Create an empty file at each PATH that is missing; an existing file
    /// is left as it is; a directory is an error.
    Touch {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Exit 0 if the test holds for PATH, 1 if not (no output); when it
    /// cannot be answered, an error and its code (2 a bad path, 6 master
    /// unreachable: see EXIT STATUS).
    #[command(group(clap::ArgGroup::new("test").required(true).multiple(false)))]
    Test {
        /// PATH exists.
        #[arg(short = 'e', group = "test")]
        exists: bool,
        /// PATH is a directory.
        #[arg(short = 'd', group = "test")]
        dir: bool,
        /// PATH is a file.
        #[arg(short = 'f', group = "test")]
        file: bool,
        /// PATH has zero length.
        #[arg(short = 'z', group = "test")]
        zero: bool,
        path: String,
    },
    /// Print the last 1 KiB of a file.
    Tail {
        /// Keep printing what is appended (checked every second) until
        /// Ctrl-C or SIGTERM, which end it with exit code 0.
        #[arg(short = 'f')]
        follow: bool,
        path: String,
    },
    /// Copy files within gfs (SRC... DST; several sources need DST to be
    /// an existing directory). Each copy goes to DST._COPYING_ first,
    /// renamed to DST once complete, as `put`.
    Cp {
        /// Copy directories and everything below them.
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        /// Replace an existing destination file.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, num_args = 2.., value_name = "SRC... DST")]
        paths: Vec<String>,
    },
    /// CRC32C of each file's bytes, read through the client:
    /// `PATH  CRC32C  <hex>  <size>`.
    Checksum {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Cluster administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run a master and chunkservers in this process.
    Server(server::ServerArgs),
    /// Make a cluster CA and certificates for running components by hand.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Measure throughput and metadata rates against a plain-disk baseline.
    Bench(bench::BenchArgs),
    /// Print a shell completion script, e.g. `gfs completions bash >
    /// /etc/bash_completion.d/gfs`.
    Completions { shell: clap_complete::Shell },
    /// Print the gfs(1) man page (roff), e.g. `gfs man | man -l -`.
    Man,
}

/// `gfs trash` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// Deleted entries at or below PATH: deletion time, type, original
    /// path, hidden path (give that to `restore`).
    List {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Remove every deleted entry at or below PATH now, for good.
    Empty {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Rename a deleted entry back to DEST (default: its original name).
    Restore {
        #[arg(value_name = "HIDDEN_PATH")]
        hidden: String,
        dest: Option<String>,
    },
}

/// `gfs admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Servers, counts and state of the cluster.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Copy every replica of SERVER (id or address) elsewhere; it ends
    /// decommissioned once each of its chunks is fully replicated without it.
    Decommission { server: String },
    /// Cancel or undo a decommission (or a lost mark) of SERVER.
    Recommission { server: String },
    /// Declare SERVER lost: re-replicate its chunks now, without waiting
    /// for the heartbeat timeout.
    MarkLost { server: String },
    /// Add a master to the master group (it catches up as a learner, then
    /// votes); prints the members.
    AddMaster {
        /// Raft id of the new master.
        #[arg(long, value_name = "N")]
        id: u64,
        /// Its gRPC address, host:port.
        #[arg(long, value_name = "ADDR")]
        address: String,
    },
    /// Remove a master from the master group; prints the members.
    RemoveMaster {
        /// Raft id of the master to remove.
        #[arg(long, value_name = "N")]
        id: u64,
    },
}

impl Cli {
    /// The master address(es) to use.
    pub fn master_addr(&self) -> String {
        self.master.clone().unwrap_or_else(|| DEFAULT_MASTER.to_string())
    }

    /// The client configuration for file and admin commands.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut cfg = ClientConfig::new(self.master_addr());
        cfg.allow_stale_reads = self.stale;
        cfg.security = self.tls.security_or(Some(std::path::Path::new(LOCAL_TLS_DIR)))?;
        Ok(cfg)
    }
}

/// Parses the arguments, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    // The subcommand's name, for hints in error messages.
    let name = matches.subcommand_name().unwrap_or_default().to_string();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    telemetry::init_to(cli.log_format, "warn", progress::LogWriter);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gfs: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let res = rt.block_on(run(cli));
    // Do not wait for lingering background tasks (e.g. idle connections).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match res {
        Ok(()) => ExitCode::from(exit::OK),
        // `gfs test`'s answer: no message.
        Err(e) if e.downcast_ref::<verbs::Exit>().is_some() => {
            ExitCode::from(e.downcast_ref::<verbs::Exit>().map_or(1, |x| x.0))
        }
        Err(e) => exit::report(e, &name),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let insecure = cli.tls.insecure;
    // `gfs server` and a self-contained bench make their own identities.
    let local = match &cli.command {
        Command::Server(_) | Command::Cert { .. } | Command::Completions { .. } | Command::Man => true,
        Command::Bench(b) => cli.master.is_none() || b.data_dir.is_some(),
        _ => false,
    };
    let config = if local { None } else { Some(cli.client_config()?) };
    match (cli.command, config) {
        (Command::Server(args), _) => server::run(args, insecure).await,
        (Command::Cert { command }, _) => cert::run(command),
        (Command::Bench(args), config) => bench::run(args, config, insecure).await,
        (Command::Completions { shell }, _) => completions::print(Some(shell)),
        (Command::Man, _) => completions::print(None),
        (other, Some(config)) => commands::run(config, other).await,
        (_, None) => unreachable!("only server and bench run without a client config"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_common_forms() {
        let c = Cli::try_parse_from(["gfs", "--master", "h:1", "put", "-f", "a", "/b"]).unwrap();
        assert_eq!(c.master_addr(), "h:1");
        assert!(matches!(c.command, Command::Put { force: true, allow_under_replicated: false, .. }));
        let c = Cli::try_parse_from(["gfs", "put", "--allow-under-replicated", "a", "/b"]).unwrap();
        assert!(matches!(c.command, Command::Put { allow_under_replicated: true, .. }));
        let c = Cli::try_parse_from(["gfs", "ls", "-l", "--json", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Ls { long: true, json: true, .. }));
        let c = Cli::try_parse_from(["gfs", "server", "--data-dir", "d", "--chunk-size", "1MiB"]).unwrap();
        match c.command {
            Command::Server(a) => assert_eq!(a.chunk_size, 1 << 20),
            _ => panic!(),
        }
        assert!(Cli::try_parse_from(["gfs", "server", "--data-dir", "d", "--chunk-size", "1XB"]).is_err());
        let c = Cli::try_parse_from(["gfs", "admin", "status", "--json"]).unwrap();
        assert!(matches!(c.command, Command::Admin { command: AdminCommand::Status { json: true } }));
        let c = Cli::try_parse_from(["gfs", "admin", "mark-lost", "s1"]).unwrap();
        assert!(matches!(c.command, Command::Admin { command: AdminCommand::MarkLost { .. } }));
        let c = Cli::try_parse_from(["gfs", "ls", "--all", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Ls { all: true, recursive: false, .. }));
        let c = Cli::try_parse_from(["gfs", "ls", "-lR", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Ls { long: true, recursive: true, .. }));
        let c = Cli::try_parse_from(["gfs", "chmod", "-R", "go-w", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Chmod { recursive: true, ref mode, .. } if mode == "go-w"));
        let c = Cli::try_parse_from(["gfs", "chmod", "-w", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Chmod { recursive: false, ref mode, .. } if mode == "-w"));
        let c = Cli::try_parse_from(["gfs", "chown", "alice:eng", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Chown { recursive: false, ref owner, .. } if owner == "alice:eng"));
        let c = Cli::try_parse_from(["gfs", "setrep", "-w", "5", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Setrep { wait: true, replication: 5, .. }));
        for bad in ["0", "17", "x"] {
            assert!(Cli::try_parse_from(["gfs", "setrep", bad, "/x"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_hdfs_style_verbs() {
        let c = Cli::try_parse_from(["gfs", "du", "-s", "-h", "/a", "/b"]).unwrap();
        assert!(matches!(c.command, Command::Du { summary: true, human: true, ref paths, .. } if paths.len() == 2));
        assert!(Cli::try_parse_from(["gfs", "du"]).is_err(), "du needs a path");
        assert!(Cli::try_parse_from(["gfs", "du", "--help"]).is_err(), "help still shows (as an Err of kind help)");
        let c = Cli::try_parse_from(["gfs", "df", "-h"]).unwrap();
        assert!(matches!(c.command, Command::Df { human: true, .. }));
        let c = Cli::try_parse_from(["gfs", "count", "-q", "/a"]).unwrap();
        assert!(matches!(c.command, Command::Count { quotas: true, human: false, .. }));
        let c = Cli::try_parse_from(["gfs", "find", "/a", "-name", "*.log", "-type", "f"]).unwrap();
        assert!(
            matches!(c.command, Command::Find { ref path, ref expression } if path == "/a" && expression.len() == 4)
        );
        let c = Cli::try_parse_from(["gfs", "test", "-d", "/a"]).unwrap();
        assert!(matches!(c.command, Command::Test { dir: true, exists: false, file: false, zero: false, .. }));
        assert!(Cli::try_parse_from(["gfs", "test", "/a"]).is_err(), "one test flag is required");
        assert!(Cli::try_parse_from(["gfs", "test", "-d", "-f", "/a"]).is_err(), "only one");
        let c = Cli::try_parse_from(["gfs", "tail", "-f", "/a"]).unwrap();
        assert!(matches!(c.command, Command::Tail { follow: true, .. }));
        let c = Cli::try_parse_from(["gfs", "cp", "-r", "-f", "/a", "/b", "/d"]).unwrap();
        assert!(matches!(c.command, Command::Cp { recursive: true, force: true, ref paths } if paths.len() == 3));
        assert!(Cli::try_parse_from(["gfs", "cp", "/a"]).is_err(), "cp needs SRC and DST");
        let c = Cli::try_parse_from(["gfs", "rm", "-f", "-r", "/a"]).unwrap();
        assert!(matches!(c.command, Command::Rm { force: true, recursive: true, .. }));
        assert!(Cli::try_parse_from(["gfs", "touch"]).is_err());
        let c = Cli::try_parse_from(["gfs", "put", "-r", "a", "b", "/d"]).unwrap();
        assert!(matches!(c.command, Command::Put { recursive: true, force: false, ref paths, .. } if paths.len() == 3));
        assert!(Cli::try_parse_from(["gfs", "put", "a"]).is_err(), "put needs LOCAL and REMOTE");
        let c = Cli::try_parse_from(["gfs", "get", "-f", "-r", "/a*", "out"]).unwrap();
        assert!(matches!(c.command, Command::Get { force: true, recursive: true, ref paths } if paths.len() == 2));
        let c = Cli::try_parse_from(["gfs", "rm", "--skip-trash", "/a"]).unwrap();
        assert!(matches!(c.command, Command::Rm { skip_trash: true, recursive: false, .. }));
        let c = Cli::try_parse_from(["gfs", "trash", "list"]).unwrap();
        assert!(matches!(c.command, Command::Trash { command: TrashCommand::List { ref path } } if path == "/"));
        let c = Cli::try_parse_from(["gfs", "trash", "restore", "/h", "/x"]).unwrap();
        assert!(matches!(c.command, Command::Trash { command: TrashCommand::Restore { dest: Some(_), .. } }));
        assert!(Cli::try_parse_from(["gfs", "trash", "restore"]).is_err());
        assert!(Cli::try_parse_from(["gfs", "checksum", "/a", "/b"]).is_ok());
    }

    #[test]
    fn master_groups_and_stale_reads() {
        let c = Cli::try_parse_from(["gfs", "--master", "a:1,b:2,c:3", "--stale", "--insecure", "stat", "/x"]).unwrap();
        let cfg = c.client_config().unwrap();
        assert_eq!(cfg.master, "a:1,b:2,c:3");
        assert!(cfg.allow_stale_reads);
        assert!(crate::Client::new(cfg).is_ok());
        // Global: also after the subcommand.
        let c = Cli::try_parse_from(["gfs", "ls", "/", "--stale", "--insecure"]).unwrap();
        assert!(c.client_config().unwrap().allow_stale_reads);
        let c = Cli::try_parse_from(["gfs", "ls", "/", "--insecure"]).unwrap();
        assert!(!c.client_config().unwrap().allow_stale_reads);
        let c = Cli::try_parse_from(["gfs", "admin", "add-master", "--id", "4", "--address", "m4:9700"]).unwrap();
        match c.command {
            Command::Admin { command: AdminCommand::AddMaster { id, address } } => {
                assert_eq!((id, address.as_str()), (4, "m4:9700"))
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["gfs", "admin", "remove-master", "--id", "2"]).unwrap();
        assert!(matches!(c.command, Command::Admin { command: AdminCommand::RemoveMaster { id: 2 } }));
        assert!(Cli::try_parse_from(["gfs", "admin", "remove-master"]).is_err());
    }
}

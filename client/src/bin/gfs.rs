//! `gfs`: the gfs command-line client (see `gfs_client::cli`).

fn main() -> std::process::ExitCode {
    gfs_client::cli::main()
}

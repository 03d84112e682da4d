//! gfs client library and the `gfs` command-line tool.
//!
//! [`Client`] talks to the master for metadata and leases and moves data
//! directly to and from chunkservers:
//!
//! - reads go to the closest replica (same zone, then lowest observed
//!   latency) and fail over to the others;
//! - writes are split at chunk boundaries into pieces of at most
//!   `MAX_IO_SIZE`; each piece is pushed along the replica chain and then
//!   committed by the primary;
//! - record appends go to the file's last chunk and move on when the primary
//!   answers `ChunkFull`;
//! - chunk locations and leases are cached (bounded, with expiry) and
//!   dropped when a server says they are stale.
//!
//! [`local_cluster::LocalCluster`] runs a master and chunkservers in-process
//! (`gfs server`, `gfs bench`, tests).

mod admin;
pub mod cli;
mod client;
mod config;
pub mod local_cluster;
mod path_cache;
pub mod pieces;
pub mod replicas;
pub mod retry;
pub mod size;

pub use client::{COPYING_SUFFIX, Client, FileStat, ListPage, Lister, Progress, PutOptions, TreeLister, copying_path};
pub use config::{ClientConfig, DEFAULT_FAILOVER_TIMEOUT, default_user};
pub use gfs_common::{Error, MasterSet, Result};
pub use gfs_proto::{
    ChunkLocation, ClusterStatusResponse, FileInfo, FileType, MasterInfo, MasterRole, MasterStatusResponse,
    RepairEvent, ServerInfo, ServerState, ServerStatus,
};

pub use local_cluster::{LocalCluster, LocalClusterOptions};

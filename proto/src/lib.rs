//! Generated gRPC types and service stubs for gfs.
//!
//! Everything here comes from `proto/gfs.proto`; conversions to domain types
//! live in `gfs-common`.

#![allow(clippy::all, missing_docs)]

pub mod codec;

/// The `gfs.v1` protobuf package.
pub mod v1 {
    tonic::include_proto!("gfs.v1");
}

pub use v1::*;

//! Generates the gRPC stubs from `proto/gfs.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Data fields decode into `bytes::Bytes`, which shares the receive buffer
    // instead of copying each payload into a fresh Vec.
    config.bytes(["."]);
    // Every service encodes through `codec::GfsCodec` (sized encode buffers).
    tonic_prost_build::configure().codec_path("crate::codec::GfsCodec").compile_with_config(
        config,
        &["proto/gfs.proto"],
        &["proto"],
    )?;
    Ok(())
}

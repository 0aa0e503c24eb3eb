//! Compiles the contracts with `protox` (pure Rust, so no system `protoc` is needed) and keeps
//! the encoded descriptor set for server reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mp3converter/auth/v1/auth.proto",
    "mp3converter/storage/v1/storage.proto",
    "mp3converter/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=mp3converter");

    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("mp3converter_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // File chunks as `Bytes`: they move between HTTP bodies, gRPC streams and the
        // database without a copy per hop.
        .bytes(".mp3converter.storage.v1")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

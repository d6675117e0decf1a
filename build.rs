//! Generates the gRPC code for Gitaly's wire protocol (package `gitaly`) and our own admin API (package
//! `rgitaly`) with a vendored `protoc`, so a fresh machine needs nothing but cargo.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=proto");

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let includes = vec![proto_dir, protoc_bin_vendored::include_path()?];
    // prost-build reads PROTOC; point it at the vendored binary.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .file_descriptor_set_path(out.join("descriptor.bin"))
        .compile_protos(&protos, &includes)?;
    Ok(())
}

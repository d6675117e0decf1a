//! Generated protocol code: Gitaly's wire protocol (package `gitaly`).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod gitaly {
    tonic::include_proto!("gitaly");
}

/// Serialized descriptors of every service we declare, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");

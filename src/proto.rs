//! Generated protocol code: Gitaly's wire protocol (package `gitaly`) and our admin API (package `rgitaly`).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod gitaly {
    tonic::include_proto!("gitaly");
}

/// rgitaly's own API (package `rgitaly`): pool administration, and the ref updates workers ask of the daemon.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod rgitaly {
    tonic::include_proto!("rgitaly");
}

/// Serialized descriptors of every service we declare, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");

//! ServerInfo: versions, and per storage whether it can be read and written, its filesystem and its id.

use std::path::Path;

use tonic::Status;

use crate::proto::gitaly::{server_info_response::StorageStatus, ServerInfoResponse};
use crate::service::Context;
use crate::storage_metadata;

pub async fn server_info(ctx: &Context) -> Result<ServerInfoResponse, Status> {
    let git_version = ctx.git.version().await.map_err(|e| Status::internal(e.to_string()))?;
    let storage_statuses = ctx
        .locator
        .storages()
        .map(|(name, path)| StorageStatus {
            storage_name: name.to_string(),
            readable: std::fs::metadata(path).is_ok(),
            writeable: writeable(path),
            fs_type: fs_type(path).to_string(),
            filesystem_id: storage_metadata::read_id(path).unwrap_or_default(),
            replication_factor: 1,
        })
        .collect();
    Ok(ServerInfoResponse { server_version: crate::VERSION.to_string(), git_version, storage_statuses })
}

/// Upstream's probe: write and remove `+testWrite`.
fn writeable(path: &Path) -> bool {
    let probe = path.join("+testWrite");
    let ok = std::fs::write(&probe, "testWrite").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The filesystem type by statfs magic, named as upstream names them.
fn fs_type(path: &Path) -> &'static str {
    let Ok(st) = nix::sys::statfs::statfs(path) else { return "unknown" };
    match st.filesystem_type().0 {
        0xef53 => "EXT_2_3_4",
        0x58465342 => "XFS",
        0x01021994 => "TMPFS",
        0x6969 => "NFS",
        0x9123683e => "BTRFS",
        0x794c7630 => "OVERLAYFS",
        0x2fc12fc1 => "ZFS",
        0x65735546 => "FUSE",
        0xff534d42 => "CIFS",
        _ => "unknown",
    }
}

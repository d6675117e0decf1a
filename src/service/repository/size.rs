//! RepositorySize: disk usage in KiB, as `du -sk` reports it, computed in-process from block counts.
//! Like upstream, an unreadable repository is size 0, not an error.

use std::path::Path;

use tonic::Status;

use crate::proto::gitaly::{
    GetObjectDirectorySizeRequest, GetObjectDirectorySizeResponse, RepositorySizeRequest, RepositorySizeResponse,
};
use crate::service::Context;

pub async fn repository_size(ctx: &Context, req: RepositorySizeRequest) -> Result<RepositorySizeResponse, Status> {
    let path = ctx.locator.target_path(req.repository.as_ref())?;
    let bytes = tokio::task::spawn_blocking(move || disk_usage(&path)).await.unwrap_or(0);
    Ok(RepositorySizeResponse { size: (bytes / 1024) as i64 })
}

/// GetObjectDirectorySize: disk usage in KiB of the object directory the request names (a push's
/// quarantine), as upstream's `du -sk` of `GetObjectDirectoryPath`.
pub async fn get_object_directory_size(
    ctx: &Context,
    req: GetObjectDirectorySizeRequest,
) -> Result<GetObjectDirectorySizeResponse, Status> {
    let path = ctx.locator.object_directory_path(req.repository.as_ref())?;
    let bytes = tokio::task::spawn_blocking(move || disk_usage(&path)).await.unwrap_or(0);
    Ok(GetObjectDirectorySizeResponse { size: (bytes / 1024) as i64 })
}

/// Bytes allocated on disk under `path`, not following symlinks.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

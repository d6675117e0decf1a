//! RemoveRepository: moves the repository aside atomically, then deletes it, so a half-deleted repository
//! is never visible at its path. A repository that is already gone is not an error (upstream v13.12).

use tonic::Status;

use crate::proto::gitaly::{RemoveRepositoryRequest, RemoveRepositoryResponse};
use crate::service::Context;

pub async fn remove_repository(
    ctx: &Context,
    req: RemoveRepositoryRequest,
) -> Result<RemoveRepositoryResponse, Status> {
    let repo = req.repository.as_ref();
    let path = ctx.locator.target_path(repo)?;
    if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        // Already gone: removal is idempotent, as upstream's.
        return Ok(RemoveRepositoryResponse {});
    }
    // Only a repository is removed: not a plain directory, a file, or a namespace holding repositories.
    let path = ctx.locator.repo_path(repo)?;
    let storage = repo.map(|r| r.storage_name.as_str()).unwrap_or_default();
    let aside = ctx.locator.removal_path(storage, &path)?;
    match std::fs::rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RemoveRepositoryResponse {}),
        Err(e) => return Err(Status::internal(format!("move repository aside: {e}"))),
    }
    tokio::task::spawn_blocking(move || match std::fs::symlink_metadata(&aside) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&aside),
        _ => std::fs::remove_file(&aside),
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| Status::internal(format!("remove repository: {e}")))?;
    Ok(RemoveRepositoryResponse {})
}

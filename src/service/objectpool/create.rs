//! CreateObjectPool (a local bare clone of the origin, without hooks) and DeleteObjectPool.

use tonic::Status;

use super::pool::Pool;
use crate::git::Sub;
use crate::proto::gitaly::*;
use crate::service::repository::Staging;
use crate::service::Context;

pub async fn create_object_pool(
    ctx: &Context,
    req: CreateObjectPoolRequest,
) -> Result<CreateObjectPoolResponse, Status> {
    let origin = req.origin.as_ref().ok_or_else(|| Status::invalid_argument("no origin repository"))?;
    let pool = Pool::from_proto(ctx, req.object_pool.as_ref())?;
    if pool.exists() {
        return Err(Status::failed_precondition(format!("pool already exists at: {}", pool.repository.relative_path)));
    }
    if origin.storage_name != pool.repository.storage_name {
        return Err(Status::invalid_argument("origin has different storage than object pool"));
    }
    let origin_path = ctx.locator.repo_path(Some(origin))?;
    let staged = Staging::new(ctx, &pool.repository.storage_name, "CreateObjectPool")?;
    ctx.git
        .bare(Sub::Clone)
        .flag("--quiet")
        .flag("--bare")
        .flag("--local")
        .path_arg(&origin_path)
        .path_arg(&staged.path)
        .output()
        .await
        .map_err(|e| Status::internal(format!("clone: {e}")))?;
    let _ = std::fs::remove_dir_all(staged.path.join("hooks"));
    staged.place(&pool.path, "CreateObjectPool")?;
    Ok(CreateObjectPoolResponse {})
}

pub async fn delete_object_pool(
    ctx: &Context,
    req: DeleteObjectPoolRequest,
) -> Result<DeleteObjectPoolResponse, Status> {
    let pool = Pool::from_proto(ctx, req.object_pool.as_ref())?;
    if std::fs::symlink_metadata(&pool.path).is_err() {
        return Ok(DeleteObjectPoolResponse {});
    }
    // Moved aside first, so the pool disappears at once and whole.
    let aside = ctx.locator.removal_path(&pool.repository.storage_name, &pool.path)?;
    std::fs::rename(&pool.path, &aside).map_err(|e| Status::internal(format!("remove pool: {e}")))?;
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&aside))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("remove pool: {e}")))?;
    Ok(DeleteObjectPoolResponse {})
}

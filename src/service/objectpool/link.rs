//! LinkRepositoryToObjectPool, UnlinkRepositoryFromObjectPool and GetObjectPool: a member's
//! `objects/info/alternates`, relative to the pool, as upstream writes it.

use tonic::Status;

use super::pool::{pool_of, Pool};
use crate::proto::gitaly::*;
use crate::service::remote;
use crate::service::Context;

pub async fn link_repository_to_object_pool(
    ctx: &Context,
    req: LinkRepositoryToObjectPoolRequest,
) -> Result<LinkRepositoryToObjectPoolResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::invalid_argument("no repository"))?;
    let pool = Pool::from_proto(ctx, req.object_pool.as_ref())?;
    if pool.repository.storage_name != repository.storage_name {
        return Err(Status::invalid_argument("repository and object pool are not on the same storage"));
    }
    let repo = ctx.locator.repo_path(Some(repository))?;
    pool.init(ctx).await?;
    tokio::task::spawn_blocking(move || pool.link(&repo))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)?;
    Ok(LinkRepositoryToObjectPoolResponse {})
}

pub async fn unlink_repository_from_object_pool(
    ctx: &Context,
    req: UnlinkRepositoryFromObjectPoolRequest,
) -> Result<UnlinkRepositoryFromObjectPoolResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::invalid_argument("no repository"))?;
    let pool = Pool::from_proto(ctx, req.object_pool.as_ref()).map_err(|e| Status::internal(e.message()))?;
    if !pool.exists() {
        return Err(Status::not_found(format!("pool repository not found: {}", pool.repository.relative_path)));
    }
    // As upstream v13.12: only the pool's remote named after the member goes; the member keeps borrowing
    // (DisconnectGitAlternates takes the objects back).
    let name = &repository.gl_repository;
    if remote::valid_remote_name(name) {
        remote::remove_if_present(ctx, &pool.path, name, |e| Status::internal(e.to_string())).await?;
    }
    Ok(UnlinkRepositoryFromObjectPoolResponse {})
}

pub async fn get_object_pool(ctx: &Context, req: GetObjectPoolRequest) -> Result<GetObjectPoolResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::internal("repository is empty"))?;
    let repo = ctx.locator.repo_path(Some(repository))?;
    let root = ctx.locator.storage_path(&repository.storage_name)?.to_path_buf();
    match pool_of(&repo, &repository.storage_name, &root) {
        Ok(object_pool) => Ok(GetObjectPoolResponse { object_pool }),
        Err(e) => {
            tracing::warn!(error = %e, storage = %repository.storage_name, relative_path = %repository.relative_path,
                "alternates file does not point to valid git repository");
            Ok(GetObjectPoolResponse { object_pool: None })
        }
    }
}

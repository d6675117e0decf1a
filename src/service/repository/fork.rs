//! CreateFork: a bare clone of a repository on whichever Gitaly server holds its storage (the call's
//! `gitaly-servers` metadata), fetched through `rgitaly-ssh`, without the `origin` remote the clone
//! leaves behind.

use tonic::metadata::MetadataMap;
use tonic::Status;

use super::staging::{self, Staging};
use crate::git::Sub;
use crate::gitaly_servers::{self, INTERNAL_URL};
use crate::proto::gitaly::{CreateForkRequest, CreateForkResponse};
use crate::service::Context;

pub async fn create_fork(
    ctx: &Context,
    md: &MetadataMap,
    req: CreateForkRequest,
) -> Result<CreateForkResponse, Status> {
    let source =
        req.source_repository.as_ref().ok_or_else(|| Status::invalid_argument("CreateFork: empty SourceRepository"))?;
    let target_repo =
        req.repository.as_ref().ok_or_else(|| Status::invalid_argument("CreateFork: empty Repository"))?;
    let target = ctx.locator.target_path(Some(target_repo)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        if !meta.is_dir() {
            return Err(Status::invalid_argument("CreateFork: destination path exists"));
        }
        if !staging::is_free(&target) {
            return Err(Status::invalid_argument("CreateFork: destination directory is not empty"));
        }
    }
    let env = gitaly_servers::upload_pack_env(md, source)?;
    let staged = Staging::new(ctx, &target_repo.storage_name, "CreateFork")?;
    ctx.git
        .bare(Sub::Clone)
        .internal_remote(&env)
        .flag("--bare")
        .flag("--no-local")
        .flag("--quiet")
        .path_arg(INTERNAL_URL)
        .path_arg(&staged.path)
        .output()
        .await
        .map_err(|e| Status::internal(format!("CreateFork: clone cmd wait: {e}")))?;
    super::remove_origin(ctx, &staged.path).await.map_err(|e| Status::internal(format!("CreateFork: {e}")))?;
    staged.place(&target, "CreateFork")?;
    Ok(CreateForkResponse {})
}

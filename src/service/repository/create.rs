//! CreateRepository: `git init --bare`, idempotent on an existing repository.

use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{CreateRepositoryRequest, CreateRepositoryResponse};
use crate::service::Context;

pub async fn create_repository(
    ctx: &Context,
    req: CreateRepositoryRequest,
) -> Result<CreateRepositoryResponse, Status> {
    let path = ctx
        .locator
        .target_path(req.repository.as_ref())
        .map_err(|e| Status::invalid_argument(format!("locate repository: {e}")))?;
    std::fs::create_dir_all(&path).map_err(|e| Status::internal(format!("create directories: {e}")))?;
    ctx.git
        .bare(Sub::Init)
        .config("init.defaultBranch", "master")
        .flag("--bare")
        .flag("--quiet")
        .trusted_arg(&path)
        .output()
        .await
        .map_err(|e| Status::internal(format!("git init: {e}")))?;
    Ok(CreateRepositoryResponse {})
}

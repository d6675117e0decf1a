//! RepositoryExists: whether the path holds a git directory. Bad storages and paths are still errors.

use tonic::Status;

use crate::locator::is_git_directory;
use crate::proto::gitaly::{RepositoryExistsRequest, RepositoryExistsResponse};
use crate::service::Context;

pub fn repository_exists(ctx: &Context, req: RepositoryExistsRequest) -> Result<RepositoryExistsResponse, Status> {
    let path = ctx.locator.target_path(req.repository.as_ref())?;
    Ok(RepositoryExistsResponse { exists: is_git_directory(&path) })
}

//! HasLocalBranches: whether any ref exists under `refs/heads/`.

use tonic::Status;

use crate::git::repo::Repo;
use crate::proto::gitaly::{HasLocalBranchesRequest, HasLocalBranchesResponse};
use crate::service::Context;

pub async fn has_local_branches(
    ctx: &Context,
    req: HasLocalBranchesRequest,
) -> Result<HasLocalBranchesResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let value = Repo::new(&ctx.git, &repo).has_branches().await?;
    Ok(HasLocalBranchesResponse { value })
}

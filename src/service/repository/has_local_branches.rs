//! HasLocalBranches: whether any ref exists under `refs/heads/`.

use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{HasLocalBranchesRequest, HasLocalBranchesResponse};
use crate::service::Context;

pub async fn has_local_branches(
    ctx: &Context,
    req: HasLocalBranchesRequest,
) -> Result<HasLocalBranchesResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let out = ctx
        .git
        .command(&repo, Sub::ForEachRef)
        .flag("--format=%(refname)")
        .flag("--count=1")
        .trusted_arg("refs/heads/")
        .output()
        .await?;
    Ok(HasLocalBranchesResponse { value: !out.stdout.is_empty() })
}

//! FindDefaultBranchName: the branch GitLab shows first, by upstream's rule (see
//! [`crate::odb::refs::default_branch`]).

use tonic::Status;

use crate::proto::gitaly::{FindDefaultBranchNameRequest, FindDefaultBranchNameResponse};
use crate::service::Ctx;

pub async fn find_default_branch_name(
    ctx: &Ctx,
    req: FindDefaultBranchNameRequest,
) -> Result<FindDefaultBranchNameResponse, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let name = crate::service::default_branch(ctx, &path).await?;
    Ok(FindDefaultBranchNameResponse { name })
}

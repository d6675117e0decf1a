//! FindBranch: a branch by short name with its commit; a missing branch is an empty response.

use tonic::Status;

use crate::proto::gitaly::{Branch, FindBranchRequest, FindBranchResponse};
use crate::service::Ctx;

pub async fn find_branch(ctx: &Ctx, req: FindBranchRequest) -> Result<FindBranchResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("Branch name cannot be empty"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    crate::odb::inline(move || {
        let repo = c.repos.open(&path)?;
        // Always a short name, as upstream: `refs/heads/x` looks up `refs/heads/refs/heads/x`.
        let full = [b"refs/heads/".as_slice(), &req.name].concat();
        let Some(target) = crate::odb::refs::target(&repo, &full)? else { return Ok(FindBranchResponse::default()) };
        let commit = crate::odb::read_commit(&repo, target)?;
        Ok(FindBranchResponse { branch: Some(Branch { name: req.name, target_commit: commit }) })
    })
}

//! FindDefaultBranchName: the branch GitLab shows first. Upstream's rule: no branches, no name; one branch,
//! that one; else HEAD's target if it is a branch, else `refs/heads/master` if it exists, else the first
//! branch in name order.

use tonic::Status;

use crate::proto::gitaly::{FindDefaultBranchNameRequest, FindDefaultBranchNameResponse};
use crate::service::Ctx;

const LEGACY_DEFAULT: &[u8] = b"refs/heads/master";

pub async fn find_default_branch_name(
    ctx: &Ctx,
    req: FindDefaultBranchNameRequest,
) -> Result<FindDefaultBranchNameResponse, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    crate::odb::blocking(move || {
        let repo = c.repos.open(&path)?;
        let branches = crate::odb::refs::names(&repo, "refs/heads/")?;
        let name = match branches.as_slice() {
            [] => Vec::new(),
            [only] => only.clone(),
            _ => {
                let head = crate::odb::refs::head_target(&repo)?;
                if let Some(head) = head.filter(|h| branches.contains(h)) {
                    head
                } else if branches.iter().any(|b| b == LEGACY_DEFAULT) {
                    LEGACY_DEFAULT.to_vec()
                } else {
                    branches[0].clone()
                }
            }
        };
        Ok(FindDefaultBranchNameResponse { name })
    })
    .await
}

//! CommitIsAncestor: whether one commit is reachable from another, by merge-base in-process. Anything that
//! does not resolve is "not an ancestor", as `git merge-base --is-ancestor` failing is upstream.

use tonic::Status;

use crate::proto::gitaly::{CommitIsAncestorRequest, CommitIsAncestorResponse};
use crate::service::Ctx;

pub async fn commit_is_ancestor(ctx: &Ctx, req: CommitIsAncestorRequest) -> Result<CommitIsAncestorResponse, Status> {
    if req.ancestor_id.is_empty() {
        return Err(Status::invalid_argument("Bad Request (empty ancestor sha)"));
    }
    if req.child_id.is_empty() {
        return Err(Status::invalid_argument("Bad Request (empty child sha)"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    let value = crate::odb::blocking(move || {
        let repo = c.repos.open(&path)?;
        Ok(crate::odb::is_ancestor(&repo, req.ancestor_id.as_bytes(), req.child_id.as_bytes()))
    })
    .await?;
    Ok(CommitIsAncestorResponse { value })
}

//! FindMergeBase: the best common ancestor of two or more revisions; none found is an empty answer.

use tonic::Status;

use crate::git::{validate_revision, RevisionError, Sub};
use crate::proto::gitaly::{FindMergeBaseRequest, FindMergeBaseResponse};
use crate::service::Context;

pub async fn find_merge_base(ctx: &Context, req: FindMergeBaseRequest) -> Result<FindMergeBaseResponse, Status> {
    if req.revisions.len() < 2 {
        return Err(Status::invalid_argument("FindMergeBase: at least 2 revisions are required"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut cmd = ctx.git.command(&repo, Sub::MergeBase);
    for rev in &req.revisions {
        // Upstream passes any revision to git (an odd one simply has no merge base); only options are refused.
        if let Err(e @ RevisionError::Option) | Err(e @ RevisionError::Empty) = validate_revision(rev) {
            return Err(Status::invalid_argument(format!("FindMergeBase: revision: {e}")));
        }
        cmd = cmd.user_arg(String::from_utf8_lossy(rev));
    }
    let out = cmd.run_to_end().await?;
    // No common ancestor, or an unknown revision: upstream answers with an empty base.
    let base = if out.exit.success() { out.stdout_text() } else { String::new() };
    Ok(FindMergeBaseResponse { base })
}

//! FindCommit: a commit by revision. A revision that does not name a commit is an empty response, not an
//! error, as upstream.

use tonic::Status;

use crate::git::validate_revision;
use crate::proto::gitaly::{FindCommitRequest, FindCommitResponse};
use crate::service::Ctx;

pub async fn find_commit(ctx: &Ctx, req: FindCommitRequest) -> Result<FindCommitResponse, Status> {
    validate_revision(&req.revision).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    let read_path = path.clone();
    let revision = req.revision.clone();
    let lookup = move || {
        let repo = c.repos.open(&read_path)?;
        crate::odb::find_commit(&repo, &revision)
    };
    let commit = if crate::odb::is_point_lookup(&req.revision) {
        crate::odb::inline(lookup)?
    } else {
        crate::odb::blocking(lookup).await?
    };
    let Some(mut commit) = commit else { return Ok(FindCommitResponse::default()) };
    if req.trailers {
        // Trailer parsing is git's own (folding, separators, configured keys): asked of git itself.
        commit.trailers = crate::git::repo::Repo::new(&ctx.git, &path).trailers(&commit.id).await?;
    }
    Ok(FindCommitResponse { commit: Some(commit) })
}

//! CommitStats: lines added and removed by a commit against its first parent (or the empty tree), summed
//! from `git diff --numstat`; binary files count nothing.

use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{CommitStatsRequest, CommitStatsResponse};
use crate::service::Ctx;

const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

pub async fn commit_stats(ctx: &Ctx, req: CommitStatsRequest) -> Result<CommitStatsResponse, Status> {
    validate_revision(&req.revision).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let (c, p, rev) = (ctx.clone(), path.clone(), req.revision.clone());
    let commit = crate::odb::blocking(move || crate::odb::find_commit(&*c.repos.open(&p)?, &rev))
        .await?
        .ok_or_else(|| Status::internal("object not found"))?;
    let parent = if commit.parent_ids.is_empty() { EMPTY_TREE.to_string() } else { format!("{}^", commit.id) };
    let out =
        ctx.git.command(&path, Sub::Diff).flag("--numstat").user_arg(&parent).user_arg(&commit.id).output().await?;
    let (mut additions, mut deletions) = (0i32, 0i32);
    for line in out.stdout_text().lines() {
        let mut f = line.split('\t');
        let (Some(a), Some(d)) = (f.next(), f.next()) else { continue };
        if let (Ok(a), Ok(d)) = (a.parse::<i32>(), d.parse::<i32>()) {
            additions += a;
            deletions += d;
        }
    }
    Ok(CommitStatsResponse { oid: commit.id, additions, deletions })
}

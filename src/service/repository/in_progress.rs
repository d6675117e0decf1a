//! IsRebaseInProgress and IsSquashInProgress: whether a rebase or squash with this id has a worktree
//! (`gitlab-worktree/<kind>-<id>`) touched in the last 15 minutes, as upstream answers. A stale one is
//! removed on the way, as upstream removes it.

use std::path::Path;
use std::time::Duration;

use tonic::Status;

use crate::proto::gitaly::*;
use crate::service::Context;

/// How long a worktree counts as a rebase or squash in progress.
const FRESH: Duration = Duration::from_secs(15 * 60);

pub async fn is_rebase_in_progress(
    ctx: &Context,
    req: IsRebaseInProgressRequest,
) -> Result<IsRebaseInProgressResponse, Status> {
    let in_progress =
        in_progress(ctx, req.repository.as_ref(), "IsRebaseInProgress", "RebaseId", "rebase", &req.rebase_id).await?;
    Ok(IsRebaseInProgressResponse { in_progress })
}

pub async fn is_squash_in_progress(
    ctx: &Context,
    req: IsSquashInProgressRequest,
) -> Result<IsSquashInProgressResponse, Status> {
    let in_progress =
        in_progress(ctx, req.repository.as_ref(), "IsSquashInProgress", "SquashId", "squash", &req.squash_id).await?;
    Ok(IsSquashInProgressResponse { in_progress })
}

async fn in_progress(
    ctx: &Context,
    repo: Option<&Repository>,
    rpc: &str,
    field: &str,
    kind: &str,
    id: &str,
) -> Result<bool, Status> {
    let problem = if repo.is_none() {
        Some("empty Repository".to_string())
    } else if id.is_empty() {
        Some(format!("empty {field}"))
    } else if id.contains('/') {
        Some(format!("{field} contains '/'"))
    } else if id.contains('\0') {
        Some(format!("{field} contains NUL"))
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(Status::invalid_argument(format!("{rpc}: {p}")));
    }
    let repo_path = ctx.locator.repo_path(repo)?;
    // `<kind>-` before the id keeps `.`/`..` ids inside the worktree directory.
    let worktree = repo_path.join("gitlab-worktree").join(format!("{kind}-{id}"));
    tokio::task::spawn_blocking(move || fresh(&worktree)).await.map_err(|e| Status::internal(e.to_string()))?
}

fn fresh(worktree: &Path) -> Result<bool, Status> {
    let Ok(meta) = std::fs::symlink_metadata(worktree) else { return Ok(false) };
    let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
    if age <= FRESH {
        return Ok(true);
    }
    let removed = if meta.is_dir() { std::fs::remove_dir_all(worktree) } else { std::fs::remove_file(worktree) };
    match removed {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Status::internal(format!("remove stale worktree: {e}"))),
    }
}

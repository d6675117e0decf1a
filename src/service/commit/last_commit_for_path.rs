//! LastCommitForPath: the newest commit at a revision that touched a path, found by `git log` (whose
//! history simplification is the contract) and read in-process. None found is an empty response.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{GitCommit, LastCommitForPathRequest, LastCommitForPathResponse};
use crate::service::Ctx;

pub async fn last_commit_for_path(
    ctx: &Ctx,
    req: LastCommitForPathRequest,
) -> Result<LastCommitForPathResponse, Status> {
    validate_revision(&req.revision).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let literal = req.literal_pathspec || req.global_options.as_ref().is_some_and(|g| g.literal_pathspecs);
    let commit = last_commit(ctx, &path, &String::from_utf8_lossy(&req.revision), &req.path, literal).await?;
    Ok(LastCommitForPathResponse { commit })
}

/// The last commit touching `file` at `revision` (`""` and `"/"` mean the whole tree).
pub async fn last_commit(
    ctx: &Ctx,
    repo: &Path,
    revision: &str,
    file: &[u8],
    literal: bool,
) -> Result<Option<GitCommit>, Status> {
    let file: &[u8] = if file.is_empty() || file == b"/" { b"." } else { file };
    let mut cmd = ctx
        .git
        .command(repo, Sub::Log)
        .flag("--format=%H")
        .flag("--max-count=1")
        .user_arg(revision)
        .path_arg(OsStr::from_bytes(file));
    if literal {
        cmd = cmd.env("GIT_LITERAL_PATHSPECS", "1");
    }
    let out = cmd.run_to_end().await?;
    let id = out.stdout_text();
    if id.is_empty() {
        return Ok(None);
    }
    let (c, repo) = (ctx.clone(), repo.to_path_buf());
    crate::odb::blocking(move || {
        let r = c.repos.open(&repo)?;
        crate::odb::find_commit(&r, id.as_bytes())
    })
    .await
}

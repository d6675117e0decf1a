//! CountCommits and CountDivergingCommits, counted by `git rev-list` (its options are the contract).
//! As upstream, a revision git cannot resolve counts 0 for CountCommits.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{
    CountCommitsRequest, CountCommitsResponse, CountDivergingCommitsRequest, CountDivergingCommitsResponse,
};
use crate::service::Ctx;

pub async fn count_commits(ctx: &Ctx, req: CountCommitsRequest) -> Result<CountCommitsResponse, Status> {
    let invalid = |m: String| Status::invalid_argument(format!("CountCommits: {m}"));
    if !req.revision.is_empty() {
        validate_revision(&req.revision).map_err(|e| invalid(e.to_string()))?;
    }
    if req.revision.is_empty() && !req.all {
        return Err(invalid("empty Revision and false All".into()));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut cmd = ctx.git.command(&path, Sub::RevList).flag("--count");
    if req.all {
        cmd = cmd.flag("--all");
    }
    if let Some(t) = &req.before {
        cmd = cmd.flag(format!("--before=@{}", t.seconds));
    }
    if let Some(t) = &req.after {
        cmd = cmd.flag(format!("--after=@{}", t.seconds));
    }
    if req.max_count != 0 {
        cmd = cmd.flag(format!("--max-count={}", req.max_count));
    }
    if req.first_parent {
        cmd = cmd.flag("--first-parent");
    }
    if !req.all {
        cmd = cmd.user_arg(String::from_utf8_lossy(&req.revision));
    }
    if !req.path.is_empty() {
        cmd = cmd.env("GIT_LITERAL_PATHSPECS", "1").path_arg(OsStr::from_bytes(&req.path));
    }
    let out = cmd.run_to_end().await?;
    if !out.exit.success() {
        return Ok(CountCommitsResponse { count: 0 });
    }
    let count = out.stdout_text().parse().map_err(|e| Status::internal(format!("CountCommits: parse count: {e}")))?;
    Ok(CountCommitsResponse { count })
}

pub async fn count_diverging_commits(
    ctx: &Ctx,
    req: CountDivergingCommitsRequest,
) -> Result<CountDivergingCommitsResponse, Status> {
    if req.from.is_empty() || req.to.is_empty() {
        return Err(Status::invalid_argument("from and to are both required"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let (from, to) = (String::from_utf8_lossy(&req.from), String::from_utf8_lossy(&req.to));
    for rev in [&from, &to] {
        validate_revision(rev.as_bytes()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let mut cmd = ctx.git.command(&path, Sub::RevList).flag("--count").flag("--left-right");
    if req.max_count != 0 {
        cmd = cmd.flag(format!("--max-count={}", req.max_count));
    }
    let out = cmd.user_arg(format!("{from}...{to}")).run_to_end().await?;
    if !out.exit.success() {
        return Err(Status::internal(format!("gi rev-list error: exit status {}", out.exit.code)));
    }
    let text = out.stdout_text();
    let parsed = text.split_once('\t').and_then(|(l, r)| Some((l.parse().ok()?, r.parse().ok()?)));
    let Some((left_count, right_count)) = parsed else {
        return Err(Status::internal(format!("invalid output from git rev-list --left-right: {text:?}")));
    };
    Ok(CountDivergingCommitsResponse { left_count, right_count })
}

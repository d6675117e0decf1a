//! CommitsBetween: the commits in `from..to`, oldest first, as `git log --reverse` lists them; with
//! pagination, upstream starts after the page token (`<token>~..to`). Responses of up to 1 MiB.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{CommitsBetweenRequest, CommitsBetweenResponse};
use crate::service::Ctx;

pub async fn commits_between(
    ctx: &Ctx,
    req: CommitsBetweenRequest,
) -> Result<BoxStream<CommitsBetweenResponse>, Status> {
    validate_revision(&req.from).map_err(|e| Status::invalid_argument(format!("from: {e}")))?;
    validate_revision(&req.to).map_err(|e| Status::invalid_argument(format!("to: {e}")))?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut from = String::from_utf8_lossy(&req.from).into_owned();
    let mut limit = i32::MAX;
    if let Some(p) = &req.pagination_params {
        from = format!("{}~", p.page_token);
        if p.limit > 0 {
            limit = p.limit;
        }
    }
    let to = String::from_utf8_lossy(&req.to);
    let out = ctx
        .git
        .command(&path, Sub::Log)
        .flag("--pretty=%H")
        .flag("--reverse")
        .flag(format!("--max-count={limit}"))
        .user_arg(format!("{from}..{to}"))
        .run_to_end()
        .await?;
    // As upstream, git failing (an unknown revision) is not an error: there is nothing between.
    let ids: Vec<String> =
        if out.exit.success() { out.stdout_text().lines().map(str::to_string).collect() } else { Vec::new() };
    Ok(super::stream_commits(ctx, path, ids, |commits| CommitsBetweenResponse { commits }))
}

//! RawDiff and RawPatch: git's own `diff --full-index` and `format-patch` text, streamed as git writes it.
//! A failing git ends the stream with its exit status, as upstream reports it.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{RawDiffRequest, RawDiffResponse, RawPatchRequest, RawPatchResponse};
use crate::service::{stream_git_output, Ctx};

/// As upstream returns git's error unwrapped: code Unknown, the exit status as the message.
fn exit_status(code: i32) -> Status {
    Status::unknown(format!("exit status {code}"))
}

pub fn raw_diff(ctx: &Ctx, req: RawDiffRequest) -> Result<BoxStream<RawDiffResponse>, Status> {
    super::validate("RawDiff", &req.left_commit_id, &req.right_commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let cmd = ctx
        .git
        .command(&path, Sub::Diff)
        .flag("--full-index")
        .user_arg(&req.left_commit_id)
        .user_arg(&req.right_commit_id);
    stream_git_output(cmd, |data| RawDiffResponse { data }, Some(exit_status))
}

pub fn raw_patch(ctx: &Ctx, req: RawPatchRequest) -> Result<BoxStream<RawPatchResponse>, Status> {
    super::validate("RawPatch", &req.left_commit_id, &req.right_commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let cmd = ctx
        .git
        .command(&path, Sub::FormatPatch)
        .flag("--stdout")
        .flag("--signature")
        .flag("GitLab")
        .user_arg(format!("{}..{}", req.left_commit_id, req.right_commit_id));
    stream_git_output(cmd, |data| RawPatchResponse { data }, Some(exit_status))
}

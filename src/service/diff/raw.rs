//! RawDiff and RawPatch: git's own `diff --full-index` and `format-patch` text, streamed as git writes it.
//! A failing git ends the stream with its exit status, as upstream reports it.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::{GitCommand, Sub};
use crate::proto::gitaly::{RawDiffRequest, RawDiffResponse, RawPatchRequest, RawPatchResponse};
use crate::service::Ctx;
use crate::streamio::{self, Output};

fn stream<R: Send + 'static>(cmd: GitCommand<'_>, wrap: fn(Vec<u8>) -> R) -> Result<BoxStream<R>, Status> {
    let child = cmd.spawn_no_stdin()?;
    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let data = move |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => wrap(data),
        };
        let err = match streamio::run_output(child, &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => Status::unknown(format!("exit status {}", done.exit.code)),
            Err(e) => e,
        };
        let _ = tx.send(Err(err)).await;
    });
    Ok(out)
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
    stream(cmd, |data| RawDiffResponse { data })
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
    stream(cmd, |data| RawPatchResponse { data })
}

//! Fsck: `git fsck`; problems are reported in the response, not as an RPC error.

use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{FsckRequest, FsckResponse};
use crate::service::Context;

const MAX_ERROR: usize = 1024 * 1024;

pub async fn fsck(ctx: &Context, req: FsckRequest) -> Result<FsckResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let out = ctx.git.command(&repo, Sub::Fsck).run_to_end().await?;
    if out.exit.success() {
        return Ok(FsckResponse { error: Vec::new() });
    }
    let mut error = out.stdout;
    error.extend_from_slice(&out.stderr);
    // One message must fit the gRPC limit: a badly broken repository can report megabytes.
    error.truncate(MAX_ERROR);
    Ok(FsckResponse { error })
}

//! RawBlame: `git blame -p` output for a path at a revision, streamed as git writes it (git's porcelain
//! format is the contract). A git failure (no such path) is an empty stream, as upstream.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{RawBlameRequest, RawBlameResponse};
use crate::service::{stream_git_output, Ctx};

pub fn raw_blame(ctx: &Ctx, req: RawBlameRequest) -> Result<BoxStream<RawBlameResponse>, Status> {
    validate_revision(&req.revision).map_err(|e| Status::invalid_argument(format!("RawBlame: {e}")))?;
    if req.path.is_empty() {
        return Err(Status::invalid_argument("RawBlame: empty Path"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let cmd = ctx
        .git
        .command(&path, Sub::Blame)
        .flag("-p")
        .user_arg(String::from_utf8_lossy(&req.revision))
        .path_arg(OsStr::from_bytes(&req.path));
    stream_git_output(cmd, |data| RawBlameResponse { data }, None)
}

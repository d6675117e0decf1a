//! SSHUploadArchive: serves `git archive --remote`.

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::pump;
use crate::git::Sub;
use crate::proto::gitaly::{SshUploadArchiveRequest, SshUploadArchiveResponse};
use crate::service::first_request;
use crate::service::Context;
use crate::streamio::{Options, Watch};

pub async fn ssh_upload_archive(
    ctx: &Context,
    mut stream: Streaming<SshUploadArchiveRequest>,
) -> Result<BoxStream<SshUploadArchiveResponse>, Status> {
    let first = first_request(&mut stream).await?;
    if !first.stdin.is_empty() {
        return Err(Status::invalid_argument("non-empty stdin in first request"));
    }
    let repo = ctx.locator.repo_path(first.repository.as_ref())?;
    let child = ctx.git.command(&repo, Sub::UploadArchive).trusted_arg(&repo).spawn()?;
    let opts = Options {
        negotiation: Some((ctx.config.upload_archive_negotiation_timeout(), Watch::Flush)),
        ..Default::default()
    };
    // Upstream ends upload-archive with an exit status even on success.
    Ok(pump(child, stream, |r| r.stdin, opts, true))
}

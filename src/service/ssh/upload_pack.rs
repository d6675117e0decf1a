//! SSHUploadPack: serves fetches and clones.

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::pump;
use crate::git::Sub;
use crate::proto::gitaly::{SshUploadPackRequest, SshUploadPackResponse};
use crate::service::first_request;
use crate::service::{git_protocol_env, Context};
use crate::streamio::{Options, Watch};

pub async fn ssh_upload_pack(
    ctx: &Context,
    mut stream: Streaming<SshUploadPackRequest>,
) -> Result<BoxStream<SshUploadPackResponse>, Status> {
    let first = first_request(&mut stream).await?;
    if !first.stdin.is_empty() {
        return Err(Status::invalid_argument("non-empty stdin in first request"));
    }
    let repo = ctx.locator.repo_path(first.repository.as_ref())?;
    let mut cmd = ctx.git.command(&repo, Sub::UploadPack).request_config(&first.git_config_options).trusted_arg(&repo);
    if let Some(v) = git_protocol_env(&first.git_protocol, "gitaly.SSHService", "SSHUploadPack") {
        cmd = cmd.env("GIT_PROTOCOL", v);
    }
    let child = cmd.spawn()?;
    let opts = Options {
        negotiation: Some((ctx.config.upload_pack_negotiation_timeout(), Watch::Done)),
        ..Default::default()
    };
    Ok(pump(child, stream, |r| r.stdin, opts, false))
}

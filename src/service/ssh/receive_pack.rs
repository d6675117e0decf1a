//! SSHReceivePack: serves pushes. Refs are updated by git itself, through rgitaly's hook chain (GitLab's
//! access check, custom hooks, post-receive; see `crate::hook`) for the request's user.

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::pump;
use crate::git::Sub;
use crate::proto::gitaly::{SshReceivePackRequest, SshReceivePackResponse};
use crate::service::first_request;
use crate::service::{git_protocol_env, receive_pack_payload, Context};
use crate::streamio::Options;

pub async fn ssh_receive_pack(
    ctx: &Context,
    mut stream: Streaming<SshReceivePackRequest>,
) -> Result<BoxStream<SshReceivePackResponse>, Status> {
    let first = first_request(&mut stream).await?;
    if first.gl_id.is_empty() {
        return Err(Status::invalid_argument("empty GlId"));
    }
    if !first.stdin.is_empty() {
        return Err(Status::invalid_argument("non-empty data in first request"));
    }
    if first.repository.is_none() {
        return Err(Status::invalid_argument("repository is empty"));
    }
    let repo = ctx.locator.repo_path(first.repository.as_ref())?;
    let payload = receive_pack_payload(
        ctx,
        first.repository.as_ref(),
        &first.gl_repository,
        &first.gl_id,
        &first.gl_username,
        "ssh",
    );
    let mut cmd = ctx
        .git
        .command(&repo, Sub::ReceivePack)
        .request_config(&first.git_config_options)
        .trusted_arg(&repo)
        .hooks(payload);
    if let Some(v) = git_protocol_env(&first.git_protocol, "gitaly.SSHService", "SSHReceivePack") {
        cmd = cmd.env("GIT_PROTOCOL", v);
    }
    let child = cmd.spawn()?;
    Ok(pump(child, stream, |r| r.stdin, Options::default(), false))
}

//! PostUploadPack: one stateless-rpc round of a fetch. Non-zero exit is `Unavailable`, except for shallow
//! requests where upload-pack exits early by design (upstream's rule).

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use crate::git::Sub;
use crate::proto::gitaly::{PostUploadPackRequest, PostUploadPackResponse};
use crate::service::{first_request, git_protocol_env, Context};
use crate::streamio::{self, Options, Output};

pub async fn post_upload_pack(
    ctx: &Context,
    mut stream: Streaming<PostUploadPackRequest>,
) -> Result<BoxStream<PostUploadPackResponse>, Status> {
    let first = first_request(&mut stream).await?;
    if !first.data.is_empty() {
        return Err(Status::invalid_argument("PostUploadPack: non-empty Data"));
    }
    let repo = ctx.locator.repo_path(first.repository.as_ref())?;
    let mut cmd = ctx
        .git
        .command(&repo, Sub::UploadPack)
        .flag("--stateless-rpc")
        .request_config(&first.git_config_options)
        .trusted_arg(&repo);
    if let Some(v) = git_protocol_env(&first.git_protocol, "gitaly.SmartHTTPService", "PostUploadPack") {
        cmd = cmd.env("GIT_PROTOCOL", v);
    }
    let child = cmd.spawn().map_err(|e| match e {
        crate::git::GitError::Spawn { .. } => Status::unavailable(format!("PostUploadPack: cmd: {e}")),
        e => e.into(),
    })?;

    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let input = stream.map(|r| r.map(|m| m.data));
        let data = |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => PostUploadPackResponse { data },
        };
        let result = match streamio::run_duplex(child, input, Options::default(), &tx, data).await {
            Ok(done) if done.exit.success() || done.seen.deepen => return,
            Ok(done) => Status::unavailable(format!(
                "PostUploadPack: exit status {}: {}",
                done.exit_status_value(),
                String::from_utf8_lossy(&done.stderr).trim()
            )),
            Err(e) => e,
        };
        let _ = tx.send(Err(result)).await;
    });
    Ok(out)
}

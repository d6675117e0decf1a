//! PostReceivePack: one stateless-rpc push. stderr is not a channel in this protocol; git reports
//! per-ref results inside the stream (report-status), and a failed exit is `Unavailable`. The hook chain
//! runs as for SSHReceivePack; git sends the hooks' output to the client on the sideband.

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use crate::git::Sub;
use crate::proto::gitaly::{PostReceivePackRequest, PostReceivePackResponse};
use crate::service::{first_request, git_protocol_env, receive_pack_payload, Context};
use crate::streamio::{self, Options, Output};

pub async fn post_receive_pack(
    ctx: &Context,
    mut stream: Streaming<PostReceivePackRequest>,
) -> Result<BoxStream<PostReceivePackResponse>, Status> {
    let first = first_request(&mut stream).await?;
    if first.gl_id.is_empty() {
        return Err(Status::invalid_argument("PostReceivePack: empty GlId"));
    }
    if !first.data.is_empty() {
        return Err(Status::invalid_argument("PostReceivePack: non-empty Data"));
    }
    if first.repository.is_none() {
        return Err(Status::invalid_argument("PostReceivePack: empty Repository"));
    }
    let repo = ctx.locator.repo_path(first.repository.as_ref())?;
    let mut cmd = ctx
        .git
        .command(&repo, Sub::ReceivePack)
        .flag("--stateless-rpc")
        .request_config(&first.git_config_options)
        .trusted_arg(&repo)
        .hooks(receive_pack_payload(
            ctx,
            first.repository.as_ref(),
            &first.gl_repository,
            &first.gl_id,
            &first.gl_username,
            "http",
        ));
    if let Some(v) = git_protocol_env(&first.git_protocol, "gitaly.SmartHTTPService", "PostReceivePack") {
        cmd = cmd.env("GIT_PROTOCOL", v);
    }
    let child = cmd.spawn().map_err(|e| match e {
        crate::git::GitError::Spawn { .. } => Status::unavailable(format!("PostReceivePack: {e}")),
        e => e.into(),
    })?;

    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let input = stream.map(|r| r.map(|m| m.data));
        let data = |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => PostReceivePackResponse { data },
        };
        let result = match streamio::run_duplex(child, input, Options::default(), &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => Status::unavailable(format!(
                "PostReceivePack: exit status {}: {}",
                done.exit_status_value(),
                String::from_utf8_lossy(&done.stderr).trim()
            )),
            Err(e) => e,
        };
        let _ = tx.send(Err(result)).await;
    });
    Ok(out)
}

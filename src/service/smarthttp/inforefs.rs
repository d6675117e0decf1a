//! InfoRefsUploadPack / InfoRefsReceivePack: the ref advertisement, preceded by the
//! `# service=git-…` pkt-line and a flush as `git http-backend` sends them.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::pktline;
use crate::proto::gitaly::{InfoRefsRequest, InfoRefsResponse};
use crate::service::{git_protocol_env, Context};
use crate::streamio::{self, Output};

#[derive(Debug, Clone, Copy)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

pub async fn info_refs(
    ctx: &Context,
    req: InfoRefsRequest,
    service: Service,
) -> Result<BoxStream<InfoRefsResponse>, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let (sub, name) = match service {
        Service::UploadPack => (Sub::UploadPack, "git-upload-pack"),
        Service::ReceivePack => (Sub::ReceivePack, "git-receive-pack"),
    };
    let mut cmd = ctx
        .git
        .command(&repo, sub)
        .flag("--stateless-rpc")
        .flag("--advertise-refs")
        .request_config(&req.git_config_options)
        .trusted_arg(&repo);
    let method = match service {
        Service::UploadPack => "InfoRefsUploadPack",
        Service::ReceivePack => "InfoRefsReceivePack",
    };
    if let Some(v) = git_protocol_env(&req.git_protocol, "gitaly.SmartHTTPService", method) {
        cmd = cmd.env("GIT_PROTOCOL", v);
    }
    let child = cmd.spawn().map_err(|e| match e {
        crate::git::GitError::Spawn { .. } => Status::internal(format!("GetInfoRefs: cmd: {e}")),
        e => e.into(),
    })?;

    let (tx, out) = streamio::response_channel();
    let mut header = pktline::encode(format!("# service={name}\n").as_bytes());
    header.extend_from_slice(pktline::FLUSH);
    tokio::spawn(async move {
        if tx.send(Ok(InfoRefsResponse { data: header.into() })).await.is_err() {
            return;
        }
        let data = |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => InfoRefsResponse { data },
        };
        let result = match streamio::run_output(child, &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => Status::internal(format!(
                "GetInfoRefs: exit status {}: {}",
                done.exit_status_value(),
                String::from_utf8_lossy(&done.stderr).trim()
            )),
            Err(e) => e,
        };
        let _ = tx.send(Err(result)).await;
    });
    Ok(out)
}

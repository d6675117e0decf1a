//! SSHService: `git upload-pack`, `receive-pack` and `upload-archive` over a bidi stream, as gitlab-shell
//! and gitaly-ssh drive them. stdin, stdout and stderr travel in separate fields; a non-zero exit is a
//! final `exit_status` message on an OK call, because for the client it is git's answer, not a failure.

mod receive_pack;
mod upload_archive;
mod upload_pack;

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::git::Running;
use crate::proto::gitaly::{
    ssh_service_server::SshService, ExitStatus, SshReceivePackRequest, SshReceivePackResponse, SshUploadArchiveRequest,
    SshUploadArchiveResponse, SshUploadPackRequest, SshUploadPackResponse,
};
use crate::streamio::{self, Options, Output};

pub struct SshSvc(pub Ctx);

#[tonic::async_trait]
impl SshService for SshSvc {
    async fn ssh_upload_pack(
        &self,
        req: Request<Streaming<SshUploadPackRequest>>,
    ) -> Result<Response<BoxStream<SshUploadPackResponse>>, Status> {
        upload_pack::ssh_upload_pack(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn ssh_receive_pack(
        &self,
        req: Request<Streaming<SshReceivePackRequest>>,
    ) -> Result<Response<BoxStream<SshReceivePackResponse>>, Status> {
        receive_pack::ssh_receive_pack(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn ssh_upload_archive(
        &self,
        req: Request<Streaming<SshUploadArchiveRequest>>,
    ) -> Result<Response<BoxStream<SshUploadArchiveResponse>>, Status> {
        upload_archive::ssh_upload_archive(&self.0, req.into_inner()).await.map(Response::new)
    }
}

/// The three SSH response messages share one shape.
trait SshResponse: Default + Send + 'static {
    fn output(o: Output) -> Self;
    fn exit(value: i32) -> Self;
}

macro_rules! ssh_response {
    ($t:ty) => {
        impl SshResponse for $t {
            fn output(o: Output) -> Self {
                match o {
                    Output::Stdout(stdout) => Self { stdout, ..Default::default() },
                    Output::Stderr(stderr) => Self { stderr, ..Default::default() },
                }
            }
            fn exit(value: i32) -> Self {
                Self { exit_status: Some(ExitStatus { value }), ..Default::default() }
            }
        }
    };
}
ssh_response!(SshUploadPackResponse);
ssh_response!(SshReceivePackResponse);
ssh_response!(SshUploadArchiveResponse);

/// Pumps the rest of the client's stream into `child` and its output back, ending with the exit status.
fn pump<Req, Resp>(
    child: Running,
    rest: Streaming<Req>,
    stdin: fn(Req) -> bytes::Bytes,
    mut opts: Options,
    always_send_exit: bool,
) -> BoxStream<Resp>
where
    Req: Send + 'static,
    Resp: SshResponse,
{
    opts.forward_stderr = true;
    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let input = rest.map(move |r| r.map(stdin));
        match streamio::run_duplex(child, input, opts, &tx, Resp::output).await {
            Ok(done) => {
                if done.negotiation_timed_out {
                    tracing::warn!("negotiation timed out; git killed");
                }
                if always_send_exit || !done.exit.success() {
                    let _ = tx.send(Ok(Resp::exit(done.exit_status_value()))).await;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    out
}

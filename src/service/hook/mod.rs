//! HookService: git's hooks, called by `rgitaly-hooks` on the daemon's internal socket. The handlers read
//! the request, check its payload (signed by this daemon, for this repository) and hand the work to
//! [`crate::hook`]; a hook's output streams back as it is written, and its verdict is the final
//! `exit_status` on an OK call (a refusal is git's business, not a failed call), as upstream.

mod post_receive;
mod pre_receive;
mod reference_transaction;
mod update;

use std::future::Future;

use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::hook::{Chunk, HookError, Out, PayloadError};
use crate::proto::gitaly::hook_service_server::HookService;
use crate::proto::gitaly::*;

pub struct HookSvc(pub Ctx);

#[tonic::async_trait]
impl HookService for HookSvc {
    async fn pre_receive_hook(
        &self,
        req: Request<Streaming<PreReceiveHookRequest>>,
    ) -> Result<Response<BoxStream<PreReceiveHookResponse>>, Status> {
        pre_receive::pre_receive_hook(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn post_receive_hook(
        &self,
        req: Request<Streaming<PostReceiveHookRequest>>,
    ) -> Result<Response<BoxStream<PostReceiveHookResponse>>, Status> {
        post_receive::post_receive_hook(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn update_hook(
        &self,
        req: Request<UpdateHookRequest>,
    ) -> Result<Response<BoxStream<UpdateHookResponse>>, Status> {
        update::update_hook(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn reference_transaction_hook(
        &self,
        req: Request<Streaming<ReferenceTransactionHookRequest>>,
    ) -> Result<Response<BoxStream<ReferenceTransactionHookResponse>>, Status> {
        reference_transaction::reference_transaction_hook(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn pack_objects_hook(
        &self,
        _req: Request<Streaming<PackObjectsHookRequest>>,
    ) -> Result<Response<BoxStream<PackObjectsHookResponse>>, Status> {
        // rgitaly never installs the pack-objects hook (there is no pack-objects cache yet).
        Err(Status::unimplemented("PackObjectsHook is not implemented"))
    }
}

/// A hook's ref updates are a few lines per ref; this is far beyond any real push (a million refs).
const MAX_STDIN: usize = 128 << 20;

/// Reads the rest of a client stream's `stdin` fields, after the first message's.
async fn read_stdin<T>(
    first: &[u8],
    stream: &mut Streaming<T>,
    stdin: fn(T) -> bytes::Bytes,
) -> Result<Vec<u8>, Status> {
    let mut all = first.to_vec();
    while let Some(msg) = stream.message().await? {
        let data = stdin(msg);
        if all.len() + data.len() > MAX_STDIN {
            return Err(Status::resource_exhausted("hook stdin too large"));
        }
        all.extend_from_slice(&data);
    }
    Ok(all)
}

/// What a pre-receive, update or post-receive call acts on: its payload (signed by this daemon, for the
/// call's repository, asking for `hook`), that repository as signed (with gl_repository), and its path.
pub(crate) fn checked(
    ctx: &Ctx,
    env: &[String],
    repository: Option<&Repository>,
    hook: u32,
) -> Result<(crate::hook::Payload, Repository, std::path::PathBuf), Status> {
    let Some(repository) = repository else {
        return Err(Status::invalid_argument("repository is empty"));
    };
    let (payload, repo) = ctx.hooks.verify(env, Some(repository), hook).map_err(payload_status)?;
    let path = ctx.locator.repo_path(Some(repository))?;
    Ok((payload, repo, path))
}

fn payload_status(e: PayloadError) -> Status {
    match e {
        PayloadError::Forged => Status::permission_denied(e.to_string()),
        _ => Status::invalid_argument(format!("extracting hooks payload: {e}")),
    }
}

/// The four hook responses share one shape.
trait HookResponse: Default + Send + 'static {
    fn chunk(c: Chunk) -> Self;
    fn exit(value: i32, stderr: String) -> Self;
    /// A refusal that is not a custom hook's own exit: exit 1 with the message on stderr.
    fn failure(message: String) -> Result<Self, Status> {
        Ok(Self::exit(1, message))
    }
}

macro_rules! hook_response {
    ($t:ty) => {
        impl HookResponse for $t {
            fn chunk(c: Chunk) -> Self {
                match c {
                    Chunk::Stdout(d) => Self { stdout: d.to_vec(), ..Default::default() },
                    Chunk::Stderr(d) => Self { stderr: d.to_vec(), ..Default::default() },
                }
            }
            fn exit(value: i32, stderr: String) -> Self {
                Self { exit_status: Some(ExitStatus { value }), stderr: stderr.into_bytes(), ..Default::default() }
            }
        }
    };
}
hook_response!(PreReceiveHookResponse);
hook_response!(PostReceiveHookResponse);
// Upstream's UpdateHook fails the call instead (rgitaly-hooks then says "error executing git hook").
impl HookResponse for UpdateHookResponse {
    fn chunk(c: Chunk) -> Self {
        match c {
            Chunk::Stdout(d) => Self { stdout: d.to_vec(), ..Default::default() },
            Chunk::Stderr(d) => Self { stderr: d.to_vec(), ..Default::default() },
        }
    }
    fn exit(value: i32, stderr: String) -> Self {
        Self { exit_status: Some(ExitStatus { value }), stderr: stderr.into_bytes(), ..Default::default() }
    }
    fn failure(message: String) -> Result<Self, Status> {
        Err(Status::internal(message))
    }
}
hook_response!(ReferenceTransactionHookResponse);

/// Whether a hook is cancelled when its caller goes away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhenGone {
    /// Before the refs move: nothing is lost by stopping (custom hooks get SIGTERM, with their group).
    Cancel,
    /// After they moved (post-receive): GitLab must still hear of the push, so the hook runs to its end.
    Finish,
}

/// Runs a hook, streaming its output as it comes and ending with its exit status.
fn respond<R, F, Fut>(when_gone: WhenGone, run: F) -> BoxStream<R>
where
    R: HookResponse,
    F: FnOnce(Out) -> Fut,
    Fut: Future<Output = Result<(), HookError>> + Send + 'static,
{
    let (out, mut chunks) = mpsc::channel::<Chunk>(16);
    let (tx, rx) = mpsc::channel::<Result<R, Status>>(16);
    let work = run(out);
    tokio::spawn(async move {
        let forward = {
            let tx = tx.clone();
            async move {
                while let Some(c) = chunks.recv().await {
                    let _ = tx.send(Ok(R::chunk(c))).await;
                }
            }
        };
        let both = async { tokio::join!(work, forward).0 };
        let result = match when_gone {
            WhenGone::Finish => both.await,
            WhenGone::Cancel => tokio::select! {
                r = both => r,
                _ = tx.closed() => return,
            },
        };
        let last = match result {
            Ok(()) => Ok(R::exit(0, String::new())),
            Err(HookError::Exit(code)) => Ok(R::exit(code, String::new())),
            Err(HookError::Failed(message)) => R::failure(message),
        };
        let _ = tx.send(last).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

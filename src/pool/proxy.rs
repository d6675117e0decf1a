//! Forwards OperationService, WikiService and ConflictsService calls to the worker pool, as a tower layer in front of the
//! daemon's routes.
//!
//! Message bytes pass through untouched, in both directions and for every streaming shape; only the first
//! request message is decoded, to find the repository. The daemon resolves it with the locator and hands
//! the worker absolute paths in metadata: workers never see, or trust, a client path. Client metadata
//! (correlation id, deadline) travels along; cancellation propagates because the worker stream is dropped
//! with the client's.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;
use tower::{Layer, Service, ServiceExt};

use super::{Lease, Pool};
use crate::context::Ctx;
use crate::layers::call::{Call, Resolved};
use crate::layers::peek::{self, Replay};
use crate::metrics;
use crate::proto::gitaly::{
    OperationBranchUpdate, Repository, UserCommitFilesRequest, UserMergeBranchRequest, UserMergeBranchResponse,
};
use crate::registry::{Method, Op};

/// Metadata the daemon sets for workers; anything a client sends under these names is dropped.
pub const REPO_PATH: &str = "x-rgitaly-repo-path-bin";
pub const STORAGE_PATH: &str = "x-rgitaly-storage-path-bin";
pub const START_REPO_PATH: &str = "x-rgitaly-start-repo-path-bin";
/// The hooks payload for a write (see `crate::hook`): signed here, for the call's repository and user, so
/// the worker can run the hook chain through the daemon's HookService.
pub const HOOKS_PAYLOAD: &str = "x-rgitaly-hooks-payload";
const RESERVED_PREFIX: &str = "x-rgitaly-";

/// Attempts for a replayable call whose worker is unreachable, and the pause between them.
const MAX_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The services whose calls go to workers.
pub const PROXIED_SERVICES: &[&str] = &["gitaly.OperationService", "gitaly.WikiService", "gitaly.ConflictsService"];

#[derive(Clone)]
pub struct PoolProxyLayer {
    pool: Pool,
    ctx: Ctx,
}

impl PoolProxyLayer {
    pub fn new(pool: Pool, ctx: Ctx) -> Self {
        PoolProxyLayer { pool, ctx }
    }
}

impl<S> Layer<S> for PoolProxyLayer {
    type Service = PoolProxy<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PoolProxy { inner, pool: self.pool.clone(), ctx: self.ctx.clone() }
    }
}

#[derive(Clone)]
pub struct PoolProxy<S> {
    inner: S,
    pool: Pool,
    ctx: Ctx,
}

impl<S> Service<Request<Body>> for PoolProxy<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let method = Call::of(&req);
        if !PROXIED_SERVICES.contains(&method.service) {
            // Keep the readied service for this call, as tower requires.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move { inner.call(req).await });
        }
        let (pool, ctx) = (self.pool.clone(), self.ctx.clone());
        Box::pin(async move { Ok(forward(pool, ctx, method, req).await.unwrap_or_else(|status| status.into_http())) })
    }
}

/// The service whose writes to one repository the worker overlaps when they reach the same worker.
const WIKI_SERVICE: &str = "gitaly.WikiService";

async fn forward(pool: Pool, ctx: Ctx, method: &'static Method, req: Request<Body>) -> Result<Response<Body>, Status> {
    let (mut parts, mut body) = req.into_parts();
    // The resolve layer read the first message and resolved its repositories; the body still starts with
    // that message, which is kept to be sent again to another worker.
    let resolved = parts.extensions.remove::<Resolved>();
    let (target, additional) = match resolved {
        Some(Resolved::Read { target, additional }) => (target, additional),
        Some(Resolved::Unreadable(status)) => return Err(status),
        None => return Err(Status::internal("proxied call without a resolved repository")),
    };
    let peeked = peek::first_message(&mut body).await.map_err(|(status, _)| status)?;
    let first_msg = peeked.message();
    let first = peeked.bytes;
    let target = target.ok_or(crate::locator::LocateError::MissingRepository)?;
    let repo_path = target.path?;
    let storage_path = ctx.locator.storage_path(&target.repository.storage_name)?.to_path_buf();
    // The repository a write starts from (upstream leaves it unannotated): the registry's additional
    // repository where there is one, else UserCommitFiles' start repository. One that is the target itself
    // needs no second path.
    let start = additional.map(|a| a.repository).or_else(|| start_repository(method, &first_msg));
    let start_path = match start.filter(|s| *s != target.repository) {
        Some(s) => Some(ctx.locator.resolve(&s)?),
        None => None,
    };

    let reserved: Vec<http::HeaderName> =
        parts.headers.keys().filter(|k| k.as_str().starts_with(RESERVED_PREFIX)).cloned().collect();
    for k in reserved {
        parts.headers.remove(k);
    }
    let mut md = MetadataMap::from_headers(std::mem::take(&mut parts.headers));
    let bin = |p: &std::path::Path| MetadataValue::from_bytes(p.as_os_str().as_encoded_bytes());
    md.insert_bin(REPO_PATH, bin(&repo_path));
    md.insert_bin(STORAGE_PATH, bin(&storage_path));
    if let Some(p) = &start_path {
        md.insert_bin(START_REPO_PATH, bin(p));
    }
    // A write made for a user runs the hook chain, as GitLab's web UI would through upstream ("web").
    if method.op == crate::registry::Op::Mutator {
        let user = match method.user_in(&first_msg) {
            Ok(Some(user)) => Some((user.gl_username, user.gl_id)),
            _ => wiki_user(method, &first_msg),
        };
        if let Some((username, userid)) = user {
            let hook_user = crate::hook::User { username, userid, protocol: "web".into() };
            let payload =
                ctx.hooks.payload(&target.repository, Some(hook_user), crate::hook::payload::hooks::RECEIVE_PACK);
            if let Ok(v) = payload.parse() {
                md.insert(HOOKS_PAYLOAD, v);
            }
        }
    }
    parts.headers = md.into_headers();

    // UserMergeBranch must never report failure for a merge that landed: watch its exchange.
    let merge = if method.full == "/gitaly.OperationService/UserMergeBranch" {
        let req = UserMergeBranchRequest::decode(first_msg.clone())
            .map_err(|e| Status::invalid_argument(format!("decode request: {e}")))?;
        Some(MergeWatch {
            ctx: ctx.clone(),
            repo_path: repo_path.clone(),
            branch_ref: format!("refs/heads/{}", String::from_utf8_lossy(&req.branch)),
            apply_sent: Arc::new(AtomicBool::new(false)),
            announced: None,
            frames: Frames::default(),
        })
    } else {
        None
    };

    // When the whole request is in hand (unary and server-streaming calls: one request message), it can be
    // sent again: to another worker when this one cannot be reached, and — for a call that only reads —
    // when it died before answering. A write that may have reached a dead worker is never repeated blindly.
    let whole = !method.client_streaming;
    if whole {
        while let Some(frame) = body.frame().await {
            if frame?.into_data().is_ok_and(|d| !d.is_empty()) {
                return Err(Status::invalid_argument("more than one request message for a unary call"));
            }
        }
    }
    // A call that may write: the refs as they were before any worker saw it, so that if the worker dies
    // without answering, the daemon can tell "nothing was written" from "outcome unknown".
    let lost = match method.op {
        Op::Accessor => None,
        // Writes objects only, never a ref: nothing a dead worker can have half done.
        _ if method.full == "/gitaly.OperationService/UserSquash" => None,
        _ => {
            let refs = written_refs(method, &first_msg).unwrap_or_default();
            let check = LostCheck { ctx: ctx.clone(), repo_path: repo_path.clone(), refs, before: None };
            let before = check.state().await;
            Some(Arc::new(LostCheck { before, ..check }))
        }
    };

    let mut body = Some(body);
    let mut attempt = 0;
    let mut tried: Vec<i32> = Vec::new();
    let (lease, result) = loop {
        attempt += 1;
        // A wiki's writes go to one worker: there they overlap (see the worker's `wiki::commit_change`).
        let lease = match method.op {
            Op::Mutator if method.service == WIKI_SERVICE => pool.lease_writing(&repo_path, &tried),
            _ => pool.lease_excluding(&tried),
        };
        let lease = lease.ok_or_else(|| Status::unavailable("no worker available"))?;
        // The scan sees every request message, the first (which never says apply) included.
        let apply_scan = merge.as_ref().map(|m| (Frames::default(), m.apply_sent.clone()));
        let rest = if whole { Body::empty() } else { body.take().unwrap_or_default() };
        let replay = Replay { first: Some(first.clone()), rest };
        let request_body = Body::new(Prefixed { replay, apply_scan });
        let mut request = Request::new(request_body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        let mut channel = lease.worker.channel.clone();
        // Not ready: the request was never sent, so any call may go elsewhere.
        let (result, sent) = match channel.ready().await {
            Ok(ch) => (ch.call(request).await, true),
            Err(e) => (Err(e), false),
        };
        let mut retry = whole && (!sent || method.op == Op::Accessor);
        if let (Err(e), true, Some(check)) = (&result, sent, lost.as_ref()) {
            // A write reached a worker that failed before answering: repeat it only once it is proven that
            // nothing was written; else say what is known.
            let unchanged = check.unchanged(&lease.worker).await;
            if !(unchanged && whole && attempt < MAX_ATTEMPTS) {
                let status = check.status(&lease.worker.name, unchanged, &e.to_string());
                metrics::WORKER_CALLS_LOST
                    .with_label_values(&[method.name, if unchanged { "not_applied" } else { "unknown" }])
                    .inc();
                record(method, status.code());
                return Err(status);
            }
            metrics::WORKER_CALLS_LOST.with_label_values(&[method.name, "retried"]).inc();
            retry = true;
        }
        if result.is_err() && retry && attempt < MAX_ATTEMPTS {
            tracing::warn!(worker = %lease.worker.name, attempt, "worker unreachable; retrying on another");
            tried.push(lease.worker.pid);
            drop(lease);
            // Give the supervisor a moment to notice the exit and promote the standby.
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        break (lease, result);
    };
    match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut watched = Watched {
                inner: body,
                lease: Some(lease),
                method,
                code: None,
                ended: false,
                merge,
                lost,
                recovery: None,
            };
            watched.observe(&parts.headers);
            Ok(Response::from_parts(parts, Body::new(watched)))
        }
        Err(e) => {
            let status = Status::unavailable(format!("worker {}: {e}", lease.worker.name));
            record(method, status.code());
            Err(status)
        }
    }
}

/// What the daemon needs to settle a write whose worker died before answering.
struct LostCheck {
    ctx: Ctx,
    repo_path: std::path::PathBuf,
    /// The refs the call may move (see `written_refs`); empty: all of them.
    refs: Vec<String>,
    /// Their state before the call; None when they could not be read, so nothing can be proven.
    before: Option<RefsState>,
}

/// What the refs a write may move looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RefsState {
    /// The one ref (see `written_refs`), read in-process: what it points at, or nothing.
    One(Option<gix::ObjectId>),
    /// A digest of every ref (`git for-each-ref`), for a write that may move any.
    All([u8; 32]),
}

impl LostCheck {
    /// True when it is proven that the call changed no ref: the worker and every process it left are gone,
    /// and the refs are as they were before the call.
    async fn unchanged(&self, worker: &super::Worker) -> bool {
        let Some(before) = &self.before else { return false };
        if !worker.settle().await {
            return false;
        }
        self.state().await.as_ref() == Some(before)
    }

    /// The refs' state now. One ref is read in-process (a point lookup, no git process: this runs before
    /// every write the pool serves); every ref through `git for-each-ref`.
    async fn state(&self) -> Option<RefsState> {
        if let [one] = self.refs.as_slice() {
            let handle = self.ctx.repos.open(&self.repo_path).ok()?;
            return crate::odb::refs::target(&handle, one.as_bytes()).ok().map(RefsState::One);
        }
        let digest = crate::git::repo::Repo::new(&self.ctx.git, &self.repo_path).refs_digest(&self.refs).await;
        digest.ok().map(RefsState::All)
    }

    fn status(&self, worker: &str, unchanged: bool, error: &str) -> Status {
        if unchanged {
            Status::unavailable(format!(
                "worker {worker} died before the change was made; nothing was written: {error}"
            ))
        } else {
            Status::unavailable(format!("worker {worker} died during the call; the outcome is unknown: {error}"))
        }
    }
}

/// The one ref a worker write may move, from its first request message, so that a write whose worker died
/// can be proven not applied while other writes to the same repository go on; None (compare every ref)
/// for a write not listed.
fn written_refs(method: &Method, msg: &[u8]) -> Option<Vec<String>> {
    use crate::proto::gitaly::user_commit_files_request::UserCommitFilesRequestPayload as P;
    use crate::proto::gitaly::*;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let branch = |b: &[u8]| format!("refs/heads/{}", text(b));
    let tag = |b: &[u8]| format!("refs/tags/{}", text(b));
    let reference = match method.name {
        "UserCreateBranch" => branch(&UserCreateBranchRequest::decode(msg).ok()?.branch_name),
        "UserUpdateBranch" => branch(&UserUpdateBranchRequest::decode(msg).ok()?.branch_name),
        "UserDeleteBranch" => branch(&UserDeleteBranchRequest::decode(msg).ok()?.branch_name),
        "UserCreateTag" => tag(&UserCreateTagRequest::decode(msg).ok()?.tag_name),
        "UserDeleteTag" => tag(&UserDeleteTagRequest::decode(msg).ok()?.tag_name),
        "UserFFBranch" => branch(&UserFfBranchRequest::decode(msg).ok()?.branch),
        "UserMergeBranch" => branch(&UserMergeBranchRequest::decode(msg).ok()?.branch),
        "UserMergeToRef" => text(&UserMergeToRefRequest::decode(msg).ok()?.target_ref),
        "UserCherryPick" => branch(&UserCherryPickRequest::decode(msg).ok()?.branch_name),
        "UserRevert" => branch(&UserRevertRequest::decode(msg).ok()?.branch_name),
        "UserUpdateSubmodule" => branch(&UserUpdateSubmoduleRequest::decode(msg).ok()?.branch),
        "UserRebaseConfirmable" => {
            use crate::proto::gitaly::user_rebase_confirmable_request::UserRebaseConfirmableRequestPayload as R;
            match UserRebaseConfirmableRequest::decode(msg).ok()?.user_rebase_confirmable_request_payload? {
                R::Header(h) => branch(&h.branch),
                _ => return None,
            }
        }
        "UserApplyPatch" => match UserApplyPatchRequest::decode(msg).ok()?.user_apply_patch_request_payload? {
            crate::proto::gitaly::user_apply_patch_request::UserApplyPatchRequestPayload::Header(h) => {
                branch(&h.target_branch)
            }
            _ => return None,
        },
        "UserCommitFiles" => match UserCommitFilesRequest::decode(msg).ok()?.user_commit_files_request_payload? {
            P::Header(h) => branch(&h.branch_name),
            P::Action(_) => return None,
        },
        // gollum's branch (see the worker's wiki module).
        "WikiWritePage" | "WikiUpdatePage" | "WikiDeletePage" => "refs/heads/master".to_string(),
        "ResolveConflicts" => {
            use crate::proto::gitaly::resolve_conflicts_request::ResolveConflictsRequestPayload as R;
            match ResolveConflictsRequest::decode(msg).ok()?.resolve_conflicts_request_payload? {
                R::Header(h) => branch(&h.source_branch),
                R::FilesJson(_) => return None,
            }
        }
        _ => return None,
    };
    // An empty name is refused by the worker before it writes; a name that is no plain ref name (an option,
    // a NUL) cannot be compared on its own.
    if reference.ends_with('/') || reference.is_empty() || reference.starts_with('-') || reference.contains('\0') {
        return None;
    }
    Some(vec![reference])
}

/// A wiki write's user (username, GitLab id), from its commit details: upstream commits wiki pages as
/// the user `user-<user_id>` through the same hook chain as other writes.
fn wiki_user(method: &Method, msg: &[u8]) -> Option<(String, String)> {
    use crate::proto::gitaly::*;
    let details = match method.full {
        "/gitaly.WikiService/WikiWritePage" => WikiWritePageRequest::decode(msg).ok()?.commit_details,
        "/gitaly.WikiService/WikiUpdatePage" => WikiUpdatePageRequest::decode(msg).ok()?.commit_details,
        "/gitaly.WikiService/WikiDeletePage" => WikiDeletePageRequest::decode(msg).ok()?.commit_details,
        _ => None,
    }?;
    Some((String::from_utf8_lossy(&details.user_name).into_owned(), format!("user-{}", details.user_id)))
}

/// The repository a write starts from: UserCommitFiles' (in its header), UserCherryPick's and UserRevert's,
/// UserRebaseConfirmable's remote repository, ResolveConflicts' target repository.
fn start_repository(method: &Method, msg: &[u8]) -> Option<Repository> {
    use crate::proto::gitaly::user_commit_files_request::UserCommitFilesRequestPayload;
    match method.full {
        "/gitaly.OperationService/UserCommitFiles" => {
            match UserCommitFilesRequest::decode(msg).ok()?.user_commit_files_request_payload? {
                UserCommitFilesRequestPayload::Header(h) => h.start_repository,
                _ => None,
            }
        }
        "/gitaly.OperationService/UserCherryPick" => {
            crate::proto::gitaly::UserCherryPickRequest::decode(msg).ok()?.start_repository
        }
        "/gitaly.OperationService/UserRevert" => {
            crate::proto::gitaly::UserRevertRequest::decode(msg).ok()?.start_repository
        }
        "/gitaly.OperationService/UserRebaseConfirmable" => {
            use crate::proto::gitaly::user_rebase_confirmable_request::UserRebaseConfirmableRequestPayload as R;
            match crate::proto::gitaly::UserRebaseConfirmableRequest::decode(msg)
                .ok()?
                .user_rebase_confirmable_request_payload?
            {
                R::Header(h) => h.remote_repository,
                _ => None,
            }
        }
        "/gitaly.ConflictsService/ResolveConflicts" => {
            use crate::proto::gitaly::resolve_conflicts_request::ResolveConflictsRequestPayload as R;
            match crate::proto::gitaly::ResolveConflictsRequest::decode(msg).ok()?.resolve_conflicts_request_payload? {
                R::Header(h) => h.target_repository,
                R::FilesJson(_) => None,
            }
        }
        _ => None,
    }
}

/// Splits a byte stream into uncompressed gRPC messages.
#[derive(Default)]
struct Frames {
    buf: BytesMut,
}

impl Frames {
    fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while self.buf.len() >= 5 {
            let len = (&self.buf[1..5]).get_u32() as usize;
            if self.buf.len() < 5 + len {
                break;
            }
            let frame = self.buf.split_to(5 + len).freeze();
            out.push(frame.slice(5..));
        }
        out
    }
}

/// What the proxy knows about a UserMergeBranch exchange, to settle it if the worker dies mid-apply.
struct MergeWatch {
    ctx: Ctx,
    repo_path: std::path::PathBuf,
    branch_ref: String,
    /// The client has sent its second message with `apply = true`.
    apply_sent: Arc<AtomicBool>,
    /// The merge commit the worker announced.
    announced: Option<String>,
    frames: Frames,
}

/// Sets `apply` when the UserMergeBranch request bytes in `data` complete a message that says apply.
fn note_apply(frames: &mut Frames, data: &[u8], apply: &AtomicBool) {
    for msg in frames.push(data) {
        if UserMergeBranchRequest::decode(msg).is_ok_and(|m| m.apply) {
            apply.store(true, Ordering::SeqCst);
        }
    }
}

/// The request body with its first message put back in front, watched for UserMergeBranch's `apply`.
struct Prefixed {
    replay: Replay,
    /// For UserMergeBranch: notes when the client says `apply`.
    apply_scan: Option<(Frames, Arc<AtomicBool>)>,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.replay).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((frames, apply))) = (&polled, this.apply_scan.as_mut()) {
            if let Some(data) = frame.data_ref() {
                note_apply(frames, data, apply);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_end_stream()
    }
}

/// The worker's response body: holds the lease until the call ends, and counts the outcome.
struct Watched {
    inner: Body,
    lease: Option<Lease>,
    method: &'static Method,
    code: Option<tonic::Code>,
    /// The worker failed mid-call and we ended the stream ourselves.
    ended: bool,
    merge: Option<MergeWatch>,
    /// For a call that may write: how to settle it if the worker dies mid-call.
    lost: Option<Arc<LostCheck>>,
    /// Settling a call whose worker died mid-call.
    recovery: Option<Recovery>,
}

/// How a call that lost its worker ends: an answer (a recovered merge), then its status.
type Settled = (Option<Bytes>, Status);

enum Recovery {
    Checking(Pin<Box<dyn std::future::Future<Output = Settled> + Send>>),
    Trailers(Status),
}

impl Watched {
    fn observe(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = crate::layers::grpc_status(headers) {
            self.code = Some(code);
        }
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match this.recovery.take() {
            Some(Recovery::Checking(mut check)) => match check.as_mut().poll(cx) {
                Poll::Pending => {
                    this.recovery = Some(Recovery::Checking(check));
                    return Poll::Pending;
                }
                Poll::Ready((answer, status)) => {
                    this.recovery = Some(Recovery::Trailers(status));
                    if let Some(answer) = answer {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(answer))));
                    }
                    return Pin::new(this).poll_frame(cx);
                }
            },
            Some(Recovery::Trailers(status)) => {
                this.code = Some(status.code());
                this.ended = true;
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(status_trailers(status)))));
            }
            None => {}
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    this.observe(t);
                }
                if let (Some(m), Some(data)) = (this.merge.as_mut(), frame.data_ref()) {
                    for msg in m.frames.push(data) {
                        if let Ok(r) = UserMergeBranchResponse::decode(msg) {
                            if !r.commit_id.is_empty() && m.announced.is_none() {
                                m.announced = Some(r.commit_id);
                            }
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let worker = this.lease.as_ref().map(|l| l.worker.clone());
                let name = worker.as_ref().map(|w| w.name.clone()).unwrap_or_default();
                let method = this.method.name;
                // A merge the client asked to apply may have landed before the worker died: check the branch.
                if let Some(m) = this.merge.as_ref() {
                    if let (Some(commit), true) = (m.announced.clone(), m.apply_sent.load(Ordering::SeqCst)) {
                        let (ctx, path, reference) = (m.ctx.clone(), m.repo_path.clone(), m.branch_ref.clone());
                        let check = async move {
                            if let Some(w) = &worker {
                                w.settle().await;
                            }
                            let repo = crate::git::repo::Repo::new(&ctx.git, &path);
                            if matches!(repo.resolve(&reference).await, Ok(Some(oid)) if oid == commit) {
                                // The merge landed: answer as the worker would have.
                                tracing::warn!(commit = %commit, "worker died after applying a merge; reporting the merge");
                                metrics::WORKER_CALLS_LOST.with_label_values(&[method, "recovered"]).inc();
                                let resp = UserMergeBranchResponse {
                                    branch_update: Some(OperationBranchUpdate {
                                        commit_id: commit,
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                };
                                return (Some(grpc_frame(&resp)), Status::ok(""));
                            }
                            metrics::WORKER_CALLS_LOST.with_label_values(&[method, "not_applied"]).inc();
                            (None, Status::unavailable("worker died during merge apply; branch not updated"))
                        };
                        this.recovery = Some(Recovery::Checking(Box::pin(check)));
                        return Pin::new(this).poll_frame(cx);
                    }
                }
                // A write: settle what it did before saying so.
                if let (Some(lost), Some(w)) = (this.lost.clone(), worker) {
                    let error = e.message().to_string();
                    let check = async move {
                        let unchanged = lost.unchanged(&w).await;
                        let outcome = if unchanged { "not_applied" } else { "unknown" };
                        metrics::WORKER_CALLS_LOST.with_label_values(&[method, outcome]).inc();
                        (None, lost.status(&w.name, unchanged, &error))
                    };
                    this.recovery = Some(Recovery::Checking(Box::pin(check)));
                    return Pin::new(this).poll_frame(cx);
                }
                // The worker went away mid-call: end the call with Unavailable trailers, as a gRPC status.
                let status = Status::unavailable(format!("worker {name}: {}", e.message()));
                this.code = Some(status.code());
                this.ended = true;
                Poll::Ready(Some(Ok(http_body::Frame::trailers(status_trailers(status)))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        record(self.method, self.code.unwrap_or(tonic::Code::Cancelled));
        self.lease.take();
    }
}

fn status_trailers(status: Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    }
    trailers
}

/// One uncompressed gRPC message frame.
fn grpc_frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}

fn record(method: &Method, code: tonic::Code) {
    metrics::GRPC_CLIENT_HANDLED
        .with_label_values(&[method.grpc_type(), method.service, method.name, &format!("{code:?}")])
        .inc();
}

//! OperationService as the worker serves it: one file per RPC (or family), all ref updates compare-and-swap
//! through the shared command layer, and those made for a user through the hook chain ([`update`]): a
//! refusal by GitLab or a custom hook is the response's `pre_receive_error`, as upstream answers it.

mod apply_patch;
mod branches;
mod cherry_pick;
mod commit_files;
pub mod conflicts;
mod ff_branch;
mod merge_branch;
mod merge_to_ref;
mod rebase;
mod squash;
mod submodules;
mod tags;
pub mod wiki;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use rgitaly::git::repo::Repo;
use rgitaly::git::GitCmdFactory;
use rgitaly::pool::proxy::{HOOKS_PAYLOAD, REPO_PATH, START_REPO_PATH, STORAGE_PATH};
use rgitaly::proto::gitaly::operation_service_server::OperationService;
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

pub struct Operations {
    git: Arc<GitCmdFactory>,
}

impl Operations {
    pub fn new(git: Arc<GitCmdFactory>) -> Self {
        Operations { git }
    }
}

/// The repository a call works on, as the daemon resolved it.
#[derive(Clone)]
pub struct Target {
    pub repo: PathBuf,
    #[allow(dead_code)]
    pub storage: PathBuf,
    pub start_repo: Option<PathBuf>,
    /// The daemon-signed hooks payload for the call's repository and user.
    pub hooks: Option<String>,
}

/// What an update through the hooks came to.
pub enum Hooked {
    Done,
    /// A hook refused, with its message (for `pre_receive_error`).
    Refused(String),
    /// The compare-and-swap failed: the ref moved meanwhile.
    Raced,
}

/// Moves `reference` from `old` to `new` through the hook chain (see `crate::hooks`).
pub async fn update(t: &Target, repo: &Repo<'_>, reference: &str, new: &str, old: &str) -> Result<Hooked, Status> {
    let ready = async { Ok(crate::hooks::Swap::AsPlanned) };
    finish(update_before_post_receive(t, repo, reference, (new, old), &[], ready).await?).await
}

/// Runs the post-receive of an update [`update_before_post_receive`] made: [`update`]'s answer.
pub async fn finish(updated: (Hooked, Option<crate::hooks::PostReceive>)) -> Result<Hooked, Status> {
    match updated {
        (Hooked::Done, post) => post_receive(post).await,
        (other, _) => Ok(other),
    }
}

/// As [`update`], with push options for the hooks, what to wait for before the ref moves and where it
/// moves (`ready`: the new objects' syncs, see `crate::hooks`), and the post-receive hook of a done update
/// left to the caller, to run once it has let go of what the next write waits for (wiki writes).
pub async fn update_before_post_receive(
    t: &Target,
    repo: &Repo<'_>,
    reference: &str,
    new_old: (&str, &str),
    push_options: &[String],
    ready: impl std::future::Future<Output = Result<crate::hooks::Swap, Status>>,
) -> Result<(Hooked, Option<crate::hooks::PostReceive>), Status> {
    match crate::hooks::update_with_hooks(t.hooks.as_deref(), repo, reference, new_old, push_options, ready).await {
        Ok(post) => Ok((Hooked::Done, post)),
        Err(e) => hooked(e).map(|h| (h, None)),
    }
}

/// What a post-receive run by [`update_before_post_receive`]'s caller comes to, as [`update`] answers it.
pub async fn post_receive(post: Option<crate::hooks::PostReceive>) -> Result<Hooked, Status> {
    match post {
        None => Ok(Hooked::Done),
        Some(p) => p.run().await.map_or_else(hooked, |()| Ok(Hooked::Done)),
    }
}

/// A hook chain's failure as the write RPCs answer it.
fn hooked(e: crate::hooks::UpdateError) -> Result<Hooked, Status> {
    use crate::hooks::UpdateError;
    match e {
        UpdateError::PreReceive(m) => Ok(Hooked::Refused(m)),
        UpdateError::UpdateRef(_) => Ok(Hooked::Raced),
        UpdateError::Other(s) => Err(s),
    }
}

/// Makes start commit `oid` (found in the call's start repository) present in the target: fetched from
/// the start repository when only it has the commit (UserCherryPick, UserRevert, UserRebaseConfirmable).
pub async fn start_commit_here(git: &GitCmdFactory, t: &Target, oid: &str) -> Result<(), Status> {
    let Some(start) = &t.start_repo else { return Ok(()) };
    let here = crate::service::open(&t.repo)?;
    if rgitaly::odb::resolve_commit(&here, oid.as_bytes()).is_none() {
        Repo::new(git, &t.repo)
            .fetch_commit(start, oid)
            .await
            .map_err(|e| Status::internal(format!("fetch start: {e}")))?;
    }
    Ok(())
}

/// Upstream's answer to a lost compare-and-swap in most write RPCs.
pub fn could_not_update(reference: &str) -> Status {
    Status::failed_precondition(format!("Could not update {reference}. Please refresh and try again."))
}

/// Reads the daemon-resolved paths; a call without them did not come through the daemon and is refused.
pub fn target<T>(req: &Request<T>) -> Result<Target, Status> {
    let get = |key: &str| {
        req.metadata()
            .get_bin(key)
            .and_then(|v| v.to_bytes().ok())
            .map(|b| PathBuf::from(OsString::from_vec(b.to_vec())))
            .filter(|p| p.is_absolute())
    };
    let missing = || Status::failed_precondition("missing repository path from the rgitaly daemon");
    Ok(Target {
        repo: get(REPO_PATH).ok_or_else(missing)?,
        storage: get(STORAGE_PATH).ok_or_else(missing)?,
        start_repo: get(START_REPO_PATH),
        hooks: req.metadata().get(HOOKS_PAYLOAD).and_then(|v| v.to_str().ok()).map(str::to_string),
    })
}

/// The bytes a client streams after its first message (`data` of each message), appended to `buf` up to
/// `max` bytes; more is `InvalidArgument` "<what> larger than <max> bytes".
pub async fn gather<M>(
    stream: &mut Streaming<M>,
    mut buf: Vec<u8>,
    max: usize,
    what: &str,
    data: impl Fn(M) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, Status>
where
    M: Send + 'static,
    Streaming<M>: Send,
{
    while let Some(m) = stream.message().await? {
        let Some(chunk) = data(m) else { continue };
        if buf.len() + chunk.len() > max {
            return Err(Status::invalid_argument(format!("{what} larger than {max} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Seconds since the epoch from a request timestamp, or now.
pub fn unix_time(ts: Option<&prost_types::Timestamp>) -> Result<i64, Status> {
    match ts {
        Some(t) if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) => {
            Err(Status::invalid_argument(format!("invalid timestamp: {t:?}")))
        }
        Some(t) => Ok(t.seconds),
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fault injection for the daemon's tests: true when `RGITALY_FAILPOINT` names this point. With
/// `RGITALY_FAILPOINT_ONCE` naming a file, only the worker that removes that file fires, so one death is
/// injected across the pool.
pub fn failpoint(name: &str) -> bool {
    if !std::env::var("RGITALY_FAILPOINT").is_ok_and(|v| v == name) {
        return false;
    }
    match std::env::var_os("RGITALY_FAILPOINT_ONCE") {
        Some(file) => std::fs::remove_file(file).is_ok(),
        None => true,
    }
}

pub fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// This worker's repository handles, kept between calls as the daemon keeps its own (`odb::RepoCache`):
/// a handle opened per call re-read the repository's config and mapped its pack indexes again each time,
/// several times per write. Small, and closed after a few idle seconds, so an idle worker stays lean.
pub fn handles() -> &'static rgitaly::odb::RepoCache {
    static HANDLES: std::sync::OnceLock<rgitaly::odb::RepoCache> = std::sync::OnceLock::new();
    HANDLES.get_or_init(|| {
        rgitaly::odb::RepoCache::new(rgitaly::odb::Limits {
            max_bytes: 16 << 20,
            handle_bytes: 4 << 20,
            idle_timeout: std::time::Duration::from_secs(5),
            max_idle: 4,
        })
    })
}

/// A handle for the repository at `path` (a path the daemon resolved), from [`handles`].
pub fn open(path: &std::path::Path) -> Result<rgitaly::odb::Handle, Status> {
    handles().open(path).map_err(internal)
}

type Unary<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl OperationService for Operations {
    async fn user_create_branch(&self, r: Request<UserCreateBranchRequest>) -> Unary<UserCreateBranchResponse> {
        let t = target(&r)?;
        branches::create(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_update_branch(&self, r: Request<UserUpdateBranchRequest>) -> Unary<UserUpdateBranchResponse> {
        let t = target(&r)?;
        branches::update(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_delete_branch(&self, r: Request<UserDeleteBranchRequest>) -> Unary<UserDeleteBranchResponse> {
        let t = target(&r)?;
        branches::delete(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_create_tag(&self, r: Request<UserCreateTagRequest>) -> Unary<UserCreateTagResponse> {
        let t = target(&r)?;
        tags::create(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_delete_tag(&self, r: Request<UserDeleteTagRequest>) -> Unary<UserDeleteTagResponse> {
        let t = target(&r)?;
        tags::delete(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_ff_branch(&self, r: Request<UserFfBranchRequest>) -> Unary<UserFfBranchResponse> {
        let t = target(&r)?;
        ff_branch::ff_branch(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_merge_to_ref(&self, r: Request<UserMergeToRefRequest>) -> Unary<UserMergeToRefResponse> {
        let t = target(&r)?;
        merge_to_ref::merge_to_ref(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_merge_branch(
        &self,
        r: Request<Streaming<UserMergeBranchRequest>>,
    ) -> Unary<BoxStream<UserMergeBranchResponse>> {
        let t = target(&r)?;
        merge_branch::merge_branch(self.git.clone(), t, r.into_inner()).await.map(Response::new)
    }

    async fn user_apply_patch(&self, r: Request<Streaming<UserApplyPatchRequest>>) -> Unary<UserApplyPatchResponse> {
        let t = target(&r)?;
        apply_patch::apply_patch(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_rebase_confirmable(
        &self,
        r: Request<Streaming<UserRebaseConfirmableRequest>>,
    ) -> Unary<BoxStream<UserRebaseConfirmableResponse>> {
        let t = target(&r)?;
        rebase::rebase(self.git.clone(), t, r.into_inner()).await.map(Response::new)
    }

    async fn user_squash(&self, r: Request<UserSquashRequest>) -> Unary<UserSquashResponse> {
        let t = target(&r)?;
        squash::squash(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_update_submodule(
        &self,
        r: Request<UserUpdateSubmoduleRequest>,
    ) -> Unary<UserUpdateSubmoduleResponse> {
        let t = target(&r)?;
        submodules::update_submodule(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn user_cherry_pick(&self, r: Request<UserCherryPickRequest>) -> Unary<UserCherryPickResponse> {
        let t = target(&r)?;
        let r = r.into_inner();
        let p = cherry_pick::Pick {
            user: r.user,
            commit: r.commit,
            branch_name: r.branch_name,
            message: r.message,
            start_branch_name: r.start_branch_name,
            dry_run: r.dry_run,
            timestamp: r.timestamp,
        };
        let out = cherry_pick::pick(&self.git, &t, cherry_pick::Kind::CherryPick, p).await?;
        Ok(Response::new(UserCherryPickResponse {
            branch_update: out.branch_update,
            create_tree_error: out.create_tree_error,
            commit_error: out.commit_error,
            pre_receive_error: out.pre_receive_error,
            create_tree_error_code: out.create_tree_error_code,
        }))
    }

    async fn user_revert(&self, r: Request<UserRevertRequest>) -> Unary<UserRevertResponse> {
        let t = target(&r)?;
        let r = r.into_inner();
        let p = cherry_pick::Pick {
            user: r.user,
            commit: r.commit,
            branch_name: r.branch_name,
            message: r.message,
            start_branch_name: r.start_branch_name,
            dry_run: r.dry_run,
            timestamp: r.timestamp,
        };
        let out = cherry_pick::pick(&self.git, &t, cherry_pick::Kind::Revert, p).await?;
        Ok(Response::new(UserRevertResponse {
            branch_update: out.branch_update,
            create_tree_error: out.create_tree_error,
            commit_error: out.commit_error,
            pre_receive_error: out.pre_receive_error,
            create_tree_error_code: out.create_tree_error_code,
        }))
    }

    async fn user_commit_files(&self, r: Request<Streaming<UserCommitFilesRequest>>) -> Unary<UserCommitFilesResponse> {
        let t = target(&r)?;
        commit_files::commit_files(&self.git, &t, r.into_inner()).await.map(Response::new)
    }
}

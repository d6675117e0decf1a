//! CloneFromPool and CloneFromPoolInternal: a new member of an object pool, as upstream: a shared clone
//! of the pool, then the member's own refs fetched (from a URL, or from the source repository, which is
//! in the same storage), then its alternates made relative. A source whose objects are all in the pool
//! has its refs copied instead of fetched (see [`borrowable_refs`]). Built in the scratch area and moved
//! into place only when all of that worked.

use std::path::Path;

use tonic::Status;

use super::fetch_remote::{fetch_remote_at, remote_name};
use super::staging::Staging;
use crate::git::repo::Repo;
use crate::git::Sub;
use crate::proto::gitaly::*;
use crate::service::objectpool::pool::Pool;
use crate::service::Ctx;

/// Checks the target is free and the pool valid, and makes the staging directory.
fn prepare(
    ctx: &Ctx,
    repository: &Repository,
    pool: Option<&ObjectPool>,
) -> Result<(Staging, Pool, std::path::PathBuf), Status> {
    let target = ctx
        .locator
        .target_path(Some(repository))
        .map_err(|e| Status::internal(format!("getting target repository path: {e}")))?;
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(Status::internal("target reopsitory already exists"));
    }
    let pool = Pool::from_proto(ctx, pool)
        .map_err(|e| Status::internal(format!("getting object pool from repository: {}", e.message())))?;
    if !pool.is_valid() {
        return Err(Status::internal("object pool is not valid"));
    }
    if pool.repository.storage_name != repository.storage_name {
        return Err(Status::invalid_argument("object pool and repository are not on the same storage"));
    }
    let staged = Staging::new(ctx, &repository.storage_name, "CloneFromPool")?;
    Ok((staged, pool, target))
}

/// A shared clone of the pool in the staging directory, without its `origin` remote.
async fn clone_into(ctx: &Ctx, staged: &Staging, pool: &Pool) -> Result<(), Status> {
    ctx.git
        .bare(Sub::Clone)
        .flag("--bare")
        .flag("--shared")
        .flag("--quiet")
        .path_arg(&pool.path)
        .path_arg(&staged.path)
        .output()
        .await
        .map_err(|e| Status::internal(format!("clone with object pool wait {e}")))?;
    super::remove_origin(ctx, &staged.path).await.map_err(|e| Status::internal(e.to_string()))
}

/// Makes the new member's alternates relative to where it will live, and moves it there.
fn finish(staged: Staging, pool: &Pool, target: &std::path::Path, rpc: &str) -> Result<(), Status> {
    let entry = pool.alternates_entry(target);
    std::fs::write(staged.path.join("objects/info/alternates"), entry.as_os_str().as_encoded_bytes())
        .map_err(|e| Status::internal(format!("change hard link to relative: {e}")))?;
    staged.place(target, rpc)
}

pub async fn clone_from_pool(ctx: &Ctx, req: CloneFromPoolRequest) -> Result<CloneFromPoolResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::invalid_argument("repository required"))?;
    let remote = req.remote.clone().ok_or_else(|| Status::invalid_argument("remote required"))?;
    if req.pool.is_none() {
        return Err(Status::invalid_argument("pool is empty"));
    }
    let fetch = FetchRemoteRequest {
        repository: Some(repository.clone()),
        remote_params: Some(remote),
        timeout: 1000,
        ..Default::default()
    };
    let name = remote_name(&fetch)?;
    let (staged, pool, target) = prepare(ctx, repository, req.pool.as_ref())?;
    clone_into(ctx, &staged, &pool).await?;
    fetch_remote_at(ctx, &staged.path, name, &fetch)
        .await
        .map_err(|e| Status::internal(format!("fetch http remote: {}", e.message())))?;
    finish(staged, &pool, &target, "CloneFromPool")?;
    Ok(CloneFromPoolResponse {})
}

pub async fn clone_from_pool_internal(
    ctx: &Ctx,
    req: CloneFromPoolInternalRequest,
) -> Result<CloneFromPoolInternalResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::invalid_argument("repository required"))?;
    let source =
        req.source_repository.as_ref().ok_or_else(|| Status::invalid_argument("source repository required"))?;
    if req.pool.is_none() {
        return Err(Status::invalid_argument("pool is empty"));
    }
    if source.storage_name != repository.storage_name {
        return Err(Status::invalid_argument("source repository and target repository are not on the same storage"));
    }
    let source_path = ctx.locator.repo_path(Some(source))?;
    let pool = Pool::from_proto(ctx, req.pool.as_ref()).map_err(|e| Status::internal(e.message()))?;
    match pool.linked_to(&source_path) {
        Ok(true) => {}
        Ok(false) => return Err(Status::internal("source repository is not linked to pool repository")),
        Err(e) => {
            return Err(Status::internal(format!(
                "error when testing if source repository is linked to pool repository: {e}"
            )))
        }
    }
    let (staged, pool, target) = prepare(ctx, repository, req.pool.as_ref())?;
    if let Some((packed, head)) = borrowable_refs(ctx, &source_path, &pool).await? {
        staged.init(ctx).await.map_err(|e| Status::internal(format!("init repository: {e}")))?;
        std::fs::write(staged.path.join("packed-refs"), packed)
            .map_err(|e| Status::internal(format!("write packed-refs: {e}")))?;
        set_head(ctx, &staged.path, head).await?;
        finish(staged, &pool, &target, "CloneFromPoolInternal")?;
        return Ok(CloneFromPoolInternalResponse {});
    }
    clone_into(ctx, &staged, &pool).await?;
    // The source is in this daemon's storage (checked above): its refs are fetched from its path, with
    // what FetchInternalRemote does through the source's server (every ref, pruned, and its HEAD).
    ctx.git
        .command(&staged.path, Sub::Fetch)
        .flag("--prune")
        .flag("--atomic")
        .flag("--quiet")
        .flag("--no-write-fetch-head")
        .path_arg(&source_path)
        .path_arg("+refs/*:refs/*")
        .output()
        .await
        .map_err(|e| Status::internal(format!("fetch internal remote: {e}")))?;
    set_head(ctx, &staged.path, crate::service::default_branch(ctx, &source_path).await?).await?;
    finish(staged, &pool, &target, "CloneFromPoolInternal")?;
    Ok(CloneFromPoolInternalResponse {})
}

/// Points the new member's HEAD at `head`, the source's default branch (left alone when it has none).
async fn set_head(ctx: &Ctx, member: &Path, head: Vec<u8>) -> Result<(), Status> {
    if head.is_empty() {
        return Ok(());
    }
    let head = String::from_utf8(head).map_err(|_| Status::internal("default branch is not UTF-8"))?;
    Repo::new(&ctx.git, member).set_head(&head).await.map_err(|e| Status::internal(format!("set default branch: {e}")))
}

/// The source's refs as the member's `packed-refs`, and its default branch from the same read, when
/// nothing needs fetching: the source keeps no
/// objects of its own (as after its link and a repack with `-l`), and the pool has every object its refs
/// name. Then the fork costs one read of the refs instead of an upload-pack of all of them, which is what
/// made it twice as slow as `git clone --shared`. The refs are read before the source's objects are
/// looked at, so an object a concurrent push adds for a ref already read is seen.
async fn borrowable_refs(ctx: &Ctx, source: &Path, pool: &Pool) -> Result<Option<(Vec<u8>, Vec<u8>)>, Status> {
    let (c, source, pool) = (ctx.clone(), source.to_path_buf(), pool.clone());
    crate::odb::blocking(move || {
        let repo = c.repos.open(&source)?;
        let refs = crate::odb::refs::resolved(&repo)?;
        if !pool.holds_all_of(&source).map_err(Status::internal)? {
            return Ok(None);
        }
        let odb = crate::odb::open_uncached(&pool.path).map_err(|e| Status::internal(format!("open pool: {e}")))?;
        let Some(packed) = crate::odb::refs::packed_file(&refs, &odb)? else { return Ok(None) };
        let branches: Vec<Vec<u8>> =
            refs.into_iter().map(|(name, _)| name).filter(|n| n.starts_with(b"refs/heads/")).collect();
        let head = crate::odb::refs::default_of(&branches, || crate::odb::refs::head_target(&repo))?;
        Ok(Some((packed, head)))
    })
    .await
}

//! FetchIntoObjectPool: brings the origin's objects into its pool under `refs/remotes/origin/`, keeps
//! every object the pool held alive (dangling ones get `refs/dangling/` refs: members may still need them),
//! packs the refs, and repacks with delta islands and a bitmap, as upstream.

use tonic::Status;

use super::pool::Pool;
use crate::git::Sub;
use crate::proto::gitaly::*;
use crate::service::repository::edit_config;
use crate::service::Context;

pub async fn fetch_into_object_pool(
    ctx: &Context,
    req: FetchIntoObjectPoolRequest,
) -> Result<FetchIntoObjectPoolResponse, Status> {
    let origin = req.origin.as_ref().ok_or_else(|| Status::invalid_argument("origin is empty"))?;
    let pool_repo = req.object_pool.as_ref().ok_or_else(|| Status::invalid_argument("object pool is empty"))?;
    if pool_repo.repository.as_ref().map(|r| r.storage_name.as_str()) != Some(origin.storage_name.as_str()) {
        return Err(Status::invalid_argument("origin has different storage than object pool"));
    }
    let pool = Pool::from_proto(ctx, Some(pool_repo))
        .map_err(|e| Status::invalid_argument(format!("object pool invalid: {}", e.message())))?;
    let origin_path = ctx.locator.repo_path(Some(origin))?;
    pool.init(ctx).await?;
    let config = pool.path.join("config");
    let url = origin_path.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        edit_config(&config, "FetchIntoObjectPool", |file| {
            use gix::bstr::ByteSlice;
            let mut section =
                file.section_mut_or_create_new("remote", Some(b"origin".as_bstr())).map_err(|e| e.to_string())?;
            section.set("url", url.as_bytes().as_bstr()).map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;

    let internal = |what: &str, e: crate::git::GitError| Status::internal(format!("{what}: {e}"));
    ctx.git
        .command(&pool.path, Sub::Fetch)
        .flag("--quiet")
        .flag("--atomic")
        .flag("--no-write-fetch-head")
        .trusted_arg("origin")
        .trusted_arg("+refs/*:refs/remotes/origin/*")
        .output()
        .await
        .map_err(|e| internal("fetch into object pool", e))?;

    // Objects nothing in the pool points at any more may still be borrowed by a member.
    let fsck =
        ctx.git.command(&pool.path, Sub::Fsck).flag("--connectivity-only").flag("--dangling").run_to_end().await?;
    let mut updates = Vec::new();
    for line in fsck.stdout.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line.splitn(3, |b| *b == b' ').collect();
        if let [b"dangling", _, oid] = fields.as_slice() {
            let oid = String::from_utf8_lossy(oid);
            if crate::git::repo::is_oid(&oid) {
                updates.extend_from_slice(format!("create refs/dangling/{oid}\0{oid}\0").as_bytes());
            }
        }
    }
    if !updates.is_empty() {
        ctx.git
            .command(&pool.path, Sub::UpdateRef)
            .flag("-z")
            .flag("--stdin")
            .output_with_stdin(updates)
            .await
            .map_err(|e| internal("rescue dangling objects", e))?;
    }
    ctx.git.command(&pool.path, Sub::PackRefs).flag("--all").output().await.map_err(|e| internal("pack-refs", e))?;
    ctx.git
        .command(&pool.path, Sub::Repack)
        .config("pack.island", "refs/remotes/origin/he(a)ds")
        .config("pack.island", "refs/remotes/origin/t(a)gs")
        .config("pack.islandCore", "a")
        .config("pack.writeBitmapHashCache", "true")
        .flag("-aidb")
        .output()
        .await
        .map_err(|e| internal("repack", e))?;
    Ok(FetchIntoObjectPoolResponse {})
}

//! GarbageCollect, RepackFull, RepackIncremental, WriteCommitGraph, MidxRepack: the housekeeping GitLab
//! schedules, with upstream's pack settings (delta islands so forks share deltas; bitmaps only when asked).

use tonic::Status;

use crate::git::{GitCommand, Sub};
use crate::proto::gitaly::{
    GarbageCollectRequest, GarbageCollectResponse, MidxRepackRequest, MidxRepackResponse, RepackFullRequest,
    RepackFullResponse, RepackIncrementalRequest, RepackIncrementalResponse, WriteCommitGraphRequest,
    WriteCommitGraphResponse,
};
use crate::service::Context;

fn repack_config(cmd: GitCommand<'_>, bitmap: bool) -> GitCommand<'_> {
    let cmd = cmd
        .config("pack.island", "r(e)fs/heads")
        .config("pack.island", "r(e)fs/tags")
        .config("pack.islandCore", "e")
        .config("repack.useDeltaIslands", "true");
    if bitmap {
        cmd.config("repack.writeBitmaps", "true").config("pack.writeBitmapHashCache", "true")
    } else {
        cmd.config("repack.writeBitmaps", "false")
    }
}

pub async fn garbage_collect(ctx: &Context, req: GarbageCollectRequest) -> Result<GarbageCollectResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut gc = repack_config(ctx.git.command(&repo, Sub::Gc), req.create_bitmap).flag("--quiet");
    if req.prune {
        gc = gc.flag("--prune=30.minutes.ago");
    }
    gc.output().await.map_err(|e| Status::internal(format!("GarbageCollect: {e}")))?;
    commit_graph(ctx, &repo).await.map_err(|e| Status::internal(format!("GarbageCollect: write commit-graph: {e}")))?;
    Ok(GarbageCollectResponse {})
}

pub async fn repack_full(ctx: &Context, req: RepackFullRequest) -> Result<RepackFullResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let threads = std::thread::available_parallelism().map(|n| n.get().ilog2().max(1)).unwrap_or(1);
    repack_config(ctx.git.command(&repo, Sub::Repack), req.create_bitmap)
        .flag("-d")
        .flag("-A")
        .flag("--pack-kept-objects")
        .flag("-l")
        .flag(format!("--threads={threads}"))
        .flag("--quiet")
        .output()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(RepackFullResponse {})
}

pub async fn repack_incremental(
    ctx: &Context,
    req: RepackIncrementalRequest,
) -> Result<RepackIncrementalResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    repack_config(ctx.git.command(&repo, Sub::Repack), false)
        .flag("-d")
        .flag("--quiet")
        .output()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(RepackIncrementalResponse {})
}

/// WriteCommitGraph: `git commit-graph write --reachable`, as upstream v13.12.
pub async fn write_commit_graph(
    ctx: &Context,
    req: WriteCommitGraphRequest,
) -> Result<WriteCommitGraphResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    commit_graph(ctx, &repo).await.map_err(|e| Status::internal(format!("WriteCommitGraph: gitCommand: {e}")))?;
    Ok(WriteCommitGraphResponse {})
}

/// `git commit-graph write --reachable`, as GarbageCollect and WriteCommitGraph run it.
async fn commit_graph(ctx: &Context, repo: &std::path::Path) -> Result<(), crate::git::GitError> {
    ctx.git.command(repo, Sub::CommitGraph).flag("write").flag("--reachable").output().await.map(|_| ())
}

/// MidxRepack: a multi-pack-index kept up to date as upstream v13.12 does it: `core.multiPackIndex` on,
/// then `multi-pack-index write`, `expire` and `repack --batch-size` (the second biggest pack plus one,
/// with more than two packs), each followed by a `verify` that rewrites the index from scratch if it fails.
pub async fn midx_repack(ctx: &Context, req: MidxRepackRequest) -> Result<MidxRepackResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let failed = |e: crate::git::GitError| Status::internal(format!("MidxRepack: {e}"));
    ctx.git
        .command(&repo, Sub::Config)
        .trusted_arg("core.multiPackIndex")
        .trusted_arg("true")
        .output()
        .await
        .map_err(failed)?;
    for step in ["write", "expire", "repack"] {
        let mut cmd = ctx.git.command(&repo, Sub::MultiPackIndex).flag(step);
        if step == "repack" {
            let batch = batch_size(&repo);
            if batch == 0 {
                continue;
            }
            cmd = repack_config(cmd, false).flag(format!("--batch-size={batch}"));
        }
        cmd.output().await.map_err(failed)?;
        let verified = ctx.git.command(&repo, Sub::MultiPackIndex).flag("verify").run_to_end().await.map_err(failed)?;
        if !verified.exit.success() {
            tracing::warn!(verify_success = false, stderr = %verified.stderr_text(), "MidxRepack");
            match std::fs::remove_file(repo.join("objects/pack/multi-pack-index")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Status::internal(format!("MidxRepack: {e}")))
                }
                _ => {}
            }
            ctx.git.command(&repo, Sub::MultiPackIndex).flag("write").output().await.map_err(failed)?;
        }
    }
    Ok(MidxRepackResponse {})
}

/// Upstream's batch size: with more than two packs, the second biggest pack's size plus one; else 0.
fn batch_size(repo: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(repo.join("objects/pack")) else { return 0 };
    let mut sizes: Vec<u64> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .collect();
    if sizes.len() <= 2 {
        return 0;
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes[1] + 1
}

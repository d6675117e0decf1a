//! GarbageCollect, RepackFull, RepackIncremental: the housekeeping GitLab schedules, with upstream's pack
//! settings (delta islands so forks share deltas; bitmaps only when asked).

use tonic::Status;

use crate::git::{GitCommand, Sub};
use crate::proto::gitaly::{
    GarbageCollectRequest, GarbageCollectResponse, RepackFullRequest, RepackFullResponse, RepackIncrementalRequest,
    RepackIncrementalResponse, WriteCommitGraphRequest, WriteCommitGraphResponse,
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
    ctx.git
        .command(&repo, Sub::CommitGraph)
        .flag("write")
        .flag("--reachable")
        .output()
        .await
        .map_err(|e| Status::internal(format!("GarbageCollect: write commit-graph: {e}")))?;
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
    ctx.git
        .command(&repo, Sub::CommitGraph)
        .flag("write")
        .flag("--reachable")
        .output()
        .await
        .map_err(|e| Status::internal(format!("WriteCommitGraph: gitCommand: {e}")))?;
    Ok(WriteCommitGraphResponse {})
}

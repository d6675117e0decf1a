//! OptimizeRepository: what the repository's state calls for, and nothing when it calls for nothing, so
//! it can run often. Upstream v13.12 fully repacks with a bitmap when there is none (never in a repository
//! with alternates: git refuses two bitmaps between a pool and its members), then runs housekeeping. Here
//! also: a full repack when packs or loose objects pile up (more than 16 packs, or more than 6,700 loose
//! objects, `git gc --auto`'s threshold), and a commit-graph when there is none.

use std::path::Path;

use tonic::Status;

use crate::proto::gitaly::*;
use crate::service::Context;

const MAX_PACKS: usize = 16;
const MAX_LOOSE: usize = 6700;

/// What decides the work.
#[derive(Debug)]
struct State {
    packs: usize,
    has_bitmap: bool,
    has_alternates: bool,
    loose: usize,
    has_commit_graph: bool,
}

fn inspect(repo: &Path) -> State {
    let objects = repo.join("objects");
    let (mut packs, mut has_bitmap) = (0, false);
    if let Ok(entries) = std::fs::read_dir(objects.join("pack")) {
        for e in entries.flatten() {
            match e.path().extension().and_then(|x| x.to_str()) {
                Some("pack") => packs += 1,
                Some("bitmap") => has_bitmap = true,
                _ => {}
            }
        }
    }
    // Loose objects: the 256 fan-out directories counted (a listing each, no file is read).
    let loose: usize = (0..=255u8)
        .map(|i| std::fs::read_dir(objects.join(format!("{i:02x}"))).map(|d| d.flatten().count()).unwrap_or(0))
        .sum();
    State {
        packs,
        has_bitmap,
        has_alternates: objects.join("info/alternates").exists(),
        loose,
        has_commit_graph: objects.join("info/commit-graph").exists() || objects.join("info/commit-graphs").exists(),
    }
}

pub async fn optimize_repository(
    ctx: &Context,
    req: OptimizeRepositoryRequest,
) -> Result<OptimizeRepositoryResponse, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty repository"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let state = inspect(&repo);
    let repack = (!state.has_bitmap && !state.has_alternates && state.packs + state.loose > 0)
        || state.packs > MAX_PACKS
        || state.loose > MAX_LOOSE;
    tracing::debug!(?state, repack, "OptimizeRepository");
    if repack {
        let full = RepackFullRequest { repository: req.repository.clone(), create_bitmap: !state.has_alternates };
        super::housekeeping::repack_full(ctx, full)
            .await
            .map_err(|e| Status::internal(format!("could not repack: {}", e.message())))?;
    }
    if repack || !state.has_commit_graph {
        let graph = WriteCommitGraphRequest { repository: req.repository.clone() };
        super::housekeeping::write_commit_graph(ctx, graph).await?;
    }
    tokio::task::spawn_blocking(move || super::cleanup::housekeeping(&repo))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("could not execute houskeeping: {e}")))?;
    Ok(OptimizeRepositoryResponse {})
}

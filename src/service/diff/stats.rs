//! DiffStats: lines added and removed per file between two commits, from `git diff --numstat -z`
//! (renames carry their old path), 1000 files per message.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{DiffStats, DiffStatsRequest, DiffStatsResponse};
use crate::service::Ctx;

const STATS_PER_MESSAGE: usize = 1000;

pub async fn diff_stats(ctx: &Ctx, req: DiffStatsRequest) -> Result<BoxStream<DiffStatsResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    super::validate("DiffStats", &req.left_commit_id, &req.right_commit_id)?;
    let out = ctx
        .git
        .command(&path, Sub::Diff)
        .flag("--numstat")
        .flag("-z")
        .user_arg(&req.left_commit_id)
        .user_arg(&req.right_commit_id)
        .run_to_end()
        .await?;
    if !out.exit.success() {
        return Err(Status::unavailable(format!("DiffStats: exit status {}", out.exit.code)));
    }
    let stats = parse_numstat(&out.stdout).map_err(|e| Status::internal(format!("DiffStats: {e}")))?;
    let messages: Vec<_> =
        stats.chunks(STATS_PER_MESSAGE).map(|c| Ok(DiffStatsResponse { stats: c.to_vec() })).collect();
    Ok(Box::pin(futures::stream::iter(messages)))
}

/// `add\tdel\tpath\0`, or for a rename `add\tdel\t\0old\0new\0`; `-` (binary) counts 0.
fn parse_numstat(mut data: &[u8]) -> Result<Vec<DiffStats>, String> {
    let mut out = Vec::new();
    let field = |d: &mut &[u8], end: u8| -> Result<Vec<u8>, String> {
        let i = d.iter().position(|b| *b == end).ok_or("truncated numstat output")?;
        let f = d[..i].to_vec();
        *d = &d[i + 1..];
        Ok(f)
    };
    let number = |f: &[u8]| std::str::from_utf8(f).ok().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
    while !data.is_empty() {
        let additions = number(&field(&mut data, b'\t')?);
        let deletions = number(&field(&mut data, b'\t')?);
        let first = field(&mut data, 0)?;
        let stat = if first.is_empty() {
            let old_path = field(&mut data, 0)?;
            DiffStats { path: field(&mut data, 0)?, additions, deletions, old_path }
        } else {
            DiffStats { path: first, additions, deletions, old_path: Vec::new() }
        };
        out.push(stat);
    }
    Ok(out)
}

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
    let mut child = ctx
        .git
        .command(&path, Sub::Diff)
        .flag("--numstat")
        .flag("-z")
        .user_arg(&req.left_commit_id)
        .user_arg(&req.right_commit_id)
        .spawn_no_stdin()?;
    let stdout = child.stdout.take().expect("piped");
    if let Some(mut stderr) = child.stderr.take() {
        tokio::spawn(async move { tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await });
    }
    // Read, parsed and sent as git writes it: memory is one message of stats, whatever the diff's size.
    let (tx, out) = crate::streamio::response_channel();
    tokio::spawn(async move {
        let failed = |e: String| Status::internal(format!("DiffStats: {e}"));
        let mut fields = Fields(tokio::io::BufReader::new(stdout));
        let mut batch = Vec::with_capacity(STATS_PER_MESSAGE);
        loop {
            let stat = match fields.stat().await {
                Ok(Some(stat)) => stat,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(failed(e))).await;
                    return;
                }
            };
            batch.push(stat);
            if batch.len() == STATS_PER_MESSAGE {
                let stats = std::mem::replace(&mut batch, Vec::with_capacity(STATS_PER_MESSAGE));
                if tx.send(Ok(DiffStatsResponse { stats })).await.is_err() {
                    return;
                }
            }
        }
        let end = match child.wait().await {
            Ok(exit) if exit.success() => None,
            Ok(exit) => Some(Status::unavailable(format!("DiffStats: exit status {}", exit.code))),
            Err(e) => Some(failed(e.to_string())),
        };
        // A failed git ends the stream with its exit status, as upstream.
        match end {
            Some(e) => {
                let _ = tx.send(Err(e)).await;
            }
            None if !batch.is_empty() => {
                let _ = tx.send(Ok(DiffStatsResponse { stats: batch })).await;
            }
            None => {}
        }
    });
    Ok(out)
}

/// `git diff --numstat -z` records: `add\tdel\tpath\0`, or for a rename `add\tdel\t\0old\0new\0`; `-`
/// (binary) counts 0.
struct Fields<R>(R);

impl<R: tokio::io::AsyncBufRead + Unpin> Fields<R> {
    /// The next field, up to `end`; `None` at the end of the output.
    async fn field(&mut self, end: u8) -> Result<Option<Vec<u8>>, String> {
        use tokio::io::AsyncBufReadExt;
        let mut f = Vec::new();
        let n = self.0.read_until(end, &mut f).await.map_err(|e| format!("read numstat: {e}"))?;
        match f.pop() {
            _ if n == 0 => Ok(None),
            Some(b) if b == end => Ok(Some(f)),
            _ => Err("truncated numstat output".into()),
        }
    }

    async fn required(&mut self, end: u8) -> Result<Vec<u8>, String> {
        self.field(end).await?.ok_or_else(|| "truncated numstat output".to_string())
    }

    async fn stat(&mut self) -> Result<Option<DiffStats>, String> {
        let number = |f: &[u8]| std::str::from_utf8(f).ok().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
        let Some(additions) = self.field(b'\t').await? else { return Ok(None) };
        let additions = number(&additions);
        let deletions = number(&self.required(b'\t').await?);
        let first = self.required(0).await?;
        Ok(Some(if first.is_empty() {
            let old_path = self.required(0).await?;
            DiffStats { path: self.required(0).await?, additions, deletions, old_path }
        } else {
            DiffStats { path: first, additions, deletions, old_path: Vec::new() }
        }))
    }
}

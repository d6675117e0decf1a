//! CommitDiff and CommitDelta: per-file diffs between two commits, from `git diff --raw --patch` (or
//! `--raw` alone), shaped by upstream's parser and limits; patches over 5 KiB are split across messages.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use tonic::codegen::BoxStream;
use tonic::Status;

use super::parser::{Limits, Parser};
use crate::git::Sub;
use crate::proto::gitaly::commit_diff_request::DiffMode;
use crate::proto::gitaly::{
    CommitDelta, CommitDeltaRequest, CommitDeltaResponse, CommitDiffRequest, CommitDiffResponse,
};
use crate::service::Ctx;

/// Patch pieces and delta batches are cut at this size (upstream's `MsgSizeThreshold`).
const MESSAGE_SIZE: usize = 5 * 1024;

/// Upstream's hard caps, applied whatever the request asks for.
const MAX_FILES: i64 = 5000;
const MAX_LINES: i64 = 250_000;
const MAX_BYTES: i64 = 5000 * 5120;
const SAFE_MAX_FILES: i64 = 500;
const SAFE_MAX_LINES: i64 = 25_000;
const SAFE_MAX_BYTES: i64 = 500 * 5120;
const MAX_PATCH_BYTES: i64 = 512_000;

/// `git diff <flags> <left> <right> -- <paths>`, with git's `a/`/`b/` prefixes whatever the config says.
fn diff_command<'a>(
    ctx: &'a Ctx,
    repo: &std::path::Path,
    flags: &[&str],
    left: &str,
    right: &str,
    paths: &[Vec<u8>],
) -> crate::git::GitCommand<'a> {
    let mut cmd = ctx.git.command(repo, Sub::Diff).config("diff.noprefix", "false");
    for f in flags {
        cmd = cmd.flag(f);
    }
    cmd = cmd.user_arg(left).user_arg(right);
    for p in paths {
        cmd = cmd.path_arg(OsStr::from_bytes(p));
    }
    cmd
}

pub async fn commit_diff(ctx: &Ctx, req: CommitDiffRequest) -> Result<BoxStream<CommitDiffResponse>, Status> {
    super::validate("CommitDiff", &req.left_commit_id, &req.right_commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut flags = vec!["--patch", "--raw", "--abbrev=40", "--full-index", "--find-renames=30%"];
    if req.ignore_whitespace_change {
        flags.push("--ignore-space-change");
    }
    if req.diff_mode == DiffMode::Worddiff as i32 {
        flags.push("--word-diff=porcelain");
    }
    let mut child =
        diff_command(ctx, &path, &flags, &req.left_commit_id, &req.right_commit_id, &req.paths).spawn_no_stdin()?;
    let stdout = child.stdout.take().expect("piped").into_blocking_fd().map_err(|e| Status::internal(e.to_string()))?;
    if let Some(mut stderr) = child.stderr.take() {
        // Drained so git never blocks on a full stderr pipe.
        tokio::spawn(async move { tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await });
    }
    let limits = Limits {
        enforce: req.enforce_limits,
        max_files: if req.enforce_limits { (req.max_files as i64).min(MAX_FILES) } else { 0 },
        max_lines: if req.enforce_limits { (req.max_lines as i64).min(MAX_LINES) } else { 0 },
        max_bytes: if req.enforce_limits { (req.max_bytes as i64).min(MAX_BYTES) } else { 0 },
        max_patch_bytes: if req.enforce_limits { (req.max_patch_bytes as i64).min(MAX_PATCH_BYTES) } else { 0 },
        collapse: req.collapse_diffs,
        safe_max_files: (req.safe_max_files as i64).min(SAFE_MAX_FILES),
        safe_max_lines: (req.safe_max_lines as i64).min(SAFE_MAX_LINES),
        safe_max_bytes: (req.safe_max_bytes as i64).min(SAFE_MAX_BYTES),
    };
    // git's output is parsed as it arrives, on a blocking thread, and git is stopped (the child dropped)
    // once the overflow marker has gone out: memory stays bounded by one file's patch.
    Ok(crate::odb::stream(move |out| async move {
        let parse_failure = |e: String| Status::internal(format!("CommitDiff: parse failure: {e}"));
        let mut parser = Parser::new(std::fs::File::from(stdout), limits).map_err(parse_failure)?;
        while let Some(diff) = parser.next_diff() {
            for m in responses(diff.map_err(parse_failure)?) {
                out.send(m).await;
            }
        }
        if parser.finished() {
            return Ok(());
        }
        let exit = tokio::runtime::Handle::current()
            .block_on(child.wait())
            .map_err(|e| Status::internal(format!("CommitDiff: {e}")))?;
        if !exit.success() {
            return Err(Status::unavailable(format!("CommitDiff: exit status {}", exit.code)));
        }
        Ok(())
    }))
}

pub async fn commit_delta(ctx: &Ctx, req: CommitDeltaRequest) -> Result<BoxStream<CommitDeltaResponse>, Status> {
    super::validate("CommitDelta", &req.left_commit_id, &req.right_commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let flags = ["--raw", "--abbrev=40", "--full-index", "--find-renames"];
    let mut child =
        diff_command(ctx, &path, &flags, &req.left_commit_id, &req.right_commit_id, &req.paths).spawn_no_stdin()?;
    let stdout = child.stdout.take().expect("piped").into_blocking_fd().map_err(|e| Status::internal(e.to_string()))?;
    if let Some(mut stderr) = child.stderr.take() {
        tokio::spawn(async move { tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await });
    }
    // Parsed and sent as git writes it, in 5 KiB batches: memory is one batch, whatever the diff's size.
    Ok(crate::odb::stream(move |out| async move {
        let parse_failure = |e: String| Status::internal(format!("CommitDelta: parse failure: {e}"));
        let mut parser = Parser::new(std::fs::File::from(stdout), Limits::default()).map_err(parse_failure)?;
        let (mut batch, mut size) = (Vec::new(), 0usize);
        while let Some(diff) = parser.next_diff() {
            let d = diff.map_err(parse_failure)?;
            size += d.from_id.len() + d.to_id.len() + 8 + d.from_path.len() + d.to_path.len();
            batch.push(CommitDelta {
                from_path: d.from_path,
                to_path: d.to_path,
                from_id: d.from_id,
                to_id: d.to_id,
                old_mode: d.old_mode,
                new_mode: d.new_mode,
            });
            if size > MESSAGE_SIZE {
                size = 0;
                out.send(CommitDeltaResponse { deltas: std::mem::take(&mut batch) }).await;
            }
        }
        if !batch.is_empty() {
            out.send(CommitDeltaResponse { deltas: batch }).await;
        }
        let exit = tokio::runtime::Handle::current()
            .block_on(child.wait())
            .map_err(|e| Status::internal(format!("CommitDelta: {e}")))?;
        if !exit.success() {
            return Err(Status::unavailable(format!("CommitDelta: exit status {}", exit.code)));
        }
        Ok(())
    }))
}

/// The responses for one diff: the whole patch in one message when it fits 5 KiB, else metadata with the
/// first piece and then pieces alone; the last says `end_of_patch`.
fn responses(d: super::parser::Diff) -> Vec<CommitDiffResponse> {
    let mut first = CommitDiffResponse {
        from_path: d.from_path,
        to_path: d.to_path,
        from_id: d.from_id,
        to_id: d.to_id,
        old_mode: d.old_mode,
        new_mode: d.new_mode,
        binary: d.binary,
        overflow_marker: d.overflow_marker,
        collapsed: d.collapsed,
        too_large: d.too_large,
        ..Default::default()
    };
    if d.patch.len() <= MESSAGE_SIZE {
        first.raw_patch_data = d.patch;
        first.end_of_patch = true;
        return vec![first];
    }
    let pieces: Vec<&[u8]> = d.patch.chunks(MESSAGE_SIZE).collect();
    let last = pieces.len() - 1;
    let mut out = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        let mut m = if i == 0 { std::mem::take(&mut first) } else { CommitDiffResponse::default() };
        m.raw_patch_data = piece.to_vec();
        m.end_of_patch = i == last;
        out.push(m);
    }
    out
}

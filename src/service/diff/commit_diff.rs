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
async fn run_diff(
    ctx: &Ctx,
    repo: &std::path::Path,
    flags: &[&str],
    left: &str,
    right: &str,
    paths: &[Vec<u8>],
) -> Result<crate::git::Output, Status> {
    let mut cmd = ctx.git.command(repo, Sub::Diff).config("diff.noprefix", "false");
    for f in flags {
        cmd = cmd.flag(f);
    }
    cmd = cmd.user_arg(left).user_arg(right);
    for p in paths {
        cmd = cmd.path_arg(OsStr::from_bytes(p));
    }
    Ok(cmd.run_to_end().await?)
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
    let out = run_diff(ctx, &path, &flags, &req.left_commit_id, &req.right_commit_id, &req.paths).await?;
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
    // Parsing is CPU work proportional to the diff: off the async threads.
    let messages = crate::odb::blocking(move || Ok(diff_messages(&out, limits))).await?;
    Ok(Box::pin(futures::stream::iter(messages)))
}

pub async fn commit_delta(ctx: &Ctx, req: CommitDeltaRequest) -> Result<BoxStream<CommitDeltaResponse>, Status> {
    super::validate("CommitDelta", &req.left_commit_id, &req.right_commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let flags = ["--raw", "--abbrev=40", "--full-index", "--find-renames"];
    let out = run_diff(ctx, &path, &flags, &req.left_commit_id, &req.right_commit_id, &req.paths).await?;
    let messages = crate::odb::blocking(move || Ok(delta_messages(&out))).await?;
    Ok(Box::pin(futures::stream::iter(messages)))
}

/// The CommitDiff responses for git's output: patches cut into 5 KiB pieces, git's failure last.
fn diff_messages(out: &crate::git::Output, limits: Limits) -> Vec<Result<CommitDiffResponse, Status>> {
    let mut messages = Vec::new();
    let mut parser = Parser::new(&out.stdout, limits);
    while let Some(diff) = parser.next_diff() {
        let d = match diff {
            Ok(d) => d,
            Err(e) => {
                messages.push(Err(Status::internal(format!("CommitDiff: parse failure: {e}"))));
                return messages;
            }
        };
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
            messages.push(Ok(first));
            continue;
        }
        let pieces: Vec<&[u8]> = d.patch.chunks(MESSAGE_SIZE).collect();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut m = if i == 0 { std::mem::take(&mut first) } else { CommitDiffResponse::default() };
            m.raw_patch_data = piece.to_vec();
            m.end_of_patch = i == last;
            messages.push(Ok(m));
        }
    }
    if !out.exit.success() {
        messages.push(Err(Status::unavailable(format!("CommitDiff: exit status {}", out.exit.code))));
    }
    messages
}

/// The CommitDelta responses for git's `--raw` output, batched at 5 KiB.
fn delta_messages(out: &crate::git::Output) -> Vec<Result<CommitDeltaResponse, Status>> {
    let mut messages = Vec::new();
    let (mut batch, mut size) = (Vec::new(), 0usize);
    let mut parser = Parser::new(&out.stdout, Limits::default());
    while let Some(diff) = parser.next_diff() {
        let d = match diff {
            Ok(d) => d,
            Err(e) => {
                messages.push(Err(Status::internal(format!("CommitDelta: parse failure: {e}"))));
                return messages;
            }
        };
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
            messages.push(Ok(CommitDeltaResponse { deltas: std::mem::take(&mut batch) }));
            size = 0;
        }
    }
    if !batch.is_empty() {
        messages.push(Ok(CommitDeltaResponse { deltas: batch }));
    }
    if !out.exit.success() {
        messages.push(Err(Status::unavailable(format!("CommitDelta: exit status {}", out.exit.code))));
    }
    messages
}

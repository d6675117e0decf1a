//! Cleanup: what crashed or interrupted writers leave in a repository, removed as upstream v13.12 removes
//! it. Worktrees under `gitlab-worktree/` untouched for 6 hours (`git worktree remove --force`, then
//! `git worktree prune`: a worker killed during UserApplyPatch leaves one), then housekeeping: temporary
//! object files (`tmp_*`) older than a week, `config.lock`, `HEAD.lock` and the commit-graph chain lock
//! older than 15 minutes, empty loose refs older than a day, ref locks and `packed-refs.lock` older than an
//! hour, `packed-refs.new` older than 15 minutes, and empty directories under `refs/` a day old (not the
//! top ones).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{CleanupRequest, CleanupResponse};
use crate::service::Context;

const HOUR: Duration = Duration::from_secs(3600);
const WORKTREE_AGE: Duration = Duration::from_secs(6 * 3600);
const TEMP_OBJECT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const LOCKFILE_AGE: Duration = Duration::from_secs(15 * 60);
const BROKEN_REF_AGE: Duration = Duration::from_secs(24 * 3600);
const LOCKFILES: &[&str] = &["config.lock", "HEAD.lock", "objects/info/commit-graphs/commit-graph-chain.lock"];

pub async fn cleanup(ctx: &Context, req: CleanupRequest) -> Result<CleanupResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    for worktree in stale_worktrees(&repo) {
        // Twice forced: a worktree whose creator died is still locked ("initializing").
        let removed = ctx
            .git
            .command(&repo, Sub::Worktree)
            .flag("remove")
            .flag("--force")
            .flag("--force")
            .trusted_arg(&worktree)
            .run_to_end()
            .await
            .map_err(|e| Status::internal(format!("Cleanup: cleanStaleWorktrees: {e}")))?;
        // A directory git does not know as a worktree (its creator died earlier still) goes as it is.
        if !removed.exit.success() && std::fs::symlink_metadata(&worktree).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&worktree)
                .map_err(|e| Status::internal(format!("Cleanup: cleanStaleWorktrees: {e}")))?;
        }
    }
    ctx.git
        .command(&repo, Sub::Worktree)
        .flag("prune")
        .output()
        .await
        .map_err(|e| Status::internal(format!("Cleanup: cleanDisconnectedWorktrees: {e}")))?;
    tokio::task::spawn_blocking(move || housekeeping(&repo))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("Cleanup: houskeeping: {e}")))?;
    Ok(CleanupResponse {})
}

fn older_than(meta: &std::fs::Metadata, age: Duration) -> bool {
    meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|e| e >= age)
}

/// The worktree directories (not symlinks) under `gitlab-worktree/` untouched for [`WORKTREE_AGE`].
fn stale_worktrees(repo: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(repo.join("gitlab-worktree")) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.metadata().is_ok_and(|m| older_than(&m, WORKTREE_AGE)))
        .map(|e| e.path())
        .collect()
}

/// Every file under `dir` (not following symlinks), with its metadata.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        if meta.is_dir() {
            walk(&e.path(), out);
        } else {
            out.push((e.path(), meta));
        }
    }
}

pub(super) fn housekeeping(repo: &Path) -> std::io::Result<()> {
    let mut stale: Vec<PathBuf> = Vec::new();
    let mut objects = Vec::new();
    walk(&repo.join("objects"), &mut objects);
    stale.extend(objects.into_iter().filter_map(|(p, m)| {
        let temp = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tmp_"));
        (temp && older_than(&m, TEMP_OBJECT_AGE)).then_some(p)
    }));
    let mut add_if_stale = |name: &str, age: Duration| {
        let path = repo.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && older_than(&m, age)) {
            stale.push(path);
        }
    };
    for lock in LOCKFILES {
        add_if_stale(lock, LOCKFILE_AGE);
    }
    add_if_stale("packed-refs.lock", HOUR);
    add_if_stale("packed-refs.new", LOCKFILE_AGE);
    let mut refs = Vec::new();
    walk(&repo.join("refs"), &mut refs);
    for (p, m) in refs {
        let lock = p.extension().is_some_and(|x| x == "lock");
        if (lock && older_than(&m, HOUR)) || (!lock && m.len() == 0 && older_than(&m, BROKEN_REF_AGE)) {
            stale.push(p);
        }
    }
    for path in stale {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "unable to remove stale file");
            }
        }
    }
    // Empty directories below refs/heads, refs/tags, … (never those themselves), a day old.
    if let Ok(tops) = std::fs::read_dir(repo.join("refs")) {
        for top in tops.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            remove_empty_dirs(&top.path(), false);
        }
    }
    Ok(())
}

/// Removes the empty directories under `dir` (and `dir` itself when `remove_self`); true when `dir` ends
/// up empty.
fn remove_empty_dirs(dir: &Path, remove_self: bool) -> bool {
    // A fresh empty directory may be where git is about to create a ref: left for a day, as upstream.
    // Judged before its children go (removing them touches it).
    let old = std::fs::metadata(dir).is_ok_and(|m| older_than(&m, BROKEN_REF_AGE));
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut empty = true;
    for e in entries.flatten() {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if !(is_dir && remove_empty_dirs(&e.path(), true)) {
            empty = false;
        }
    }
    if empty && remove_self && old {
        return std::fs::remove_dir(dir).is_ok();
    }
    empty
}

//! Taking a member's objects back from its pool: ReduplicateRepository (`repack -a` copies what it
//! borrows into its own pack) and DisconnectGitAlternates (hard links of the pool's object files, the
//! alternates file set aside, and restored unless `fsck --connectivity-only` passes without it). Only an
//! alternate inside the member's storage is ever linked from.

use std::path::{Path, PathBuf};

use tonic::Status;

use super::pool::{alternates_entry, clean};
use crate::git::Sub;
use crate::proto::gitaly::*;
use crate::service::Context;

pub async fn reduplicate_repository(
    ctx: &Context,
    req: ReduplicateRepositoryRequest,
) -> Result<ReduplicateRepositoryResponse, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("ReduplicateRepository: no repository"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    ctx.git
        .command(&repo, Sub::Repack)
        .flag("--quiet")
        .flag("-a")
        .output()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(ReduplicateRepositoryResponse {})
}

pub async fn disconnect_git_alternates(
    ctx: &Context,
    req: DisconnectGitAlternatesRequest,
) -> Result<DisconnectGitAlternatesResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::invalid_argument("no repository"))?;
    let repo = ctx.locator.repo_path(Some(repository))?;
    let root = ctx.locator.storage_path(&repository.storage_name)?.to_path_buf();
    let alt_file = repo.join("objects/info/alternates");
    let contents = match std::fs::read(&alt_file) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DisconnectGitAlternatesResponse {}),
        Err(e) => return Err(Status::internal(e.to_string())),
    };
    let invalid = || {
        Status::internal(format!(
            "invalid content in objects/info/alternates: {:?}",
            String::from_utf8_lossy(&contents)
        ))
    };
    let trimmed = String::from_utf8_lossy(&contents).trim().to_string();
    if trimmed.contains('\n') || alternates_entry(&repo).map_err(Status::internal)?.is_none() {
        return Err(invalid());
    }
    let alt_dir = clean(&repo.join("objects").join(&trimmed));
    let alt_dir = std::fs::canonicalize(&alt_dir).map_err(|e| Status::internal(e.to_string()))?;
    if !alt_dir.is_dir() || !alt_dir.starts_with(&root) {
        return Err(invalid());
    }
    let objects = repo.join("objects");
    tokio::task::spawn_blocking(move || link_objects(&alt_dir, &objects))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;

    let backup = alt_file.with_file_name(format!(
        "alternates.{}.{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    std::fs::rename(&alt_file, &backup).map_err(|e| Status::internal(e.to_string()))?;
    let fsck = ctx.git.command(&repo, Sub::Fsck).flag("--connectivity-only").run_to_end().await;
    match fsck {
        Ok(out) if out.exit.success() => Ok(DisconnectGitAlternatesResponse {}),
        other => {
            // Rolled back: the member borrows again.
            let tmp = backup.with_extension("2");
            if std::fs::hard_link(&backup, &tmp).and_then(|()| std::fs::rename(&tmp, &alt_file)).is_err() {
                tracing::error!(path = %alt_file.display(), "restore backup alternates file");
            }
            let detail = match other {
                Ok(out) => out.stderr_text(),
                Err(e) => e.to_string(),
            };
            Err(Status::internal(format!("git fsck error while disconnected: {}", detail.trim())))
        }
    }
}

/// Hard-links every file below `alt_dir` (but `info/`) into `objects`, packs' `.keep`, `.pack` and
/// `.idx` in that order so an index never names a pack not yet there. Symbolic links are not followed.
fn link_objects(alt_dir: &Path, objects: &Path) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![alt_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            let rel = e.path().strip_prefix(alt_dir).map(Path::to_path_buf).unwrap_or_default();
            if rel.starts_with("info") {
                continue;
            }
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(rel);
            }
        }
    }
    let priority = |p: &PathBuf| {
        let s = p.to_string_lossy();
        match () {
            _ if !s.starts_with("pack") => 0,
            _ if s.ends_with(".keep") => 1,
            _ if s.ends_with(".pack") => 2,
            _ if s.ends_with(".idx") => 3,
            _ => 4,
        }
    };
    files.sort_by_key(priority);
    for rel in files {
        let target = objects.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::hard_link(alt_dir.join(&rel), &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

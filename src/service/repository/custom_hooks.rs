//! BackupCustomHooks and RestoreCustomHooks: a repository's `custom_hooks` directory as a tar archive,
//! as upstream moves it between servers and into backups.
//!
//! Upstream runs `tar -xf - custom_hooks` on whatever the client sends. Here the archive is read with
//! the `tar` crate and only regular files and directories under `custom_hooks/` are written, each checked
//! to stay inside the repository: a member that is a link, a device, an absolute path or climbs with `..`
//! is refused (`InvalidArgument`) before anything is written.

use std::path::{Component, Path, PathBuf};

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use crate::proto::gitaly::*;
use crate::service::Context;

const HOOKS_DIR: &str = "custom_hooks";
use crate::service::chunk::DATA_CHUNK as CHUNK;
/// The largest archive a client may send.
const MAX_ARCHIVE: usize = 64 << 20;

pub async fn backup_custom_hooks(
    ctx: &Context,
    req: BackupCustomHooksRequest,
) -> Result<BoxStream<BackupCustomHooksResponse>, Status> {
    let repo = ctx
        .locator
        .target_path(req.repository.as_ref())
        .map_err(|e| Status::internal(format!("BackupCustomHooks: getting repo path failed {e}")))?;
    match std::fs::symlink_metadata(repo.join(HOOKS_DIR)) {
        Err(_) => return Ok(Box::pin(tokio_stream::empty())),
        // Archiving through a link would read whatever it points at.
        Ok(m) if !m.is_dir() => {
            return Err(Status::failed_precondition("BackupCustomHooks: custom_hooks is not a directory"));
        }
        Ok(_) => {}
    }
    let archive = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder.append_dir_all(HOOKS_DIR, repo.join(HOOKS_DIR))?;
        builder.into_inner()
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| Status::internal(format!("BackupCustomHooks: {e}")))?;
    let messages: Vec<_> = archive.chunks(CHUNK).map(|c| Ok(BackupCustomHooksResponse { data: c.to_vec() })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}

pub async fn restore_custom_hooks(
    ctx: &Context,
    mut stream: Streaming<RestoreCustomHooksRequest>,
) -> Result<RestoreCustomHooksResponse, Status> {
    let first = stream
        .message()
        .await
        .map_err(|e| Status::internal(format!("RestoreCustomHooks: first request failed {}", e.message())))?
        .unwrap_or_default();
    if first.repository.is_none() {
        return Err(Status::invalid_argument("RestoreCustomHooks: empty Repository"));
    }
    let repo = ctx
        .locator
        .target_path(first.repository.as_ref())
        .map_err(|e| Status::internal(format!("RestoreCustomHooks: getting repo path failed {e}")))?;
    let mut archive = first.data;
    while let Some(m) = stream.message().await? {
        if archive.len() + m.data.len() > MAX_ARCHIVE {
            return Err(Status::invalid_argument(format!(
                "RestoreCustomHooks: archive larger than {MAX_ARCHIVE} bytes"
            )));
        }
        archive.extend_from_slice(&m.data);
    }
    tokio::task::spawn_blocking(move || unpack(&repo, &archive))
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
    Ok(RestoreCustomHooksResponse {})
}

/// Checks every member, then writes the `custom_hooks` ones under `repo`.
fn unpack(repo: &Path, archive: &[u8]) -> Result<(), Status> {
    let bad = |m: String| Status::invalid_argument(format!("RestoreCustomHooks: {m}"));
    let internal =
        |e: std::io::Error| Status::internal(format!("RestoreCustomHooks: Could not untar custom hooks tar {e}"));
    let mut wanted: Vec<(PathBuf, bool)> = Vec::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().map_err(internal)? {
        let entry = entry.map_err(internal)?;
        let path = entry.path().map_err(internal)?.into_owned();
        let clean = path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !clean {
            return Err(bad(format!("member {:?} leaves the repository", path.display().to_string())));
        }
        let path: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if !path.starts_with(HOOKS_DIR) {
            continue;
        }
        if entry.header().mode().map_err(internal)? & 0o7000 != 0 {
            return Err(bad(format!("member {:?} has setuid, setgid or sticky bits", path.display().to_string())));
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => wanted.push((path, false)),
            tar::EntryType::Directory => wanted.push((path, true)),
            other => return Err(bad(format!("member {:?} is a {other:?}, not a file", path.display().to_string()))),
        }
    }
    let wanted_set: std::collections::HashSet<&PathBuf> = wanted.iter().map(|(p, _)| p).collect();
    // Nothing is written through a link already in the repository (`custom_hooks` or below it).
    for (path, _) in &wanted {
        let mut at = repo.to_path_buf();
        for c in path.components() {
            at.push(c);
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(bad(format!("{:?} is a symbolic link", at.display().to_string())));
            }
        }
    }
    // Second pass: write what was checked, without group or world write bits.
    let mut reader = tar::Archive::new(archive);
    reader.set_preserve_permissions(true);
    reader.set_mask(0o022);
    for entry in reader.entries().map_err(internal)? {
        let mut entry = entry.map_err(internal)?;
        let path: PathBuf =
            entry.path().map_err(internal)?.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if !wanted_set.contains(&path) {
            continue;
        }
        if !entry.unpack_in(repo).map_err(internal)? {
            return Err(bad(format!("member {:?} leaves the repository", path.display().to_string())));
        }
    }
    Ok(())
}

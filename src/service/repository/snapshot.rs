//! GetSnapshot: a tar of what makes a repository, as upstream v13.12 picks it: `HEAD`, `packed-refs`,
//! `refs/`, `branches/`, `shallow`, and the objects (loose objects, packs and their indexes), including
//! those of its alternates inside the same storage (as `objects/…`), so the snapshot stands alone. Config,
//! hooks, logs and info files are left out on purpose (they may hold credentials or differ per site).
//! Symlinks are never followed, so a link planted in `refs/` cannot pull another file into the archive.
//! Streamed as it is written: a repository is never held in memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{GetSnapshotRequest, GetSnapshotResponse};
use crate::service::Context;

use crate::service::chunk::DATA_CHUNK as CHUNK;

pub async fn get_snapshot(ctx: &Context, req: GetSnapshotRequest) -> Result<BoxStream<GetSnapshotResponse>, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let storage = ctx
        .locator
        .storage_path(&req.repository.as_ref().map(|r| r.storage_name.clone()).unwrap_or_default())?
        .to_path_buf();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let out = Chunks { buf: Vec::with_capacity(CHUNK), tx: tx.clone() };
        if let Err(e) = build(&repo, &storage, out) {
            let _ = tx.blocking_send(Err(Status::internal(format!("building snapshot failed: {e}"))));
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn build(repo: &Path, storage: &Path, out: Chunks) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for file in ["HEAD", "packed-refs", "shallow"] {
        add_file(&mut tar, &repo.join(file), Path::new(file))?;
    }
    for dir in ["refs", "branches"] {
        add_tree(&mut tar, &repo.join(dir), Path::new(dir), &|_| true)?;
    }
    let objects = repo.join("objects");
    add_tree(&mut tar, &objects, Path::new("objects"), &is_object_file)?;
    for alternate in alternates(&objects, storage) {
        add_tree(&mut tar, &alternate, Path::new("objects"), &is_object_file)?;
    }
    tar.into_inner()?.finish()
}

/// Whether `member` (a path in a snapshot tar) is something a snapshot holds: `HEAD`, `packed-refs`,
/// `shallow`, files below `refs/` or `branches/`, object files below `objects/`, and the directories
/// leading to them. Anything else (a config, hooks, `objects/info/alternates`) could make git run a
/// program or read another repository, and is refused when a snapshot is unpacked.
pub(crate) fn is_snapshot_member(member: &Path, is_dir: bool) -> bool {
    let mut parts = member.iter();
    let Some(first) = parts.next().and_then(|p| p.to_str()) else { return false };
    let rest: PathBuf = parts.collect();
    match first {
        "HEAD" | "packed-refs" | "shallow" => !is_dir && rest.as_os_str().is_empty(),
        "refs" | "branches" => true,
        // Directories are harmless (upstream's archives list `objects/info/` too); files must be objects.
        "objects" => is_dir || is_object_file(&rest),
        _ => false,
    }
}

/// A loose object (`xx/` + 38 hex digits) or a pack or its index, by its path below `objects/`.
pub(crate) fn is_object_file(rel: &Path) -> bool {
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [dir, name] if hex(dir, 2) && hex(name, 38) => true,
        [pack, name] if pack == "pack" => {
            let stem = name.strip_suffix(".pack").or_else(|| name.strip_suffix(".idx"));
            stem.and_then(|s| s.strip_prefix("pack-")).is_some_and(|h| hex(h, 40))
        }
        _ => false,
    }
}

/// The object directories `objects/info/alternates` names that lie inside the storage (others are not
/// ours to read).
fn alternates(objects: &Path, storage: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(objects.join("info/alternates")) else { return Vec::new() };
    let Ok(storage) = storage.canonicalize() else { return Vec::new() };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| objects.join(l).canonicalize().ok())
        .filter(|p| p.starts_with(&storage))
        .collect()
}

/// Adds the regular file at `path` as `name`, if it exists (a symlink is skipped).
fn add_file(tar: &mut tar::Builder<Chunks>, path: &Path, name: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => tar.append_path_with_name(path, name),
        _ => Ok(()),
    }
}

/// Adds the regular files below `dir` whose path relative to it `keep` accepts, under `name`.
fn add_tree(
    tar: &mut tar::Builder<Chunks>,
    dir: &Path,
    name: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> std::io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else { continue };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        // Depth first in lexical order (loose objects before packs, as upstream walks): directories are
        // stacked in reverse so the first comes off first.
        let mut dirs = Vec::new();
        for e in entries {
            let child = rel.join(e.file_name());
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if meta.is_dir() {
                dirs.push(child);
            } else if meta.is_file() && keep(&child) {
                // A file removed meanwhile (a repack) is skipped, as upstream's builder skips it.
                match tar.append_path_with_name(e.path(), name.join(&child)) {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    Ok(())
}

/// A writer that sends what it is given as 128 KiB messages.
struct Chunks {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<GetSnapshotResponse, Status>>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(GetSnapshotResponse { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! Repositories that arrive whole from elsewhere (a bundle, a fork, a URL, a snapshot) are built in the
//! storage's scratch area and moved to their path in one rename only when complete: a failed or cancelled
//! import leaves nothing at the repository's path, and nothing at that path is ever replaced.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use tonic::Status;

use crate::service::Context;

pub(crate) struct Staging {
    /// Removed with whatever is left in it when this is dropped.
    _scratch: tempfile::TempDir,
    /// Where the repository is built (not created yet).
    pub path: PathBuf,
}

impl Staging {
    pub fn new(ctx: &Context, storage: &str, rpc: &str) -> Result<Staging, Status> {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{}-", rpc.to_ascii_lowercase()))
            .tempdir_in(ctx.locator.temp_dir(storage)?)
            .map_err(|e| Status::internal(format!("{rpc}: tmp dir failed: {e}")))?;
        let path = scratch.path().join("repo.git");
        Ok(Staging { _scratch: scratch, path })
    }

    /// An empty bare repository at the staging path, HEAD at `master` as CreateRepository makes it, and no
    /// sample hooks or other template files: what a snapshot (which carries no config) is unpacked over,
    /// and what a pool member's refs are written into.
    pub async fn init(&self, ctx: &Context) -> Result<(), crate::git::GitError> {
        ctx.git
            .bare(crate::git::Sub::Init)
            .config("init.defaultBranch", "master")
            .flag("--bare")
            .flag("--quiet")
            .flag("--template=")
            .path_arg(&self.path)
            .output()
            .await
            .map(|_| ())
    }

    /// Moves the repository to `target`: an empty directory there is replaced, anything else makes this
    /// fail rather than be overwritten.
    pub fn place(self, target: &Path, rpc: &str) -> Result<(), Status> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Status::internal(format!("{rpc}: create directories: {e}")))?;
        }
        let _ = std::fs::remove_dir(target);
        super::rename_no_replace(&self.path, target).map_err(|e| match e {
            nix::errno::Errno::EEXIST | nix::errno::Errno::ENOTEMPTY => {
                Status::failed_precondition(format!("{rpc}: destination already exists"))
            }
            e => Status::internal(format!("{rpc}: move into place: {e}")),
        })
    }
}

/// Whether `target` is free for a new repository: absent, or an empty directory.
pub(crate) fn is_free(target: &Path) -> bool {
    match std::fs::symlink_metadata(target) {
        Err(_) => true,
        Ok(m) if m.is_dir() => std::fs::read_dir(target).map(|mut d| d.next().is_none()).unwrap_or(false),
        Ok(_) => false,
    }
}

/// Reads what the pump sends, blocking (on the unpacking thread).
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader { rx, buf: Vec::new(), at: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Unpacks a snapshot into a fresh repository directory: regular files and directories only, every path
/// inside it, only what a snapshot holds (refs and objects: never a config, hooks or alternates), no set-id
/// bits. Nothing in the scratch directory is a link, so nothing is written outside it.
pub(crate) fn unpack_tar(dir: &Path, input: impl Read) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(false);
    archive.set_mask(0o7022);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path: PathBuf = entry.path()?.into_owned();
        if !path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(std::io::Error::other(format!("member {:?} leaves the repository", path.display())));
        }
        let is_dir = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => false,
            tar::EntryType::Directory => true,
            other => return Err(std::io::Error::other(format!("member {:?} is a {other:?}", path.display()))),
        };
        let clean: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if !super::snapshot::is_snapshot_member(&clean, is_dir) {
            return Err(std::io::Error::other(format!("member {:?} is not part of a snapshot", path.display())));
        }
        if !entry.unpack_in(dir)? {
            return Err(std::io::Error::other(format!("member {:?} leaves the repository", path.display())));
        }
    }
    Ok(())
}

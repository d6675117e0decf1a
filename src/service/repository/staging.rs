//! Repositories that arrive whole from elsewhere (a bundle, a fork, a URL, a snapshot) are built in the
//! storage's scratch area and moved to their path in one rename only when complete: a failed or cancelled
//! import leaves nothing at the repository's path, and nothing at that path is ever replaced.

use std::path::{Path, PathBuf};

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

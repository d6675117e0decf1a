//! RenameRepository: moves a repository to another relative path in its storage, as upstream: the
//! destination must not exist (`FailedPrecondition`), its parent directories are created, and path
//! problems on either side are `InvalidArgument`. The move is one `renameat2(RENAME_NOREPLACE)`, so a
//! destination created meanwhile (even an empty directory, which plain `rename` would replace) is never
//! overwritten.

use tonic::Status;

use crate::proto::gitaly::{RenameRepositoryRequest, RenameRepositoryResponse, Repository};
use crate::service::Context;

pub async fn rename_repository(
    ctx: &Context,
    req: RenameRepositoryRequest,
) -> Result<RenameRepositoryResponse, Status> {
    let Some(from_repo) = req.repository.as_ref() else {
        return Err(Status::invalid_argument("from repository is empty"));
    };
    if req.relative_path.is_empty() {
        return Err(Status::invalid_argument("destination relative path is empty"));
    }
    let invalid = |e: crate::locator::LocateError| Status::invalid_argument(e.to_string());
    let from = ctx.locator.repo_path(Some(from_repo)).map_err(invalid)?;
    // Open handles are keyed by the canonical path: forgotten once the repository is gone from it.
    let from_canonical = ctx.locator.resolve(from_repo).ok();
    let to_repo = Repository {
        storage_name: from_repo.storage_name.clone(),
        relative_path: req.relative_path.clone(),
        ..Default::default()
    };
    let to = ctx.locator.target_path(Some(&to_repo)).map_err(invalid)?;
    if std::fs::symlink_metadata(&to).is_ok() {
        return Err(Status::failed_precondition("destination already exists"));
    }
    if to.starts_with(&from) {
        return Err(Status::invalid_argument("destination is inside the repository"));
    }
    let parent = to.parent().ok_or_else(|| Status::invalid_argument("destination has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|e| Status::internal(e.to_string()))?;
    rename_no_replace(&from, &to).map_err(|e| match e {
        nix::errno::Errno::EEXIST => Status::failed_precondition("destination already exists"),
        e => Status::internal(format!("rename: {e}")),
    })?;
    ctx.repos.forget(&from);
    if let Some(canonical) = from_canonical {
        ctx.repos.forget(&canonical);
    }
    Ok(RenameRepositoryResponse {})
}

/// Moves `from` to `to` in one step, failing with `EEXIST` rather than replacing anything at `to` (plain
/// `rename` replaces an empty directory).
pub(crate) fn rename_no_replace(from: &std::path::Path, to: &std::path::Path) -> nix::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

//! DeleteRefs and PackRefs: ref deletion in one `update-ref` transaction, and `pack-refs --all`.

use tonic::Status;

use super::util::for_each_ref;
use crate::git::Sub;
use crate::proto::gitaly::{DeleteRefsRequest, DeleteRefsResponse, PackRefsRequest, PackRefsResponse};
use crate::service::Ctx;

pub async fn delete_refs(ctx: &Ctx, req: DeleteRefsRequest) -> Result<DeleteRefsResponse, Status> {
    let invalid = |m: &str| Status::invalid_argument(format!("DeleteRefs: {m}"));
    if !req.except_with_prefix.is_empty() && !req.refs.is_empty() {
        return Err(invalid("ExceptWithPrefix and Refs are mutually exclusive"));
    }
    if req.except_with_prefix.is_empty() && req.refs.is_empty() {
        return Err(invalid("empty ExceptWithPrefix and Refs"));
    }
    if req.except_with_prefix.iter().any(|p| p.is_empty()) {
        return Err(invalid("empty prefix for exclusion"));
    }
    if req.refs.iter().any(|r| r.is_empty()) {
        return Err(invalid("empty ref"));
    }
    // A NUL would end a field of `update-ref -z --stdin` and smuggle in commands of the caller's own.
    if req.refs.iter().any(|r| r.contains(&0)) {
        return Err(invalid("invalid ref"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let refs = if req.refs.is_empty() {
        let all = for_each_ref(ctx, &path, &["--format=%(refname)".into()], &[]).await?;
        all.into_iter().filter(|r| !req.except_with_prefix.iter().any(|p| r.starts_with(p))).collect()
    } else {
        req.refs
    };
    let mut stdin = b"start\0".to_vec();
    for r in &refs {
        stdin.extend_from_slice(b"delete ");
        stdin.extend_from_slice(r);
        stdin.extend_from_slice(b"\0\0");
    }
    stdin.extend_from_slice(b"prepare\0commit\0");
    let cmd = ctx.git.command(&path, Sub::UpdateRef).flag("-z").flag("--stdin");
    match cmd.output_with_stdin(stdin).await {
        Ok(_) => Ok(DeleteRefsResponse::default()),
        Err(crate::git::GitError::Failed { code, stderr, .. }) => Ok(DeleteRefsResponse {
            git_error: format!("unable to delete refs: git update-ref: exit status {code}, stderr: {stderr:?}"),
        }),
        Err(e) => Err(e.into()),
    }
}

pub async fn pack_refs(ctx: &Ctx, req: PackRefsRequest) -> Result<PackRefsResponse, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty repository"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    ctx.git.command(&path, Sub::PackRefs).flag("--all").output().await?;
    ctx.repos.forget(&path);
    Ok(PackRefsResponse {})
}

//! WriteRef: points a ref (or HEAD, symbolically) at a revision, optionally only if it still has an
//! expected old value — a compare-and-swap through `git update-ref --stdin`.

use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{WriteRefRequest, WriteRefResponse};
use crate::service::Context;

pub async fn write_ref(ctx: &Context, req: WriteRefRequest) -> Result<WriteRefResponse, Status> {
    validate_revision(&req.r#ref).map_err(|e| Status::invalid_argument(format!("invalid ref: {e}")))?;
    validate_revision(&req.revision).map_err(|e| Status::invalid_argument(format!("invalid revision: {e}")))?;
    if !req.old_revision.is_empty() {
        validate_revision(&req.old_revision)
            .map_err(|e| Status::invalid_argument(format!("invalid OldRevision: {e}")))?;
    }
    if req.r#ref != b"HEAD" && !req.r#ref.starts_with(b"refs/") {
        return Err(Status::invalid_argument("ref has to be a full reference"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if req.r#ref == b"HEAD" {
        crate::git::repo::Repo::new(&ctx.git, &repo)
            .set_head(&text(&req.revision))
            .await
            .map_err(|e| Status::internal(format!("error when running symbolic-ref command: {e}")))?;
        return Ok(WriteRefResponse {});
    }
    let mut stdin = Vec::new();
    for part in [&b"update "[..], &req.r#ref, b"\0", &req.revision, b"\0", &req.old_revision, b"\0"] {
        stdin.extend_from_slice(part);
    }
    ctx.git
        .command(&repo, Sub::UpdateRef)
        .flag("-z")
        .flag("--stdin")
        .output_with_stdin(stdin)
        .await
        .map_err(|e| Status::internal(format!("error when running update-ref command: {e}")))?;
    Ok(WriteRefResponse {})
}

//! ListFiles: every blob path at a revision (default: the default branch), as `git ls-tree -r` lists
//! them, in responses of up to 1 MiB.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{ListFilesRequest, ListFilesResponse};
use crate::service::Ctx;

pub async fn list_files(ctx: &Ctx, req: ListFilesRequest) -> Result<BoxStream<ListFilesResponse>, Status> {
    if !req.revision.is_empty() {
        validate_revision(&req.revision).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut revision = String::from_utf8_lossy(&req.revision).into_owned();
    if revision.is_empty() {
        let default = crate::service::default_branch(ctx, &path).await?;
        if default.is_empty() {
            return Err(Status::failed_precondition("repository does not have a default branch"));
        }
        revision = String::from_utf8_lossy(&default).into_owned();
    }
    let verify = ctx.git.command(&path, Sub::RevParse).flag("--verify").user_arg(&revision).run_to_end().await?;
    if !verify.exit.success() {
        return Ok(Box::pin(futures::stream::iter([Ok(ListFilesResponse::default())])));
    }
    let out = ctx
        .git
        .command(&path, Sub::LsTree)
        .flag("-z")
        .flag("-r")
        .flag("--full-tree")
        .flag("--full-name")
        .user_arg(&revision)
        .run_to_end()
        .await?;
    if !out.exit.success() {
        return Err(Status::internal(format!("ListFiles: {}", out.stderr_text())));
    }
    let mut paths = Vec::new();
    for record in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let Some(tab) = record.iter().position(|b| *b == b'\t') else { continue };
        if record[..tab].split(|b| *b == b' ').nth(1) == Some(b"blob") {
            paths.push(record[tab + 1..].to_vec());
        }
    }
    let batches = crate::service::chunk::byte_batches(paths, 1);
    Ok(Box::pin(futures::stream::iter(batches.into_iter().map(|paths| Ok(ListFilesResponse { paths })))))
}

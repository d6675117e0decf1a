//! GetInfoAttributes (the repository's `info/attributes`, streamed) and ApplyGitattributes (a revision's
//! `.gitattributes` made the repository's `info/attributes`, written atomically, or removed when the
//! revision has none), as upstream.

use std::io::Write;
use std::path::PathBuf;

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::*;
use crate::service::Context;

use crate::service::chunk::DATA_CHUNK as CHUNK;

pub async fn get_info_attributes(
    ctx: &Context,
    req: GetInfoAttributesRequest,
) -> Result<BoxStream<GetInfoAttributesResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?.join("info").join("attributes");
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Box::pin(tokio_stream::iter(vec![Ok(GetInfoAttributesResponse::default())])));
        }
        Err(e) => {
            return Err(Status::internal(format!("GetInfoAttributes failure to read info attributes: {e}")));
        }
    };
    let messages: Vec<_> =
        data.chunks(CHUNK).map(|c| Ok(GetInfoAttributesResponse { attributes: c.to_vec() })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}

pub async fn apply_gitattributes(
    ctx: &Context,
    req: ApplyGitattributesRequest,
) -> Result<ApplyGitattributesResponse, Status> {
    let repo_path = ctx.locator.repo_path(req.repository.as_ref())?;
    crate::git::validate_revision(&req.revision)
        .map_err(|e| Status::invalid_argument(format!("ApplyGitAttributes: revision: {e}")))?;
    let handle = ctx.repos.open(&repo_path)?;
    let revision = String::from_utf8_lossy(&req.revision).into_owned();
    let info = repo_path.join("info");
    // Tree and blob reads, and the file write: off the async threads.
    tokio::task::spawn_blocking(move || {
        if crate::odb::resolve(&handle, revision.as_bytes()).is_none() {
            return Err(Status::invalid_argument("Revision doesn't exist"));
        }
        let entry = crate::odb::tree::find_entry(&handle, &revision, b".gitattributes")?
            .filter(|e| e.r#type == tree_entry::EntryType::Blob as i32);
        let content = match entry {
            Some(e) => crate::odb::read_hex(&handle, &e.oid)?,
            None => None,
        };
        drop(handle);
        write_attributes(info, content)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    Ok(ApplyGitattributesResponse {})
}

/// Replaces `info/attributes` with `content` (a temporary file renamed over it, mode 0644), or removes it.
fn write_attributes(info: PathBuf, content: Option<Vec<u8>>) -> Result<(), Status> {
    let target = info.join("attributes");
    let internal = |e: std::io::Error| Status::internal(format!("ApplyGitAttributes: {e}"));
    let Some(content) = content else {
        return match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(internal(e)),
            _ => Ok(()),
        };
    };
    std::fs::create_dir_all(&info).map_err(internal)?;
    let mut tmp = tempfile::Builder::new().prefix("attributes").tempfile_in(&info).map_err(internal)?;
    tmp.write_all(&content).map_err(internal)?;
    tmp.as_file().sync_all().map_err(internal)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(internal)?;
    tmp.persist(&target).map_err(|e| internal(e.error))?;
    Ok(())
}

//! GetBlob: one blob by id, its data streamed in 128 KiB pieces up to `limit` (negative: all). A missing
//! object, or one that is not a blob, is a single empty response. The id is looked up in-process (never
//! handed to a git process), so like upstream's `cat-file --batch` it accepts any revision.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::data::{self, Data};
use crate::proto::gitaly::{GetBlobRequest, GetBlobResponse};
use crate::service::Ctx;

pub fn get_blob(ctx: &Ctx, req: GetBlobRequest) -> Result<BoxStream<GetBlobResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    if req.oid.is_empty() {
        return Err(Status::invalid_argument("GetBlob: empty Oid"));
    }
    if crate::odb::is_point_lookup(req.oid.as_bytes()) {
        match crate::odb::inline(|| small(ctx, &path, &req)) {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => {}
            Err(e) => return Ok(data::failed(e)),
        }
    }
    let c = ctx.clone();
    Ok(data::respond(move |tx| async move {
        let (c2, p2) = (c.clone(), path.clone());
        let found = crate::odb::blocking(move || {
            let repo = c2.repos.open(&p2)?;
            let object = crate::odb::resolve(&repo, req.oid.as_bytes()).map(|id| (id, crate::odb::header(&repo, id)));
            let (id, size) = match object {
                Some((id, Ok(Some((gix::object::Kind::Blob, size))))) => (id, size),
                Some((_, Err(e))) => return Err(Status::internal(format!("GetBlob: {}", e.message()))),
                _ => return Ok(None),
            };
            let length = if req.limit >= 0 { (req.limit as u64).min(size) } else { size };
            let data = Data::plan(&repo, id, size, length)
                .map_err(|e| Status::internal(format!("GetBlob: {}", e.message())))?;
            Ok(Some((id, size, data)))
        })
        .await?;
        let Some((id, size, blob)) = found else {
            let _ = tx.send(Ok(GetBlobResponse::default())).await;
            return Ok(());
        };
        let first = GetBlobResponse { size: size as i64, oid: id.to_string(), data: Default::default() };
        data::send(&c, &path, first, blob, |m, d| m.data = d, &tx).await?;
        Ok(())
    }))
}

/// The whole answer when `req.oid` is missing, not a blob, or a blob of at most [`data::POINT_MAX`] bytes;
/// `None` for a larger blob, which is read on a read thread or streamed from git.
fn small(
    ctx: &Ctx,
    path: &std::path::Path,
    req: &GetBlobRequest,
) -> Result<Option<BoxStream<GetBlobResponse>>, Status> {
    let repo = ctx.repos.open(path)?;
    let object = crate::odb::resolve(&repo, req.oid.as_bytes()).map(|id| (id, crate::odb::header(&repo, id)));
    let (id, size) = match object {
        Some((id, Ok(Some((gix::object::Kind::Blob, size))))) => (id, size),
        Some((_, Err(e))) => return Err(Status::internal(format!("GetBlob: {}", e.message()))),
        _ => return Ok(Some(data::ready(GetBlobResponse::default(), Vec::new(), |m, d| m.data = d))),
    };
    if size > data::POINT_MAX {
        return Ok(None);
    }
    let length = if req.limit >= 0 { (req.limit as u64).min(size) } else { size };
    let bytes = crate::odb::blob_prefix(&repo, id, size, length)
        .map_err(|e| Status::internal(format!("GetBlob: {}", e.message())))?;
    let first = GetBlobResponse { size: size as i64, oid: id.to_string(), data: Default::default() };
    Ok(Some(data::ready(first, bytes, |m, d| m.data = d)))
}

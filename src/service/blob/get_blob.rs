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
        let first = GetBlobResponse { size: size as i64, oid: id.to_string(), data: Vec::new() };
        data::send(&c, &path, first, blob, |m, d| m.data = d, &tx).await?;
        Ok(())
    }))
}

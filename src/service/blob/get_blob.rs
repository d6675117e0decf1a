//! GetBlob: one blob by id, its data streamed in 128 KiB pieces up to `limit` (negative: all). A missing
//! object, or one that is not a blob, is a single empty response. The id is looked up in-process (never
//! handed to a git process), so like upstream's `cat-file --batch` it accepts any revision.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{GetBlobRequest, GetBlobResponse};
use crate::service::chunk::send_data;
use crate::service::Ctx;

pub fn get_blob(ctx: &Ctx, req: GetBlobRequest) -> Result<BoxStream<GetBlobResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    if req.oid.is_empty() {
        return Err(Status::invalid_argument("GetBlob: empty Oid"));
    }
    let c = ctx.clone();
    Ok(crate::odb::stream(move |send| {
        let repo = c.repos.open(&path)?;
        let object = crate::odb::resolve(&repo, req.oid.as_bytes()).map(|id| (id, crate::odb::header(&repo, id)));
        let (id, size) = match object {
            Some((id, Ok(Some((gix::object::Kind::Blob, size))))) => (id, size as i64),
            Some((_, Err(e))) => return Err(Status::internal(format!("GetBlob: {}", e.message()))),
            _ => {
                send(GetBlobResponse::default());
                return Ok(());
            }
        };
        let length = if req.limit >= 0 && req.limit < size { req.limit } else { size };
        let data = crate::odb::blob_prefix(&repo, id, size as u64, length as u64)
            .map_err(|e| Status::internal(format!("GetBlob: {}", e.message())))?;
        let first = GetBlobResponse { size, oid: id.to_string(), data: Vec::new() };
        send_data(first, &data, |m, d| m.data = d, send);
        Ok(())
    }))
}

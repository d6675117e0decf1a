//! GetBlob: one blob by id, its data streamed in 128 KiB pieces up to `limit` (negative: all). A missing
//! object, or one that is not a blob, is a single empty response. The id is looked up in-process (never
//! handed to a git process), so like upstream's `cat-file --batch` it accepts any revision.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{GetBlobRequest, GetBlobResponse};
use crate::service::commit::DATA_CHUNK;
use crate::service::Ctx;

pub fn get_blob(ctx: &Ctx, req: GetBlobRequest) -> Result<BoxStream<GetBlobResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    if req.oid.is_empty() {
        return Err(Status::invalid_argument("GetBlob: empty Oid"));
    }
    let c = ctx.clone();
    Ok(crate::odb::stream(move |send| {
        let repo = c.repos.open(&path)?;
        let object = crate::odb::resolve(&repo, req.oid.as_bytes()).map(|id| (id, crate::odb::read(&repo, id)));
        let (id, data) = match object {
            Some((id, Ok(Some((gix::object::Kind::Blob, data))))) => (id, data),
            Some((_, Err(e))) => return Err(Status::internal(format!("GetBlob: {}", e.message()))),
            _ => {
                send(GetBlobResponse::default());
                return Ok(());
            }
        };
        let size = data.len() as i64;
        let length = if req.limit >= 0 && req.limit < size { req.limit } else { size } as usize;
        let mut first = Some(GetBlobResponse { size, oid: id.to_string(), data: Vec::new() });
        if length == 0 {
            send(first.take().expect("first"));
            return Ok(());
        }
        for piece in data[..length].chunks(DATA_CHUNK) {
            let mut m = first.take().unwrap_or_default();
            m.data = piece.to_vec();
            if !send(m) {
                break;
            }
        }
        Ok(())
    }))
}

//! RefExists: whether a fully qualified ref (`refs/…`) exists.

use tonic::Status;

use crate::proto::gitaly::{RefExistsRequest, RefExistsResponse};
use crate::service::Ctx;

pub async fn ref_exists(ctx: &Ctx, req: RefExistsRequest) -> Result<RefExistsResponse, Status> {
    if !req.r#ref.starts_with(b"refs/") {
        return Err(Status::invalid_argument("invalid refname"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    crate::odb::inline(move || {
        let repo = c.repos.open(&path)?;
        Ok(RefExistsResponse { value: crate::odb::refs::target(&repo, &req.r#ref)?.is_some() })
    })
}

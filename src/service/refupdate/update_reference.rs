//! UpdateReference: one ref of the payload's repository moved from an expected value to a new one,
//! in-process (`odb::refs::update`: git's lock files and checks), on a blocking thread that finishes the
//! swap even when the calling worker is gone.

use tonic::Status;

use crate::hook::payload::hooks;
use crate::proto::rgitaly::{UpdateReferenceRequest, UpdateReferenceResponse};
use crate::service::Ctx;

/// A payload asking for any of these is one the daemon gave a write.
const WRITES: u32 = hooks::PRE_RECEIVE | hooks::UPDATE | hooks::POST_RECEIVE;

pub async fn update_reference(
    ctx: &Ctx,
    peer: Option<u32>,
    req: UpdateReferenceRequest,
) -> Result<UpdateReferenceResponse, Status> {
    // A payload signed for this repository and a write.
    let (_, _, path) = crate::service::hook::checked(ctx, &req.environment_variables, req.repository.as_ref(), WRITES)?;
    let reference = String::from_utf8(req.reference)
        .ok()
        .filter(|r| r.starts_with("refs/") && !r.bytes().any(|b| b.is_ascii_control() || b == b' '))
        .ok_or_else(|| Status::invalid_argument("reference must be a full ref name"))?;
    let id = |hex: &str| match gix::ObjectId::from_hex(hex.as_bytes()) {
        Ok(id) => Ok(Some(id).filter(|id| !id.is_null())),
        Err(_) => Err(Status::invalid_argument(format!("invalid object id {hex:?}"))),
    };
    let new = id(&req.new_value)?;
    let old = if req.old_value.is_empty() { None } else { Some(id(&req.old_value)?) };
    let running = match peer {
        Some(pid) => Some(crate::pool::fence::begin(pid).ok_or_else(|| Status::aborted("the calling worker is gone"))?),
        None => None,
    };
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let repo = ctx.repos.open(&path).map_err(|e| Status::internal(e.to_string()))?;
        crate::odb::refs::update(&repo, &reference, new, old).map_err(Status::failed_precondition)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    Ok(UpdateReferenceResponse {})
}

//! UpdateHook: custom update hooks, once per ref a push updates.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::{payload_status, respond, Ctx, WhenGone};
use crate::hook::Call;
use crate::proto::gitaly::{UpdateHookRequest, UpdateHookResponse};

pub async fn update_hook(ctx: &Ctx, req: UpdateHookRequest) -> Result<BoxStream<UpdateHookResponse>, Status> {
    let Some(repository) = req.repository.as_ref() else {
        return Err(Status::invalid_argument("repository is empty"));
    };
    let (payload, repo) = ctx
        .hooks
        .verify(&req.environment_variables, Some(repository), crate::hook::payload::hooks::UPDATE)
        .map_err(payload_status)?;
    let repo_path = ctx.locator.repo_path(Some(repository))?;
    let ctx = ctx.clone();
    Ok(respond(WhenGone::Cancel, move |out| async move {
        let call = Call {
            payload: &payload,
            repo: &repo,
            repo_path: &repo_path,
            env: &req.environment_variables,
            push_options: &[],
        };
        let reference = String::from_utf8_lossy(&req.r#ref);
        ctx.hooks.update(&call, &reference, &req.old_value, &req.new_value, &out).await
    }))
}

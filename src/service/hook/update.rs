//! UpdateHook: custom update hooks, once per ref a push updates.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::{checked, respond, Ctx, WhenGone};
use crate::hook::Call;
use crate::proto::gitaly::{UpdateHookRequest, UpdateHookResponse};

pub async fn update_hook(ctx: &Ctx, req: UpdateHookRequest) -> Result<BoxStream<UpdateHookResponse>, Status> {
    let (payload, repo, repo_path) =
        checked(ctx, &req.environment_variables, req.repository.as_ref(), crate::hook::payload::hooks::UPDATE)?;
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

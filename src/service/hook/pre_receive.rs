//! PreReceiveHook: GitLab's access check and custom pre-receive hooks, before git makes a push visible.

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::{checked, read_stdin, respond, Ctx, WhenGone};
use crate::hook::Call;
use crate::proto::gitaly::{PreReceiveHookRequest, PreReceiveHookResponse};
use crate::service::first_request;

pub async fn pre_receive_hook(
    ctx: &Ctx,
    mut stream: Streaming<PreReceiveHookRequest>,
) -> Result<BoxStream<PreReceiveHookResponse>, Status> {
    let first = first_request(&mut stream).await?;
    let (payload, repo, repo_path) = checked(
        ctx,
        &first.environment_variables,
        first.repository.as_ref(),
        crate::hook::payload::hooks::PRE_RECEIVE,
    )?;
    let changes = read_stdin(&first.stdin, &mut stream, |r| r.stdin.into()).await?;
    let ctx = ctx.clone();
    Ok(respond(WhenGone::Cancel, move |out| async move {
        let call = Call {
            payload: &payload,
            repo: &repo,
            repo_path: &repo_path,
            env: &first.environment_variables,
            push_options: &first.git_push_options,
        };
        ctx.hooks.pre_receive(&call, &changes, &out).await
    }))
}

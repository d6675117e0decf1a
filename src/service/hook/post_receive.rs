//! PostReceiveHook: tells GitLab a push landed (its messages reach the pushing client) and runs custom
//! post-receive hooks.

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::{checked, read_stdin, respond, Ctx, WhenGone};
use crate::hook::Call;
use crate::proto::gitaly::{PostReceiveHookRequest, PostReceiveHookResponse};
use crate::service::first_request;

pub async fn post_receive_hook(
    ctx: &Ctx,
    mut stream: Streaming<PostReceiveHookRequest>,
) -> Result<BoxStream<PostReceiveHookResponse>, Status> {
    let first = first_request(&mut stream).await?;
    let (payload, repo, repo_path) = checked(
        ctx,
        &first.environment_variables,
        first.repository.as_ref(),
        crate::hook::payload::hooks::POST_RECEIVE,
    )?;
    let changes = read_stdin(&first.stdin, &mut stream, |r| r.stdin.into()).await?;
    let ctx = ctx.clone();
    Ok(respond(WhenGone::Finish, move |out| async move {
        let call = Call {
            payload: &payload,
            repo: &repo,
            repo_path: &repo_path,
            env: &first.environment_variables,
            push_options: &first.git_push_options,
        };
        ctx.hooks.post_receive(&call, &changes, &out).await
    }))
}

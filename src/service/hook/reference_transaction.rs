//! ReferenceTransactionHook: upstream votes on the transaction with Praefect's other nodes here. rgitaly
//! has no Praefect transactions, so, as upstream without one, a valid call succeeds and does nothing.

use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::{payload_status, read_stdin, respond, Ctx, WhenGone};
use crate::proto::gitaly::reference_transaction_hook_request::State;
use crate::proto::gitaly::{ReferenceTransactionHookRequest, ReferenceTransactionHookResponse};
use crate::service::first_request;

pub async fn reference_transaction_hook(
    ctx: &Ctx,
    mut stream: Streaming<ReferenceTransactionHookRequest>,
) -> Result<BoxStream<ReferenceTransactionHookResponse>, Status> {
    let first = first_request(&mut stream).await?;
    let Some(repository) = first.repository.as_ref() else {
        return Err(Status::invalid_argument("repository is empty"));
    };
    if State::try_from(first.state).is_err() {
        return Err(Status::invalid_argument("invalid hook state"));
    }
    ctx.hooks
        .verify(&first.environment_variables, Some(repository), crate::hook::payload::hooks::REFERENCE_TRANSACTION)
        .map_err(payload_status)?;
    // The updates are read (git writes them and waits for the hook) but there is nothing to vote on.
    read_stdin(&first.stdin, &mut stream, |r| r.stdin.into()).await?;
    Ok(respond(WhenGone::Cancel, |_out| async { Ok(()) }))
}

//! GetCommitMessages: full (untruncated) commit messages by id, each as its id and then the message in
//! 128 KiB pieces.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{GetCommitMessagesRequest, GetCommitMessagesResponse};
use crate::service::chunk::send_pieces;
use crate::service::Ctx;

pub fn get_commit_messages(
    ctx: &Ctx,
    req: GetCommitMessagesRequest,
) -> Result<BoxStream<GetCommitMessagesResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty Repository"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        for id in &req.commit_ids {
            let object = crate::odb::resolve_commit(&repo, id.as_bytes()).map(|oid| crate::odb::read(&repo, oid));
            let Some(Ok(Some((_, raw)))) = object else {
                return Err(Status::internal("failed to get commit message: object not found"));
            };
            let (_, message) = crate::odb::commit::split_raw(&raw);
            out.send(GetCommitMessagesResponse { commit_id: id.clone(), message: Vec::new() }).await;
            send_pieces(message, |message| GetCommitMessagesResponse { commit_id: String::new(), message }, &out).await;
        }
        Ok(())
    }))
}

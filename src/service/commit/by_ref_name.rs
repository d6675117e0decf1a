//! ListCommitsByRefName: the commit each ref name (any revision) points at, skipping those that do not
//! resolve, in responses of up to 1 MiB.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::list_commits_by_ref_name_response::CommitForRef;
use crate::proto::gitaly::{ListCommitsByRefNameRequest, ListCommitsByRefNameResponse};
use crate::service::chunk::Chunker;
use crate::service::Ctx;

pub fn list_commits_by_ref_name(
    ctx: &Ctx,
    req: ListCommitsByRefNameRequest,
) -> Result<BoxStream<ListCommitsByRefNameResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut chunker = Chunker::default();
        for name in &req.ref_names {
            if name.starts_with(b"-") {
                continue;
            }
            let Some(commit) = crate::odb::find_commit(&repo, name)? else { continue };
            if let Some(commit_refs) = chunker.push(CommitForRef { commit: Some(commit), ref_name: name.clone() }) {
                out.send(ListCommitsByRefNameResponse { commit_refs }).await;
            }
        }
        if let Some(commit_refs) = chunker.finish() {
            out.send(ListCommitsByRefNameResponse { commit_refs }).await;
        }
        Ok(())
    }))
}

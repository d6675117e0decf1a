//! ListCommitsByOid: commits for a list of ids (or any revisions), skipping those that do not exist, in
//! responses of up to 1 MiB.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{ListCommitsByOidRequest, ListCommitsByOidResponse};
use crate::service::chunk::Chunker;
use crate::service::Ctx;

pub fn list_commits_by_oid(
    ctx: &Ctx,
    req: ListCommitsByOidRequest,
) -> Result<BoxStream<ListCommitsByOidResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut chunker = Chunker::default();
        for oid in &req.oid {
            // As upstream, each entry is looked up as `<oid>^{commit}`: an option-like one finds nothing.
            if oid.starts_with('-') {
                continue;
            }
            let Some(commit) = crate::odb::find_commit(&repo, oid.as_bytes())? else { continue };
            if let Some(commits) = chunker.push(commit) {
                out.send(ListCommitsByOidResponse { commits }).await;
            }
        }
        if let Some(commits) = chunker.finish() {
            out.send(ListCommitsByOidResponse { commits }).await;
        }
        Ok(())
    }))
}

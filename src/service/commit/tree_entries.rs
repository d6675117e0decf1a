//! GetTreeEntries: the entries of a directory at a revision, optionally recursive; non-recursive listings
//! carry `flat_path` (the path down chains of single-directory trees). Responses of up to 1 MiB.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::validate_revision;
use crate::proto::gitaly::{GetTreeEntriesRequest, GetTreeEntriesResponse};
use crate::service::chunk::Chunker;
use crate::service::Ctx;

pub fn get_tree_entries(ctx: &Ctx, req: GetTreeEntriesRequest) -> Result<BoxStream<GetTreeEntriesResponse>, Status> {
    validate_revision(&req.revision).map_err(|e| Status::invalid_argument(format!("TreeEntry: {e}")))?;
    if req.path.is_empty() {
        return Err(Status::invalid_argument("TreeEntry: empty Path"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let revision = String::from_utf8_lossy(&req.revision);
        let mut entries = crate::odb::tree::tree_entries(&repo, &revision, &req.path, req.recursive)?;
        if !req.recursive {
            crate::odb::tree::populate_flat_paths(&repo, &mut entries)?;
        }
        let mut chunker = Chunker::default();
        for e in entries {
            if let Some(entries) = chunker.push(e) {
                out.send(GetTreeEntriesResponse { entries }).await;
            }
        }
        if let Some(entries) = chunker.finish() {
            out.send(GetTreeEntriesResponse { entries }).await;
        }
        Ok(())
    }))
}

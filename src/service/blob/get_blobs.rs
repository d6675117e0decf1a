//! GetBlobs: entries by (revision, path), each answered in order: blobs with their data (up to `limit`,
//! negative: all), submodules and trees with their metadata only, missing paths as a response carrying
//! just the revision and path.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::tree_entry::EntryType;
use crate::proto::gitaly::{GetBlobsRequest, GetBlobsResponse, ObjectType};
use crate::service::chunk::send_data;
use crate::service::Ctx;

pub fn get_blobs(ctx: &Ctx, req: GetBlobsRequest) -> Result<BoxStream<GetBlobsResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("GetBlobs: empty Repository"));
    }
    if req.revision_paths.is_empty() {
        return Err(Status::invalid_argument("GetBlobs: empty RevisionPaths"));
    }
    for rp in &req.revision_paths {
        crate::git::validate_revision(rp.revision.as_bytes())
            .map_err(|e| Status::invalid_argument(format!("GetBlobs: {e}")))?;
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |send| {
        let repo = c.repos.open(&path)?;
        for rp in &req.revision_paths {
            let mut wanted: &[u8] = &rp.path;
            if wanted.len() > 1 {
                while let Some(rest) = wanted.strip_suffix(b"/") {
                    wanted = rest;
                }
            }
            let mut response =
                GetBlobsResponse { revision: rp.revision.clone(), path: wanted.to_vec(), ..Default::default() };
            let Some(entry) = crate::odb::tree::find_entry(&repo, &rp.revision, wanted)? else {
                if !send(response) {
                    return Ok(());
                }
                continue;
            };
            response.mode = entry.mode;
            response.oid = entry.oid.clone();
            let kind = EntryType::try_from(entry.r#type).unwrap_or(EntryType::Blob);
            if kind == EntryType::Commit {
                response.is_submodule = true;
                response.r#type = ObjectType::Commit as i32;
                if !send(response) {
                    return Ok(());
                }
                continue;
            }
            let oid = gix::ObjectId::from_hex(entry.oid.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
            if kind == EntryType::Tree {
                response.size = crate::odb::header(&repo, oid)?.map(|(_, s)| s as i64).unwrap_or(0);
                response.r#type = ObjectType::Tree as i32;
                if !send(response) {
                    return Ok(());
                }
                continue;
            }
            let Some((_, size)) = crate::odb::header(&repo, oid)? else {
                return Err(Status::internal(format!("GetBlobs: object not found: {oid}")));
            };
            response.size = size as i64;
            response.r#type = ObjectType::Blob as i32;
            let length = if req.limit < 0 || req.limit > response.size { response.size } else { req.limit };
            let data = crate::odb::blob_prefix(&repo, oid, size, length as u64)?;
            if !send_data(response, &data, |m, d| m.data = d, send) {
                return Ok(());
            }
        }
        Ok(())
    }))
}

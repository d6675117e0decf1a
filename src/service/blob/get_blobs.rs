//! GetBlobs: entries by (revision, path), each answered in order: blobs with their data (up to `limit`,
//! negative: all), submodules and trees with their metadata only, missing paths as a response carrying
//! just the revision and path.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::data::{self, Data};
use crate::proto::gitaly::get_blobs_request::RevisionPath;
use crate::proto::gitaly::tree_entry::EntryType;
use crate::proto::gitaly::{GetBlobsRequest, GetBlobsResponse, ObjectType};
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
    Ok(data::respond(move |tx| async move {
        for rp in req.revision_paths {
            let (c2, p2) = (c.clone(), path.clone());
            // One entry at a time: the read thread is held for one lookup, never while the client reads.
            let (response, blob) = crate::odb::blocking(move || entry(&c2, &p2, rp, req.limit)).await?;
            if !data::send(&c, &path, response, blob, |m, d| m.data = d, &tx).await? {
                return Ok(());
            }
        }
        Ok(())
    }))
}

/// The response for one (revision, path), and the blob data to send with it.
fn entry(c: &Ctx, path: &std::path::Path, rp: RevisionPath, limit: i64) -> Result<(GetBlobsResponse, Data), Status> {
    let none = || Data::Inline(Vec::new());
    let repo = c.repos.open(path)?;
    let mut wanted: &[u8] = &rp.path;
    if wanted.len() > 1 {
        while let Some(rest) = wanted.strip_suffix(b"/") {
            wanted = rest;
        }
    }
    let mut response = GetBlobsResponse { revision: rp.revision.clone(), path: wanted.to_vec(), ..Default::default() };
    let Some(entry) = crate::odb::tree::find_entry(&repo, &rp.revision, wanted)? else {
        return Ok((response, none()));
    };
    response.mode = entry.mode;
    response.oid = entry.oid.clone();
    let kind = EntryType::try_from(entry.r#type).unwrap_or(EntryType::Blob);
    if kind == EntryType::Commit {
        response.is_submodule = true;
        response.r#type = ObjectType::Commit as i32;
        return Ok((response, none()));
    }
    let oid = gix::ObjectId::from_hex(entry.oid.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
    if kind == EntryType::Tree {
        response.size = crate::odb::header(&repo, oid)?.map(|(_, s)| s as i64).unwrap_or(0);
        response.r#type = ObjectType::Tree as i32;
        return Ok((response, none()));
    }
    let Some((_, size)) = crate::odb::header(&repo, oid)? else {
        return Err(Status::internal(format!("GetBlobs: object not found: {oid}")));
    };
    response.size = size as i64;
    response.r#type = ObjectType::Blob as i32;
    let length = if limit < 0 { size } else { (limit as u64).min(size) };
    Ok((response, Data::plan(&repo, oid, size, length)?))
}

//! TreeEntry: one entry of a tree by revision and path, with a blob's data streamed in 128 KiB pieces.
//! Not found is a single empty response (upstream's default; its NotFound variant was behind a feature
//! flag that was off).

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::validate_revision;
use crate::proto::gitaly::tree_entry::EntryType;
use crate::proto::gitaly::tree_entry_response::ObjectType;
use crate::proto::gitaly::{TreeEntryRequest, TreeEntryResponse};
use crate::service::blob::data::{self, Data};
use crate::service::Ctx;

pub fn tree_entry(ctx: &Ctx, req: TreeEntryRequest) -> Result<BoxStream<TreeEntryResponse>, Status> {
    let invalid = |m: String| Status::invalid_argument(format!("TreeEntry: {m}"));
    validate_revision(&req.revision).map_err(|e| invalid(e.to_string()))?;
    if req.path.is_empty() {
        return Err(invalid("empty Path".into()));
    }
    if req.limit < 0 {
        return Err(invalid("negative Limit".into()));
    }
    if req.max_size < 0 {
        return Err(invalid("negative MaxSize".into()));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(data::respond(move |tx| async move {
        let (c2, p2) = (c.clone(), path.clone());
        let (first, blob) = crate::odb::blocking(move || entry(&c2, &p2, &req)).await?;
        data::send(&c, &path, first, blob, |m, d| m.data = d, &tx).await?;
        Ok(())
    }))
}

/// The response for the entry, and the blob data to send with it (a single empty response when not found).
fn entry(c: &Ctx, path: &std::path::Path, req: &TreeEntryRequest) -> Result<(TreeEntryResponse, Data), Status> {
    let none = || Data::Inline(Vec::new());
    let repo = c.repos.open(path)?;
    let mut wanted: &[u8] = &req.path;
    if wanted.len() > 1 {
        while let Some(rest) = wanted.strip_suffix(b"/") {
            wanted = rest;
        }
    }
    let revision = String::from_utf8_lossy(&req.revision);
    let Some(entry) = crate::odb::tree::find_entry(&repo, &revision, wanted)? else {
        return Ok((TreeEntryResponse::default(), none()));
    };
    let oid = gix::ObjectId::from_hex(entry.oid.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
    match EntryType::try_from(entry.r#type).unwrap_or(EntryType::Blob) {
        EntryType::Commit => {
            let r = TreeEntryResponse {
                r#type: ObjectType::Commit as i32,
                mode: entry.mode,
                oid: entry.oid,
                ..Default::default()
            };
            Ok((r, none()))
        }
        EntryType::Tree => {
            let size = crate::odb::header(&repo, oid)?.map(|(_, s)| s as i64).unwrap_or(0);
            let r = TreeEntryResponse {
                r#type: ObjectType::Tree as i32,
                oid: entry.oid,
                size,
                mode: entry.mode,
                ..Default::default()
            };
            Ok((r, none()))
        }
        EntryType::Blob => {
            let Some((kind, size)) = crate::odb::header(&repo, oid)? else {
                return Err(Status::internal(format!("TreeEntry: object not found: {oid}")));
            };
            if kind != gix::object::Kind::Blob {
                return Err(Status::internal(format!(
                    "TreeEntry: mismatched object type: tree-oid={oid} object-oid={oid} entry-type=BLOB object-type={kind}"
                )));
            }
            let size = size as i64;
            if req.max_size > 0 && size > req.max_size {
                return Err(Status::failed_precondition(format!(
                    "TreeEntry: object size ({size}) is bigger than the maximum allowed size ({})",
                    req.max_size
                )));
            }
            let length = if req.limit > 0 { size.min(req.limit) } else { size } as u64;
            let data = Data::plan(&repo, oid, size as u64, length)?;
            let first = TreeEntryResponse {
                r#type: ObjectType::Blob as i32,
                oid: entry.oid,
                size,
                mode: entry.mode,
                ..Default::default()
            };
            Ok((first, data))
        }
    }
}

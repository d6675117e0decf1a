//! TreeEntry: one entry of a tree by revision and path, with a blob's data streamed in 128 KiB pieces.
//! Not found is a single empty response (upstream's default; its NotFound variant was behind a feature
//! flag that was off).

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::validate_revision;
use crate::proto::gitaly::tree_entry::EntryType;
use crate::proto::gitaly::tree_entry_response::ObjectType;
use crate::proto::gitaly::{TreeEntryRequest, TreeEntryResponse};
use crate::service::chunk::send_data;
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
    Ok(crate::odb::stream(move |send| {
        let repo = c.repos.open(&path)?;
        let mut wanted: &[u8] = &req.path;
        if wanted.len() > 1 {
            while let Some(rest) = wanted.strip_suffix(b"/") {
                wanted = rest;
            }
        }
        let revision = String::from_utf8_lossy(&req.revision);
        let Some(entry) = crate::odb::tree::find_entry(&repo, &revision, wanted)? else {
            send(TreeEntryResponse::default());
            return Ok(());
        };
        let oid = gix::ObjectId::from_hex(entry.oid.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
        match EntryType::try_from(entry.r#type).unwrap_or(EntryType::Blob) {
            EntryType::Commit => {
                send(TreeEntryResponse {
                    r#type: ObjectType::Commit as i32,
                    mode: entry.mode,
                    oid: entry.oid,
                    ..Default::default()
                });
            }
            EntryType::Tree => {
                let size = crate::odb::header(&repo, oid)?.map(|(_, s)| s as i64).unwrap_or(0);
                send(TreeEntryResponse {
                    r#type: ObjectType::Tree as i32,
                    oid: entry.oid,
                    size,
                    mode: entry.mode,
                    ..Default::default()
                });
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
                let data = crate::odb::blob_prefix(&repo, oid, size as u64, length)?;
                let first = TreeEntryResponse {
                    r#type: ObjectType::Blob as i32,
                    oid: entry.oid,
                    size,
                    mode: entry.mode,
                    ..Default::default()
                };
                send_data(first, &data, |m, d| m.data = d, send);
            }
        }
        Ok(())
    }))
}

//! GetRawChanges: the files that differ between two revisions (`git diff --raw`), each with its blob id
//! and size (the new blob's, or the old one's for a deletion; none for a submodule), operation, modes and
//! paths, in upstream's 1 MiB chunks. An all-zero `from` means the empty tree and an all-zero `to` means no
//! changes; a revision that does not resolve is `InvalidArgument` "invalid 'from' revision: …", as
//! upstream answers. Paths that are not UTF-8 are in the `_bytes` fields, with upstream's placeholder in
//! the deprecated string ones.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::repo::ZERO_OID;
use crate::git::Sub;
use crate::proto::gitaly::get_raw_changes_response::raw_change::Operation;
use crate::proto::gitaly::get_raw_changes_response::RawChange;
use crate::proto::gitaly::{GetRawChangesRequest, GetRawChangesResponse};
use crate::service::chunk::Chunker;
use crate::service::Context;

const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const INVALID_UTF8: &str = "ENCODING ERROR gitaly#1470";

pub async fn get_raw_changes(
    ctx: &Context,
    req: GetRawChangesRequest,
) -> Result<BoxStream<GetRawChangesResponse>, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let (from, to) = {
        let handle = ctx.repos.open(&repo)?;
        let resolve = |side: &str, rev: &str| -> Result<String, Status> {
            if rev == ZERO_OID {
                return Ok(ZERO_OID.to_string());
            }
            crate::odb::resolve(&handle, rev.as_bytes())
                .map(|id| id.to_string())
                .ok_or_else(|| Status::invalid_argument(format!("invalid '{side}' revision: {rev:?}")))
        };
        (resolve("from", &req.from_revision)?, resolve("to", &req.to_revision)?)
    };
    if to == ZERO_OID {
        return Ok(Box::pin(tokio_stream::empty()));
    }
    let from = if from == ZERO_OID { EMPTY_TREE.to_string() } else { from };
    let out = ctx
        .git
        .command(&repo, Sub::Diff)
        .flag("--raw")
        .flag("-z")
        .flag("--no-abbrev")
        .trusted_arg(&from)
        .trusted_arg(&to)
        .output()
        .await
        .map_err(|e| Status::internal(format!("read diff: {e}")))?;
    let handle = ctx.repos.open(&repo)?;
    // Blob lookups for every changed file: off the async threads.
    let messages = tokio::task::spawn_blocking(move || changes(&handle, &out.stdout))
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
    Ok(Box::pin(tokio_stream::iter(messages)))
}

/// The responses for `git diff --raw -z --no-abbrev` output.
#[allow(deprecated)] // new_path and old_path: upstream still fills them
fn changes(handle: &crate::odb::Handle, raw: &[u8]) -> Result<Vec<Result<GetRawChangesResponse, Status>>, Status> {
    let mut chunker = Chunker::default();
    let mut messages = Vec::new();
    let mut fields = raw.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(meta) = fields.next() {
        // ":old_mode new_mode old_oid new_oid status"
        let meta = String::from_utf8_lossy(meta.strip_prefix(b":").unwrap_or(meta)).into_owned();
        let parts: Vec<&str> = meta.split(' ').collect();
        let [old_mode, new_mode, old_oid, new_oid, status] = parts.as_slice() else {
            return Err(Status::internal(format!("read diff: unexpected line {meta:?}")));
        };
        let src = fields.next().unwrap_or_default().to_vec();
        let two_paths = status.starts_with('R') || status.starts_with('C');
        let dst = if two_paths { fields.next().unwrap_or_default().to_vec() } else { Vec::new() };
        let mode = |m: &str| i32::from_str_radix(m, 8).map_err(|e| Status::internal(format!("mode {m:?}: {e}")));
        let mut change = RawChange { old_mode: mode(old_mode)?, new_mode: mode(new_mode)?, ..Default::default() };
        change.raw_operation = status.to_string();
        let (mut new_path, mut old_path) = (src.clone(), src.clone());
        change.operation = match status.as_bytes().first() {
            Some(b'A') => {
                old_path.clear();
                Operation::Added
            }
            Some(b'C') => {
                new_path = dst;
                Operation::Copied
            }
            Some(b'D') => {
                new_path.clear();
                Operation::Deleted
            }
            Some(b'M') => Operation::Modified,
            Some(b'R') => {
                new_path = dst;
                Operation::Renamed
            }
            Some(b'T') => Operation::TypeChanged,
            _ => Operation::Unknown,
        } as i32;
        let text = |p: &[u8]| String::from_utf8(p.to_vec()).unwrap_or_else(|_| INVALID_UTF8.to_string());
        change.new_path = text(&new_path);
        change.old_path = text(&old_path);
        change.new_path_bytes = new_path;
        change.old_path_bytes = old_path;
        let (blob, blob_mode) =
            if new_oid.bytes().all(|b| b == b'0') { (*old_oid, *old_mode) } else { (*new_oid, *new_mode) };
        if blob_mode != "160000" {
            let id = crate::odb::resolve(handle, blob.as_bytes())
                .ok_or_else(|| Status::internal(format!("build change from diff line: find {blob:?}")))?;
            let size = crate::odb::header(handle, id)?.map(|(_, size)| size).unwrap_or(0);
            change.blob_id = id.to_string();
            change.size = size as i64;
        }
        if let Some(full) = chunker.push(change) {
            messages.push(Ok(GetRawChangesResponse { raw_changes: full }));
        }
    }
    if let Some(rest) = chunker.finish() {
        messages.push(Ok(GetRawChangesResponse { raw_changes: rest }));
    }
    Ok(messages)
}

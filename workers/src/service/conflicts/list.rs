//! ListConflictFiles: every conflicted file of merging `their_commit_oid` into `our_commit_oid`, a header
//! (paths, our mode) followed by its content with conflict markers, packed into messages of up to 128 KiB
//! as upstream streams them. A conflict with a side missing (added/deleted) fails the call unless
//! `allow_tree_conflicts`; content that is not UTF-8 fails it ("unsupported encoding"), as Rails cannot
//! show it.

use rgitaly::git::repo::Repo;
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::conflict_file::ConflictFilePayload;
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::{conflicts, with_paths};
use crate::service::{internal, Target};

/// Upstream's stream write buffer: the most file data one response carries.
use rgitaly::service::chunk::DATA_CHUNK as MESSAGE_SIZE;

pub async fn list_conflict_files(
    git: &GitCmdFactory,
    t: &Target,
    req: ListConflictFilesRequest,
) -> Result<BoxStream<ListConflictFilesResponse>, Status> {
    if req.our_commit_oid.is_empty() {
        return Err(Status::invalid_argument("empty OurCommitOid"));
    }
    if req.their_commit_oid.is_empty() {
        return Err(Status::invalid_argument("empty TheirCommitOid"));
    }
    let (ours, theirs) = {
        let odb = crate::service::open(&t.repo)?;
        let lookup = |side: &str, rev: &str| {
            rgitaly::odb::resolve_commit(&odb, rev.as_bytes()).map(|id| id.to_string()).ok_or_else(|| {
                Status::failed_precondition(format!("could not lookup '{side}' OID: reference not found"))
            })
        };
        (lookup("our", &req.our_commit_oid)?, lookup("their", &req.their_commit_oid)?)
    };

    let merged = Repo::new(git, &t.repo).merge_tree_stages(&ours, &theirs).await.map_err(internal)?;
    let odb = crate::service::open(&t.repo)?;
    let mut messages = Vec::new();
    let mut files: Vec<ConflictFile> = Vec::new();
    let mut size = 0;
    for c in conflicts(merged.stages) {
        let path_of = |s: &Option<rgitaly::git::repo::Stage>| s.as_ref().map(|s| s.path.clone()).unwrap_or_default();
        let (our_path, their_path) = (path_of(&c.ours), path_of(&c.theirs));
        if !req.allow_tree_conflicts && (our_path.is_empty() || their_path.is_empty()) {
            return Err(Status::failed_precondition("conflict side missing"));
        }
        files.push(ConflictFile {
            conflict_file_payload: Some(ConflictFilePayload::Header(ConflictFileHeader {
                commit_oid: req.our_commit_oid.clone(),
                their_path: their_path.clone(),
                our_path: our_path.clone(),
                our_mode: c.ours.as_ref().map(|s| s.mode as i32).unwrap_or(0),
                ancestor_path: path_of(&c.ancestor),
            })),
        });
        if req.skip_content {
            continue;
        }
        let entry = rgitaly::odb::tree::find_entry(&odb, &merged.tree, &c.path)?
            .ok_or_else(|| Status::failed_precondition("getting file revision: path not found in merged tree"))?;
        let raw = super::read_blob(&odb, &entry.oid)?;
        if std::str::from_utf8(&raw).is_err() {
            return Err(Status::failed_precondition("unsupported encoding"));
        }
        let content = with_paths(&raw, &ours, &our_path, &theirs, &their_path);
        let mut rest = content.as_slice();
        while !rest.is_empty() {
            let n = rest.len().min(MESSAGE_SIZE - size);
            files.push(ConflictFile { conflict_file_payload: Some(ConflictFilePayload::Content(rest[..n].to_vec())) });
            rest = &rest[n..];
            size += n;
            if size >= MESSAGE_SIZE {
                messages.push(Ok(ListConflictFilesResponse { files: std::mem::take(&mut files) }));
                size = 0;
            }
        }
    }
    if !files.is_empty() {
        messages.push(Ok(ListConflictFilesResponse { files }));
    }
    Ok(Box::pin(tokio_stream::iter(messages)))
}

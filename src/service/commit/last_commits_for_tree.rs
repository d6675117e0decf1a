//! ListLastCommitsForTree: for each entry of a directory (trees, then blobs, then submodules, as upstream
//! orders them), the last commit that touched it; 10 entries per message.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::list_last_commits_for_tree_response::CommitForTree;
use crate::proto::gitaly::{ListLastCommitsForTreeRequest, ListLastCommitsForTreeResponse};
use crate::service::Ctx;

const PER_MESSAGE: usize = 10;

pub async fn list_last_commits_for_tree(
    ctx: &Ctx,
    req: ListLastCommitsForTreeRequest,
) -> Result<BoxStream<ListLastCommitsForTreeResponse>, Status> {
    validate_revision(req.revision.as_bytes()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.offset < 0 {
        return Err(Status::invalid_argument("offset negative"));
    }
    if req.limit < 0 {
        return Err(Status::invalid_argument("limit negative"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let dir: &[u8] = if req.path.is_empty() || req.path == b"/" { b"." } else { &req.path };
    let out = ctx
        .git
        .command(&path, Sub::LsTree)
        .flag("-z")
        .flag("--full-name")
        .user_arg(&req.revision)
        .path_arg(OsStr::from_bytes(dir))
        .run_to_end()
        .await?;
    if !out.exit.success() {
        return Err(Status::internal(format!("exit status {}", out.exit.code)));
    }
    // (group, path): trees first, then blobs, then submodules; git's order within each.
    let mut entries: Vec<(u8, Vec<u8>)> = Vec::new();
    for rec in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let Some(tab) = rec.iter().position(|b| *b == b'\t') else { continue };
        let group = match rec[..tab].split(|b| *b == b' ').nth(1) {
            Some(b"tree") => 0,
            Some(b"blob") => 1,
            _ => 2,
        };
        entries.push((group, rec[tab + 1..].to_vec()));
    }
    entries.sort_by_key(|(g, _)| *g);
    let (offset, limit) = (req.offset as usize, req.limit as usize);
    let window: Vec<Vec<u8>> = entries.into_iter().skip(offset).take(limit).map(|(_, p)| p).collect();
    // Deprecated upstream in favour of global_options, but still honoured there.
    #[allow(deprecated)]
    let literal = req.literal_pathspec || req.global_options.as_ref().is_some_and(|g| g.literal_pathspecs);
    let mut items = Vec::new();
    for p in window {
        let commit = super::last_commit_for_path::last_commit(ctx, &path, &req.revision, &p, literal)
            .await?
            .ok_or_else(|| Status::internal("object not found"))?;
        items.push(CommitForTree { commit: Some(commit), path_bytes: p });
    }
    let messages: Vec<_> =
        items.chunks(PER_MESSAGE).map(|c| Ok(ListLastCommitsForTreeResponse { commits: c.to_vec() })).collect();
    Ok(Box::pin(futures::stream::iter(messages)))
}

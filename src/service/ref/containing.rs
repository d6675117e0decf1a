//! FindRefName, ListBranchNamesContainingCommit, ListTagNamesContainingCommit: refs whose history holds a
//! commit, as `for-each-ref --contains` finds them.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::util::for_each_ref;
use crate::proto::gitaly::{
    FindRefNameRequest, FindRefNameResponse, ListBranchNamesContainingCommitRequest,
    ListBranchNamesContainingCommitResponse, ListTagNamesContainingCommitRequest, ListTagNamesContainingCommitResponse,
};
use crate::service::Ctx;

pub async fn find_ref_name(ctx: &Ctx, req: FindRefNameRequest) -> Result<FindRefNameResponse, Status> {
    if req.commit_id.is_empty() {
        return Err(Status::invalid_argument("empty commit sha"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let flags = ["--format=%(refname)".to_string(), "--count=1".into(), format!("--contains={}", req.commit_id)];
    // As upstream, git failing (an unknown commit, a NUL) is an empty name, not an error. The id travels
    // inside `--contains=<id>`, one argument, so it can never be an option of its own.
    let patterns: Vec<Vec<u8>> = if req.prefix.is_empty() { Vec::new() } else { vec![req.prefix.clone()] };
    let name = match for_each_ref(ctx, &path, &flags, &patterns).await {
        Ok(lines) => lines.into_iter().next().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    Ok(FindRefNameResponse { name: name.trim_ascii().to_vec() })
}

async fn containing(
    ctx: &Ctx,
    repository: Option<&crate::proto::gitaly::Repository>,
    commit: &str,
    limit: u32,
    prefix: &str,
) -> Result<Vec<Vec<u8>>, Status> {
    crate::service::validate_object_id(commit)?;
    let path = ctx.locator.repo_path(repository)?;
    let mut flags = vec!["--format=%(refname)".to_string(), format!("--contains={commit}")];
    if limit != 0 {
        flags.push(format!("--count={limit}"));
    }
    let names = for_each_ref(ctx, &path, &flags, &[prefix.as_bytes().to_vec()]).await?;
    let strip = format!("{prefix}/");
    Ok(names.into_iter().map(|n| n.strip_prefix(strip.as_bytes()).map(<[u8]>::to_vec).unwrap_or(n)).collect())
}

/// Names in responses of up to 1 MiB.
fn chunked<T: Send + 'static>(names: Vec<Vec<u8>>, wrap: fn(Vec<Vec<u8>>) -> T) -> BoxStream<T> {
    let out: Vec<_> = crate::service::chunk::byte_batches(names, 2).into_iter().map(|b| Ok(wrap(b))).collect();
    Box::pin(futures::stream::iter(out))
}

pub async fn list_branch_names_containing_commit(
    ctx: &Ctx,
    req: ListBranchNamesContainingCommitRequest,
) -> Result<BoxStream<ListBranchNamesContainingCommitResponse>, Status> {
    let names = containing(ctx, req.repository.as_ref(), &req.commit_id, req.limit, "refs/heads").await?;
    Ok(chunked(names, |branch_names| ListBranchNamesContainingCommitResponse { branch_names }))
}

pub async fn list_tag_names_containing_commit(
    ctx: &Ctx,
    req: ListTagNamesContainingCommitRequest,
) -> Result<BoxStream<ListTagNamesContainingCommitResponse>, Status> {
    let names = containing(ctx, req.repository.as_ref(), &req.commit_id, req.limit, "refs/tags").await?;
    Ok(chunked(names, |tag_names| ListTagNamesContainingCommitResponse { tag_names }))
}

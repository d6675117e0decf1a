//! FindLocalBranches, FindAllBranches, FindAllRemoteBranches: branches with their commits, listed by
//! `for-each-ref` (sorting, `--merged`), commits read in-process, 20 per message.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::util::{for_each_ref, name_and_oid, REFS_PER_MESSAGE};
use crate::proto::gitaly::find_local_branches_request::SortBy;
use crate::proto::gitaly::{
    find_all_branches_response, Branch, CommitAuthor, FindAllBranchesRequest, FindAllBranchesResponse,
    FindAllRemoteBranchesRequest, FindAllRemoteBranchesResponse, FindLocalBranchCommitAuthor, FindLocalBranchResponse,
    FindLocalBranchesRequest, FindLocalBranchesResponse, GitCommit,
};
use crate::service::Ctx;

const FORMAT: &str = "--format=%(refname)%00%(objectname)";

/// Reads the commit of each `(name, oid)` and streams `wrap`ped batches of 20.
fn stream_branches<I: Send + 'static, T: Send + 'static>(
    ctx: &Ctx,
    path: std::path::PathBuf,
    refs: Vec<(Vec<u8>, String)>,
    item: fn(Vec<u8>, GitCommit) -> I,
    wrap: fn(Vec<I>) -> T,
) -> BoxStream<T> {
    let c = ctx.clone();
    crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut batch = Vec::new();
        for (name, oid) in refs {
            let commit = crate::odb::find_commit(&repo, oid.as_bytes())?
                .ok_or_else(|| Status::internal(format!("reading commit {oid}: object not found")))?;
            batch.push(item(name, commit));
            if batch.len() >= REFS_PER_MESSAGE {
                out.send(wrap(std::mem::take(&mut batch))).await;
            }
        }
        if !batch.is_empty() {
            out.send(wrap(batch)).await;
        }
        Ok(())
    })
}

fn legacy_author(a: Option<&CommitAuthor>) -> Option<FindLocalBranchCommitAuthor> {
    a.map(|a| FindLocalBranchCommitAuthor {
        name: a.name.clone(),
        email: a.email.clone(),
        date: a.date,
        timezone: a.timezone.clone(),
    })
}

pub async fn find_local_branches(
    ctx: &Ctx,
    req: FindLocalBranchesRequest,
) -> Result<BoxStream<FindLocalBranchesResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let sort = match SortBy::try_from(req.sort_by).unwrap_or(SortBy::Name) {
        SortBy::Name => "refname",
        SortBy::UpdatedAsc => "committerdate",
        SortBy::UpdatedDesc => "-committerdate",
    };
    let lines = for_each_ref(ctx, &path, &[FORMAT.into(), format!("--sort={sort}")], &[b"refs/heads".to_vec()]).await?;
    // Upstream's pagination: skip lines until one compares >= the page token (that one too), then at most
    // `limit` (negative: all).
    let mut lines: Vec<Vec<u8>> = lines;
    if let Some(p) = &req.pagination_params {
        if !p.page_token.is_empty() {
            let token = p.page_token.as_bytes();
            let at = lines.iter().position(|l| l.as_slice() >= token).map(|i| i + 1).unwrap_or(lines.len());
            lines.drain(..at);
        }
        if p.limit >= 0 {
            lines.truncate(p.limit as usize);
        }
    }
    let refs = lines.iter().filter_map(|l| name_and_oid(l)).collect();
    Ok(stream_branches(
        ctx,
        path,
        refs,
        |name, commit| FindLocalBranchResponse {
            name,
            commit_id: commit.id.clone(),
            commit_subject: commit.subject.clone(),
            commit_author: legacy_author(commit.author.as_ref()),
            commit_committer: legacy_author(commit.committer.as_ref()),
            commit: Some(commit),
        },
        |branches| FindLocalBranchesResponse { branches },
    ))
}

pub async fn find_all_branches(
    ctx: &Ctx,
    req: FindAllBranchesRequest,
) -> Result<BoxStream<FindAllBranchesResponse>, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut flags = vec![FORMAT.to_string()];
    let mut patterns = vec![b"refs/heads".to_vec(), b"refs/remotes".to_vec()];
    if req.merged_only {
        let default = crate::service::default_branch(ctx, &path).await?;
        flags.push(format!("--merged={}", String::from_utf8_lossy(&default)));
        if !req.merged_branches.is_empty() {
            patterns = req.merged_branches.clone();
        }
    }
    let lines = for_each_ref(ctx, &path, &flags, &patterns).await?;
    let refs = lines.iter().filter_map(|l| name_and_oid(l)).collect();
    Ok(stream_branches(
        ctx,
        path,
        refs,
        |name, commit| find_all_branches_response::Branch { name, target: Some(commit) },
        |branches| FindAllBranchesResponse { branches },
    ))
}

pub async fn find_all_remote_branches(
    ctx: &Ctx,
    req: FindAllRemoteBranchesRequest,
) -> Result<BoxStream<FindAllRemoteBranchesResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty Repository"));
    }
    if req.remote_name.is_empty() {
        return Err(Status::invalid_argument("empty RemoteName"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let pattern = format!("refs/remotes/{}", req.remote_name).into_bytes();
    let lines = for_each_ref(ctx, &path, &[FORMAT.into()], &[pattern]).await?;
    let refs = lines.iter().filter_map(|l| name_and_oid(l)).collect();
    Ok(stream_branches(
        ctx,
        path,
        refs,
        |name, commit| Branch { name, target_commit: Some(commit) },
        |branches| FindAllRemoteBranchesResponse { branches },
    ))
}

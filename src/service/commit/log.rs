//! FindAllCommits, FindCommits, CommitsByMessage: history as `git log` walks it (its ordering, path
//! limiting, `--follow` and date filters are the contract), commits read in-process, 1 MiB responses.
//! As upstream, git failing (an unknown revision) ends the listing quietly.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::repo::parse_trailers;
use crate::git::{validate_revision, GitCommand, Sub};
use crate::proto::gitaly::find_all_commits_request::Order as AllOrder;
use crate::proto::gitaly::find_commits_request::Order;
use crate::proto::gitaly::{
    CommitsByMessageRequest, CommitsByMessageResponse, FindAllCommitsRequest, FindAllCommitsResponse,
    FindCommitsRequest, FindCommitsResponse,
};
use crate::service::Ctx;

fn check_revision(rev: &[u8]) -> Result<(), Status> {
    if rev.is_empty() {
        return Ok(());
    }
    validate_revision(rev).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The lines `git log` printed; its exit status is not checked, as upstream.
async fn log_lines(cmd: GitCommand<'_>) -> Result<Vec<Vec<u8>>, Status> {
    let out = cmd.run_to_end().await?;
    Ok(out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect())
}

fn ids(lines: &[Vec<u8>]) -> Vec<String> {
    lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

pub async fn find_all_commits(
    ctx: &Ctx,
    req: FindAllCommitsRequest,
) -> Result<BoxStream<FindAllCommitsResponse>, Status> {
    check_revision(&req.revision)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let revisions: Vec<String> = if req.revision.is_empty() {
        let (c, p) = (ctx.clone(), path.clone());
        let names = crate::odb::blocking(move || crate::odb::refs::names(&*c.repos.open(&p)?, "refs/heads/")).await?;
        names.into_iter().map(|n| String::from_utf8_lossy(&n).into_owned()).collect()
    } else {
        vec![String::from_utf8_lossy(&req.revision).into_owned()]
    };
    let mut cmd = ctx.git.command(&path, Sub::Log).flag("--pretty=%H");
    if req.max_count > 0 {
        cmd = cmd.flag(format!("--max-count={}", req.max_count));
    }
    if req.skip > 0 {
        cmd = cmd.flag(format!("--skip={}", req.skip));
    }
    match AllOrder::try_from(req.order).unwrap_or(AllOrder::None) {
        AllOrder::Date => cmd = cmd.flag("--date-order"),
        AllOrder::Topo => cmd = cmd.flag("--topo-order"),
        AllOrder::None => {}
    }
    for r in &revisions {
        cmd = cmd.user_arg(r);
    }
    let lines = log_lines(cmd).await?;
    Ok(super::stream_commits(ctx, path, ids(&lines), |commits| FindAllCommitsResponse { commits }))
}

pub async fn find_commits(ctx: &Ctx, req: FindCommitsRequest) -> Result<BoxStream<FindCommitsResponse>, Status> {
    check_revision(&req.revision)?;
    if req.paths.iter().any(|p| p.is_empty()) {
        return Err(Status::invalid_argument("path is empty string"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut revision = String::from_utf8_lossy(&req.revision).into_owned();
    if revision.is_empty() && !req.all {
        revision = String::from_utf8_lossy(&crate::service::default_branch(ctx, &path).await?).into_owned();
    }
    let format = if req.trailers { "--format=%H%x00%(trailers:unfold,separator=%x00)" } else { "--format=%H" };
    let mut cmd = ctx.git.command(&path, Sub::Log).flag(format);
    let follow = req.follow && !req.paths.is_empty();
    let skip_here = follow && req.offset > 0;
    if req.offset > 0 && !skip_here {
        cmd = cmd.flag(format!("--skip={}", req.offset));
    }
    let limit = if skip_here { req.limit.saturating_add(req.offset) } else { req.limit };
    cmd = cmd.flag(format!("--max-count={limit}"));
    if follow {
        cmd = cmd.flag("--follow");
    }
    if !req.author.is_empty() {
        cmd = cmd.user_option("--author", &String::from_utf8_lossy(&req.author));
    }
    if req.skip_merges {
        cmd = cmd.flag("--no-merges");
    }
    if let Some(t) = &req.before {
        cmd = cmd.flag(format!("--before=@{}", t.seconds));
    }
    if let Some(t) = &req.after {
        cmd = cmd.flag(format!("--after=@{}", t.seconds));
    }
    if req.all {
        cmd = cmd.flag("--all").flag("--reverse");
    }
    if req.first_parent {
        cmd = cmd.flag("--first-parent");
    }
    if req.order == Order::Topo as i32 {
        cmd = cmd.flag("--topo-order");
    }
    if !revision.is_empty() {
        cmd = cmd.user_arg(&revision);
    }
    if req.global_options.as_ref().is_some_and(|g| g.literal_pathspecs) {
        cmd = cmd.env("GIT_LITERAL_PATHSPECS", "1");
    }
    for p in &req.paths {
        cmd = cmd.path_arg(OsStr::from_bytes(p));
    }
    let mut lines = log_lines(cmd).await?;
    if skip_here {
        lines.drain(..(req.offset as usize).min(lines.len()));
    }
    let entries: Vec<(String, Vec<u8>)> = lines
        .iter()
        .map(|l| match l.iter().position(|b| *b == 0) {
            Some(i) => (String::from_utf8_lossy(&l[..i]).into_owned(), l[i + 1..].to_vec()),
            None => (String::from_utf8_lossy(l).into_owned(), Vec::new()),
        })
        .collect();
    let c = ctx.clone();
    let trailers = req.trailers;
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut chunker = crate::service::chunk::Chunker::default();
        for (id, raw_trailers) in &entries {
            let mut commit = crate::odb::find_commit(&repo, id.as_bytes())?
                .ok_or_else(|| Status::internal(format!("cat-file get commit {id:?}: object not found")))?;
            if trailers {
                commit.trailers = parse_trailers(raw_trailers);
            }
            if let Some(commits) = chunker.push(commit) {
                out.send(FindCommitsResponse { commits }).await;
            }
        }
        if let Some(commits) = chunker.finish() {
            out.send(FindCommitsResponse { commits }).await;
        }
        Ok(())
    }))
}

pub async fn commits_by_message(
    ctx: &Ctx,
    req: CommitsByMessageRequest,
) -> Result<BoxStream<CommitsByMessageResponse>, Status> {
    check_revision(&req.revision)?;
    if req.query.is_empty() {
        return Err(Status::invalid_argument("empty Query"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut revision = String::from_utf8_lossy(&req.revision).into_owned();
    if revision.is_empty() {
        revision = String::from_utf8_lossy(&crate::service::default_branch(ctx, &path).await?).into_owned();
    }
    if revision.is_empty() {
        return Ok(Box::pin(futures::stream::empty()));
    }
    let mut cmd = ctx
        .git
        .command(&path, Sub::Log)
        .flag("--pretty=%H")
        .user_option("--grep", &req.query)
        .flag("--regexp-ignore-case");
    if req.offset > 0 {
        cmd = cmd.flag(format!("--skip={}", req.offset));
    }
    if req.limit > 0 {
        cmd = cmd.flag(format!("--max-count={}", req.limit));
    }
    cmd = cmd.user_arg(&revision);
    if req.global_options.as_ref().is_some_and(|g| g.literal_pathspecs) {
        cmd = cmd.env("GIT_LITERAL_PATHSPECS", "1");
    }
    if !req.path.is_empty() {
        cmd = cmd.path_arg(OsStr::from_bytes(&req.path));
    }
    let lines = log_lines(cmd).await?;
    Ok(super::stream_commits(ctx, path, ids(&lines), |commits| CommitsByMessageResponse { commits }))
}

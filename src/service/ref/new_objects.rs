//! ListNewCommits and ListNewBlobs: what a pushed commit brings that no ref reaches yet, by `git rev-list`.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{
    ListNewBlobsRequest, ListNewBlobsResponse, ListNewCommitsRequest, ListNewCommitsResponse, NewBlobObject,
};
use crate::service::Ctx;

const COMMITS_PER_MESSAGE: usize = 10;
const BLOBS_PER_MESSAGE: usize = 1000;

pub async fn list_new_commits(
    ctx: &Ctx,
    req: ListNewCommitsRequest,
) -> Result<BoxStream<ListNewCommitsResponse>, Status> {
    crate::service::validate_object_id(&req.commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let out = ctx
        .git
        .command(&path, Sub::RevList)
        .flag("--not")
        .flag("--all")
        .user_arg(format!("^{}", req.commit_id))
        .output()
        .await?;
    let ids: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut batch = Vec::new();
        for id in &ids {
            let commit = crate::odb::find_commit(&repo, id.as_bytes())?
                .ok_or_else(|| Status::internal(format!("reading commit {id}: object not found")))?;
            batch.push(commit);
            if batch.len() >= COMMITS_PER_MESSAGE {
                out.send(ListNewCommitsResponse { commits: std::mem::take(&mut batch) }).await;
            }
        }
        if !batch.is_empty() {
            out.send(ListNewCommitsResponse { commits: batch }).await;
        }
        Ok(())
    }))
}

pub async fn list_new_blobs(ctx: &Ctx, req: ListNewBlobsRequest) -> Result<BoxStream<ListNewBlobsResponse>, Status> {
    crate::service::validate_object_id(&req.commit_id)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut cmd = ctx.git.command(&path, Sub::RevList).flag("--objects").flag("--not").flag("--all");
    if req.limit > 0 {
        cmd = cmd.flag(format!("--max-count={}", req.limit));
    }
    let listed = cmd.user_arg(format!("^{}", req.commit_id)).output().await?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut batch = Vec::new();
        for line in listed.stdout.split(|b| *b == b'\n') {
            // Commits and the root tree have no path: skipped.
            let Some(sp) = line.iter().position(|b| *b == b' ') else { continue };
            let Ok(oid) = gix::ObjectId::from_hex(&line[..sp]) else { continue };
            let Some((gix::object::Kind::Blob, size)) = crate::odb::header(&repo, oid)? else { continue };
            batch.push(NewBlobObject { oid: oid.to_string(), size: size as i64, path: line[sp + 1..].to_vec() });
            if batch.len() >= BLOBS_PER_MESSAGE {
                out.send(ListNewBlobsResponse { new_blob_objects: std::mem::take(&mut batch) }).await;
            }
        }
        // As upstream, a last message always goes out, empty or not.
        out.send(ListNewBlobsResponse { new_blob_objects: batch }).await;
        Ok(())
    }))
}

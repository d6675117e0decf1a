//! FetchSourceBranch: brings a branch of another repository (a fork's, possibly on another Gitaly server)
//! into this one as `target_ref`, for a merge request across forks. The branch is resolved where it lives
//! (CommitService.FindCommit on the source's server), fetched by object id only when this repository lacks
//! it, and written without touching anything else. A branch that does not resolve, or a failed fetch, is
//! `result: false` rather than an error, as upstream.

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::git::repo::{is_oid, Repo};
use crate::git::{validate_revision, Sub};
use crate::gitaly_servers::{self, INTERNAL_URL};
use crate::proto::gitaly::commit_service_client::CommitServiceClient;
use crate::proto::gitaly::{FetchSourceBranchRequest, FetchSourceBranchResponse, FindCommitRequest};
use crate::service::Context;

pub async fn fetch_source_branch(
    ctx: &Context,
    md: &MetadataMap,
    req: FetchSourceBranchRequest,
) -> Result<FetchSourceBranchResponse, Status> {
    validate_revision(&req.source_branch).map_err(|e| Status::invalid_argument(e.to_string()))?;
    validate_revision(&req.target_ref).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if !req.target_ref.starts_with(b"refs/") {
        return Err(Status::invalid_argument("target ref has to be a full reference"));
    }
    let source = req.source_repository.as_ref().ok_or_else(|| Status::invalid_argument("empty source repository"))?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let branch = String::from_utf8(req.source_branch.clone())
        .map_err(|_| Status::invalid_argument("source branch is not UTF-8"))?;
    let target_ref =
        String::from_utf8(req.target_ref.clone()).map_err(|_| Status::invalid_argument("target ref is not UTF-8"))?;
    let repo = Repo::new(&ctx.git, &path);
    let false_result = Ok(FetchSourceBranchResponse { result: false });

    let same = req.repository.as_ref().is_some_and(|r| {
        r.storage_name == source.storage_name && ctx.locator.resolve(r).ok() == ctx.locator.resolve(source).ok()
    });
    let oid = if same {
        match repo.resolve(&format!("{branch}^{{commit}}")).await? {
            Some(oid) => oid,
            None => return false_result,
        }
    } else {
        let channel = gitaly_servers::connect(md, &source.storage_name).await?;
        let find = FindCommitRequest {
            repository: Some(source.clone()),
            revision: req.source_branch.clone(),
            ..Default::default()
        };
        let commit = CommitServiceClient::new(channel)
            .find_commit(gitaly_servers::forward(md, tonic::Request::new(find)))
            .await
            .map_err(|e| Status::internal(format!("resolve source branch: {}", e.message())))?
            .into_inner()
            .commit;
        let Some(commit) = commit else { return false_result };
        if !is_oid(&commit.id) {
            return Err(Status::internal("resolve source branch: the source server answered an invalid object id"));
        }
        if repo.resolve(&format!("{}^{{commit}}", commit.id)).await?.is_none() {
            let env = gitaly_servers::upload_pack_env(md, source)?;
            let out = ctx
                .git
                .command(&path, Sub::Fetch)
                .internal_remote(&env)
                .flag("--no-tags")
                .flag("--quiet")
                .trusted_arg(INTERNAL_URL)
                .trusted_arg(&commit.id)
                .run_to_end()
                .await?;
            if !out.exit.success() {
                tracing::warn!(oid = %commit.id, stderr = %out.stderr_text().trim(), "git fetch failed");
                return false_result;
            }
        }
        commit.id
    };
    repo.update_ref(&target_ref, &oid, None).await.map_err(|e| Status::internal(e.to_string()))?;
    Ok(FetchSourceBranchResponse { result: true })
}

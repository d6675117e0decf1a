//! FetchInternalRemote: mirrors every ref of a repository on another Gitaly server into this one
//! (`fetch --prune --atomic +refs/*:refs/*` through `rgitaly-ssh`), then takes over its default branch. A
//! fetch that fails answers `result: false`, as upstream v13.12 does.
//! ReplicateRepository calls it in-process.

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::git::repo::Repo;
use crate::git::Sub;
use crate::gitaly_servers::{self, INTERNAL_URL};
use crate::proto::gitaly::ref_service_client::RefServiceClient;
use crate::proto::gitaly::{FetchInternalRemoteRequest, FetchInternalRemoteResponse, FindDefaultBranchNameRequest};
use crate::service::Ctx;

pub(crate) async fn fetch_internal_remote(
    ctx: &Ctx,
    md: &MetadataMap,
    req: FetchInternalRemoteRequest,
) -> Result<FetchInternalRemoteResponse, Status> {
    let invalid = |m: &str| Status::invalid_argument(format!("FetchInternalRemote: {m}"));
    let repository = req.repository.as_ref().ok_or_else(|| invalid("empty Repository"))?;
    let remote = req.remote_repository.as_ref().ok_or_else(|| invalid("empty Remote Repository"))?;
    let path = ctx.locator.repo_path(Some(repository))?;
    fetch_internal_remote_at(ctx, md, &path, remote).await
}

/// FetchInternalRemote into the repository at `path`.
async fn fetch_internal_remote_at(
    ctx: &Ctx,
    md: &MetadataMap,
    path: &std::path::Path,
    remote: &crate::proto::gitaly::Repository,
) -> Result<FetchInternalRemoteResponse, Status> {
    let env = gitaly_servers::upload_pack_env(md, remote)?;
    let out = ctx
        .git
        .command(path, Sub::Fetch)
        .internal_remote(&env)
        .flag("--prune")
        .flag("--atomic")
        .flag("--quiet")
        // A mirror of every ref: FETCH_HEAD would only repeat them all on disk.
        .flag("--no-write-fetch-head")
        .trusted_arg(INTERNAL_URL)
        .trusted_arg("+refs/*:refs/*")
        .run_to_end()
        .await
        .map_err(|e| Status::internal(format!("FetchInternalRemote: {e}")))?;
    if !out.exit.success() {
        // As upstream v13.12: a failed fetch is `result: false`, not an error (its "design quirk").
        tracing::warn!(exit_code = out.exit.code, stderr = %out.stderr_text().trim(), "git fetch failed");
        return Ok(FetchInternalRemoteResponse { result: false });
    }

    let remote_default = remote_default_branch(md, remote)
        .await
        .map_err(|e| Status::internal(format!("FetchInternalRemote: remote default branch: {e}")))?;
    let local_default = crate::service::default_branch(ctx, path)
        .await
        .map_err(|e| Status::internal(format!("FetchInternalRemote: default branch: {}", e.message())))?;
    if !remote_default.is_empty() && remote_default != local_default {
        let name = String::from_utf8(remote_default)
            .map_err(|_| Status::internal("FetchInternalRemote: set default branch: name is not UTF-8"))?;
        Repo::new(&ctx.git, path)
            .set_head(&name)
            .await
            .map_err(|e| Status::internal(format!("FetchInternalRemote: set default branch: {e}")))?;
    }
    Ok(FetchInternalRemoteResponse { result: true })
}

/// The default branch of `repo` as its own server reports it.
async fn remote_default_branch(md: &MetadataMap, repo: &crate::proto::gitaly::Repository) -> Result<Vec<u8>, String> {
    let channel = gitaly_servers::connect(md, &repo.storage_name).await.map_err(|e| e.message().to_string())?;
    let req = gitaly_servers::forward(
        md,
        tonic::Request::new(FindDefaultBranchNameRequest { repository: Some(repo.clone()) }),
    );
    let resp =
        RefServiceClient::new(channel).find_default_branch_name(req).await.map_err(|e| e.message().to_string())?;
    Ok(resp.into_inner().name)
}

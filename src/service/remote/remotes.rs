//! AddRemote and RemoveRemote: named remotes in the repository's config, as GitLab's mirrors use them.
//! AddRemote keeps an existing remote's refs and only replaces its URL and refspecs (as upstream's Ruby
//! did); a mirror refmap makes it a pruning mirror. The config is edited in-process so a URL's
//! credentials never pass through argv.

use gix::bstr::ByteSlice;
use tonic::Status;

use crate::git::{remote_url, Sub};
use crate::proto::gitaly::*;
use crate::service::repository::edit_config;
use crate::service::Context;

/// Whether `name` can name a remote: `refs/remotes/<name>/…` must be a valid ref.
pub(crate) fn valid_remote_name(name: &str) -> bool {
    let probe = format!("refs/remotes/{name}/x");
    !name.is_empty()
        && !name.starts_with('-')
        && !name.contains(['"', '\\', '\n'])
        && gix::validate::reference::name(probe.as_bytes().as_bstr()).is_ok()
}

/// Whether a mirror refmap (a refspec of the client's) can be given to git: not empty, one line, never an
/// option.
pub(crate) fn valid_refmap(refmap: &str) -> bool {
    !refmap.is_empty() && !refmap.contains(['\n', '\0']) && !refmap.trim_start_matches('+').starts_with('-')
}

/// The refspec a mirror refmap stands for.
pub(crate) fn refspec(refmap: &str) -> &str {
    match refmap {
        "all_refs" => "+refs/*:refs/*",
        "heads" => "+refs/heads/*:refs/heads/*",
        "tags" => "+refs/tags/*:refs/tags/*",
        other => other,
    }
}

pub async fn add_remote(ctx: &Context, req: AddRemoteRequest) -> Result<AddRemoteResponse, Status> {
    let invalid = |m: String| Status::invalid_argument(format!("AddRemote: {m}"));
    if req.name.trim().is_empty() {
        return Err(invalid("empty remote name".into()));
    }
    if req.url.is_empty() {
        return Err(invalid("empty remote url".into()));
    }
    if !valid_remote_name(&req.name) {
        return Err(invalid(format!("invalid remote name {:?}", req.name)));
    }
    remote_url::validate(&req.url).map_err(|e| invalid(e.to_string()))?;
    if let Some(r) = req.mirror_refmaps.iter().find(|r| !valid_refmap(r)) {
        return Err(invalid(format!("invalid refmap {r:?}")));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let name = req.name.clone();
    let default_fetch = format!("+refs/heads/*:refs/remotes/{name}/*");
    tokio::task::spawn_blocking(move || {
        edit_config(&repo.join("config"), "AddRemote", |file| {
            let existed = file.section("remote", Some(name.as_bytes().as_bstr())).is_ok();
            let mut section =
                file.section_mut_or_create_new("remote", Some(name.as_bytes().as_bstr())).map_err(|e| e.to_string())?;
            section.set("url", req.url.as_bytes().as_bstr()).map_err(|e| e.to_string())?;
            if req.mirror_refmaps.is_empty() {
                if !existed {
                    section.push("fetch", Some(default_fetch.as_bytes().as_bstr())).map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
            while section.remove("fetch").is_some() {}
            for r in &req.mirror_refmaps {
                section.push("fetch", Some(refspec(r).as_bytes().as_bstr())).map_err(|e| e.to_string())?;
            }
            section.set("mirror", "true".as_bytes().as_bstr()).map_err(|e| e.to_string())?;
            section.set("prune", "true".as_bytes().as_bstr()).map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    Ok(AddRemoteResponse {})
}

pub async fn remove_remote(ctx: &Context, req: RemoveRemoteRequest) -> Result<RemoveRemoteResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("RemoveRemote: empty remote name"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    if !valid_remote_name(&req.name) {
        return Ok(RemoveRemoteResponse { result: false });
    }
    let result = remove_if_present(ctx, &repo, &req.name, |e| Status::internal(format!("RemoveRemote: {e}"))).await?;
    Ok(RemoveRemoteResponse { result })
}

/// Removes the remote `name` (a valid remote name) of the repository at `repo` if it has one, with its
/// tracking refs (`git remote remove`, as upstream); whether there was one. A failed removal is mapped by
/// `failed`.
pub(crate) async fn remove_if_present(
    ctx: &Context,
    repo: &std::path::Path,
    name: &str,
    failed: impl FnOnce(crate::git::GitError) -> Status,
) -> Result<bool, Status> {
    let list = ctx.git.command(repo, Sub::Remote).output().await?;
    if !list.stdout.lines().any(|l| l == name.as_bytes()) {
        return Ok(false);
    }
    ctx.git.command(repo, Sub::Remote).trusted_arg("remove").user_arg(name).output().await.map_err(failed)?;
    Ok(true)
}

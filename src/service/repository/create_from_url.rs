//! CreateRepositoryFromURL: a bare clone of a URL a client gives, under the untrusted-URL policy (network
//! transports only, no redirects), credentials sent as a header kept out of argv and never shown in an
//! error, without the `origin` remote the clone leaves behind.

use tonic::Status;

use super::staging::{self, Staging};
use crate::git::{remote_url, GitError, Sub};
use crate::proto::gitaly::{CreateRepositoryFromUrlRequest, CreateRepositoryFromUrlResponse};
use crate::service::Context;

pub async fn create_repository_from_url(
    ctx: &Context,
    req: CreateRepositoryFromUrlRequest,
) -> Result<CreateRepositoryFromUrlResponse, Status> {
    let invalid = |m: String| Status::invalid_argument(format!("CreateRepositoryFromURL: {m}"));
    let repository = req.repository.as_ref().ok_or_else(|| invalid("empty Repository".into()))?;
    if req.url.is_empty() {
        return Err(invalid("empty Url".into()));
    }
    remote_url::validate(&req.url).map_err(|e| invalid(e.to_string()))?;
    let target = ctx.locator.target_path(Some(repository)).map_err(|e| invalid(e.to_string()))?;
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(invalid("dest dir exists".into()));
    }
    let (url, header) = remote_url::split_credentials(&req.url);
    let staged = Staging::new(ctx, &repository.storage_name, "CreateRepositoryFromURL")?;
    let mut cmd = ctx.git.bare(Sub::Clone).untrusted_remote().flag("--bare").flag("--quiet");
    if let Some(h) = &header {
        cmd = cmd.secret_config("http.extraHeader", h);
    }
    cmd.path_arg(&url).path_arg(&staged.path).output().await.map_err(|e| {
        let detail = match e {
            GitError::Failed { code, stderr, .. } => format!("{}: exit status {code}", stderr.trim()),
            e => e.to_string(),
        };
        Status::internal(remote_url::redact(&format!("CreateRepositoryFromURL: clone cmd wait: {detail}")))
    })?;
    super::remove_origin(ctx, &staged.path)
        .await
        .map_err(|e| Status::internal(format!("CreateRepositoryFromURL: {e}")))?;
    if !staging::is_free(&target) {
        return Err(invalid("dest dir exists".into()));
    }
    staged.place(&target, "CreateRepositoryFromURL")?;
    Ok(CreateRepositoryFromUrlResponse {})
}

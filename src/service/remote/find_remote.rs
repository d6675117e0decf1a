//! FindRemoteRepository (is there a git repository at this URL?) and FindRemoteRootRef (which branch does
//! a remote's HEAD name?): both one `git ls-remote` against a client-given URL, under the untrusted-URL
//! policy, credentials moved out of the URL into a header kept out of argv.

use tonic::Status;

use crate::git::{remote_url, GitCommand, Sub};
use crate::proto::gitaly::*;
use crate::service::Context;

/// Adds `url` to an `ls-remote`: its credentials, or `authorization` (a header value GitLab sends), as a
/// header in the environment; the URL itself without them.
fn with_url<'a>(cmd: GitCommand<'a>, url: &str, authorization: &str) -> GitCommand<'a> {
    let (bare, header) = remote_url::split_credentials(url);
    let header = if authorization.is_empty() { header } else { Some(format!("Authorization: {authorization}")) };
    let cmd = match header {
        Some(h) => cmd.secret_config("http.extraHeader", &h),
        None => cmd,
    };
    cmd.user_arg(bare)
}

pub async fn find_remote_repository(
    ctx: &Context,
    req: FindRemoteRepositoryRequest,
) -> Result<FindRemoteRepositoryResponse, Status> {
    if req.remote.is_empty() {
        return Err(Status::invalid_argument("FindRemoteRepository: empty remote can't be checked."));
    }
    remote_url::validate(&req.remote).map_err(|e| Status::invalid_argument(format!("FindRemoteRepository: {e}")))?;
    let cmd = ctx.git.bare(Sub::LsRemote).untrusted_remote();
    let out = with_url(cmd, &req.remote, "").user_arg("HEAD").run_to_end().await?;
    if !out.exit.success() {
        return Ok(FindRemoteRepositoryResponse { exists: false });
    }
    // One line: "<40 hex>\tHEAD".
    let text = out.stdout_text();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let exists = fields.len() == 2 && crate::git::repo::is_oid(fields[0]) && fields[1] == "HEAD";
    Ok(FindRemoteRepositoryResponse { exists })
}

#[allow(deprecated)]
pub async fn find_remote_root_ref(
    ctx: &Context,
    req: FindRemoteRootRefRequest,
) -> Result<FindRemoteRootRefResponse, Status> {
    if req.remote.is_empty() && req.remote_url.is_empty() {
        return Err(Status::invalid_argument("got neither remote name nor URL"));
    }
    if !req.remote.is_empty() && !req.remote_url.is_empty() {
        return Err(Status::invalid_argument("got remote name and URL"));
    }
    if req.repository.is_none() {
        return Err(Status::invalid_argument("missing repository"));
    }
    if req.http_authorization_header.contains(['\n', '\r', '\0']) {
        return Err(Status::invalid_argument("invalid http authorization header"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let cmd = ctx.git.command(&repo, Sub::LsRemote).untrusted_remote().flag("--symref");
    let cmd = if req.remote_url.is_empty() {
        if !super::remotes::valid_remote_name(&req.remote) {
            return Err(Status::invalid_argument(format!("invalid remote name {:?}", req.remote)));
        }
        cmd.user_arg(&req.remote)
    } else {
        remote_url::validate(&req.remote_url).map_err(|e| Status::invalid_argument(e.to_string()))?;
        with_url(cmd, &req.remote_url, &req.http_authorization_header)
    };
    let out = cmd.user_arg("HEAD").run_to_end().await?;
    if !out.exit.success() {
        return Err(Status::internal(remote_url::redact(out.stderr_text().trim())));
    }
    for line in out.stdout_text().lines() {
        if let Some(target) = line.strip_prefix("ref: ").and_then(|l| l.strip_suffix("\tHEAD")) {
            let branch = target.strip_prefix("refs/heads/").unwrap_or(target);
            return Ok(FindRemoteRootRefResponse { r#ref: branch.to_string() });
        }
    }
    Err(Status::not_found("no remote HEAD found"))
}

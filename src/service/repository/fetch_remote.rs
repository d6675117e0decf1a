//! FetchRemote: fetches a named remote of the repository, or a URL given with the call (`remote_params`,
//! the way GitLab's pull mirrors and imports call it), under the untrusted-URL policy. The URL and its
//! credentials or authorization header travel in git's environment, never argv; errors show no
//! credentials. `check_tags_changed` is answered from `fetch --porcelain`.

use std::time::Duration;

use tonic::Status;

use crate::git::{remote_url, Sub};
use crate::proto::gitaly::{FetchRemoteRequest, FetchRemoteResponse};
use crate::service::remote::{refspec, valid_refmap, valid_remote_name};
use crate::service::Context;

const IN_MEMORY: &str = "inmemory";

pub async fn fetch_remote(ctx: &Context, req: FetchRemoteRequest) -> Result<FetchRemoteResponse, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty Repository"));
    }
    let remote_name = remote_name(&req)?;
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    fetch_remote_at(ctx, &path, remote_name, &req).await
}

/// The remote a request fetches (its name, or the in-memory remote of its URL), checked.
pub(crate) fn remote_name(req: &FetchRemoteRequest) -> Result<&str, Status> {
    Ok(match &req.remote_params {
        None => {
            if req.remote.trim().is_empty() {
                return Err(Status::invalid_argument(format!("blank or empty \"remote\": {:?}", req.remote)));
            }
            if !valid_remote_name(&req.remote) {
                return Err(Status::invalid_argument(format!("invalid \"remote\": {:?}", req.remote)));
            }
            req.remote.as_str()
        }
        Some(params) => {
            remote_url::validate(&params.url).map_err(|e| {
                Status::invalid_argument(format!(
                    "invalid \"remote_params.url\": {:?}: {e}",
                    remote_url::redact(&params.url)
                ))
            })?;
            if params.http_authorization_header.contains(['\n', '\r', '\0']) {
                return Err(Status::invalid_argument("invalid \"remote_params.http_authorization_header\""));
            }
            if let Some(r) = params.mirror_refmaps.iter().find(|r| !valid_refmap(r)) {
                return Err(Status::invalid_argument(format!("invalid refmap {r:?}")));
            }
            IN_MEMORY
        }
    })
}

/// FetchRemote into the repository at `path` (resolved by the caller: CloneFromPool fetches into a
/// repository still being built), `req` already checked.
pub(crate) async fn fetch_remote_at(
    ctx: &Context,
    path: &std::path::Path,
    remote_name: &str,
    req: &FetchRemoteRequest,
) -> Result<FetchRemoteResponse, Status> {
    let ssh = remote_url::SshCommand::new(&ctx.config.internal_dir(), &req.ssh_key, &req.known_hosts)
        .map_err(|e| Status::internal(format!("build ssh invocation: {e}")))?;

    let mut cmd = ctx.git.command(path, Sub::Fetch).untrusted_remote().flag("--porcelain");
    if let Some(params) = &req.remote_params {
        // Credentials in the URL travel as a header, as CreateRepositoryFromURL sends them; GitLab's own
        // authorization header wins when both are given.
        let (url, credentials) = remote_url::split_credentials(&params.url);
        cmd = cmd.secret_config(&format!("remote.{IN_MEMORY}.url"), &url);
        if params.mirror_refmaps.is_empty() {
            cmd = cmd.secret_config(&format!("remote.{IN_MEMORY}.fetch"), "refs/*:refs/*");
        }
        for r in &params.mirror_refmaps {
            cmd = cmd.secret_config(&format!("remote.{IN_MEMORY}.fetch"), refspec(r));
        }
        let header = if params.http_authorization_header.is_empty() {
            credentials
        } else {
            Some(format!("Authorization: {}", params.http_authorization_header))
        };
        if let Some(h) = header {
            cmd = cmd.secret_config(&format!("http.{url}.extraHeader"), &h);
        }
    }
    if let Some(s) = &ssh {
        cmd = cmd.env("GIT_SSH_COMMAND", &s.command);
    }
    if !req.no_prune {
        cmd = cmd.flag("--prune");
    }
    if req.force {
        cmd = cmd.flag("--force");
    }
    cmd = cmd.flag(if req.no_tags { "--no-tags" } else { "--tags" });
    let run = cmd.user_arg(remote_name).run_to_end();
    let out = if req.timeout > 0 {
        tokio::time::timeout(Duration::from_secs(req.timeout as u64), run)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("fetch remote: timed out after {}s", req.timeout)))??
    } else {
        run.await?
    };
    if !out.exit.success() {
        let stderr = remote_url::redact(out.stderr_text().trim());
        return Err(Status::unknown(format!("fetch remote: {stderr:?}: exit status {}", out.exit.code)));
    }
    let tags_changed = !req.check_tags_changed || tags_changed(&out.stdout);
    Ok(FetchRemoteResponse { tags_changed })
}

/// Whether `fetch --porcelain` reports a tag created, moved or force-updated.
fn tags_changed(porcelain: &[u8]) -> bool {
    porcelain.split(|b| *b == b'\n').any(|line| {
        // "<flag> <old> <new> <local ref>"
        let flag = line.first().copied();
        let local = line.rsplit(|b| *b == b' ').next().unwrap_or_default();
        matches!(flag, Some(b'*' | b't' | b'+' | b' ')) && local.starts_with(b"refs/tags/")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn porcelain_tag_lines() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let new_tag = format!("* {z} {a} refs/tags/v1\n");
        let up_to_date = format!("= {a} {a} refs/tags/v1\n  {z} {a} refs/heads/main\n");
        assert!(super::tags_changed(new_tag.as_bytes()));
        assert!(!super::tags_changed(up_to_date.as_bytes()));
        assert!(!super::tags_changed(b""));
    }
}

//! UserApplyPatch: a client's `git format-patch` series applied to a branch, one commit per patch, as
//! upstream's v13.12.0 (gitaly-ruby) does it: `git am --quiet --3way` in a temporary detached worktree of
//! the repository at the branch tip (or, for a new branch, at the default branch), authored as each patch
//! says and committed by the user; then the branch moves through the hook chain. The series is checked
//! first (`rgitaly::git::patch`): mail messages as format-patch writes them, every path clean.
//!
//! Errors are upstream's: a series git cannot apply is FailedPrecondition with `git am`'s output; what Ruby
//! raised after that (a refusal by a hook, a lost race) reaches the client as Unknown
//! "<exception class>: <message>", the way grpc-ruby reported it.

use std::path::PathBuf;

use rgitaly::git::repo::{Repo, ZERO_OID};
use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::user_apply_patch_request::UserApplyPatchRequestPayload as Payload;
use rgitaly::proto::gitaly::*;
use tonic::{Status, Streaming};

use super::{internal, text, unix_time, Hooked, Target};

/// Far beyond any merge request's patch series; past it the call is refused.
const MAX_PATCHES: usize = 256 << 20;

/// A temporary worktree, removed with its administrative directory however the call ends.
struct Worktree {
    path: PathBuf,
    admin: PathBuf,
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::fs::remove_dir_all(&self.admin);
    }
}

fn random_name() -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn apply_patch(
    git: &GitCmdFactory,
    t: &Target,
    mut stream: Streaming<UserApplyPatchRequest>,
) -> Result<UserApplyPatchResponse, Status> {
    let first = rgitaly::service::first_request(&mut stream).await?;
    let Some(Payload::Header(header)) = first.user_apply_patch_request_payload else {
        return Err(Status::invalid_argument("UserApplyPatch: empty UserApplyPatch_Header"));
    };
    let problem = if header.repository.is_none() {
        Some("missing Repository")
    } else if header.user.is_none() {
        Some("missing User")
    } else if header.target_branch.is_empty() {
        Some("missing Branch")
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(Status::invalid_argument(format!("UserApplyPatch: {p}")));
    }
    let user = header.user.as_ref().expect("validated");
    let mut patches = Vec::new();
    while let Some(msg) = stream.message().await? {
        if let Some(Payload::Patches(p)) = msg.user_apply_patch_request_payload {
            if patches.len() + p.len() > MAX_PATCHES {
                return Err(Status::resource_exhausted("UserApplyPatch: patches too large"));
            }
            patches.extend_from_slice(&p);
        }
    }
    if let Err(e) = rgitaly::git::patch::parse(&patches) {
        return Err(Status::failed_precondition(e.to_string()));
    }

    let odb = crate::service::open(&t.repo)?;
    let branch = text(&header.target_branch);
    let reference = format!("refs/heads/{branch}");
    let tip = rgitaly::odb::refs::commit(&odb, reference.as_bytes())?.map(|id| id.to_string());
    let start = match &tip {
        Some(tip) => tip.clone(),
        None => {
            let default = rgitaly::odb::refs::default_branch(&odb)?;
            if default.is_empty() {
                return Err(Status::unknown("Gitlab::Git::Repository::InvalidRef: repository has no branches"));
            }
            rgitaly::odb::resolve_commit(&odb, &default)
                .ok_or_else(|| Status::unknown("Gitlab::Git::Repository::InvalidRef: invalid default branch"))?
                .to_string()
        }
    };

    let name = format!("am-{}", random_name());
    let worktree =
        Worktree { path: t.repo.join("gitlab-worktree").join(&name), admin: t.repo.join("worktrees").join(&name) };
    git.command(&t.repo, Sub::Worktree)
        .flag("add")
        .flag("--detach")
        .flag("--quiet")
        .trusted_arg(&worktree.path)
        .trusted_arg(&start)
        .output()
        .await
        .map_err(|e| Status::unknown(format!("Gitlab::Git::CommandError: {e}")))?;
    let mut am = git
        .bare(Sub::Am)
        .current_dir(&worktree.path)
        .flag("--quiet")
        .flag("--3way")
        .env("GIT_COMMITTER_NAME", bytes_os(&user.name))
        .env("GIT_COMMITTER_EMAIL", bytes_os(&user.email));
    if header.timestamp.is_some() {
        let when = format!("{} +0000", unix_time(header.timestamp.as_ref())?);
        am = am.env("GIT_COMMITTER_DATE", &when).env("GIT_AUTHOR_DATE", &when);
    }
    let mut child = am.spawn().map_err(internal)?;
    let mut stdin = child.stdin.take().expect("stdin piped");
    let feed = async move {
        use tokio::io::AsyncWriteExt;
        // git stops reading when it gives up: its exit status says why.
        let _ = stdin.write_all(&patches).await;
    };
    let (out, ()) = tokio::join!(collect(child), feed);
    let (code, stdout) = out?;
    if code != 0 {
        return Err(Status::failed_precondition(String::from_utf8_lossy(&stdout).into_owned()));
    }
    // The worktree's own git dir holds its HEAD.
    let new = Repo::new(git, &worktree.admin)
        .resolve("HEAD")
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::unknown("Gitlab::Git::CommitError: Failed to create commit"))?;
    drop(worktree);

    let repo = Repo::new(git, &t.repo);
    if let Some(tip) = &tip {
        if !rgitaly::odb::is_ancestor(&*crate::service::open(&t.repo)?, tip.as_bytes(), new.as_bytes()) {
            return Err(Status::unknown("Gitlab::Git::CommitError: Branch diverged"));
        }
    }
    let old = tip.clone().unwrap_or_else(|| ZERO_OID.to_string());
    match super::update(t, &repo, &reference, &new, &old).await? {
        Hooked::Done => Ok(UserApplyPatchResponse {
            branch_update: Some(OperationBranchUpdate {
                commit_id: new,
                repo_created: false,
                branch_created: tip.is_none(),
            }),
        }),
        Hooked::Refused(message) => Err(Status::unknown(format!("Gitlab::Git::PreReceiveError: {message}"))),
        Hooked::Raced => Err(Status::unknown(format!(
            "Gitlab::Git::CommitError: Could not update {branch}. Please refresh and try again."
        ))),
    }
}

fn bytes_os(b: &[u8]) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    // Names with a NUL cannot be in an environment; git refuses the ident anyway.
    std::ffi::OsString::from_vec(b.iter().copied().filter(|c| *c != 0).collect())
}

/// Exit code and stdout of `git am`, stderr dropped (upstream reports stdout only).
async fn collect(mut child: rgitaly::git::Running) -> Result<(i32, Vec<u8>), Status> {
    use tokio::io::AsyncReadExt;
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    a.map_err(internal)?;
    b.map_err(internal)?;
    let exit = child.wait().await.map_err(internal)?;
    Ok((exit.code, out))
}

//! UserSquash: one commit on top of `start_sha` holding the changes of `start_sha...end_sha` (from their
//! merge base to `end_sha`), as upstream's v13.12.0 makes it: `git diff --binary start...end` applied with
//! `git apply --3way` onto `start_sha`, committed with the request's author, the user as committer and
//! git's whitespace cleanup of the message. No ref moves. Upstream applies in a temporary worktree; here the
//! patch is applied to a scratch index (`--cached`), which gives the same tree without checking files out.
//! A git step that fails with something on stderr is the response's `git_error`, as upstream.

use rgitaly::git::repo::{Repo, Signature};
use rgitaly::git::{GitCmdFactory, GitError, Sub};
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, unix_time, Target};

fn validate(req: &UserSquashRequest) -> Result<(), Status> {
    let problem = if req.repository.is_none() {
        "empty Repository"
    } else if req.user.is_none() {
        "empty User"
    } else if req.squash_id.is_empty() {
        "empty SquashId"
    } else if req.start_sha.is_empty() {
        "empty StartSha"
    } else if req.end_sha.is_empty() {
        "empty EndSha"
    } else if req.commit_message.is_empty() {
        "empty CommitMessage"
    } else if req.author.is_none() {
        "empty Author"
    } else {
        if req.squash_id.contains('/') {
            return Err(Status::invalid_argument("worktree id can't contain slashes"));
        }
        return Ok(());
    };
    Err(Status::invalid_argument(format!("UserSquash: {problem}")))
}

/// What a failed git step said, for `git_error`; a failure with nothing on stderr is an error.
fn git_error(e: GitError) -> Result<UserSquashResponse, Status> {
    match e {
        GitError::Failed { stderr, .. } if !stderr.is_empty() => {
            Ok(UserSquashResponse { git_error: stderr, ..Default::default() })
        }
        e => Err(internal(e)),
    }
}

pub async fn squash(git: &GitCmdFactory, t: &Target, req: UserSquashRequest) -> Result<UserSquashResponse, Status> {
    validate(&req)?;
    let (user, author) = (req.user.as_ref().expect("validated"), req.author.as_ref().expect("validated"));
    let when = unix_time(req.timestamp.as_ref()).map_err(|e| Status::internal(e.message().to_string()))?;
    let repo = Repo::new(git, &t.repo);
    let range = format!("{}...{}", req.start_sha, req.end_sha);
    let diff = match git.command(&t.repo, Sub::Diff).flag("--binary").user_arg(&range).output().await {
        Ok(out) => out.stdout,
        Err(e) => return git_error(e),
    };
    // The start commit, to apply onto; any failure to name one is git's message, as upstream's checkout.
    // Lookups are in-process (gix), sparing a git process each.
    let odb = crate::service::open(&t.repo)?;
    let start_id = match req.start_sha.starts_with('-') {
        true => None,
        false => rgitaly::odb::resolve_commit(&odb, req.start_sha.as_bytes()),
    };
    let Some(start_id) = start_id else {
        return Ok(UserSquashResponse {
            git_error: format!("fatal: invalid reference: {}", req.start_sha),
            ..Default::default()
        });
    };
    let start = start_id.to_string();
    let scratch = tempfile::tempdir().map_err(internal)?;
    let index = scratch.path().join("index");
    if let Err(e) = git.command(&t.repo, Sub::ReadTree).env("GIT_INDEX_FILE", &index).trusted_arg(&start).output().await
    {
        return git_error(e);
    }
    let applied = git
        .command(&t.repo, Sub::Apply)
        .env("GIT_INDEX_FILE", &index)
        .flag("--cached")
        .flag("--3way")
        .flag("--whitespace=nowarn")
        .output_with_stdin(diff)
        .await;
    if let Err(e) = applied {
        return git_error(e);
    }
    let tree = match git.command(&t.repo, Sub::WriteTree).env("GIT_INDEX_FILE", &index).output().await {
        Ok(out) => out.stdout_text(),
        Err(e) => return git_error(e),
    };
    let ident = |u: &User| {
        Signature::new(&u.name, &u.email, when).map_err(|_| UserSquashResponse {
            git_error: format!("fatal: empty ident name (for <{}>) not allowed", String::from_utf8_lossy(&u.email)),
            ..Default::default()
        })
    };
    let (author, committer) = match (ident(author), ident(user)) {
        (Ok(a), Ok(c)) => (a, c),
        (Err(r), _) | (_, Err(r)) => return Ok(r),
    };
    let message = cleanup(&req.commit_message);
    if message.is_empty() {
        return Ok(UserSquashResponse {
            git_error: "Aborting commit due to empty commit message.".into(),
            ..Default::default()
        });
    }
    // Nothing changed on start: `git commit` refuses with nothing on stderr, which upstream reports as an
    // internal error.
    let start_tree = rgitaly::odb::read_commit(&odb, start_id)?.map(|c| c.tree_id);
    if start_tree.as_deref() == Some(tree.as_str()) {
        return Err(Status::internal("UserSquash: nothing to commit"));
    }
    let commit = repo.write_commit(&tree, &[&start], &author, &committer, &message).await.map_err(internal)?;
    Ok(UserSquashResponse { squash_sha: commit, ..Default::default() })
}

/// git's `--cleanup=whitespace`, which `git commit -m` applies: trailing whitespace off every line, runs of
/// blank lines made one, none at the start or end, and a final newline. `#` lines stay.
fn cleanup(message: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut blank_pending = false;
    for line in message.split(|b| *b == b'\n') {
        let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map(|i| i + 1).unwrap_or(0);
        let line = &line[..end];
        if line.is_empty() {
            blank_pending = !out.is_empty();
            continue;
        }
        if blank_pending {
            out.push(b'\n');
            blank_pending = false;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cleanup;

    #[test]
    fn cleanup_as_git_commit_m() {
        assert_eq!(cleanup(b"Squashed commit"), b"Squashed commit\n");
        assert_eq!(cleanup(b"\n\n  title  \n\n\n\nbody\t\n# kept\n\n"), b"  title\n\nbody\n# kept\n");
        assert_eq!(cleanup(b"a\r\nb"), b"a\nb\n");
    }
}

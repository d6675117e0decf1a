//! UserUpdateSubmodule: points a submodule's gitlink on a branch at another commit, in a commit of its own,
//! as upstream's v13.12.0 (Go with libgit2): the path must name a gitlink exactly (no `./`, no trailing
//! `/`), the new commit has the branch tip as its one parent, the user as author and committer and the
//! message as it is; the branch moves through the hook chain. Refusals are `commit_error` with upstream's
//! bare texts.

use rgitaly::git::repo::{is_oid, Repo, Signature, TreeEdit};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, text, unix_time, Hooked, Target};

const GITLINK: i32 = 0o160000;

fn validate(req: &UserUpdateSubmoduleRequest) -> Result<(), Status> {
    let problem = if req.user.is_none() {
        "empty User"
    } else if req.commit_sha.is_empty() {
        "empty CommitSha"
    } else if !is_oid(&req.commit_sha) {
        "invalid CommitSha"
    } else if req.branch.is_empty() {
        "empty Branch"
    } else if req.submodule.is_empty() {
        "empty Submodule"
    } else if req.commit_message.is_empty() {
        "empty CommitMessage"
    } else {
        return Ok(());
    };
    Err(Status::invalid_argument(format!("UserUpdateSubmodule: {problem}")))
}

fn refused(commit_error: &str) -> UserUpdateSubmoduleResponse {
    UserUpdateSubmoduleResponse { commit_error: commit_error.to_string(), ..Default::default() }
}

pub async fn update_submodule(
    git: &GitCmdFactory,
    t: &Target,
    req: UserUpdateSubmoduleRequest,
) -> Result<UserUpdateSubmoduleResponse, Status> {
    validate(&req)?;
    let user = req.user.as_ref().expect("validated");
    let odb = crate::service::open(&t.repo)?;
    if !rgitaly::odb::refs::any(&odb, "refs/heads/")? {
        return Ok(refused("Repository is empty"));
    }
    let reference = format!("refs/heads/{}", text(&req.branch));
    let head = rgitaly::odb::refs::commit(&odb, reference.as_bytes())?
        .ok_or_else(|| Status::invalid_argument("Cannot find branch"))?
        .to_string();
    // An exact path to a leaf entry, as libgit2's index lookup: no `.`/`..`/empty components.
    let path = &req.submodule;
    let clean = !path.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..")
        && !path.iter().any(|b| matches!(b, 0 | b'\n'));
    let entry = if clean { rgitaly::odb::tree::find_entry(&odb, &head, path)? } else { None };
    let Some(entry) = entry else { return Ok(refused("Invalid submodule path")) };
    if entry.oid == req.commit_sha {
        return Ok(refused(&format!("The submodule {} is already at {}", text(path), req.commit_sha)));
    }
    if entry.mode != GITLINK {
        return Ok(refused("Invalid submodule path"));
    }

    let when = unix_time(req.timestamp.as_ref())?;
    let sig = Signature::new(&user.name, &user.email, when).map_err(|e| {
        Status::unknown(format!("UserUpdateSubmodule: submodule subcommand: submodule: missing author name: {e}"))
    })?;
    let repo = Repo::new(git, &t.repo);
    let tree = match gitlink_tree(&repo, &head, path, &req.commit_sha).await {
        Ok(tree) => tree,
        Err(e) => {
            tracing::warn!(error = %e, "update submodule: write tree");
            return Ok(refused("Failed to create commit"));
        }
    };
    let commit = match repo.write_commit(&tree, &[&head], &sig, &sig, &req.commit_message).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "update submodule: write commit");
            return Ok(refused("Failed to create commit"));
        }
    };
    match super::update(t, &repo, &reference, &commit, &head).await? {
        Hooked::Done => Ok(UserUpdateSubmoduleResponse {
            branch_update: Some(OperationBranchUpdate {
                commit_id: commit,
                repo_created: false,
                branch_created: false,
            }),
            ..Default::default()
        }),
        Hooked::Refused(pre_receive_error) => {
            Ok(UserUpdateSubmoduleResponse { pre_receive_error, ..Default::default() })
        }
        Hooked::Raced => Ok(refused(&format!("Could not update {reference}. Please refresh and try again."))),
    }
}

/// `head`'s tree with the gitlink at `path` set to `commit`.
async fn gitlink_tree(repo: &Repo<'_>, head: &str, path: &[u8], commit: &str) -> Result<String, Status> {
    let edit = TreeEdit { mode: GITLINK as u32, oid: commit.to_string(), path: path.to_vec() };
    repo.edit_tree(Some(head), &[edit]).await.map_err(internal)
}

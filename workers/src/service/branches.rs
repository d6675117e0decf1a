//! UserCreateBranch, UserUpdateBranch, UserDeleteBranch.

use rgitaly::git::repo::{is_oid, Repo, ZERO_OID};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, text, Hooked, Target};

pub async fn create(
    git: &GitCmdFactory,
    t: &Target,
    req: UserCreateBranchRequest,
) -> Result<UserCreateBranchResponse, Status> {
    if req.branch_name.is_empty() {
        return Err(Status::invalid_argument("Bad Request (empty branch name)"));
    }
    if req.user.is_none() {
        return Err(Status::invalid_argument("empty user"));
    }
    if req.start_point.is_empty() {
        return Err(Status::invalid_argument("empty start point"));
    }
    let repo = Repo::new(git, &t.repo);
    let start_point = text(&req.start_point);
    let commit = repo
        .read_commit(&start_point)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::failed_precondition(format!("revspec '{start_point}' not found")))?;
    let branch = text(&req.branch_name);
    let reference = format!("refs/heads/{branch}");
    if repo.resolve(&reference).await.map_err(internal)?.is_some() {
        return Err(Status::failed_precondition(format!("Could not update {branch}. Please refresh and try again.")));
    }
    // Fault injection for the daemon's tests: die on either side of the ref update.
    if super::failpoint("create-branch-before-update") {
        std::process::abort();
    }
    match super::update(t, &repo, &reference, &commit.id, ZERO_OID).await? {
        Hooked::Done => {}
        Hooked::Refused(pre_receive_error) => return Ok(UserCreateBranchResponse { branch: None, pre_receive_error }),
        Hooked::Raced => return Err(super::could_not_update(&reference)),
    }
    if super::failpoint("create-branch-after-update") {
        std::process::abort();
    }
    Ok(UserCreateBranchResponse {
        branch: Some(Branch { name: req.branch_name, target_commit: Some(commit) }),
        pre_receive_error: String::new(),
    })
}

pub async fn update(
    git: &GitCmdFactory,
    t: &Target,
    req: UserUpdateBranchRequest,
) -> Result<UserUpdateBranchResponse, Status> {
    if req.user.is_none() {
        return Err(Status::invalid_argument("empty user"));
    }
    if req.branch_name.is_empty() {
        return Err(Status::invalid_argument("empty branch name"));
    }
    if req.oldrev.is_empty() {
        return Err(Status::invalid_argument("empty oldrev"));
    }
    if req.newrev.is_empty() {
        return Err(Status::invalid_argument("empty newrev"));
    }
    let (new, old) = (text(&req.newrev), text(&req.oldrev));
    if !is_oid(&new) {
        return Err(Status::internal(format!("could not parse newrev: invalid object ID: {new:?}")));
    }
    if !is_oid(&old) {
        return Err(Status::internal(format!("could not parse oldrev: invalid object ID: {old:?}")));
    }
    let branch = text(&req.branch_name);
    let failed = || Status::failed_precondition(format!("Could not update {branch}. Please refresh and try again."));
    // The name goes into `update-ref -z --stdin`, where a NUL ends a field: it would let the caller append
    // commands of its own (delete or move any ref). No ref name holds a NUL; git would refuse it too.
    if req.branch_name.contains(&0) {
        return Err(failed());
    }
    let repo = Repo::new(git, &t.repo);
    match super::update(t, &repo, &format!("refs/heads/{branch}"), &new, &old).await? {
        Hooked::Refused(pre_receive_error) => Ok(UserUpdateBranchResponse { pre_receive_error }),
        Hooked::Done => Ok(UserUpdateBranchResponse { pre_receive_error: String::new() }),
        Hooked::Raced => Err(failed()),
    }
}

pub async fn delete(
    git: &GitCmdFactory,
    t: &Target,
    req: UserDeleteBranchRequest,
) -> Result<UserDeleteBranchResponse, Status> {
    if req.branch_name.is_empty() {
        return Err(Status::invalid_argument("Bad Request (empty branch name)"));
    }
    if req.user.is_none() {
        return Err(Status::invalid_argument("Bad Request (empty user)"));
    }
    let repo = Repo::new(git, &t.repo);
    let branch = text(&req.branch_name);
    let reference = format!("refs/heads/{branch}");
    let not_found = || Status::failed_precondition(format!("branch not found: {branch}"));
    // No ref name holds a NUL (git cannot even take it as an argument): not found, as upstream answers.
    if req.branch_name.contains(&0) {
        return Err(not_found());
    }
    let current = repo.resolve(&reference).await.map_err(internal)?.ok_or_else(not_found)?;
    match super::update(t, &repo, &reference, ZERO_OID, &current).await? {
        Hooked::Refused(pre_receive_error) => Ok(UserDeleteBranchResponse { pre_receive_error }),
        Hooked::Done => Ok(UserDeleteBranchResponse { pre_receive_error: String::new() }),
        Hooked::Raced => Err(super::could_not_update(&reference)),
    }
}

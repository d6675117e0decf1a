//! UserFFBranch: moves a branch forward to a descendant commit, refusing anything else.

use rgitaly::git::repo::{is_oid, Repo};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, text, Hooked, Target};

pub async fn ff_branch(
    git: &GitCmdFactory,
    t: &Target,
    req: UserFfBranchRequest,
) -> Result<UserFfBranchResponse, Status> {
    if req.branch.is_empty() {
        return Err(Status::invalid_argument("empty branch name"));
    }
    if req.user.is_none() {
        return Err(Status::invalid_argument("empty user"));
    }
    if req.commit_id.is_empty() {
        return Err(Status::invalid_argument("empty commit id"));
    }
    let repo = Repo::new(git, &t.repo);
    let reference = format!("refs/heads/{}", text(&req.branch));
    let head = repo
        .resolve(&reference)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::invalid_argument("reference not found"))?;
    if !is_oid(&req.commit_id) {
        return Err(Status::invalid_argument(format!(
            "cannot parse commit ID: invalid object ID: {:?}",
            req.commit_id
        )));
    }
    match repo.is_ancestor(&head, &req.commit_id).await.map_err(internal)? {
        Some(true) => {}
        Some(false) => return Err(Status::failed_precondition("not fast forward")),
        None => return Err(Status::unknown(format!("invalid commit: {:?}", req.commit_id))),
    }
    // Someone moved the branch meanwhile: upstream answers with an empty response.
    match super::update(t, &repo, &reference, &req.commit_id, &head).await? {
        Hooked::Done => {}
        Hooked::Refused(pre_receive_error) => {
            return Ok(UserFfBranchResponse { branch_update: None, pre_receive_error })
        }
        Hooked::Raced => return Ok(UserFfBranchResponse::default()),
    }
    Ok(UserFfBranchResponse {
        branch_update: Some(OperationBranchUpdate {
            commit_id: req.commit_id,
            repo_created: false,
            branch_created: false,
        }),
        pre_receive_error: String::new(),
    })
}

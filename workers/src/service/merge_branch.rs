//! UserMergeBranch: two-phase bidi merge. The worker creates the merge commit and announces its id; only
//! when the client answers `apply` does the branch move, compare-and-swap against the head it merged.

use std::sync::Arc;

use rgitaly::git::repo::{Repo, Signature};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::{internal, text, unix_time, Target};

pub async fn merge_branch(
    git: Arc<GitCmdFactory>,
    t: Target,
    mut stream: Streaming<UserMergeBranchRequest>,
) -> Result<BoxStream<UserMergeBranchResponse>, Status> {
    let first = rgitaly::service::first_request(&mut stream).await?;
    let Some(user) = first.user.as_ref() else { return Err(Status::invalid_argument("empty user")) };
    if first.branch.is_empty() {
        return Err(Status::invalid_argument("empty branch name"));
    }
    if first.commit_id.is_empty() {
        return Err(Status::invalid_argument("empty commit ID"));
    }
    if first.message.is_empty() {
        return Err(Status::invalid_argument("empty message"));
    }
    let repo = Repo::new(&git, &t.repo);
    let reference = format!("refs/heads/{}", text(&first.branch));
    let head =
        repo.resolve(&reference).await.map_err(internal)?.ok_or_else(|| Status::unknown("reference not found"))?;
    let when = unix_time(first.timestamp.as_ref())?;
    let theirs =
        repo.resolve(&format!("{}^{{commit}}", first.commit_id)).await.map_err(internal)?.ok_or_else(|| {
            Status::unknown(format!("merge: theirs commit lookup: lookup commit {:?}: not found\n", first.commit_id))
        })?;
    let sig = Signature::new(&user.name, &user.email, when)
        .map_err(|e| Status::invalid_argument(format!("merge: invalid parameters: {e}")))?;
    let tree = repo
        .merge_tree(&head, &theirs)
        .await
        .map_err(internal)?
        .map_err(|_| Status::unknown("merge: could not auto-merge due to conflicts\n"))?;
    let merge = repo.write_commit(&tree, &[&head, &theirs], &sig, &sig, &first.message).await.map_err(internal)?;

    let (tx, out) = rgitaly::streamio::response_channel();
    tokio::spawn(async move {
        let send = |m: Result<UserMergeBranchResponse, Status>| {
            let tx = tx.clone();
            async move { tx.send(m).await.is_ok() }
        };
        if !send(Ok(UserMergeBranchResponse { commit_id: merge.clone(), ..Default::default() })).await {
            return;
        }
        let second = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                send(Err(Status::unknown("EOF"))).await;
                return;
            }
            Err(e) => {
                send(Err(e)).await;
                return;
            }
        };
        if !second.apply {
            send(Err(Status::failed_precondition("merge aborted by client"))).await;
            return;
        }
        let repo = Repo::new(&git, &t.repo);
        // The branch moved since we merged: never trample it; upstream answers with an empty message.
        match super::update(&t, &repo, &reference, &merge, &head).await {
            Ok(super::Hooked::Done) => {}
            Ok(super::Hooked::Refused(pre_receive_error)) => {
                send(Ok(UserMergeBranchResponse { pre_receive_error, ..Default::default() })).await;
                return;
            }
            Ok(super::Hooked::Raced) => {
                send(Ok(UserMergeBranchResponse::default())).await;
                return;
            }
            Err(s) => {
                send(Err(s)).await;
                return;
            }
        }
        // Fault injection for tests of the daemon's safety net: die right after the merge landed.
        if super::failpoint("merge-after-apply") {
            std::process::abort();
        }
        send(Ok(UserMergeBranchResponse {
            branch_update: Some(OperationBranchUpdate { commit_id: merge, repo_created: false, branch_created: false }),
            ..Default::default()
        }))
        .await;
    });
    Ok(out)
}

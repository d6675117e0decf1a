//! UserRebaseConfirmable: a branch rebased onto another repository's branch in two phases, as upstream's Go
//! implementation (v13.12.0, libgit2's in-memory rebase) does it: the worker computes the rebased commits
//! and announces the result; only when the client answers `apply` does the branch move, compare-and-swap
//! against the `branch_sha` the client saw, through the hook chain with the request's push options.
//!
//! The rebase replays the branch's non-merge commits after the merge base, oldest first, each with `git
//! merge-tree --merge-base` onto the previous result, keeping its author and message and taking the user as
//! committer. Already on top: the tip as it is; behind: the onto commit. A conflict is the response's
//! `git_error` and the call ends OK, as upstream's.

use rgitaly::git::repo::{is_oid, Repo, Signature};
use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::user_rebase_confirmable_request::UserRebaseConfirmableRequestPayload as In;
use rgitaly::proto::gitaly::user_rebase_confirmable_response::UserRebaseConfirmableResponsePayload as Out;
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::{internal, text, unix_time, Hooked, Target};

fn validate(h: &user_rebase_confirmable_request::Header) -> Result<(), Status> {
    let problem = if h.repository.is_none() {
        "empty Repository"
    } else if h.user.is_none() {
        "empty User"
    } else if h.rebase_id.is_empty() {
        "empty RebaseId"
    } else if h.branch.is_empty() {
        "empty Branch"
    } else if h.branch_sha.is_empty() {
        "empty BranchSha"
    } else if h.remote_repository.is_none() {
        "empty RemoteRepository"
    } else if h.remote_branch.is_empty() {
        "empty RemoteBranch"
    } else if h.remote_branch.first() == Some(&b'-') || h.remote_branch.iter().any(|b| matches!(b, b' ' | 0 | b':')) {
        "invalid branch name"
    } else {
        return Ok(());
    };
    Err(Status::invalid_argument(format!("UserRebaseConfirmable: {problem}")))
}

fn response(payload: Out) -> UserRebaseConfirmableResponse {
    UserRebaseConfirmableResponse { user_rebase_confirmable_response_payload: Some(payload), ..Default::default() }
}

pub async fn rebase(
    git: std::sync::Arc<GitCmdFactory>,
    t: Target,
    mut stream: Streaming<UserRebaseConfirmableRequest>,
) -> Result<BoxStream<UserRebaseConfirmableResponse>, Status> {
    let first = rgitaly::service::first_request(&mut stream).await?;
    let Some(In::Header(header)) = first.user_rebase_confirmable_request_payload else {
        return Err(Status::invalid_argument("UserRebaseConfirmable: empty UserRebaseConfirmableRequest.Header"));
    };
    validate(&header)?;
    if !is_oid(&header.branch_sha) {
        return Err(Status::not_found(format!("invalid object ID: {:?}", header.branch_sha)));
    }
    let onto = onto(&git, &t, &header.remote_branch).await?;
    let user = header.user.clone().expect("validated");
    let when = unix_time(header.timestamp.as_ref())
        .map_err(|e| Status::invalid_argument(format!("parse timestamp: {}", e.message())))?;
    let committer = Signature::new(&user.name, &user.email, when)
        .map_err(|_| Status::internal("rebase: missing committer name"))?;
    let reference = format!("refs/heads/{}", text(&header.branch));

    let (tx, out) = rgitaly::streamio::response_channel();
    tokio::spawn(async move {
        let send = |m: Result<UserRebaseConfirmableResponse, Status>| {
            let tx = tx.clone();
            async move { tx.send(m).await.is_ok() }
        };
        // A client that goes away during the replay stops it (its git processes with it).
        let replayed = tokio::select! {
            r = replay(&git, &t, &reference, &onto, &committer) => r,
            _ = tx.closed() => return,
        };
        let rebased = match replayed {
            Ok(Ok(sha)) => sha,
            Ok(Err(git_error)) => {
                send(Ok(UserRebaseConfirmableResponse { git_error, ..Default::default() })).await;
                return;
            }
            Err(e) => {
                send(Err(e)).await;
                return;
            }
        };
        if !send(Ok(response(Out::RebaseSha(rebased.clone())))).await {
            return;
        }
        match stream.message().await {
            Ok(Some(m)) if matches!(m.user_rebase_confirmable_request_payload, Some(In::Apply(true))) => {}
            Ok(Some(_)) => {
                send(Err(Status::failed_precondition("rebase aborted by client"))).await;
                return;
            }
            Ok(None) => {
                send(Err(Status::internal("recv: EOF"))).await;
                return;
            }
            Err(e) => {
                send(Err(Status::internal(format!("recv: {}", e.message())))).await;
                return;
            }
        }
        let repo = Repo::new(&git, &t.repo);
        let (branch, options) = (&header.branch_sha, &header.git_push_options);
        let ready = async { Ok(crate::hooks::Swap::AsPlanned) };
        let update = super::update_before_post_receive(&t, &repo, &reference, (&rebased, branch), options, ready);
        let result = match update.await {
            Ok(updated) => super::finish(updated).await,
            Err(e) => Err(e),
        };
        let last = match result {
            Ok(Hooked::Done) => Ok(response(Out::RebaseApplied(true))),
            Ok(Hooked::Refused(pre_receive_error)) => {
                Ok(UserRebaseConfirmableResponse { pre_receive_error, ..Default::default() })
            }
            Ok(Hooked::Raced) => {
                Err(Status::unknown(format!("Could not update {reference}. Please refresh and try again.")))
            }
            Err(e) => Err(e),
        };
        send(last).await;
    });
    Ok(out)
}

/// The commit to rebase onto: `remote_branch` in the remote repository (the target when it is the same),
/// fetched into the target when only the remote has it.
async fn onto(git: &GitCmdFactory, t: &Target, remote_branch: &[u8]) -> Result<String, Status> {
    let remote_path = t.start_repo.as_deref().unwrap_or(&t.repo);
    let odb = crate::service::open(remote_path)?;
    let oid = rgitaly::odb::resolve_commit(&odb, remote_branch)
        .ok_or_else(|| Status::internal("resolve start ref: reference not found"))?
        .to_string();
    super::start_commit_here(git, t, &oid).await?;
    Ok(oid)
}

/// The rebased tip, or the rebase's failure for `git_error`.
async fn replay(
    git: &GitCmdFactory,
    t: &Target,
    reference: &str,
    onto: &str,
    committer: &Signature,
) -> Result<Result<String, String>, Status> {
    let odb = crate::service::open(&t.repo)?;
    let Some(tip) = rgitaly::odb::refs::commit(&odb, reference.as_bytes())? else {
        return Ok(Err(format!("rebase: look up branch {:?}: reference not found", reference)));
    };
    let tip = tip.to_string();
    let repo = Repo::new(git, &t.repo);
    let base = git
        .command(&t.repo, Sub::MergeBase)
        .trusted_arg(onto)
        .trusted_arg(&tip)
        .run_to_end()
        .await
        .map_err(internal)?
        .stdout_text();
    if base.is_empty() {
        return Ok(Err("rebase: find merge base: no merge base found".into()));
    }
    if base == onto {
        return Ok(Ok(tip));
    }
    if base == tip {
        return Ok(Ok(onto.to_string()));
    }
    let list = git
        .command(&t.repo, Sub::RevList)
        .flag("--reverse")
        .flag("--no-merges")
        .trusted_arg(&tip)
        .trusted_arg(format!("^{base}"))
        .output()
        .await
        .map_err(internal)?
        .stdout_text();
    let picks: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    // Only merges are new: libgit2 has nothing to do and upstream keeps the tip as it is.
    if picks.is_empty() {
        return Ok(Ok(tip));
    }
    let mut current = onto.to_string();
    for pick in picks {
        let id =
            rgitaly::odb::resolve_commit(&odb, pick.as_bytes()).ok_or_else(|| internal("rebase: lookup commit"))?;
        let Some(commit) = rgitaly::odb::read_commit(&odb, id)? else { return Err(internal("rebase: lookup commit")) };
        let parent = commit.parent_ids.first().cloned().unwrap_or_default();
        let tree = match repo.merge_tree_with_base(&current, pick, Some(&parent)).await.map_err(internal)? {
            Ok(tree) => tree,
            Err(_) => return Ok(Err(format!("rebase: commit {pick:?}: conflicts have not been resolved"))),
        };
        let current_id = rgitaly::odb::resolve_commit(&odb, current.as_bytes());
        let current_tree = match current_id {
            Some(c) => rgitaly::odb::read_commit(&odb, c)?.map(|c| c.tree_id),
            None => repo.resolve(&format!("{current}^{{tree}}")).await.map_err(internal)?,
        };
        if current_tree.as_deref() == Some(tree.as_str()) {
            return Ok(Err(format!("rebase: commit {pick:?}: this patch has already been applied")));
        }
        let author = rgitaly::odb::commit_header(&odb, id, b"author")?.ok_or_else(|| internal("rebase: no author"))?;
        let message = rgitaly::odb::commit_message(&odb, id)?.ok_or_else(|| internal("rebase: lookup commit"))?;
        current = repo.write_commit_as(&tree, &[&current], &author, committer, &message).await.map_err(internal)?;
    }
    Ok(Ok(current))
}

//! UserMergeToRef: merges a source into a first parent and points a `refs/merge-requests/…` ref at the
//! result (merge-request previews). Never touches branches; runs no hooks.

use rgitaly::git::repo::{Repo, Signature, ZERO_OID};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, text, unix_time, Target};

pub async fn merge_to_ref(
    git: &GitCmdFactory,
    t: &Target,
    req: UserMergeToRefRequest,
) -> Result<UserMergeToRefResponse, Status> {
    if req.first_parent_ref.is_empty() && req.branch.is_empty() {
        return Err(Status::invalid_argument("empty first parent ref and branch name"));
    }
    let Some(user) = req.user.as_ref() else { return Err(Status::invalid_argument("empty user")) };
    if req.source_sha.is_empty() {
        return Err(Status::invalid_argument("empty source SHA"));
    }
    if req.target_ref.is_empty() {
        return Err(Status::invalid_argument("empty target ref"));
    }
    if !req.target_ref.starts_with(b"refs/merge-requests") {
        return Err(Status::invalid_argument("invalid target ref"));
    }
    let repo = Repo::new(git, &t.repo);
    let first_rev = if req.first_parent_ref.is_empty() { text(&req.branch) } else { text(&req.first_parent_ref) };
    let invalid = || Status::invalid_argument("Invalid merge source");
    let first = repo.resolve(&format!("{first_rev}^{{commit}}")).await.map_err(internal)?.ok_or_else(invalid)?;
    let source =
        repo.resolve(&format!("{}^{{commit}}", req.source_sha)).await.map_err(internal)?.ok_or_else(invalid)?;
    let when = unix_time(req.timestamp.as_ref())?;
    let target_ref = text(&req.target_ref);
    if !repo.valid_ref_name(&target_ref).await.map_err(internal)? {
        return Err(Status::invalid_argument("invalid target ref"));
    }

    // As upstream: the target ref first shows the first parent, whatever the merge then does. Swapped
    // against the value just read, so a concurrent writer gets an error instead of being overwritten.
    let current = repo.resolve(&target_ref).await.map_err(internal)?.unwrap_or_else(|| ZERO_OID.to_string());
    repo.update_ref(&target_ref, &first, Some(&current))
        .await
        .map_err(|_| Status::unknown(format!("Could not update {target_ref}. Please refresh and try again.")))?;
    if req.message.is_empty() {
        return Err(Status::invalid_argument("merge: invalid parameters: missing message"));
    }
    let sig =
        Signature::new(&user.name, &user.email, when).map_err(|e| Status::invalid_argument(format!("merge: {e}")))?;
    let failed = || {
        Status::failed_precondition(format!(
            "Failed to create merge commit for source_sha {source} and target_sha {first} at {target_ref}"
        ))
    };
    let tree = match repo.merge_tree(&first, &source).await.map_err(internal)? {
        Ok(tree) => tree,
        // merge-tree writes the conflicted files with markers into its tree; committing it is the
        // "allow conflicts" preview.
        Err(_) if req.allow_conflicts => conflicted_tree(&repo, &first, &source).await?.ok_or_else(failed)?,
        Err(_) => return Err(failed()),
    };
    let merge = repo.write_commit(&tree, &[&first, &source], &sig, &sig, &req.message).await.map_err(internal)?;
    repo.update_ref(&target_ref, &merge, Some(&first)).await.map_err(|_| {
        Status::failed_precondition(format!("Could not update {target_ref}. Please refresh and try again"))
    })?;
    Ok(UserMergeToRefResponse { commit_id: merge, pre_receive_error: String::new() })
}

/// The tree `git merge-tree` wrote for a conflicted merge (files carry conflict markers). None when the
/// conflict is not a content conflict that markers can express.
async fn conflicted_tree(repo: &Repo<'_>, ours: &str, theirs: &str) -> Result<Option<String>, Status> {
    let out = repo
        .git
        .command(repo.path, rgitaly::git::Sub::MergeTree)
        .flag("--write-tree")
        .flag("--allow-unrelated-histories")
        .trusted_arg(ours)
        .trusted_arg(theirs)
        .run_to_end()
        .await
        .map_err(internal)?;
    let stdout = out.stdout_text();
    let tree = stdout.lines().next().unwrap_or_default().to_string();
    // Only plain content conflicts ("CONFLICT (content)") can be committed with markers.
    let only_content =
        stdout.lines().filter(|l| l.starts_with("CONFLICT")).all(|l| l.starts_with("CONFLICT (content)"));
    Ok((out.exit.code == 1 && only_content && rgitaly::git::repo::is_oid(&tree)).then_some(tree))
}

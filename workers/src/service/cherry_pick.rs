//! UserCherryPick and UserRevert: a commit's change applied to, or taken back from, a branch, as upstream's
//! Go implementation (v13.12.0) does it with libgit2 — here with `git merge-tree --merge-base`:
//! cherry-pick merges with base = the commit's parent, theirs = the commit; revert with base = the commit,
//! theirs = its parent (for a merge commit, the first: upstream's mainline 1). The new commit has one parent, the start revision, and the request's message as it
//! is. Conflicts, an empty result, a diverged branch and a hook's refusal are answers, not failures.

use rgitaly::git::repo::{commit_bytes, Repo, Signature, ZERO_OID};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, text, unix_time, Hooked, Target};

/// Which of the two a call is; the fields of both requests and responses are the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CherryPick,
    Revert,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::CherryPick => "cherry-pick",
            Kind::Revert => "revert",
        }
    }
}

/// The request fields both RPCs share.
pub struct Pick {
    pub user: Option<User>,
    pub commit: Option<GitCommit>,
    pub branch_name: Vec<u8>,
    pub message: Vec<u8>,
    pub start_branch_name: Vec<u8>,
    pub dry_run: bool,
    pub timestamp: Option<prost_types::Timestamp>,
}

/// The response fields both RPCs share (`create_tree_error_code`: 1 EMPTY, 2 CONFLICT).
#[derive(Default)]
pub struct Picked {
    pub branch_update: Option<OperationBranchUpdate>,
    pub create_tree_error: String,
    pub commit_error: String,
    pub pre_receive_error: String,
    pub create_tree_error_code: i32,
}

fn validate(kind: Kind, p: &Pick) -> Result<(), Status> {
    let problem = if p.user.is_none() {
        "empty User"
    } else if p.commit.is_none() {
        "empty Commit"
    } else if p.branch_name.is_empty() {
        "empty BranchName"
    } else if p.message.is_empty() {
        "empty Message"
    } else {
        return Ok(());
    };
    Err(Status::invalid_argument(match kind {
        Kind::CherryPick => format!("UserCherryPick: {problem}"),
        Kind::Revert => problem.to_string(),
    }))
}

pub async fn pick(git: &GitCmdFactory, t: &Target, kind: Kind, p: Pick) -> Result<Picked, Status> {
    validate(kind, &p)?;
    let (user, commit) = (p.user.as_ref().expect("validated"), p.commit.as_ref().expect("validated"));
    let when = unix_time(p.timestamp.as_ref())?;
    let repo = Repo::new(git, &t.repo);
    // Reads are in-process (gix): a git process per lookup cost more than the pick itself. Writes (the
    // merge, the commit, the ref) go through git.
    let mut odb = crate::service::open(&t.repo)?;
    let start = start_revision(t, &odb, &p)?;
    if t.start_repo.is_some() {
        // A start commit only the start repository has is fetched first; read the target afresh after.
        super::start_commit_here(git, t, &start).await?;
        odb = crate::service::open(&t.repo)?;
    }
    // The branch itself answers it without listing others (a repository has hundreds of loose branches).
    let reference = format!("refs/heads/{}", text(&p.branch_name));
    let repo_had_branches = rgitaly::odb::refs::target(&odb, reference.as_bytes())?.is_some()
        || rgitaly::odb::refs::any(&odb, "refs/heads/")?;

    let command = |detail: String| Status::internal(format!("{0} command: {0}: {detail}", kind.name()));
    let not_found =
        || command(format!("commit lookup: lookup commit {:?}: revspec '{}' not found", commit.id, commit.id));
    if commit.id.is_empty() || commit.id.contains('\0') {
        return Err(not_found());
    }
    let picked_id = rgitaly::odb::resolve_commit(&odb, commit.id.as_bytes()).ok_or_else(not_found)?;
    let parents: Vec<String> = match rgitaly::odb::read_commit(&odb, picked_id)? {
        Some(c) => c.parent_ids,
        None => return Err(not_found()),
    };
    // Upstream's mainline: 1 when the client says the commit has several parents, else none; libgit2 refuses
    // a mainline for a plain commit and none for a merge.
    let mainline = commit.parent_ids.len() > 1;
    if mainline != (parents.len() > 1) {
        let why = if mainline {
            "mainline branch specified but the commit is not a merge"
        } else {
            "the commit is a merge but no mainline was specified"
        };
        let verb = match kind {
            Kind::CherryPick => "could not cherry-pick commit",
            Kind::Revert => "revert",
        };
        return Err(command(format!("{verb}: {why}")));
    }
    let parent = parents.first().cloned();
    let picked = picked_id.to_string();
    let (base, theirs) = match kind {
        Kind::CherryPick => (parent, Some(picked.clone())),
        Kind::Revert => (Some(picked.clone()), parent),
    };
    // A root commit has no parent: its change is against the empty tree.
    let empty_tree = match (&base, &theirs) {
        (Some(_), Some(_)) => String::new(),
        _ => repo.write_object("tree", Vec::new()).await.map_err(internal)?,
    };
    let (base, theirs) = (base.unwrap_or_else(|| empty_tree.clone()), theirs.unwrap_or_else(|| empty_tree.clone()));
    let tree = match repo.merge_tree_with_base(&start, &theirs, Some(&base)).await.map_err(internal)? {
        Ok(tree) => tree,
        Err(_conflicts) => {
            return Ok(Picked {
                create_tree_error: format!("{}: could not apply due to conflicts", kind.name()),
                create_tree_error_code: 2,
                ..Default::default()
            })
        }
    };
    let start_id = rgitaly::odb::resolve_commit(&odb, start.as_bytes()).ok_or_else(|| internal("start vanished"))?;
    let start_tree = rgitaly::odb::read_commit(&odb, start_id)?.map(|c| c.tree_id);
    if start_tree.as_deref() == Some(tree.as_str()) {
        return Ok(Picked {
            create_tree_error: format!("{}: could not apply because the result was empty", kind.name()),
            create_tree_error_code: 1,
            ..Default::default()
        });
    }
    let committer = Signature::new(&user.name, &user.email, when).map_err(|e| command(e.to_string()))?;
    let author = match kind {
        Kind::CherryPick => {
            rgitaly::odb::commit_header(&odb, picked_id, b"author")?.ok_or_else(|| command("no author".into()))?
        }
        Kind::Revert => committer.line().into_bytes(),
    };
    // Written through the handle already open (as the wiki writes its commits).
    let bytes = commit_bytes(&tree, &[&start], &author, &committer, &p.message);
    let new =
        rgitaly::odb::write::commit(&odb, &bytes).map_err(|e| command(format!("create commit: {}", e.message())))?;
    // A dry run computes everything but moves the branch to the start revision, as upstream.
    let new = if p.dry_run { start.clone() } else { new };

    let old = rgitaly::odb::refs::commit(&odb, reference.as_bytes())?.map(|id| id.to_string());
    let branch_created = old.is_none();
    if let Some(old) = &old {
        if !rgitaly::odb::is_ancestor(&odb, old.as_bytes(), new.as_bytes()) {
            return Ok(Picked { commit_error: "Branch diverged".into(), ..Default::default() });
        }
    }
    let old = old.unwrap_or_else(|| ZERO_OID.to_string());
    match super::update(t, &repo, &reference, &new, &old).await? {
        Hooked::Done => Ok(Picked {
            branch_update: Some(OperationBranchUpdate {
                commit_id: new,
                repo_created: !repo_had_branches,
                branch_created,
            }),
            ..Default::default()
        }),
        Hooked::Refused(pre_receive_error) => Ok(Picked { pre_receive_error, ..Default::default() }),
        Hooked::Raced => Err(Status::unknown(format!(
            "update reference with hooks: Could not update {reference}. Please refresh and try again."
        ))),
    }
}

/// `<start_branch_name or branch_name>^{commit}` in the start repository (both paths come from the daemon),
/// or in `target` when there is none.
fn start_revision(t: &Target, target: &rgitaly::odb::Repository, p: &Pick) -> Result<String, Status> {
    let name = if p.start_branch_name.is_empty() { &p.branch_name } else { &p.start_branch_name };
    let not_found = || Status::invalid_argument("resolve start ref: reference not found");
    if name.first() == Some(&b'-') || name.contains(&0) {
        return Err(not_found());
    }
    let oid = match &t.start_repo {
        Some(start) => {
            let odb = crate::service::open(start)?;
            rgitaly::odb::resolve_commit(&odb, name)
        }
        None => rgitaly::odb::resolve_commit(target, name),
    };
    Ok(oid.ok_or_else(not_found)?.to_string())
}

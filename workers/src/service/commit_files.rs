//! UserCommitFiles: builds one commit from a stream of file actions (create, create_dir, update, move,
//! delete, chmod) on top of a branch, another branch, a given commit, or nothing (an empty repository).
//!
//! The parent's tree is read into a path map, the actions are applied to it, and the result is written
//! through a private index file (`update-index --index-info`, `write-tree`): no worktree, no checkout, and
//! nothing is visible until the compare-and-swap ref update. Paths are bytes end to end (git's own paths
//! need not be UTF-8), and a client path with NUL or a line break is refused: in the `-z` index info it
//! would end one entry and start another.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use base64::Engine;
use rgitaly::git::repo::{is_oid, Repo, Signature, TreeEdit, ZERO_OID};
use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::user_commit_files_action::UserCommitFilesActionPayload as ActionPayload;
use rgitaly::proto::gitaly::user_commit_files_action_header::ActionType;
use rgitaly::proto::gitaly::user_commit_files_request::UserCommitFilesRequestPayload as Payload;
use rgitaly::proto::gitaly::*;
use tonic::{Status, Streaming};

use super::{internal, text, unix_time, Target};

const EMPTY_BLOB: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";

struct Action {
    header: UserCommitFilesActionHeader,
    content: Vec<u8>,
}

/// An index problem the client caused: reported in `index_error`, not as a gRPC error.
struct IndexError(String);

/// Why an action cannot be applied: the client's index problem, or a request no commit may come from.
enum Refused {
    Index(IndexError),
    Invalid(Status),
}

impl From<IndexError> for Refused {
    fn from(e: IndexError) -> Self {
        Refused::Index(e)
    }
}

/// path → (mode, object id) for every entry of a tree, paths as git stores them.
type Tree = BTreeMap<Vec<u8>, (String, String)>;

pub async fn commit_files(
    git: &GitCmdFactory,
    t: &Target,
    mut stream: Streaming<UserCommitFilesRequest>,
) -> Result<UserCommitFilesResponse, Status> {
    let first = stream.message().await?.and_then(|m| m.user_commit_files_request_payload);
    let Some(Payload::Header(header)) = first else {
        return Err(Status::invalid_argument("UserCommitFiles: empty UserCommitFilesRequestHeader"));
    };
    let invalid = |m: &str| Err(Status::invalid_argument(format!("UserCommitFiles: {m}")));
    if header.repository.is_none() {
        return invalid("empty Repository");
    }
    let Some(user) = header.user.as_ref() else { return invalid("empty User") };
    if header.commit_message.is_empty() {
        return invalid("empty CommitMessage");
    }
    if header.branch_name.is_empty() {
        return invalid("empty BranchName");
    }
    if !header.start_sha.is_empty() && !is_oid(&header.start_sha) {
        return invalid(&format!("invalid object ID: {:?}", header.start_sha));
    }
    let when = unix_time(header.timestamp.as_ref())?;
    let repo = Repo::new(git, &t.repo);
    let branch = text(&header.branch_name);
    let reference = format!("refs/heads/{branch}");
    let target_commit = repo.resolve(&format!("{reference}^{{commit}}")).await.map_err(internal)?;
    let parent = resolve_parent(&repo, t, &header, target_commit.as_deref()).await?;

    // Gather the actions; contents stay with their action header.
    let mut actions: Vec<Action> = Vec::new();
    while let Some(msg) = stream.message().await? {
        match msg.user_commit_files_request_payload {
            Some(Payload::Action(a)) => match a.user_commit_files_action_payload {
                Some(ActionPayload::Header(h)) => actions.push(Action { header: h, content: Vec::new() }),
                Some(ActionPayload::Content(c)) => match actions.last_mut() {
                    Some(a) => a.content.extend_from_slice(&c),
                    None => return Err(Status::unknown("content sent before action")),
                },
                None => {}
            },
            Some(Payload::Header(_)) => return Err(Status::invalid_argument("UserCommitFiles: header sent twice")),
            None => {}
        }
    }

    let mut tree = match &parent {
        Some(p) => read_tree(&repo, p).await?,
        None => BTreeMap::new(),
    };
    for action in actions {
        match apply(&repo, &mut tree, action).await? {
            Ok(()) => {}
            Err(Refused::Index(IndexError(e))) => {
                return Ok(UserCommitFilesResponse { index_error: e, ..Default::default() })
            }
            Err(Refused::Invalid(status)) => return Err(status),
        }
    }
    let tree_id = write_tree(&repo, &tree).await?;

    let committer =
        Signature::new(&user.name, &user.email, when).map_err(|e| Status::invalid_argument(format!("commit: {e}")))?;
    let author = if !header.commit_author_name.is_empty() && !header.commit_author_email.is_empty() {
        Signature::new(&header.commit_author_name, &header.commit_author_email, when)
            .map_err(|e| Status::invalid_argument(format!("commit: {e}")))?
    } else {
        committer.clone()
    };
    let parents: Vec<&str> = parent.iter().map(String::as_str).collect();
    let commit =
        repo.write_commit(&tree_id, &parents, &author, &committer, &header.commit_message).await.map_err(internal)?;
    let repo_created = !repo.has_branches().await.map_err(internal)?;
    let old = match (&target_commit, header.force) {
        (None, _) => ZERO_OID.to_string(),
        (Some(t), true) => t.clone(),
        (Some(_), false) => parent.clone().unwrap_or_else(|| ZERO_OID.to_string()),
    };
    match super::update(t, &repo, &reference, &commit, &old).await? {
        super::Hooked::Done => {}
        super::Hooked::Refused(pre_receive_error) => {
            return Ok(UserCommitFilesResponse { pre_receive_error, ..Default::default() })
        }
        super::Hooked::Raced => return Err(super::could_not_update(&reference)),
    }
    Ok(UserCommitFilesResponse {
        branch_update: Some(OperationBranchUpdate {
            commit_id: commit,
            repo_created,
            branch_created: parent.is_none(),
        }),
        ..Default::default()
    })
}

/// Upstream's choice of parent: a start commit, a start branch (here or in the start repository), or the
/// target branch itself.
async fn resolve_parent(
    repo: &Repo<'_>,
    t: &Target,
    header: &UserCommitFilesRequestHeader,
    target_commit: Option<&str>,
) -> Result<Option<String>, Status> {
    let parent = if !header.start_sha.is_empty() {
        Some(header.start_sha.clone())
    } else if t.start_repo.is_none() && header.start_branch_name.is_empty() {
        target_commit.map(str::to_string)
    } else {
        let start_path = t.start_repo.as_deref().unwrap_or(&t.repo);
        let start = Repo::new(repo.git, start_path);
        if !start.has_branches().await.map_err(internal)? {
            target_commit.map(str::to_string)
        } else {
            let name =
                if header.start_branch_name.is_empty() { &header.branch_name } else { &header.start_branch_name };
            let refish = format!("refs/heads/{}^{{commit}}", text(name));
            let oid = start.resolve(&refish).await.map_err(internal)?.ok_or_else(|| {
                Status::unknown(format!("resolve parent commit: resolving refish {refish:?}: reference not found"))
            })?;
            Some(oid)
        }
    };
    let Some(parent) = parent else { return Ok(None) };
    if Some(parent.as_str()) != target_commit
        && repo.resolve(&format!("{parent}^{{commit}}")).await.map_err(internal)?.is_none()
    {
        // The parent lives only in the start repository: fetch it (both paths come from the daemon).
        match &t.start_repo {
            Some(start) => {
                repo.fetch_commit(start, &parent)
                    .await
                    .map_err(|e| Status::unknown(format!("fetch missing commit: {e}")))?;
            }
            None => return Err(Status::unknown("fetch missing commit: lookup parent commit: reference not found")),
        }
    }
    Ok(Some(parent))
}

/// Every file of a commit's tree.
async fn read_tree(repo: &Repo<'_>, commit: &str) -> Result<Tree, Status> {
    let out = repo
        .git
        .command(repo.path, Sub::LsTree)
        .flag("-r")
        .flag("-z")
        .flag("--full-tree")
        .trusted_arg(commit)
        .output()
        .await
        .map_err(internal)?;
    let mut map = BTreeMap::new();
    for entry in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let Some(tab) = entry.iter().position(|b| *b == b'\t') else { continue };
        let (meta, path) = (String::from_utf8_lossy(&entry[..tab]), &entry[tab + 1..]);
        let mut parts = meta.split(' ');
        let (mode, _kind, oid) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or(""));
        map.insert(path.to_vec(), (mode.to_string(), oid.to_string()));
    }
    Ok(map)
}

async fn write_tree(repo: &Repo<'_>, tree: &Tree) -> Result<String, Status> {
    let entries: Vec<TreeEdit> = tree
        .iter()
        .map(|(path, (mode, oid))| TreeEdit {
            mode: u32::from_str_radix(mode, 8).unwrap_or(0o100644),
            oid: oid.clone(),
            path: path.clone(),
        })
        .collect();
    repo.edit_tree(None, &entries).await.map_err(internal)
}

async fn write_blob(repo: &Repo<'_>, path: &[u8], content: Vec<u8>) -> Result<String, Status> {
    let out = repo
        .git
        .command(repo.path, Sub::HashObject)
        .flag("-w")
        .flag("--stdin")
        .flag(OsStr::from_bytes(&[&b"--path="[..], path].concat()))
        .output_with_stdin(content)
        .await
        .map_err(internal)?;
    Ok(out.stdout_text())
}

/// Upstream's path rules, on bytes; returns the cleaned path. NUL and line breaks are refused outright.
fn clean_path(raw: &[u8]) -> Result<Vec<u8>, Refused> {
    let shown = String::from_utf8_lossy(raw);
    if raw.iter().any(|b| matches!(b, 0 | b'\n' | b'\r')) {
        return Err(Refused::Invalid(Status::invalid_argument(format!("UserCommitFiles: invalid path: {shown:?}"))));
    }
    if raw.is_empty() {
        return Err(IndexError("You must provide a file path".into()).into());
    }
    if raw.windows(2).any(|w| w == b"//") {
        return Err(IndexError(format!("invalid path: '{shown}'")).into());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(IndexError("Path cannot include directory traversal".into()).into());
                }
            }
            n => parts.push(n),
        }
    }
    if parts.is_empty() {
        return Err(IndexError("You must provide a file path".into()).into());
    }
    if parts.iter().any(|c| c.eq_ignore_ascii_case(b".git")) {
        return Err(IndexError(format!("invalid path: '{shown}'")).into());
    }
    Ok(parts.join(&b'/'))
}

/// `path` followed by `/`.
fn dir_of(path: &[u8]) -> Vec<u8> {
    [path, b"/"].concat()
}

/// Puts a file at `path`, replacing a directory there and files where its parents would go.
fn put(tree: &mut Tree, path: &[u8], mode: &str, oid: String) {
    let dir_prefix = dir_of(path);
    tree.retain(|p, _| !p.starts_with(&dir_prefix) && !path.starts_with(&dir_of(p)));
    tree.insert(path.to_vec(), (mode.to_string(), oid));
}

async fn apply(repo: &Repo<'_>, tree: &mut Tree, action: Action) -> Result<Result<(), Refused>, Status> {
    let h = &action.header;
    let kind = ActionType::try_from(h.action)
        .map_err(|_| Status::unknown(format!("NoMethodError: undefined method `downcase' for {}:Integer", h.action)))?;
    let path = match clean_path(&h.file_path) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let exists = || Refused::Index(IndexError("A file with this name already exists".into()));
    let missing = || Refused::Index(IndexError("A file with this name doesn't exist".into()));
    let mode_for = |exec: bool| if exec { "100755" } else { "100644" };
    let content = || -> Result<Vec<u8>, Status> {
        if h.base64_content {
            base64::engine::general_purpose::STANDARD
                .decode(&action.content)
                .map_err(|e| Status::invalid_argument(format!("decode base64 content: {e}")))
        } else {
            Ok(action.content.clone())
        }
    };
    match kind {
        ActionType::Create => {
            if tree.contains_key(&path) {
                return Ok(Err(exists()));
            }
            let oid = write_blob(repo, &path, content()?).await?;
            put(tree, &path, mode_for(h.execute_filemode), oid);
        }
        ActionType::CreateDir => {
            if tree.contains_key(&path) {
                return Ok(Err(exists()));
            }
            let prefix = dir_of(&path);
            if tree.keys().any(|p| p.starts_with(&prefix)) {
                return Ok(Err(IndexError("A directory with this name already exists".into()).into()));
            }
            let keep = [&prefix[..], b".gitkeep"].concat();
            let oid = write_blob(repo, &keep, Vec::new()).await?;
            debug_assert_eq!(oid, EMPTY_BLOB);
            put(tree, &keep, "100644", oid);
        }
        ActionType::Update => {
            let Some((mode, _)) = tree.get(&path).cloned() else { return Ok(Err(missing())) };
            let oid = write_blob(repo, &path, content()?).await?;
            tree.insert(path, (mode, oid));
        }
        ActionType::Move => {
            let from = match clean_path(&h.previous_path) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let Some((mode, source_oid)) = tree.get(&from).cloned() else { return Ok(Err(missing())) };
            if tree.contains_key(&path) {
                return Ok(Err(exists()));
            }
            let oid = if h.infer_content { source_oid } else { write_blob(repo, &path, content()?).await? };
            tree.remove(&from);
            put(tree, &path, &mode, oid);
        }
        ActionType::Delete => {
            if tree.remove(&path).is_none() {
                return Ok(Err(missing()));
            }
        }
        ActionType::Chmod => {
            let Some(entry) = tree.get_mut(&path) else { return Ok(Err(missing())) };
            entry.0 = mode_for(h.execute_filemode).to_string();
        }
    }
    Ok(Ok(()))
}

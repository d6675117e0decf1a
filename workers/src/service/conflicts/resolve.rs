//! ResolveConflicts: a merge commit of `our_commit_oid` (the source branch) and `their_commit_oid` (the
//! target branch) whose conflicted files are resolved as the user chose in GitLab's editor, moved onto the
//! source branch through the hook chain, compare-and-swap on `our_commit_oid`.
//!
//! The choices arrive as JSON split across messages: per file `old_path`/`new_path` and either `sections`
//! (section name → "head" or "origin", see `parser`) or the whole new `content`. A section left without a
//! choice, content identical to the conflicted file, or a conflicted file without a resolution is not a
//! gRPC error but the response's `resolution_error`, as upstream answers them; so are upstream's texts.

use std::collections::HashMap;

use rgitaly::git::repo::{is_oid, Repo, Signature, TreeEdit};
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::resolve_conflicts_request::ResolveConflictsRequestPayload as Payload;
use rgitaly::proto::gitaly::*;
use serde::Deserialize;
use tonic::{Status, Streaming};

use super::{conflicts, parser, read_blob, with_paths};
use crate::service::{internal, text, unix_time, Hooked, Target};

/// The most resolution JSON one call may send: far above any conflict Rails can show (files over 200 KiB
/// are not offered), and a bound on what a client can make the worker hold.
const MAX_JSON: usize = 64 << 20;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Resolution {
    old_path: String,
    new_path: String,
    sections: Option<HashMap<String, String>>,
    content: Option<String>,
}

/// Why no commit was made: a resolution problem the user can fix, or an error.
enum Failed {
    Resolution(String),
    Status(Status),
}

impl From<Status> for Failed {
    fn from(s: Status) -> Self {
        Failed::Status(s)
    }
}

fn validate(h: &ResolveConflictsRequestHeader) -> Result<(), Status> {
    let problem = if h.our_commit_oid.is_empty() {
        "empty OurCommitOid"
    } else if h.repository.is_none() {
        "empty Repository"
    } else if h.target_repository.is_none() {
        "empty TargetRepository"
    } else if h.their_commit_oid.is_empty() {
        "empty TheirCommitOid"
    } else if h.source_branch.is_empty() {
        "empty SourceBranch"
    } else if h.target_branch.is_empty() {
        "empty TargetBranch"
    } else if h.commit_message.is_empty() {
        "empty CommitMessage"
    } else if h.user.is_none() {
        "empty User"
    } else {
        return Ok(());
    };
    Err(Status::invalid_argument(format!("ResolveConflicts: {problem}")))
}

pub async fn resolve_conflicts(
    git: &GitCmdFactory,
    t: &Target,
    mut stream: Streaming<ResolveConflictsRequest>,
) -> Result<ResolveConflictsResponse, Status> {
    let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty request"))?;
    let Some(Payload::Header(header)) = first.resolve_conflicts_request_payload else {
        return Err(Status::invalid_argument("ResolveConflicts: empty ResolveConflictsRequestHeader"));
    };
    validate(&header)?;
    let json = crate::service::gather(&mut stream, Vec::new(), MAX_JSON, "resolutions", |m| {
        match m.resolve_conflicts_request_payload {
            Some(Payload::FilesJson(chunk)) => Some(chunk),
            _ => None,
        }
    })
    .await?;
    let resolutions = parse_resolutions(&json)?;
    match resolve(git, t, &header, &resolutions).await {
        Ok(()) => Ok(ResolveConflictsResponse::default()),
        Err(Failed::Resolution(resolution_error)) => {
            tracing::info!(error = %resolution_error, "ResolveConflicts: unable to resolve conflict");
            Ok(ResolveConflictsResponse { resolution_error })
        }
        Err(Failed::Status(s)) => Err(s),
    }
}

fn parse_resolutions(json: &[u8]) -> Result<Vec<Resolution>, Status> {
    let unknown = |e: serde_json::Error| Status::unknown(e.to_string());
    let raw: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(json).map_err(unknown)?;
    if raw.iter().any(|r| !r.contains_key("sections") && !r.contains_key("content")) {
        return Err(Status::invalid_argument("missing sections or content for a resolution"));
    }
    serde_json::from_slice(json).map_err(unknown)
}

async fn resolve(
    git: &GitCmdFactory,
    t: &Target,
    h: &ResolveConflictsRequestHeader,
    resolutions: &[Resolution],
) -> Result<(), Failed> {
    let repo = Repo::new(git, &t.repo);
    let source_ref = format!("refs/heads/{}", text(&h.source_branch));
    let valid = std::str::from_utf8(&h.source_branch).is_ok() && !h.source_branch.contains(&0);
    if !valid || !repo.valid_ref_name(&source_ref).await.map_err(internal)? {
        return Err(Status::invalid_argument(format!("invalid source branch: {source_ref:?}")).into());
    }
    target_commit_here(git, t, &h.target_branch).await?;
    if !is_oid(&h.our_commit_oid) || !is_oid(&h.their_commit_oid) {
        return Err(Status::unknown("Rugged::InvalidError: unable to parse OID - contains invalid characters").into());
    }
    let (ours, theirs) = (h.our_commit_oid.as_str(), h.their_commit_oid.as_str());
    for (side, oid) in [("ours", ours), ("theirs", theirs)] {
        let odb = crate::service::open(&t.repo)?;
        if rgitaly::odb::resolve_commit(&odb, oid.as_bytes()).is_none() {
            return Err(
                Status::unknown(format!("{side} commit lookup: object not found - no match for id ({oid})")).into()
            );
        }
    }
    let user = h.user.as_ref().expect("validated");
    let when = unix_time(h.timestamp.as_ref())?;
    let sig = Signature::new(&user.name, &user.email, when)
        .map_err(|e| Status::invalid_argument(format!("ResolveConflicts: {e}")))?;

    let merged = repo.merge_tree_stages(ours, theirs).await.map_err(internal)?;
    let conflicted = conflicts(merged.stages);
    let mut resolved = vec![false; conflicted.len()];
    let blobs = resolve_files(&t.repo, &merged.tree, ours, theirs, &conflicted, &mut resolved, resolutions)?;
    let mut edits = Vec::new();
    for (mode, path, blob) in blobs {
        let oid = repo.write_object("blob", blob).await.map_err(internal)?;
        edits.push(TreeEdit { mode, oid, path });
    }
    let missing: Vec<String> =
        conflicted.iter().zip(&resolved).filter(|(_, done)| !**done).map(|(c, _)| text(&c.path)).collect();
    if !missing.is_empty() {
        return Err(Failed::Resolution(format!("Missing resolutions for the following files: {}", missing.join(", "))));
    }
    let tree = repo.edit_tree(Some(&merged.tree), &edits).await.map_err(internal)?;
    let commit = repo.write_commit(&tree, &[ours, theirs], &sig, &sig, &h.commit_message).await.map_err(internal)?;
    match crate::service::update(t, &repo, &source_ref, &commit, ours).await? {
        Hooked::Done => Ok(()),
        Hooked::Refused(message) => Err(Status::failed_precondition(message).into()),
        Hooked::Raced => Err(crate::service::could_not_update(&source_ref).into()),
    }
}

/// A resolved file: mode, path and new content.
type ResolvedFile = (u32, Vec<u8>, Vec<u8>);

/// The resolved content of each file a resolution names, with its mode and path; marks which conflicts
/// were resolved.
fn resolve_files(
    repo: &std::path::Path,
    tree: &str,
    ours: &str,
    theirs: &str,
    conflicted: &[super::Conflict],
    resolved: &mut [bool],
    resolutions: &[Resolution],
) -> Result<Vec<ResolvedFile>, Failed> {
    let odb = crate::service::open(repo)?;
    let mut out = Vec::new();
    for r in resolutions {
        let Some(i) = conflicted.iter().position(|c| c.path == r.old_path.as_bytes()) else {
            // Upstream's answer to a resolution for a file without conflicts (Rails' error, kept).
            return Err(Status::unknown("NoMethodError: undefined method `resolve_lines' for nil:NilClass").into());
        };
        resolved[i] = true;
        let c = &conflicted[i];
        let (Some(our), Some(_)) = (&c.ours, &c.theirs) else {
            return Err(
                Status::unknown(format!("missing a side of merge file input for new path {:?}", r.new_path)).into()
            );
        };
        let entry = rgitaly::odb::tree::find_entry(&odb, tree, &c.path)?
            .ok_or_else(|| Status::internal("path not found in merged-tree"))?;
        if entry.r#type != tree_entry::EntryType::Blob as i32 {
            return Err(Status::internal("entry should be of type blob").into());
        }
        let raw = read_blob(&odb, &entry.oid)?;
        let content = r.content.as_deref().unwrap_or_default();
        if !content.is_empty()
            && with_paths(&raw, ours, r.new_path.as_bytes(), theirs, r.old_path.as_bytes()) == content.as_bytes()
        {
            return Err(Failed::Resolution(format!("Resolved content has no changes for file {}", r.old_path)));
        }
        let sections = r.sections.clone().unwrap_or_default();
        let blob = if sections.is_empty() {
            content.as_bytes().to_vec()
        } else {
            let our_newline = read_blob(&odb, &our.oid)?.ends_with(b"\n");
            let file = parser::parse(&raw, &c.path, ours.as_bytes(), theirs.as_bytes())
                .map_err(|e| Status::internal(format!("parse conflict for {:?}: {e}", r.old_path)))?;
            file.resolve(&sections, our_newline).map_err(|e| Failed::Resolution(e.to_string()))?
        };
        out.push((entry.mode as u32, c.path.clone(), blob));
    }
    Ok(out)
}

/// Makes the target branch's commit present here: it lives in the target repository, which may be
/// another one (a merge request from a fork); then it is fetched from there.
async fn target_commit_here(git: &GitCmdFactory, t: &Target, target_branch: &[u8]) -> Result<(), Status> {
    let revision = format!("refs/heads/{}", text(target_branch));
    let not_found =
        || Status::unknown(format!("could not resolve target revision \"{revision}^{{commit}}\": reference not found"));
    let from = t.start_repo.as_ref().unwrap_or(&t.repo);
    let there = crate::service::open(from)?;
    let oid = rgitaly::odb::refs::commit(&there, revision.as_bytes())?.ok_or_else(not_found)?.to_string();
    if t.start_repo.is_some() {
        crate::service::start_commit_here(git, t, &oid).await?;
    }
    Ok(())
}

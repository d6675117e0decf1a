//! ConflictsService as the worker serves it: the conflicts of merging two commits as GitLab's conflict
//! editor shows them (ListConflictFiles), and a merge commit made from the user's choices
//! (ResolveConflicts).
//!
//! Both start from `git merge-tree --write-tree`, as upstream does since it left libgit2: its tree holds
//! each conflicted file with git's markers, labelled with the commit ids, which are replaced by the file's
//! paths so the text is what Rails has always been shown (libgit2 labelled them with paths).

mod list;
mod parser;
mod resolve;

use std::sync::Arc;

use rgitaly::git::repo::Stage;
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::conflicts_service_server::ConflictsService;
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::target;

pub struct Conflicts {
    git: Arc<GitCmdFactory>,
}

impl Conflicts {
    pub fn new(git: Arc<GitCmdFactory>) -> Self {
        Conflicts { git }
    }
}

/// One conflicted path: its index stages (base, ours, theirs; a side missing is a tree conflict).
#[derive(Debug, Default)]
struct Conflict {
    path: Vec<u8>,
    ancestor: Option<Stage>,
    ours: Option<Stage>,
    theirs: Option<Stage>,
}

/// Merge-tree's stages grouped by path, in its order.
fn conflicts(stages: Vec<Stage>) -> Vec<Conflict> {
    let mut out: Vec<Conflict> = Vec::new();
    for s in stages {
        if out.last().is_none_or(|c| c.path != s.path) {
            out.push(Conflict { path: s.path.clone(), ..Default::default() });
        }
        let c = out.last_mut().expect("pushed");
        match s.stage {
            1 => c.ancestor = Some(s),
            2 => c.ours = Some(s),
            3 => c.theirs = Some(s),
            _ => {}
        }
    }
    out
}

/// `content` with the marker labels (commit ids, as merge-tree was given them) replaced by paths, on the
/// marker lines only: the same id elsewhere in the file is content.
fn with_paths(content: &[u8], ours: &str, our_path: &[u8], theirs: &str, their_path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"<<<<<<< ") {
            out.extend_from_slice(&replace(line, ours.as_bytes(), our_path));
        } else if line.starts_with(b">>>>>>> ") {
            out.extend_from_slice(&replace(line, theirs.as_bytes(), their_path));
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// A blob's bytes, by id.
fn read_blob(odb: &rgitaly::odb::Repository, oid: &str) -> Result<Vec<u8>, Status> {
    rgitaly::odb::read_hex(odb, oid)?
        .ok_or_else(|| Status::failed_precondition(format!("getting objectreader: object {oid} not found")))
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(i) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(with);
        rest = &rest[i + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[tonic::async_trait]
impl ConflictsService for Conflicts {
    async fn list_conflict_files(
        &self,
        r: Request<ListConflictFilesRequest>,
    ) -> Result<Response<BoxStream<ListConflictFilesResponse>>, Status> {
        let t = target(&r)?;
        list::list_conflict_files(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn resolve_conflicts(
        &self,
        r: Request<Streaming<ResolveConflictsRequest>>,
    ) -> Result<Response<ResolveConflictsResponse>, Status> {
        let t = target(&r)?;
        resolve::resolve_conflicts(&self.git, &t, r.into_inner()).await.map(Response::new)
    }
}

//! InternalGitaly: WalkRepos lists every repository of a storage (a directory with `objects`, `refs` and
//! `HEAD`), by relative path in lexical order, not descending into repositories, symlinks or the server's
//! own directory (`+gitaly`), streamed as the walk goes.

use std::path::{Path, PathBuf};

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::internal_gitaly_server::InternalGitaly;
use crate::proto::gitaly::*;

pub struct InternalSvc(pub Ctx);

#[tonic::async_trait]
impl InternalGitaly for InternalSvc {
    async fn walk_repos(&self, r: Request<WalkReposRequest>) -> Result<Response<BoxStream<WalkReposResponse>>, Status> {
        let name = r.into_inner().storage_name;
        let root = self
            .0
            .locator
            .storage_path(&name)
            .map_err(|_| Status::not_found(format!("storage name {name:?} not found")))?
            .to_path_buf();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::task::spawn_blocking(move || walk(&root, &root, &tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Sends the repositories under `dir`; false once the client is gone.
fn walk(root: &Path, dir: &Path, tx: &tokio::sync::mpsc::Sender<Result<WalkReposResponse, Status>>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return true };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| !(dir == root && p.file_name().is_some_and(|n| n == "+gitaly")))
        .collect();
    dirs.sort();
    for d in dirs {
        if crate::locator::is_git_directory(&d) {
            let relative_path = d.strip_prefix(root).unwrap_or(&d).to_string_lossy().into_owned();
            if tx.blocking_send(Ok(WalkReposResponse { relative_path })).is_err() {
                return false;
            }
        } else if !walk(root, &d, tx) {
            return false;
        }
    }
    true
}

//! CreateBundle (streamed out) and CreateRepositoryFromBundle (streamed in).
//!
//! The incoming bundle is written to a file inside the storage as it arrives, never held in memory; the
//! repository is built in a scratch directory and renamed into place, so a failed import leaves nothing
//! at the target path.

use tokio::io::AsyncWriteExt;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use crate::git::Sub;
use crate::proto::gitaly::{
    CreateBundleRequest, CreateBundleResponse, CreateRepositoryFromBundleRequest, CreateRepositoryFromBundleResponse,
};
use crate::service::Context;
use crate::streamio::{self, Output};

pub fn create_bundle(ctx: &Context, req: CreateBundleRequest) -> Result<BoxStream<CreateBundleResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("CreateBundle: empty Repository"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let child = ctx
        .git
        .command(&repo, Sub::Bundle)
        .flag("create")
        .flag("-")
        .flag("--all")
        .spawn_no_stdin()
        .map_err(|e| Status::internal(format!("CreateBundle: cmd start failed: {e}")))?;
    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let data = |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => CreateBundleResponse { data },
        };
        let err = match streamio::run_output(child, &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => Status::internal(format!(
                "CreateBundle: cmd wait failed: {}",
                String::from_utf8_lossy(&done.stderr).trim()
            )),
            Err(e) => e,
        };
        let _ = tx.send(Err(err)).await;
    });
    Ok(out)
}

pub async fn create_repository_from_bundle(
    ctx: &Context,
    mut stream: Streaming<CreateRepositoryFromBundleRequest>,
) -> Result<CreateRepositoryFromBundleResponse, Status> {
    let first = stream
        .message()
        .await
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: first request failed: {e}")))?
        .ok_or_else(|| Status::invalid_argument("CreateRepositoryFromBundle: empty request stream"))?;
    let Some(repository) = first.repository.as_ref() else {
        return Err(Status::invalid_argument("CreateRepositoryFromBundle: empty Repository"));
    };
    let target = ctx.locator.target_path(Some(repository))?;
    if std::fs::read_dir(&target).map(|mut d| d.next().is_some()).unwrap_or(target.exists()) {
        return Err(Status::failed_precondition("CreateRepositoryFromBundle: target directory is non-empty"));
    }
    let scratch = tempfile::Builder::new()
        .prefix("bundle-")
        .tempdir_in(ctx.locator.temp_dir(&repository.storage_name)?)
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: tmp dir failed: {e}")))?;

    // Stream the bundle to disk.
    let bundle_path = scratch.path().join("repo.bundle");
    let mut file = tokio::fs::File::create(&bundle_path)
        .await
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: new bundle file failed: {e}")))?;
    let write_err = |e: std::io::Error| Status::internal(format!("CreateRepositoryFromBundle: write bundle: {e}"));
    file.write_all(&first.data).await.map_err(write_err)?;
    while let Some(msg) = stream.message().await? {
        file.write_all(&msg.data).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    drop(file);

    let staged = scratch.path().join("repo.git");
    let redact = |s: String| {
        s.replace(&*staged.to_string_lossy(), "[REPO PATH]").replace(&*bundle_path.to_string_lossy(), "[BUNDLE]")
    };
    ctx.git
        .bare(Sub::Clone)
        .flag("--bare")
        .flag("--quiet")
        .path_arg(&bundle_path)
        .path_arg(&staged)
        .current_dir(scratch.path())
        .output()
        .await
        .map_err(|e| Status::internal(redact(format!("CreateRepositoryFromBundle: cmd wait failed: {e}"))))?;
    // Clone copies only branches and tags; fetch everything else the bundle carries, checked.
    ctx.git
        .command(&staged, Sub::Fetch)
        .config("fetch.fsckObjects", "true")
        .config("fetch.fsck.badTimezone", "ignore")
        .flag("--quiet")
        .flag("--update-head-ok")
        .trusted_arg(&bundle_path)
        .trusted_arg("refs/*:refs/*")
        .output()
        .await
        .map_err(|e| {
            Status::internal(redact(format!("CreateRepositoryFromBundle: cmd wait failed fetching refs: {e}")))
        })?;
    // The bundle was a transport, not a remote to remember.
    ctx.git.command(&staged, Sub::Config).flag("--remove-section").trusted_arg("remote.origin").run_to_end().await?;

    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Status::internal(format!("create directories: {e}")))?;
    }
    // An empty directory at the target (allowed above) is replaced; a non-empty one makes rename fail.
    let _ = std::fs::remove_dir(&target);
    std::fs::rename(&staged, &target)
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: move into place: {e}")))?;
    Ok(CreateRepositoryFromBundleResponse {})
}

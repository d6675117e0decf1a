//! ReplicateRepository: makes this storage's copy of a repository match the copy on another storage
//! (Praefect's replication, GitLab's storage moves). A missing or broken target is first built from the
//! source's snapshot (GetSnapshot, unpacked in the scratch area and moved into place whole); then
//! `info/attributes` is copied and every ref fetched (FetchInternalRemote), as upstream v13.12.

use std::path::Path;

use tonic::metadata::MetadataMap;
use tonic::Status;

use super::staging::{unpack_tar, ChannelReader, Staging};
use crate::gitaly_servers;
use crate::locator::is_git_directory;
use crate::proto::gitaly::repository_service_client::RepositoryServiceClient;
use crate::proto::gitaly::*;
use crate::service::Ctx;

pub async fn replicate_repository(
    ctx: &Ctx,
    md: &MetadataMap,
    req: ReplicateRepositoryRequest,
) -> Result<ReplicateRepositoryResponse, Status> {
    let (target_repo, source) = match (&req.repository, &req.source) {
        (None, _) => return Err(Status::invalid_argument("repository cannot be empty")),
        (_, None) => return Err(Status::invalid_argument("source repository cannot be empty")),
        (Some(t), Some(s)) => (t, s),
    };
    if target_repo.relative_path != source.relative_path {
        return Err(Status::invalid_argument("both source and repository should have the same relative path"));
    }
    if target_repo.storage_name == source.storage_name {
        return Err(Status::invalid_argument("repository and source have the same storage"));
    }
    let target = ctx.locator.target_path(Some(target_repo)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if !is_git_directory(&target) {
        create_from_snapshot(ctx, md, target_repo, source, &target).await?;
    }
    let fetch =
        FetchInternalRemoteRequest { repository: Some(target_repo.clone()), remote_repository: Some(source.clone()) };
    let (attributes, fetched) = tokio::join!(
        sync_info_attributes(md, source, &target),
        crate::service::remote::fetch_internal_remote(ctx, md, fetch)
    );
    attributes.map_err(|e| Status::internal(format!("sync info attributes: {e}")))?;
    let fetched = fetched.map_err(|e| Status::internal(format!("fetch internal remote: {}", e.message())))?;
    if !fetched.result {
        return Err(Status::internal("FetchInternalRemote failed"));
    }
    Ok(ReplicateRepositoryResponse {})
}

async fn create_from_snapshot(
    ctx: &Ctx,
    md: &MetadataMap,
    target_repo: &Repository,
    source: &Repository,
    target: &Path,
) -> Result<(), Status> {
    // What is at the path now is only replaced if it looks like a broken repository holding no other:
    // never a namespace (`@hashed`, a group) or a plain file.
    if std::fs::symlink_metadata(target).is_ok() && !replaceable(target) {
        return Err(Status::failed_precondition(
            "destination exists and is neither a repository nor a broken one: not replaced",
        ));
    }
    let staged = Staging::new(ctx, &target_repo.storage_name, "ReplicateRepository")?;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Status::internal(format!("could not create repository from snapshot: {what}: {e}"))
    };
    staged.init(ctx).await.map_err(|e| failed("create repository", &e))?;
    let channel = gitaly_servers::connect(md, &source.storage_name).await?;
    let snapshot = GetSnapshotRequest { repository: Some(source.clone()) };
    let mut stream = RepositoryServiceClient::new(channel)
        .max_decoding_message_size(crate::transport::MAX_MESSAGE)
        .get_snapshot(gitaly_servers::forward(md, tonic::Request::new(snapshot)))
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound | tonic::Code::InvalidArgument => Status::not_found("invalid source repository"),
            _ => failed("get snapshot", &e.message()),
        })?
        .into_inner();
    // The first answer tells a missing source from a broken one, as upstream.
    let first = match stream.message().await {
        Ok(m) => m.unwrap_or_default(),
        Err(e) if e.code() == tonic::Code::NotFound || e.code() == tonic::Code::InvalidArgument => {
            return Err(Status::not_found("invalid source repository"));
        }
        Err(e) => return Err(failed("first snapshot read", &e.message())),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let dir = staged.path.clone();
    let unpacker = tokio::task::spawn_blocking(move || unpack_tar(&dir, ChannelReader::new(rx)));
    let pumped = async {
        let _ = tx.send(first.data).await;
        while let Some(m) = stream.message().await.map_err(|e| failed("read snapshot", &e.message()))? {
            // The unpacker stopped (it failed): its error is the one to report.
            if tx.send(m.data).await.is_err() {
                break;
            }
        }
        Ok::<(), Status>(())
    }
    .await;
    drop(tx);
    let unpacked = unpacker.await.map_err(|e| failed("unpack", &e))?;
    unpacked.map_err(|e| failed("unpack", &e))?;
    pumped?;
    // Only now that the replica is whole does the broken one go (moved aside, removed with the scratch
    // area), as upstream removes it.
    if std::fs::symlink_metadata(target).is_ok() && !crate::service::repository::staging::is_free(target) {
        let aside = ctx.locator.removal_path(&target_repo.storage_name, target)?;
        std::fs::rename(target, &aside).map_err(|e| Status::internal(format!("error deleting invalid repo: {e}")))?;
        tracing::warn!(repo_path = %target.display(), "removed invalid repository");
    }
    staged.place(target, "ReplicateRepository")
}

/// Whether the directory at `path` may be replaced by a replica: empty, or with a repository's own files
/// (`HEAD`, `objects`, `refs`, `config`) and no repository inside it.
fn replaceable(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return true };
    if !meta.is_dir() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return false };
    let mut empty = true;
    let mut repo_like = false;
    for e in entries.flatten() {
        empty = false;
        let name = e.file_name();
        repo_like |= ["HEAD", "objects", "refs", "config", "packed-refs"].iter().any(|n| name == *n);
        if e.file_type().is_ok_and(|t| t.is_dir()) && is_git_directory(&e.path()) {
            return false;
        }
    }
    empty || repo_like
}

/// Copies the source's `info/attributes` over this one's, atomically.
async fn sync_info_attributes(md: &MetadataMap, source: &Repository, target: &Path) -> Result<(), String> {
    let channel = gitaly_servers::connect(md, &source.storage_name).await.map_err(|e| e.message().to_string())?;
    let req = GetInfoAttributesRequest { repository: Some(source.clone()) };
    let mut stream = RepositoryServiceClient::new(channel)
        .get_info_attributes(gitaly_servers::forward(md, tonic::Request::new(req)))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut data = Vec::new();
    while let Some(m) = stream.message().await.map_err(|e| e.message().to_string())? {
        data.extend_from_slice(&m.attributes);
        if data.len() > 64 << 20 {
            return Err("info/attributes is larger than 64 MiB".into());
        }
    }
    let info = target.join("info");
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&info)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&info)?;
        std::io::Write::write_all(&mut tmp, &data)?;
        tmp.as_file().sync_all()?;
        tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        tmp.persist(info.join("attributes")).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

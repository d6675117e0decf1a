//! RepositoryService: creating, removing, inspecting and maintaining whole repositories.

mod archive;
mod attributes;
mod bundle;
mod checksum;
mod cleanup;
mod clone_from_pool;
mod config;
pub(crate) use config::edit_config;
mod create;
mod create_from_snapshot;
mod create_from_url;
mod custom_hooks;
mod exists;
mod fetch_remote;
mod fetch_source_branch;
mod fork;
mod fsck;
mod has_local_branches;
mod housekeeping;
mod in_progress;
mod license;
mod merge_base;
mod optimize;
pub(crate) use optimize::optimize_repository;
mod raw_changes;
mod remove;
mod rename;
mod replicate;
pub(crate) use rename::rename_no_replace;
mod search_files;
mod size;
mod snapshot;
pub(crate) mod staging;
pub(crate) use staging::Staging;
mod write_ref;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::proto::gitaly::repository_service_server::RepositoryService;
use crate::proto::gitaly::*;

pub struct RepositorySvc(pub Ctx);

type Unary<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RepositoryService for RepositorySvc {
    async fn repository_exists(&self, r: Request<RepositoryExistsRequest>) -> Unary<RepositoryExistsResponse> {
        exists::repository_exists(&self.0, r.into_inner()).map(Response::new)
    }

    async fn create_repository(&self, r: Request<CreateRepositoryRequest>) -> Unary<CreateRepositoryResponse> {
        create::create_repository(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn remove_repository(&self, r: Request<RemoveRepositoryRequest>) -> Unary<RemoveRepositoryResponse> {
        remove::remove_repository(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn repository_size(&self, r: Request<RepositorySizeRequest>) -> Unary<RepositorySizeResponse> {
        size::repository_size(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn has_local_branches(&self, r: Request<HasLocalBranchesRequest>) -> Unary<HasLocalBranchesResponse> {
        has_local_branches::has_local_branches(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_merge_base(&self, r: Request<FindMergeBaseRequest>) -> Unary<FindMergeBaseResponse> {
        merge_base::find_merge_base(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn write_ref(&self, r: Request<WriteRefRequest>) -> Unary<WriteRefResponse> {
        write_ref::write_ref(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn calculate_checksum(&self, r: Request<CalculateChecksumRequest>) -> Unary<CalculateChecksumResponse> {
        checksum::calculate_checksum(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn fsck(&self, r: Request<FsckRequest>) -> Unary<FsckResponse> {
        fsck::fsck(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn garbage_collect(&self, r: Request<GarbageCollectRequest>) -> Unary<GarbageCollectResponse> {
        housekeeping::garbage_collect(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn repack_full(&self, r: Request<RepackFullRequest>) -> Unary<RepackFullResponse> {
        housekeeping::repack_full(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn repack_incremental(&self, r: Request<RepackIncrementalRequest>) -> Unary<RepackIncrementalResponse> {
        housekeeping::repack_incremental(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn create_bundle(&self, r: Request<CreateBundleRequest>) -> Unary<BoxStream<CreateBundleResponse>> {
        bundle::create_bundle(&self.0, r.into_inner()).map(Response::new)
    }

    async fn create_repository_from_bundle(
        &self,
        r: Request<Streaming<CreateRepositoryFromBundleRequest>>,
    ) -> Unary<CreateRepositoryFromBundleResponse> {
        bundle::create_repository_from_bundle(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_archive(&self, r: Request<GetArchiveRequest>) -> Unary<BoxStream<GetArchiveResponse>> {
        archive::get_archive(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn is_rebase_in_progress(&self, r: Request<IsRebaseInProgressRequest>) -> Unary<IsRebaseInProgressResponse> {
        in_progress::is_rebase_in_progress(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn is_squash_in_progress(&self, r: Request<IsSquashInProgressRequest>) -> Unary<IsSquashInProgressResponse> {
        in_progress::is_squash_in_progress(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_object_directory_size(
        &self,
        r: Request<GetObjectDirectorySizeRequest>,
    ) -> Unary<GetObjectDirectorySizeResponse> {
        size::get_object_directory_size(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_info_attributes(
        &self,
        r: Request<GetInfoAttributesRequest>,
    ) -> Unary<BoxStream<GetInfoAttributesResponse>> {
        attributes::get_info_attributes(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn apply_gitattributes(&self, r: Request<ApplyGitattributesRequest>) -> Unary<ApplyGitattributesResponse> {
        attributes::apply_gitattributes(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn set_config(&self, r: Request<SetConfigRequest>) -> Unary<SetConfigResponse> {
        config::set_config(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn delete_config(&self, r: Request<DeleteConfigRequest>) -> Unary<DeleteConfigResponse> {
        config::delete_config(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn rename_repository(&self, r: Request<RenameRepositoryRequest>) -> Unary<RenameRepositoryResponse> {
        rename::rename_repository(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn search_files_by_name(
        &self,
        r: Request<SearchFilesByNameRequest>,
    ) -> Unary<BoxStream<SearchFilesByNameResponse>> {
        search_files::search_files_by_name(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn backup_custom_hooks(
        &self,
        r: Request<BackupCustomHooksRequest>,
    ) -> Unary<BoxStream<BackupCustomHooksResponse>> {
        custom_hooks::backup_custom_hooks(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn restore_custom_hooks(
        &self,
        r: Request<Streaming<RestoreCustomHooksRequest>>,
    ) -> Unary<RestoreCustomHooksResponse> {
        custom_hooks::restore_custom_hooks(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn cleanup(&self, r: Request<CleanupRequest>) -> Unary<CleanupResponse> {
        cleanup::cleanup(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_snapshot(&self, r: Request<GetSnapshotRequest>) -> Unary<BoxStream<GetSnapshotResponse>> {
        snapshot::get_snapshot(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn midx_repack(&self, r: Request<MidxRepackRequest>) -> Unary<MidxRepackResponse> {
        housekeeping::midx_repack(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_raw_changes(&self, r: Request<GetRawChangesRequest>) -> Unary<BoxStream<GetRawChangesResponse>> {
        raw_changes::get_raw_changes(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn optimize_repository(&self, r: Request<OptimizeRepositoryRequest>) -> Unary<OptimizeRepositoryResponse> {
        optimize::optimize_repository(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn write_commit_graph(&self, r: Request<WriteCommitGraphRequest>) -> Unary<WriteCommitGraphResponse> {
        housekeeping::write_commit_graph(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn create_fork(&self, r: Request<CreateForkRequest>) -> Unary<CreateForkResponse> {
        let md = r.metadata().clone();
        fork::create_fork(&self.0, &md, r.into_inner()).await.map(Response::new)
    }

    async fn fetch_source_branch(&self, r: Request<FetchSourceBranchRequest>) -> Unary<FetchSourceBranchResponse> {
        let md = r.metadata().clone();
        fetch_source_branch::fetch_source_branch(&self.0, &md, r.into_inner()).await.map(Response::new)
    }

    async fn replicate_repository(&self, r: Request<ReplicateRepositoryRequest>) -> Unary<ReplicateRepositoryResponse> {
        let md = r.metadata().clone();
        replicate::replicate_repository(&self.0, &md, r.into_inner()).await.map(Response::new)
    }

    async fn fetch_remote(&self, r: Request<FetchRemoteRequest>) -> Unary<FetchRemoteResponse> {
        fetch_remote::fetch_remote(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn create_repository_from_url(
        &self,
        r: Request<CreateRepositoryFromUrlRequest>,
    ) -> Unary<CreateRepositoryFromUrlResponse> {
        create_from_url::create_repository_from_url(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn clone_from_pool(&self, r: Request<CloneFromPoolRequest>) -> Unary<CloneFromPoolResponse> {
        clone_from_pool::clone_from_pool(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn clone_from_pool_internal(
        &self,
        r: Request<CloneFromPoolInternalRequest>,
    ) -> Unary<CloneFromPoolInternalResponse> {
        clone_from_pool::clone_from_pool_internal(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_license(&self, r: Request<FindLicenseRequest>) -> Unary<FindLicenseResponse> {
        license::find_license(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn search_files_by_content(
        &self,
        r: Request<SearchFilesByContentRequest>,
    ) -> Unary<BoxStream<SearchFilesByContentResponse>> {
        search_files::search_files_by_content(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn create_repository_from_snapshot(
        &self,
        r: Request<CreateRepositoryFromSnapshotRequest>,
    ) -> Unary<CreateRepositoryFromSnapshotResponse> {
        create_from_snapshot::create_repository_from_snapshot(&self.0, r.into_inner()).await.map(Response::new)
    }
}

/// Drops the `origin` remote a clone leaves in a new repository (its URL is the internal or client URL).
async fn remove_origin(ctx: &super::Context, repo: &std::path::Path) -> Result<(), crate::git::GitError> {
    let out = ctx
        .git
        .command(repo, crate::git::Sub::Config)
        .flag("--remove-section")
        .trusted_arg("remote.origin")
        .run_to_end()
        .await?;
    // 128: there was no such section.
    if !matches!(out.exit.code, 0 | 128) {
        return Err(crate::git::GitError::Failed { sub: "config", code: out.exit.code, stderr: out.stderr_text() });
    }
    Ok(())
}

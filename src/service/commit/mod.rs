//! CommitService: commits, trees and history, read in-process (see [`crate::odb`]). RPCs not listed here
//! answer UNIMPLEMENTED.

mod between;
mod by_ref_name;
mod counts;
mod find_commit;
mod is_ancestor;
mod languages;
mod last_commit_for_path;
mod last_commits_for_tree;
mod list_commits_by_oid;
mod list_files;
mod log;
mod messages;
mod raw_blame;
mod signatures;
mod stats;
mod tree_entries;
mod tree_entry;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::proto::gitaly::commit_service_server::CommitService;
use crate::proto::gitaly::*;

pub struct CommitSvc(pub Ctx);

type Unary<T> = Result<Response<T>, Status>;
type Streamed<T> = Result<Response<BoxStream<T>>, Status>;

#[tonic::async_trait]
impl CommitService for CommitSvc {
    async fn find_commit(&self, r: Request<FindCommitRequest>) -> Unary<FindCommitResponse> {
        find_commit::find_commit(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn commit_is_ancestor(&self, r: Request<CommitIsAncestorRequest>) -> Unary<CommitIsAncestorResponse> {
        is_ancestor::commit_is_ancestor(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_commits_by_oid(&self, r: Request<ListCommitsByOidRequest>) -> Streamed<ListCommitsByOidResponse> {
        list_commits_by_oid::list_commits_by_oid(&self.0, r.into_inner()).map(Response::new)
    }

    async fn tree_entry(&self, r: Request<TreeEntryRequest>) -> Streamed<TreeEntryResponse> {
        tree_entry::tree_entry(&self.0, r.into_inner()).map(Response::new)
    }

    async fn count_commits(&self, r: Request<CountCommitsRequest>) -> Unary<CountCommitsResponse> {
        counts::count_commits(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn count_diverging_commits(
        &self,
        r: Request<CountDivergingCommitsRequest>,
    ) -> Unary<CountDivergingCommitsResponse> {
        counts::count_diverging_commits(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn last_commit_for_path(&self, r: Request<LastCommitForPathRequest>) -> Unary<LastCommitForPathResponse> {
        last_commit_for_path::last_commit_for_path(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_files(&self, r: Request<ListFilesRequest>) -> Streamed<ListFilesResponse> {
        list_files::list_files(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn commits_between(&self, r: Request<CommitsBetweenRequest>) -> Streamed<CommitsBetweenResponse> {
        between::commits_between(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_commit_messages(&self, r: Request<GetCommitMessagesRequest>) -> Streamed<GetCommitMessagesResponse> {
        messages::get_commit_messages(&self.0, r.into_inner()).map(Response::new)
    }

    async fn list_commits_by_ref_name(
        &self,
        r: Request<ListCommitsByRefNameRequest>,
    ) -> Streamed<ListCommitsByRefNameResponse> {
        by_ref_name::list_commits_by_ref_name(&self.0, r.into_inner()).map(Response::new)
    }

    async fn raw_blame(&self, r: Request<RawBlameRequest>) -> Streamed<RawBlameResponse> {
        raw_blame::raw_blame(&self.0, r.into_inner()).map(Response::new)
    }

    async fn commit_stats(&self, r: Request<CommitStatsRequest>) -> Unary<CommitStatsResponse> {
        stats::commit_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_all_commits(&self, r: Request<FindAllCommitsRequest>) -> Streamed<FindAllCommitsResponse> {
        log::find_all_commits(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_commits(&self, r: Request<FindCommitsRequest>) -> Streamed<FindCommitsResponse> {
        log::find_commits(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn commits_by_message(&self, r: Request<CommitsByMessageRequest>) -> Streamed<CommitsByMessageResponse> {
        log::commits_by_message(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_commit_signatures(
        &self,
        r: Request<GetCommitSignaturesRequest>,
    ) -> Streamed<GetCommitSignaturesResponse> {
        signatures::get_commit_signatures(&self.0, r.into_inner()).map(Response::new)
    }

    async fn filter_shas_with_signatures(
        &self,
        r: Request<Streaming<FilterShasWithSignaturesRequest>>,
    ) -> Streamed<FilterShasWithSignaturesResponse> {
        signatures::filter_shas_with_signatures(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_last_commits_for_tree(
        &self,
        r: Request<ListLastCommitsForTreeRequest>,
    ) -> Streamed<ListLastCommitsForTreeResponse> {
        last_commits_for_tree::list_last_commits_for_tree(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn commit_languages(&self, r: Request<CommitLanguagesRequest>) -> Unary<CommitLanguagesResponse> {
        languages::commit_languages(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_tree_entries(&self, r: Request<GetTreeEntriesRequest>) -> Streamed<GetTreeEntriesResponse> {
        tree_entries::get_tree_entries(&self.0, r.into_inner()).map(Response::new)
    }
}

/// Streams the commits for `ids` (as `git log` listed them) in responses of up to 1 MiB; an id that does
/// not read as a commit ends the stream with an error, as upstream's lookup does.
pub(crate) fn stream_commits<T: Send + 'static>(
    ctx: &Ctx,
    path: std::path::PathBuf,
    ids: Vec<String>,
    wrap: fn(Vec<GitCommit>) -> T,
) -> BoxStream<T> {
    let c = ctx.clone();
    crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut chunker = crate::service::chunk::Chunker::default();
        for id in &ids {
            let commit = crate::odb::find_commit(&repo, id.as_bytes())?
                .ok_or_else(|| Status::internal(format!("cat-file get commit {id:?}: object not found")))?;
            if let Some(batch) = chunker.push(commit) {
                out.send(wrap(batch)).await;
            }
        }
        if let Some(batch) = chunker.finish() {
            out.send(wrap(batch)).await;
        }
        Ok(())
    })
}

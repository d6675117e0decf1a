//! CommitService: commits, trees and history, read in-process (see [`crate::odb`]). RPCs not listed here
//! answer UNIMPLEMENTED.

mod find_commit;
mod is_ancestor;
mod list_commits_by_oid;
mod tree_entries;
mod tree_entry;

pub use tree_entry::DATA_CHUNK;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

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

    async fn get_tree_entries(&self, r: Request<GetTreeEntriesRequest>) -> Streamed<GetTreeEntriesResponse> {
        tree_entries::get_tree_entries(&self.0, r.into_inner()).map(Response::new)
    }
}

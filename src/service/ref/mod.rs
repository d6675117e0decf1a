//! RefService: branches, tags and other refs, listed in-process (see [`crate::odb`]). RPCs not listed here
//! answer UNIMPLEMENTED.

mod branches;
mod containing;
mod default_branch;
mod find_branch;
mod maintenance;
mod names;
mod new_objects;
mod ref_exists;
mod tags;
mod util;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::ref_service_server::RefService;
use crate::proto::gitaly::*;

pub struct RefSvc(pub Ctx);

type Unary<T> = Result<Response<T>, Status>;
type Streamed<T> = Result<Response<BoxStream<T>>, Status>;

#[tonic::async_trait]
impl RefService for RefSvc {
    async fn find_default_branch_name(
        &self,
        r: Request<FindDefaultBranchNameRequest>,
    ) -> Unary<FindDefaultBranchNameResponse> {
        default_branch::find_default_branch_name(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_all_branch_names(
        &self,
        r: Request<FindAllBranchNamesRequest>,
    ) -> Streamed<FindAllBranchNamesResponse> {
        names::find_all_branch_names(&self.0, r.into_inner()).map(Response::new)
    }

    async fn find_all_tag_names(&self, r: Request<FindAllTagNamesRequest>) -> Streamed<FindAllTagNamesResponse> {
        names::find_all_tag_names(&self.0, r.into_inner()).map(Response::new)
    }

    async fn find_branch(&self, r: Request<FindBranchRequest>) -> Unary<FindBranchResponse> {
        find_branch::find_branch(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_local_branches(&self, r: Request<FindLocalBranchesRequest>) -> Streamed<FindLocalBranchesResponse> {
        branches::find_local_branches(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_all_branches(&self, r: Request<FindAllBranchesRequest>) -> Streamed<FindAllBranchesResponse> {
        branches::find_all_branches(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_all_remote_branches(
        &self,
        r: Request<FindAllRemoteBranchesRequest>,
    ) -> Streamed<FindAllRemoteBranchesResponse> {
        branches::find_all_remote_branches(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_all_tags(&self, r: Request<FindAllTagsRequest>) -> Streamed<FindAllTagsResponse> {
        tags::find_all_tags(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_tag(&self, r: Request<FindTagRequest>) -> Unary<FindTagResponse> {
        tags::find_tag(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_tag_messages(&self, r: Request<GetTagMessagesRequest>) -> Streamed<GetTagMessagesResponse> {
        tags::get_tag_messages(&self.0, r.into_inner()).map(Response::new)
    }

    async fn find_ref_name(&self, r: Request<FindRefNameRequest>) -> Unary<FindRefNameResponse> {
        containing::find_ref_name(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_branch_names_containing_commit(
        &self,
        r: Request<ListBranchNamesContainingCommitRequest>,
    ) -> Streamed<ListBranchNamesContainingCommitResponse> {
        containing::list_branch_names_containing_commit(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_tag_names_containing_commit(
        &self,
        r: Request<ListTagNamesContainingCommitRequest>,
    ) -> Streamed<ListTagNamesContainingCommitResponse> {
        containing::list_tag_names_containing_commit(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn delete_refs(&self, r: Request<DeleteRefsRequest>) -> Unary<DeleteRefsResponse> {
        maintenance::delete_refs(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn pack_refs(&self, r: Request<PackRefsRequest>) -> Unary<PackRefsResponse> {
        maintenance::pack_refs(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_new_commits(&self, r: Request<ListNewCommitsRequest>) -> Streamed<ListNewCommitsResponse> {
        new_objects::list_new_commits(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_new_blobs(&self, r: Request<ListNewBlobsRequest>) -> Streamed<ListNewBlobsResponse> {
        new_objects::list_new_blobs(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn ref_exists(&self, r: Request<RefExistsRequest>) -> Unary<RefExistsResponse> {
        ref_exists::ref_exists(&self.0, r.into_inner()).await.map(Response::new)
    }
}

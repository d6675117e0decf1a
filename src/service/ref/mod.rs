//! RefService: branches, tags and other refs, listed in-process (see [`crate::odb`]). RPCs not listed here
//! answer UNIMPLEMENTED.

mod default_branch;
mod find_branch;
mod names;
mod ref_exists;

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

    async fn ref_exists(&self, r: Request<RefExistsRequest>) -> Unary<RefExistsResponse> {
        ref_exists::ref_exists(&self.0, r.into_inner()).await.map(Response::new)
    }
}

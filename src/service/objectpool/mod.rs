//! ObjectPoolService: object pools that forks of one project share (see [`pool`] for the layout), and
//! the member side: linking, unlinking, and taking the objects back (reduplicate, disconnect).

mod alternates;
mod create;
mod fetch;
mod link;
pub(crate) mod pool;

use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::object_pool_service_server::ObjectPoolService;
use crate::proto::gitaly::*;

pub struct ObjectPoolSvc(pub Ctx);

type Unary<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ObjectPoolService for ObjectPoolSvc {
    async fn create_object_pool(&self, r: Request<CreateObjectPoolRequest>) -> Unary<CreateObjectPoolResponse> {
        create::create_object_pool(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn delete_object_pool(&self, r: Request<DeleteObjectPoolRequest>) -> Unary<DeleteObjectPoolResponse> {
        create::delete_object_pool(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn link_repository_to_object_pool(
        &self,
        r: Request<LinkRepositoryToObjectPoolRequest>,
    ) -> Unary<LinkRepositoryToObjectPoolResponse> {
        link::link_repository_to_object_pool(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn unlink_repository_from_object_pool(
        &self,
        r: Request<UnlinkRepositoryFromObjectPoolRequest>,
    ) -> Unary<UnlinkRepositoryFromObjectPoolResponse> {
        link::unlink_repository_from_object_pool(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn reduplicate_repository(
        &self,
        r: Request<ReduplicateRepositoryRequest>,
    ) -> Unary<ReduplicateRepositoryResponse> {
        alternates::reduplicate_repository(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn disconnect_git_alternates(
        &self,
        r: Request<DisconnectGitAlternatesRequest>,
    ) -> Unary<DisconnectGitAlternatesResponse> {
        alternates::disconnect_git_alternates(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn fetch_into_object_pool(
        &self,
        r: Request<FetchIntoObjectPoolRequest>,
    ) -> Unary<FetchIntoObjectPoolResponse> {
        fetch::fetch_into_object_pool(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_object_pool(&self, r: Request<GetObjectPoolRequest>) -> Unary<GetObjectPoolResponse> {
        link::get_object_pool(&self.0, r.into_inner()).await.map(Response::new)
    }
}

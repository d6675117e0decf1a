//! RemoteService: a repository's named remotes, fetches from another Gitaly server, mirror pushes, and
//! questions about a remote URL. URLs pass [`crate::git::remote_url`]; other servers are reached through
//! [`crate::gitaly_servers`].

mod fetch_internal_remote;
pub(crate) use fetch_internal_remote::fetch_internal_remote;
mod find_remote;
mod remotes;
pub(crate) use remotes::{refspec, remove_if_present, valid_refmap, valid_remote_name};
mod update_remote_mirror;

use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::proto::gitaly::remote_service_server::RemoteService;
use crate::proto::gitaly::*;

pub struct RemoteSvc(pub Ctx);

type Unary<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RemoteService for RemoteSvc {
    async fn add_remote(&self, r: Request<AddRemoteRequest>) -> Unary<AddRemoteResponse> {
        remotes::add_remote(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn fetch_internal_remote(
        &self,
        r: Request<FetchInternalRemoteRequest>,
    ) -> Unary<FetchInternalRemoteResponse> {
        let md = r.metadata().clone();
        fetch_internal_remote(&self.0, &md, r.into_inner()).await.map(Response::new)
    }

    async fn remove_remote(&self, r: Request<RemoveRemoteRequest>) -> Unary<RemoveRemoteResponse> {
        remotes::remove_remote(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn update_remote_mirror(
        &self,
        r: Request<Streaming<UpdateRemoteMirrorRequest>>,
    ) -> Unary<UpdateRemoteMirrorResponse> {
        update_remote_mirror::update_remote_mirror(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_remote_repository(
        &self,
        r: Request<FindRemoteRepositoryRequest>,
    ) -> Unary<FindRemoteRepositoryResponse> {
        find_remote::find_remote_repository(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn find_remote_root_ref(&self, r: Request<FindRemoteRootRefRequest>) -> Unary<FindRemoteRootRefResponse> {
        find_remote::find_remote_root_ref(&self.0, r.into_inner()).await.map(Response::new)
    }
}

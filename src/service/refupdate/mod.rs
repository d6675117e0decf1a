//! RefUpdateService (package `rgitaly`, internal socket only): the compare-and-swap of a worker's write,
//! made by the daemon so that a worker killed mid-update leaves no ref lock behind (see `pool::fence`).

mod update_reference;

use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::rgitaly::ref_update_service_server::RefUpdateService;
use crate::proto::rgitaly::{UpdateReferenceRequest, UpdateReferenceResponse};

pub struct RefUpdateSvc(pub Ctx);

#[tonic::async_trait]
impl RefUpdateService for RefUpdateSvc {
    async fn update_reference(
        &self,
        req: Request<UpdateReferenceRequest>,
    ) -> Result<Response<UpdateReferenceResponse>, Status> {
        // The caller's process, from the Unix socket's credentials: the worker the update is counted for.
        let peer = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .and_then(|c| c.pid())
            .and_then(|pid| u32::try_from(pid).ok());
        update_reference::update_reference(&self.0, peer, req.into_inner()).await.map(Response::new)
    }
}

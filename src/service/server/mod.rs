//! ServerService: what this server is and how its storages are doing.

mod disk_statistics;
mod server_info;

use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::{
    server_service_server::ServerService, DiskStatisticsRequest, DiskStatisticsResponse, ServerInfoRequest,
    ServerInfoResponse,
};

pub struct ServerSvc(pub Ctx);

#[tonic::async_trait]
impl ServerService for ServerSvc {
    async fn server_info(&self, _req: Request<ServerInfoRequest>) -> Result<Response<ServerInfoResponse>, Status> {
        server_info::server_info(&self.0).await.map(Response::new)
    }

    async fn disk_statistics(
        &self,
        _req: Request<DiskStatisticsRequest>,
    ) -> Result<Response<DiskStatisticsResponse>, Status> {
        Ok(Response::new(disk_statistics::disk_statistics(&self.0)))
    }
}

//! `rgitaly.AdminService`: the worker pool as operators see and steer it.

use tonic::{Request, Response, Status};

use crate::pool::{Health, Pool, PoolError, Role};
use crate::proto::rgitaly::admin_service_server::AdminService;
use crate::proto::rgitaly::{
    worker, ListWorkersRequest, ListWorkersResponse, RestartWorkerRequest, RestartWorkerResponse, Worker,
};

pub struct AdminSvc(pub Pool);

impl From<PoolError> for Status {
    fn from(e: PoolError) -> Status {
        match e {
            PoolError::UnknownWorker(_) => Status::not_found(e.to_string()),
            PoolError::NotRunning(_) | PoolError::LastHealthy(_) => Status::failed_precondition(e.to_string()),
            _ => Status::internal(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn list_workers(&self, _req: Request<ListWorkersRequest>) -> Result<Response<ListWorkersResponse>, Status> {
        let workers = self
            .0
            .list()
            .into_iter()
            .map(|w| Worker {
                name: w.name,
                pid: w.pid,
                socket_path: w.socket_path,
                role: match w.role {
                    Role::Active => worker::Role::Active,
                    Role::Standby => worker::Role::Standby,
                    Role::Draining => worker::Role::Draining,
                    Role::Starting => worker::Role::Starting,
                } as i32,
                rss_bytes: w.rss_bytes,
                uptime_seconds: w.uptime_seconds,
                starts: w.starts,
                crashes: w.crashes,
                in_flight: w.in_flight,
                health: match w.health {
                    Health::Ok => worker::Health::Ok,
                    Health::Failing => worker::Health::Failing,
                    Health::Unknown => worker::Health::Unknown,
                } as i32,
                health_latency_ms: w.health_latency_ms,
                last_rotation_reason: w.last_rotation_reason,
                last_rotation_unix: w.last_rotation_unix,
                rotations: w.rotations,
            })
            .collect();
        Ok(Response::new(ListWorkersResponse { workers }))
    }

    async fn restart_worker(
        &self,
        req: Request<RestartWorkerRequest>,
    ) -> Result<Response<RestartWorkerResponse>, Status> {
        let req = req.into_inner();
        let restarted = match (req.all, req.name.is_empty()) {
            (true, true) => self.0.rotate_all("admin").await?,
            (false, false) => {
                self.0.rotate(&req.name, "admin").await?;
                vec![req.name]
            }
            _ => return Err(Status::invalid_argument("give a worker name or all, not both")),
        };
        Ok(Response::new(RestartWorkerResponse { restarted }))
    }
}

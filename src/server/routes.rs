//! The service registry of the daemon: every service it answers, once, with health and reflection. The
//! same routes are served on every listener.

use tonic::service::Routes;

use super::ServeError;
use crate::pool::Pool;
use crate::proto::gitaly::{
    blob_service_server::BlobServiceServer, commit_service_server::CommitServiceServer,
    diff_service_server::DiffServiceServer, operation_service_server::OperationServiceServer,
    ref_service_server::RefServiceServer, repository_service_server::RepositoryServiceServer,
    server_service_server::ServerServiceServer, smart_http_service_server::SmartHttpServiceServer,
    ssh_service_server::SshServiceServer, wiki_service_server::WikiServiceServer,
};
use crate::proto::rgitaly::admin_service_server::AdminServiceServer;
use crate::service::{self, Ctx};
use crate::transport::MAX_MESSAGE;

/// Every service this daemon answers, with health and reflection.
pub async fn routes(ctx: &Ctx, pool: &Pool) -> Result<Routes, ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    macro_rules! limits {
        ($svc:expr) => {
            $svc.max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
        };
    }
    let unbuilt = service::unbuilt::Unbuilt;
    let mut b = Routes::builder();
    b.add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limits!(ServerServiceServer::new(service::server::ServerSvc(ctx.clone()))))
        .add_service(limits!(SshServiceServer::new(service::ssh::SshSvc(ctx.clone()))))
        .add_service(limits!(SmartHttpServiceServer::new(service::smarthttp::SmartHttpSvc(ctx.clone()))))
        .add_service(limits!(RepositoryServiceServer::new(service::repository::RepositorySvc(ctx.clone()))))
        .add_service(limits!(RefServiceServer::new(service::r#ref::RefSvc(ctx.clone()))))
        .add_service(limits!(CommitServiceServer::new(service::commit::CommitSvc(ctx.clone()))))
        .add_service(limits!(BlobServiceServer::new(service::blob::BlobSvc(ctx.clone()))))
        .add_service(limits!(DiffServiceServer::new(service::diff::DiffSvc(ctx.clone()))))
        .add_service(limits!(OperationServiceServer::new(unbuilt)))
        .add_service(limits!(WikiServiceServer::new(unbuilt)))
        .add_service(AdminServiceServer::new(service::admin::AdminSvc(pool.clone())));
    // The overall status, and each service by name, as grpc-health-probe asks for them.
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    for name in
        crate::registry::services().into_iter().filter(|s| s.starts_with("gitaly.") || s.starts_with("rgitaly."))
    {
        health_reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    Ok(b.routes())
}

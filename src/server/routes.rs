//! The service registry of the daemon: every service it answers, once, with health and reflection. The
//! same routes are served on every listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;

use super::ServeError;
use crate::pool::Pool;
use crate::proto::gitaly::{
    blob_service_server::BlobServiceServer, cleanup_service_server::CleanupServiceServer,
    commit_service_server::CommitServiceServer, conflicts_service_server::ConflictsServiceServer,
    diff_service_server::DiffServiceServer, hook_service_server::HookServiceServer,
    internal_gitaly_server::InternalGitalyServer, namespace_service_server::NamespaceServiceServer,
    object_pool_service_server::ObjectPoolServiceServer, operation_service_server::OperationServiceServer,
    ref_service_server::RefServiceServer, remote_service_server::RemoteServiceServer,
    repository_service_server::RepositoryServiceServer, server_service_server::ServerServiceServer,
    smart_http_service_server::SmartHttpServiceServer, ssh_service_server::SshServiceServer,
    wiki_service_server::WikiServiceServer,
};
use crate::proto::rgitaly::admin_service_server::AdminServiceServer;
use crate::proto::rgitaly::ref_update_service_server::RefUpdateServiceServer;
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
    let ssh = Arc::new(service::ssh::SshSvc(ctx.clone()));
    let smarthttp = Arc::new(service::smarthttp::SmartHttpSvc(ctx.clone()));
    let repository = Arc::new(service::repository::RepositorySvc(ctx.clone()));
    let commit = Arc::new(service::commit::CommitSvc(ctx.clone()));
    let blob = Arc::new(service::blob::BlobSvc(ctx.clone()));
    let diff = Arc::new(service::diff::DiffSvc(ctx.clone()));
    let unbuilt = service::unbuilt::Unbuilt;
    let mut b = Routes::builder();
    b.add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limits!(ServerServiceServer::new(service::server::ServerSvc(ctx.clone()))))
        .add_service(BulkRoutes::new(limits!(SshServiceServer::from_arc(ssh.clone())), ssh, bulk_methods::SSH))
        .add_service(BulkRoutes::new(
            limits!(SmartHttpServiceServer::from_arc(smarthttp.clone())),
            smarthttp,
            bulk_methods::SMART_HTTP,
        ))
        .add_service(BulkRoutes::new(
            limits!(RepositoryServiceServer::from_arc(repository.clone())),
            repository,
            bulk_methods::REPOSITORY,
        ))
        .add_service(limits!(RefServiceServer::new(service::r#ref::RefSvc(ctx.clone()))))
        .add_service(BulkRoutes::new(
            limits!(CommitServiceServer::from_arc(commit.clone())),
            commit,
            bulk_methods::COMMIT,
        ))
        .add_service(BulkRoutes::new(limits!(BlobServiceServer::from_arc(blob.clone())), blob, bulk_methods::BLOB))
        .add_service(BulkRoutes::new(limits!(DiffServiceServer::from_arc(diff.clone())), diff, bulk_methods::DIFF))
        .add_service(limits!(HookServiceServer::new(service::hook::HookSvc(ctx.clone()))))
        .add_service(limits!(CleanupServiceServer::new(service::cleanup::CleanupSvc(ctx.clone()))))
        .add_service(limits!(ObjectPoolServiceServer::new(service::objectpool::ObjectPoolSvc(ctx.clone()))))
        .add_service(limits!(RemoteServiceServer::new(service::remote::RemoteSvc(ctx.clone()))))
        .add_service(limits!(NamespaceServiceServer::new(service::namespace::NamespaceSvc(ctx.clone()))))
        .add_service(limits!(InternalGitalyServer::new(service::internal::InternalSvc(ctx.clone()))))
        .add_service(limits!(OperationServiceServer::new(unbuilt)))
        .add_service(limits!(WikiServiceServer::new(unbuilt)))
        .add_service(limits!(ConflictsServiceServer::new(unbuilt)))
        .add_service(AdminServiceServer::new(service::admin::AdminSvc(pool.clone())));
    // The overall status, and each service by name, as grpc-health-probe asks for them.
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    // RefUpdateService is the internal socket's only (see `internal_routes`): not served here.
    let internal_only = <RefUpdateServiceServer<service::refupdate::RefUpdateSvc> as tonic::server::NamedService>::NAME;
    for name in crate::registry::services()
        .into_iter()
        .filter(|s| (s.starts_with("gitaly.") || s.starts_with("rgitaly.")) && *s != internal_only)
    {
        health_reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    Ok(b.routes())
}

/// The internal socket's routes: HookService, and RefUpdateService for the workers. Its token is in every
/// push's git environment, so it must open nothing else; both act only for the repository of a payload
/// this daemon signed.
pub fn internal_routes(ctx: &Ctx) -> Routes {
    let mut b = Routes::builder();
    b.add_service(
        HookServiceServer::new(service::hook::HookSvc(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    );
    b.add_service(RefUpdateServiceServer::new(service::refupdate::RefUpdateSvc(ctx.clone())));
    b.routes()
}

/// Serves a method that carries bulk bytes through [`crate::bulk`].
type BulkHandler<T> = fn(Arc<T>, http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>;

/// A bulk method: its path, whether the client streams, and its handler.
type BulkMethod<T> = (&'static str, bool, BulkHandler<T>);

/// A service whose bulk methods (packs, archives, blobs) are framed by [`crate::bulk`] without copying;
/// its other methods go to tonic's generated server as usual. Both call the same handlers.
struct BulkRoutes<S, T: 'static> {
    inner: S,
    svc: Arc<T>,
    methods: &'static [BulkMethod<T>],
}

impl<S: Clone, T> Clone for BulkRoutes<S, T> {
    fn clone(&self) -> Self {
        BulkRoutes { inner: self.inner.clone(), svc: self.svc.clone(), methods: self.methods }
    }
}

impl<S: NamedService, T> BulkRoutes<S, T> {
    fn new(inner: S, svc: Arc<T>, methods: &'static [BulkMethod<T>]) -> Self {
        // The tables below name methods by hand; the registry (from the protos) says what they are.
        for (path, client_streaming, _) in methods {
            let m =
                crate::registry::lookup(path).unwrap_or_else(|| panic!("bulk method {path} is not in the registry"));
            assert!(
                m.service == S::NAME && m.server_streaming && m.client_streaming == *client_streaming,
                "bulk method {path} is not a server-streaming method of {} with client_streaming {client_streaming}",
                S::NAME
            );
        }
        BulkRoutes { inner, svc, methods }
    }
}

impl<S: NamedService, T> NamedService for BulkRoutes<S, T> {
    const NAME: &'static str = S::NAME;
}

impl<S, T> tower::Service<http::Request<Body>> for BulkRoutes<S, T>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    T: Send + Sync + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self.methods.iter().find(|(path, _, _)| *path == req.uri().path()) {
            Some((_, _, handler)) => {
                let answer = handler(self.svc.clone(), req);
                Box::pin(async move { Ok(answer.await) })
            }
            None => Box::pin(self.inner.call(req)),
        }
    }
}

/// The bulk methods of each service, with how their requests come (`streaming`: a stream, as SSH and
/// Smart HTTP calls; `server_streaming`: one message).
mod bulk_methods {
    use super::{BulkHandler, BulkMethod};
    use crate::bulk;
    use crate::proto::gitaly::{
        blob_service_server::BlobService, commit_service_server::CommitService, diff_service_server::DiffService,
        repository_service_server::RepositoryService, smart_http_service_server::SmartHttpService,
        ssh_service_server::SshService,
    };
    use crate::service;
    use crate::transport::MAX_MESSAGE;

    macro_rules! client_streaming {
        (streaming) => {
            true
        };
        (server_streaming) => {
            false
        };
    }

    macro_rules! methods {
        ($svc:ty { $($path:literal => $kind:ident $method:ident),+ $(,)? }) => {
            &[$(($path, client_streaming!($kind), (|svc, req| Box::pin(async move {
                bulk::$kind(req, MAX_MESSAGE, |r| async move { svc.$method(r).await }).await
            })) as BulkHandler<$svc>)),+]
        };
    }

    pub const SSH: &[BulkMethod<service::ssh::SshSvc>] = methods!(service::ssh::SshSvc {
        "/gitaly.SSHService/SSHUploadPack" => streaming ssh_upload_pack,
        "/gitaly.SSHService/SSHReceivePack" => streaming ssh_receive_pack,
        "/gitaly.SSHService/SSHUploadArchive" => streaming ssh_upload_archive,
    });

    pub const SMART_HTTP: &[BulkMethod<service::smarthttp::SmartHttpSvc>] = methods!(service::smarthttp::SmartHttpSvc {
        "/gitaly.SmartHTTPService/InfoRefsUploadPack" => server_streaming info_refs_upload_pack,
        "/gitaly.SmartHTTPService/InfoRefsReceivePack" => server_streaming info_refs_receive_pack,
        "/gitaly.SmartHTTPService/PostUploadPack" => streaming post_upload_pack,
        "/gitaly.SmartHTTPService/PostReceivePack" => streaming post_receive_pack,
    });

    pub const REPOSITORY: &[BulkMethod<service::repository::RepositorySvc>] = methods!(service::repository::RepositorySvc {
        "/gitaly.RepositoryService/GetArchive" => server_streaming get_archive,
        "/gitaly.RepositoryService/CreateBundle" => server_streaming create_bundle,
    });

    pub const COMMIT: &[BulkMethod<service::commit::CommitSvc>] = methods!(service::commit::CommitSvc {
        "/gitaly.CommitService/TreeEntry" => server_streaming tree_entry,
        "/gitaly.CommitService/RawBlame" => server_streaming raw_blame,
    });

    pub const BLOB: &[BulkMethod<service::blob::BlobSvc>] = methods!(service::blob::BlobSvc {
        "/gitaly.BlobService/GetBlob" => server_streaming get_blob,
        "/gitaly.BlobService/GetBlobs" => server_streaming get_blobs,
    });

    pub const DIFF: &[BulkMethod<service::diff::DiffSvc>] = methods!(service::diff::DiffSvc {
        "/gitaly.DiffService/RawDiff" => server_streaming raw_diff,
        "/gitaly.DiffService/RawPatch" => server_streaming raw_patch,
    });
}

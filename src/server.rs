//! The daemon: builds shared state from the config, registers every service once, and serves the same
//! routes on each configured listener (Unix socket, TCP, TLS) until a shutdown signal, then drains.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::Routes;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::Config;
use crate::git::GitCmdFactory;
use crate::layers::auth::{AuthConfig, AuthLayer};
use crate::layers::limiter::LimiterLayer;
use crate::layers::logging::LogLayer;
use crate::locator::Locator;
use crate::pool::proxy::PoolProxyLayer;
use crate::pool::{Pool, PoolConfig};
use crate::proto::gitaly::{
    blob_service_server::BlobServiceServer, commit_service_server::CommitServiceServer,
    diff_service_server::DiffServiceServer, operation_service_server::OperationServiceServer,
    ref_service_server::RefServiceServer, repository_service_server::RepositoryServiceServer,
    server_service_server::ServerServiceServer, smart_http_service_server::SmartHttpServiceServer,
    ssh_service_server::SshServiceServer, wiki_service_server::WikiServiceServer,
};
use crate::proto::rgitaly::admin_service_server::AdminServiceServer;
use crate::service::{self, Context, Ctx};
use crate::storage_metadata;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Transport { what: String, source: tonic::transport::Error },
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("{0}")]
    Pool(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Largest gRPC message accepted or sent; upstream uses gRPC's 4 MiB default for receiving.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Prepares state that does not depend on listeners: runtime directory, storage metadata, git.
pub fn build_context(config: Config) -> Result<Ctx, ServeError> {
    let runtime = config.internal_dir();
    std::fs::create_dir_all(&runtime).map_err(io_err(format!("create {}", runtime.display())))?;
    set_private(&runtime)?;
    for s in &config.storage {
        if let Err(e) = storage_metadata::write_if_absent(&s.path) {
            tracing::warn!(storage = %s.name, error = %e, "Unable to write gitaly metadata file");
        }
    }
    let locator = Locator::new(&config.storage).map_err(io_err("resolve storages"))?;
    let git =
        GitCmdFactory::new(config.git.bin_path.as_deref(), &config.git.config, &runtime).map_err(io_err("git"))?;
    Ok(Arc::new(Context { config, locator, git }))
}

fn set_private(dir: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", dir.display())))
}

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
        .add_service(limits!(RefServiceServer::new(unbuilt)))
        .add_service(limits!(CommitServiceServer::new(unbuilt)))
        .add_service(limits!(BlobServiceServer::new(unbuilt)))
        .add_service(limits!(DiffServiceServer::new(unbuilt)))
        .add_service(limits!(OperationServiceServer::new(unbuilt)))
        .add_service(limits!(WikiServiceServer::new(unbuilt)))
        .add_service(AdminServiceServer::new(service::admin::AdminSvc(pool.clone())));
    // The overall status, and each service by name, as grpc-health-probe asks for them.
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    for name in [
        "gitaly.ServerService",
        "gitaly.SSHService",
        "gitaly.SmartHTTPService",
        "gitaly.RepositoryService",
        "gitaly.RefService",
        "gitaly.CommitService",
        "gitaly.BlobService",
        "gitaly.DiffService",
        "gitaly.OperationService",
        "gitaly.WikiService",
        "rgitaly.AdminService",
    ] {
        health_reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    Ok(b.routes())
}

/// A bound listener, ready to serve.
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    Tls(TcpListener, Identity),
}

fn bind_all(config: &Config) -> Result<Vec<Listener>, ServeError> {
    let mut out = Vec::new();
    if let Some(path) = &config.socket_path {
        // A socket left by a previous run would make bind fail; only remove it if it is a socket.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err(format!("socket_path: create {}", parent.display())))?;
        }
        let l = UnixListener::bind(path).map_err(io_err(format!("socket_path: bind {}", path.display())))?;
        out.push(Listener::Unix(l, path.clone()));
    }
    if let Some(addr) = &config.listen_addr {
        let l = std_tcp(addr).map_err(io_err(format!("listen_addr: bind {addr}")))?;
        out.push(Listener::Tcp(l));
    }
    if let Some(addr) = &config.tls_listen_addr {
        let (cert, key) = (config.tls.certificate_path.as_ref(), config.tls.key_path.as_ref());
        let cert = std::fs::read(cert.expect("validated")).map_err(io_err("tls.certificate_path"))?;
        let key = std::fs::read(key.expect("validated")).map_err(io_err("tls.key_path"))?;
        let l = std_tcp(addr).map_err(io_err(format!("tls_listen_addr: bind {addr}")))?;
        out.push(Listener::Tls(l, Identity::from_pem(cert, key)));
    }
    Ok(out)
}

/// HTTP/2 flow-control and frame sizes for bulk transfer: with the defaults (64 KiB windows, 16 KiB
/// frames) a pack moves in many small round trips. Memory stays bounded by these windows per stream.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 8 << 20;
pub const MAX_FRAME: u32 = 1 << 20;

fn tuned(b: Server) -> Server {
    b.initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

fn std_tcp(addr: &str) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// Starts the worker pool, then serves until `shutdown` resolves; then lets in-flight calls finish for up to
/// the graceful timeout and stops the workers.
pub async fn serve(
    ctx: Ctx,
    config_path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let config_path = std::fs::canonicalize(config_path).map_err(io_err(format!("{}", config_path.display())))?;
    let (pool_cfg, warnings) = PoolConfig::from_config(&ctx.config, config_path);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let pool = Pool::start(pool_cfg).await.map_err(|e| ServeError::Pool(format!("worker pool: {e}")))?;
    let result = serve_with_pool(&ctx, &pool, shutdown).await;
    pool.shutdown().await;
    result
}

async fn serve_with_pool(
    ctx: &Ctx,
    pool: &Pool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let routes = routes(ctx, pool).await?;
    let listeners = bind_all(&ctx.config)?;
    let proxy = PoolProxyLayer::new(pool.clone(), ctx.clone());
    let limiter = LimiterLayer::new(&ctx.config.concurrency);
    let auth = AuthLayer::new(AuthConfig {
        token: ctx.config.auth.token.clone(),
        previous_tokens: ctx.config.auth.previous_tokens.clone(),
        transitioning: ctx.config.auth.transitioning,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for listener in listeners {
        let routes = routes.clone();
        let mut rx = stop_rx.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut builder =
            tuned(Server::builder()).layer(LogLayer).layer(auth.clone()).layer(limiter.clone()).layer(proxy.clone());
        match listener {
            Listener::Unix(l, path) => {
                tracing::info!(address = %path.display(), "listening on unix socket");
                sockets.push(path);
                let incoming = counted(UnixListenerStream::new(l), "unix");
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
            Listener::Tcp(l) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening on tcp");
                let incoming = counted(nodelay(l), "tcp");
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
            Listener::Tls(l, identity) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening on tls");
                let mut builder = builder
                    .tls_config(ServerTlsConfig::new().identity(identity))
                    .map_err(|source| ServeError::Transport { what: "tls".into(), source })?;
                let incoming = counted(nodelay(l), "tls");
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
        }
    }
    let metrics = start_metrics(ctx).await?;
    tracing::info!(version = crate::VERSION, "rgitaly ready");

    tokio::select! {
        _ = shutdown => {},
        Some(r) = tasks.join_next() => {
            // A listener that stops on its own, for whatever reason, is fatal.
            cleanup(&sockets);
            return Err(match r {
                Ok(Err(source)) => ServeError::Transport { what: "serve".into(), source },
                Ok(Ok(())) => ServeError::Pool("a listener stopped unexpectedly".into()),
                Err(e) => ServeError::Pool(format!("a listener failed: {e}")),
            });
        }
    }
    tracing::info!("shutting down: no new connections; waiting for in-flight calls");
    let _ = stop_tx.send(true);
    let grace = ctx.config.graceful_restart_timeout();
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(timeout_ms = grace.as_millis() as u64, "graceful shutdown timed out");
    }
    // Whatever git is still running belongs to calls we are abandoning: stop it rather than leave it.
    let killed = ctx.git.kill_all();
    if killed > 0 {
        tracing::warn!(count = killed, "killed git processes still running at exit");
    }
    cleanup(&sockets);
    if let Some(m) = metrics {
        m.abort();
    }
    Ok(())
}

/// Counts accepted connections in `gitaly_connections_total{type}`.
fn counted<S, T>(incoming: S, kind: &'static str) -> impl futures::Stream<Item = std::io::Result<T>>
where
    S: futures::Stream<Item = std::io::Result<T>>,
{
    use futures::StreamExt;
    incoming.inspect(move |c| {
        if c.is_ok() {
            crate::metrics::CONNECTIONS.with_label_values(&[kind]).inc();
        }
    })
}

/// Registers the metric families and serves `/metrics` when `prometheus_listen_addr` is set; the returned
/// task is the endpoint.
async fn start_metrics(ctx: &Ctx) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    crate::metrics::register_all();
    crate::metrics::enable_latency_histogram(&ctx.config.prometheus.grpc_latency_buckets);
    let git_version = ctx.git.version().await.unwrap_or_default();
    crate::metrics::BUILD_INFO.with_label_values(&[crate::VERSION, &git_version]).set(1);
    let Some(addr) = &ctx.config.prometheus_listen_addr else { return Ok(None) };
    let listener = std_tcp(addr).map_err(io_err(format!("prometheus_listen_addr: bind {addr}")))?;
    tracing::info!(address = %addr, "serving metrics");
    let ctx = ctx.clone();
    let refresh = Arc::new(move || crate::metrics::COMMANDS_RUNNING.set(ctx.git.running() as i64));
    Ok(Some(tokio::spawn(crate::metrics::serve(listener, refresh))))
}

fn nodelay(l: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(l).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

fn cleanup(sockets: &[PathBuf]) {
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (not when first polled),
/// so a signal that arrives while the daemon is still starting is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "received signal"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "received signal"),
        }
    }
}

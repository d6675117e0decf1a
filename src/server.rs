//! The daemon: builds shared state from the config, registers every service once, and serves the same
//! routes on each configured listener (Unix socket, TCP, TLS) until a shutdown signal, then drains.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::Routes;
use tonic::transport::Server;

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
use crate::upgrade::{Inherited, Upgrade};

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
    #[error("{0}")]
    Tls(String),
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
    Ok(Arc::new(Context { config, locator, git, repos: Default::default() }))
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
        .add_service(limits!(RefServiceServer::new(service::r#ref::RefSvc(ctx.clone()))))
        .add_service(limits!(CommitServiceServer::new(service::commit::CommitSvc(ctx.clone()))))
        .add_service(limits!(BlobServiceServer::new(service::blob::BlobSvc(ctx.clone()))))
        .add_service(limits!(DiffServiceServer::new(service::diff::DiffSvc(ctx.clone()))))
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
    Tls(TcpListener, Arc<crate::tls::Certificates>),
}

impl Listener {
    /// The name under which the listener is handed to a successor.
    fn name(&self) -> &'static str {
        match self {
            Listener::Unix(..) => "unix",
            Listener::Tcp(_) => "tcp",
            Listener::Tls(..) => "tls",
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) | Listener::Tls(l, _) => l.as_raw_fd(),
        }
    }
}

fn bind_all(config: &Config, inherited: &mut Inherited) -> Result<Vec<Listener>, ServeError> {
    let mut out = Vec::new();
    if let Some(path) = &config.socket_path {
        let l = match inherited_unix(inherited, path) {
            Some(l) => l,
            None => {
                // A socket left by a previous run would make bind fail; only remove it if it is a socket.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err(format!("socket_path: create {}", parent.display())))?;
                }
                UnixListener::bind(path).map_err(io_err(format!("socket_path: bind {}", path.display())))?
            }
        };
        out.push(Listener::Unix(l, path.clone()));
    }
    if let Some(addr) = &config.listen_addr {
        let l = tcp_listener(inherited, "tcp", addr).map_err(io_err(format!("listen_addr: bind {addr}")))?;
        out.push(Listener::Tcp(l));
    }
    if let Some(addr) = &config.tls_listen_addr {
        let (cert, key) = (config.tls.certificate_path.as_ref(), config.tls.key_path.as_ref());
        let certs = crate::tls::Certificates::open(cert.expect("validated"), key.expect("validated"))
            .map_err(ServeError::Tls)?;
        let l = tcp_listener(inherited, "tls", addr).map_err(io_err(format!("tls_listen_addr: bind {addr}")))?;
        out.push(Listener::Tls(l, certs));
    }
    Ok(out)
}

/// The predecessor's Unix listener, if it is bound to the configured path.
fn inherited_unix(inherited: &mut Inherited, path: &Path) -> Option<UnixListener> {
    let l = std::os::unix::net::UnixListener::from(inherited.take("unix")?);
    let bound = l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    if bound.as_deref() != Some(path) {
        tracing::warn!(address = %path.display(), "inherited unix listener is bound elsewhere; binding anew");
        return None;
    }
    l.set_nonblocking(true).ok()?;
    UnixListener::from_std(l).ok()
}

/// The predecessor's listener called `name` when it listens on `addr`, else a new one.
fn tcp_listener(inherited: &mut Inherited, name: &str, addr: &str) -> std::io::Result<TcpListener> {
    if let Some(fd) = inherited.take(name) {
        let l = std::net::TcpListener::from(fd);
        let wanted: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(addr).map(|a| a.collect()).unwrap_or_default();
        if l.local_addr().is_ok_and(|a| wanted.contains(&a)) {
            l.set_nonblocking(true)?;
            return TcpListener::from_std(l);
        }
        tracing::warn!(address = addr, listener = name, "inherited listener is bound elsewhere; binding anew");
    }
    std_tcp(addr)
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

/// The signals the daemon acts on. Installed as the very first thing, so a signal that arrives while the
/// daemon is still starting is acted on rather than killing it with the default action.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    pub fn install() -> Signals {
        let s = |kind, name| signal(kind).unwrap_or_else(|e| panic!("install {name} handler: {e}"));
        Signals {
            term: s(SignalKind::terminate(), "SIGTERM"),
            int: s(SignalKind::interrupt(), "SIGINT"),
            hup: s(SignalKind::hangup(), "SIGHUP"),
            usr2: s(SignalKind::user_defined2(), "SIGUSR2"),
        }
    }
}

/// Why the daemon stops serving.
enum Stop {
    /// SIGTERM or SIGINT: drain and exit.
    Terminate,
    /// A successor took over the listeners: drain and exit, leaving the Unix socket in place.
    HandedOver,
}

/// Starts the worker pool, then serves until SIGTERM/SIGINT or a completed upgrade (SIGUSR2); then lets
/// in-flight calls finish for up to the graceful timeout and stops the workers. SIGHUP reloads the TLS
/// certificate.
pub async fn serve(ctx: Ctx, config_path: &Path, signals: Signals, mut inherited: Inherited) -> Result<(), ServeError> {
    let config_path = std::fs::canonicalize(config_path).map_err(io_err(format!("{}", config_path.display())))?;
    let (pool_cfg, warnings) = PoolConfig::from_config(&ctx.config, config_path);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let pool = Pool::start(pool_cfg).await.map_err(|e| ServeError::Pool(format!("worker pool: {e}")))?;
    let result = serve_with_pool(&ctx, &pool, signals, &mut inherited).await;
    pool.shutdown().await;
    result
}

async fn serve_with_pool(
    ctx: &Ctx,
    pool: &Pool,
    mut signals: Signals,
    inherited: &mut Inherited,
) -> Result<(), ServeError> {
    let routes = routes(ctx, pool).await?;
    let listeners = bind_all(&ctx.config, inherited)?;
    let proxy = PoolProxyLayer::new(pool.clone(), ctx.clone());
    let limiter = LimiterLayer::new(&ctx.config.concurrency);
    let auth = AuthLayer::new(AuthConfig {
        token: ctx.config.auth.token.clone(),
        previous_tokens: ctx.config.auth.previous_tokens.clone(),
        transitioning: ctx.config.auth.transitioning,
    });
    // Copies of the listening descriptors, for a successor; dropped as soon as we stop, so that after a
    // plain SIGTERM the sockets close with the listeners.
    let mut handover: Vec<(&'static str, OwnedFd)> = Vec::new();
    let mut certificates = Vec::new();
    // Two steps at shutdown: stop accepting, then (a moment later) tell connections to finish. A client
    // whose connection was accepted just before the stop still gets its first call served instead of a
    // GOAWAY; during an upgrade its next connection goes to the successor.
    let (accept_tx, accept_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for listener in listeners {
        handover.push((listener.name(), dup_cloexec(listener.raw_fd()).map_err(io_err("dup listener"))?));
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
                let incoming = until(counted(UnixListenerStream::new(l), "unix"), accept_rx.clone());
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
            Listener::Tcp(l) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening on tcp");
                let incoming = until(counted(nodelay(l), "tcp"), accept_rx.clone());
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
            Listener::Tls(l, certs) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening on tls");
                let config = certs.server_config().map_err(ServeError::Tls)?;
                certificates.push(certs);
                let incoming = crate::tls::incoming(l, config, || {
                    crate::metrics::CONNECTIONS.with_label_values(&["tls"]).inc();
                });
                let incoming = until(incoming, accept_rx.clone());
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
        }
    }
    let metrics = start_metrics(ctx, inherited, &mut handover).await?;
    inherited.close_unused();
    tracing::info!(version = crate::VERSION, pid = std::process::id(), "rgitaly ready");
    inherited.notify_ready();

    let mut tls_poll = tokio::time::interval(TLS_POLL);
    tls_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = loop {
        tokio::select! {
            _ = signals.term.recv() => {
                tracing::info!(signal = "SIGTERM", "received signal");
                break Stop::Terminate;
            }
            _ = signals.int.recv() => {
                tracing::info!(signal = "SIGINT", "received signal");
                break Stop::Terminate;
            }
            _ = signals.hup.recv() => {
                tracing::info!(signal = "SIGHUP", "received signal");
                for c in &certificates {
                    match c.reload() {
                        Ok(()) => tracing::info!(path = %c.cert_path().display(), "tls certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "tls certificate reload failed; keeping the current one"),
                    }
                }
            }
            _ = tls_poll.tick(), if !certificates.is_empty() => {
                for c in &certificates {
                    match c.reload_if_changed() {
                        Some(Ok(())) => tracing::info!(path = %c.cert_path().display(), "tls certificate changed; reloaded"),
                        Some(Err(e)) => tracing::error!(error = %e, "tls certificate changed but does not load; keeping the current one"),
                        None => {}
                    }
                }
            }
            _ = signals.usr2.recv() => {
                tracing::info!(signal = "SIGUSR2", "received signal; starting successor");
                let fds: Vec<(&'static str, RawFd)> = handover.iter().map(|(n, fd)| (*n, fd.as_raw_fd())).collect();
                // A stop asked for while the successor starts wins: the successor is killed.
                let cancel = async {
                    tokio::select! {
                        _ = signals.term.recv() => {}
                        _ = signals.int.recv() => {}
                    }
                };
                match crate::upgrade::start_successor(&fds, cancel).await {
                    Upgrade::Ready(pid) => {
                        tracing::info!(successor_pid = pid, "upgrade: successor is serving; draining");
                        break Stop::HandedOver;
                    }
                    Upgrade::Cancelled => {
                        tracing::info!("stop requested during the upgrade; successor stopped");
                        break Stop::Terminate;
                    }
                    Upgrade::Failed(e) => tracing::error!(error = %e, "upgrade failed; still serving"),
                }
            }
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
    };
    drop(handover);
    if matches!(stop, Stop::Terminate) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
    tracing::info!("shutting down: no new connections; waiting for in-flight calls");
    let _ = accept_tx.send(true);
    tokio::time::sleep(GOAWAY_DELAY).await;
    let _ = stop_tx.send(true);
    if let Some(m) = &metrics {
        // The endpoint stops with the listeners, so that after an upgrade the successor alone serves it.
        m.abort();
    }
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
    if matches!(stop, Stop::Terminate) {
        cleanup(&sockets);
    }
    Ok(())
}

/// Between no longer accepting and telling open connections to finish.
const GOAWAY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// `incoming` until `stop` turns true: then the listener is dropped (closing this process's copy of the
/// socket) and the stream stays pending, so the server keeps serving its open connections until told to
/// shut down (an ended stream would make it shut them down at once).
fn until<S, T>(incoming: S, mut stop: watch::Receiver<bool>) -> Until<S>
where
    S: futures::Stream<Item = std::io::Result<T>>,
{
    let stop = Box::pin(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    Until { inner: Some(Box::pin(incoming)), stop }
}

struct Until<S> {
    inner: Option<std::pin::Pin<Box<S>>>,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl<S: futures::Stream> futures::Stream for Until<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        use std::task::Poll;
        if self.inner.is_some() && self.stop.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll_next(cx),
            None => Poll::Pending,
        }
    }
}

/// How often the TLS certificate and key files are checked for changes.
const TLS_POLL: std::time::Duration = std::time::Duration::from_secs(5);

fn dup_cloexec(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: duplicates a descriptor we own; the copy is owned by the returned value.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
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
/// task is the endpoint. Its listener is inherited from a predecessor when there is one, and offered to a
/// successor.
async fn start_metrics(
    ctx: &Ctx,
    inherited: &mut Inherited,
    handover: &mut Vec<(&'static str, OwnedFd)>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    crate::metrics::register_all();
    crate::metrics::enable_latency_histogram(&ctx.config.prometheus.grpc_latency_buckets);
    let git_version = ctx.git.version().await.unwrap_or_default();
    crate::metrics::BUILD_INFO.with_label_values(&[crate::VERSION, &git_version]).set(1);
    let Some(addr) = &ctx.config.prometheus_listen_addr else { return Ok(None) };
    let listener =
        tcp_listener(inherited, "metrics", addr).map_err(io_err(format!("prometheus_listen_addr: bind {addr}")))?;
    handover.push(("metrics", dup_cloexec(listener.as_raw_fd()).map_err(io_err("dup listener"))?));
    tracing::info!(address = %addr, "serving metrics");
    let ctx = ctx.clone();
    let refresh = Arc::new(move || {
        crate::metrics::COMMANDS_RUNNING.set(ctx.git.running() as i64);
        // Two scrapes at once must not both add the same difference.
        static SYNC: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = SYNC.lock();
        let spawned = ctx.git.spawned_total();
        let counted = crate::metrics::GIT_SPAWNED.get();
        crate::metrics::GIT_SPAWNED.inc_by(spawned.saturating_sub(counted));
    });
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

//! The daemon's assembly: builds shared state from the config, wraps the routes (`routes`) in the layer
//! stack, serves them on each configured listener (`listeners`) until a shutdown signal, then drains
//! (`shutdown`). Nothing below this module imports it.

mod conn;
mod listeners;
mod routes;
mod shutdown;

pub use routes::{internal_routes, routes};
pub use shutdown::Signals;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::transport::Server;

use crate::config::Config;
use crate::git::GitCmdFactory;
use crate::layers::auth::{AuthConfig, AuthLayer};
use crate::layers::call::{CallLayer, ResolveLayer, ScopeLayer};
use crate::layers::limiter::LimiterLayer;
use crate::layers::logging::LogLayer;
use crate::locator::Locator;
use crate::pool::proxy::PoolProxyLayer;
use crate::pool::{Pool, PoolConfig};
use crate::service::{Context, Ctx};
use crate::storage_metadata;
use crate::upgrade::{Inherited, Upgrade};
use listeners::{
    bind_all, bind_internal, counted, dup_cloexec, nodelay, tcp_listener, tuned, unix_incoming, until, Listener,
};
use shutdown::{cleanup, Stop, GOAWAY_DELAY};

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
    #[error("{0}")]
    Hooks(String),
    #[error("{0}")]
    InUse(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

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
    let hooks_binary = crate::pool::config::find_binary(config.bin_dir.as_deref(), "rgitaly-hooks");
    let git = GitCmdFactory::new(config.git.bin_path.as_deref(), &config.git.config, &runtime)
        .and_then(|g| g.with_hooks(&hooks_binary, &runtime, config.logging.dir.as_deref()))
        .map_err(io_err("git"))?
        .with_ssh(crate::pool::config::find_binary(config.bin_dir.as_deref(), "rgitaly-ssh"));
    let hooks = crate::hook::Hooks::new(&config, &runtime).map_err(ServeError::Hooks)?;
    let threads = crate::odb::pool::init(config.read_cache.threads());
    let repos = crate::odb::RepoCache::new(crate::odb::Limits::from_config(&config));
    tracing::info!(
        threads,
        max_bytes = repos.limits().max_bytes,
        handle_bytes = repos.limits().handle_bytes,
        "read pool"
    );
    Ok(Arc::new(Context { config, locator, git, hooks, repos }))
}

/// Raises the soft open-file limit to the hard one: every connection, git child and pipe costs
/// descriptors, and systemd's default soft limit (1024) runs out under ordinary load.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not read the open file limit"),
    }
}

/// A task that lives as long as the daemon serves: aborted when this is dropped.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn set_private(dir: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", dir.display())))
}

/// Starts the worker pool, then serves until SIGTERM/SIGINT or a completed upgrade (SIGUSR2); then lets
/// in-flight calls finish for up to the graceful timeout and stops the workers. SIGHUP reloads the TLS
/// certificate.
pub async fn serve(ctx: Ctx, config_path: &Path, signals: Signals, mut inherited: Inherited) -> Result<(), ServeError> {
    let config_path = std::fs::canonicalize(config_path).map_err(io_err(format!("{}", config_path.display())))?;
    listeners::refuse_if_in_use(&ctx.config, &inherited)?;
    let (pool_cfg, warnings) = PoolConfig::from_config(&ctx.config, config_path);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let pool = Pool::start(pool_cfg).await.map_err(|e| ServeError::Pool(format!("worker pool: {e}")))?;
    let result = serve_with_pool(&ctx, &pool, signals, &mut inherited).await;
    // The whole stop fits in graceful_restart_timeout: the listeners' drain first, the workers get what
    // is left of it (whatever their own, rotation-time, drain timeout).
    let deadline = match &result {
        Ok(deadline) => *deadline,
        Err(_) => tokio::time::Instant::now() + ctx.config.graceful_restart_timeout(),
    };
    pool.shutdown(deadline).await;
    result.map(|_| ())
}

async fn serve_with_pool(
    ctx: &Ctx,
    pool: &Pool,
    mut signals: Signals,
    inherited: &mut Inherited,
) -> Result<tokio::time::Instant, ServeError> {
    let routes = routes(ctx, pool).await?;
    // Closes idle repository handles and repositories for as long as the daemon serves.
    let _sweeper = {
        let ctx = ctx.clone();
        Background(tokio::spawn(async move { ctx.repos.sweep_forever().await }))
    };
    // The daily maintenance window, stopped with the daemon.
    let _maintenance = Background(tokio::spawn(crate::maintenance::run_daily(ctx.clone())));
    // Copies of the listening descriptors, for a successor; dropped as soon as we stop, so that after a
    // plain SIGTERM the sockets close with the listeners.
    let mut handover: Vec<(&'static str, OwnedFd)> = Vec::new();
    // The metrics endpoint is bound before the gRPC listeners: once a client can connect, so can a scraper.
    let metrics = start_metrics(ctx, inherited, &mut handover).await?;
    let mut listeners = bind_all(&ctx.config, inherited)?;
    listeners.push(bind_internal(ctx.hooks.socket_path())?);
    let proxy = PoolProxyLayer::new(pool.clone(), ctx.clone());
    let limiter = LimiterLayer::new(&ctx.config.concurrency);
    let resolve = ResolveLayer::new(ctx.locator.clone());
    let limits = conn::ConnLimits {
        max_per_listener: ctx.config.connections.max_per_listener(),
        first_request_timeout: ctx.config.connections.first_request_timeout(),
    };
    let auth = AuthLayer::new(AuthConfig {
        token: ctx.config.auth.token.clone(),
        previous_tokens: ctx.config.auth.previous_tokens.clone(),
        transitioning: ctx.config.auth.transitioning,
    });
    // The internal socket takes only the hooks' token, whatever the public listeners take.
    let internal_auth = AuthLayer::new(AuthConfig {
        token: ctx.hooks.token().to_string(),
        previous_tokens: Vec::new(),
        transitioning: false,
    });
    let mut certificates = Vec::new();
    // Two steps at shutdown: stop accepting, then (a moment later) tell connections to finish. A client
    // whose connection was accepted just before the stop still gets its first call served instead of a
    // GOAWAY; during an upgrade its next connection goes to the successor.
    let (accept_tx, accept_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    // The internal socket outlives the drain: a push still in flight needs it for its post-receive hook.
    let (internal_stop_tx, internal_stop_rx) = watch::channel(false);
    let mut internal_tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let internal = matches!(listener, Listener::Internal(..));
        if !internal {
            handover.push((listener.name(), dup_cloexec(listener.raw_fd()).map_err(io_err("dup listener"))?));
        }
        let auth = if internal { internal_auth.clone() } else { auth.clone() };
        let routes = if internal { internal_routes(ctx) } else { routes.clone() };
        let mut rx = if internal { internal_stop_rx.clone() } else { stop_rx.clone() };
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // Outermost first: the registry entry, the log line and metrics (every call), authentication, then
        // for authenticated calls the repository resolution, the limiter and the worker proxy.
        let mut builder = tuned(Server::builder(), &ctx.config.connections)
            .layer(CallLayer)
            .layer(LogLayer)
            .layer(auth)
            .layer(resolve.clone())
            .layer(limiter.clone())
            .layer(ScopeLayer)
            .layer(proxy.clone());
        match listener {
            Listener::Internal(l, path) => {
                tracing::info!(address = %path.display(), "listening on internal socket");
                sockets.push(path);
                internal_tasks.spawn(async move {
                    builder.add_routes(routes).serve_with_incoming_shutdown(unix_incoming(l), stop).await
                });
            }
            Listener::Unix(l, path) => {
                tracing::info!(address = %path.display(), "listening on unix socket");
                sockets.push(path);
                let incoming =
                    until(conn::limited(counted(unix_incoming(l), "unix"), limits, "unix"), accept_rx.clone());
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
            Listener::Tcp(l) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening on tcp");
                let incoming = until(conn::limited(counted(nodelay(l), "tcp"), limits, "tcp"), accept_rx.clone());
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
                let incoming = until(conn::limited(incoming, limits, "tls"), accept_rx.clone());
                tasks.spawn(
                    async move { builder.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await },
                );
            }
        }
    }
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
    let deadline = tokio::time::Instant::now() + ctx.config.graceful_restart_timeout();
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
    let drained = tokio::time::timeout_at(deadline, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let timeout_ms = ctx.config.graceful_restart_timeout().as_millis() as u64;
        tracing::warn!(timeout_ms, "graceful shutdown timed out");
        // Stops the listeners' tasks. tonic runs each connection in a task of its own, so calls still
        // open are not cut here: their git is killed below and the rest ends with the process.
        tasks.shutdown().await;
    }
    let _ = internal_stop_tx.send(true);
    let _ = tokio::time::timeout_at(deadline, async { while internal_tasks.join_next().await.is_some() {} }).await;
    internal_tasks.abort_all();
    let _ = std::fs::remove_file(ctx.hooks.socket_path());
    crate::hook::custom::kill_all();
    // Whatever git is still running belongs to calls we are abandoning: stop it rather than leave it.
    let killed = ctx.git.kill_all();
    if killed > 0 {
        tracing::warn!(count = killed, "killed git processes still running at exit");
    }
    ctx.git.remove_hooks();
    if matches!(stop, Stop::Terminate) {
        cleanup(&sockets);
    }
    Ok(deadline)
}

/// How often the TLS certificate and key files are checked for changes.
const TLS_POLL: std::time::Duration = std::time::Duration::from_secs(5);

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

//! `rgitaly-worker`: serves the heavy write RPCs (OperationService, WikiService, ConflictsService) for the rgitaly daemon.
//!
//! Started only by the daemon's supervisor, on a Unix socket in the daemon's private directory. It trusts
//! repository paths only from the daemon's metadata, never from request messages. It exits when the
//! daemon dies (parent-death signal, and a watch on the parent pid as a second line), and on SIGTERM stops
//! accepting calls and finishes the ones in flight.

mod hooks;
mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::{
    conflicts_service_server::ConflictsServiceServer, operation_service_server::OperationServiceServer,
    wiki_service_server::WikiServiceServer,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Debug, Parser)]
#[command(name = "rgitaly-worker", version = rgitaly::VERSION)]
struct Args {
    /// Unix socket to serve on.
    #[arg(long)]
    socket: PathBuf,
    /// The daemon's config file (for git settings and logging).
    #[arg(long)]
    config: PathBuf,
    /// This worker's name in the pool, for logs.
    #[arg(long)]
    name: String,
    /// The daemon's pid; the worker exits when its parent is no longer this process.
    #[arg(long)]
    parent_pid: i32,
}

fn main() {
    let args = Args::parse();
    // Die with the daemon, even if it is killed with SIGKILL.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    if unsafe { libc::getppid() } != args.parent_pid {
        eprintln!("rgitaly-worker: parent {} is gone", args.parent_pid);
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let code = runtime.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let cfg = match rgitaly::config::Config::load(&args.config) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("rgitaly-worker: {e}");
            return 2;
        }
    };
    let _ = rgitaly::logging::init(&cfg.logging);
    let runtime_dir = args.socket.with_extension("d");
    let git = match GitCmdFactory::new(cfg.git.bin_path.as_deref(), &cfg.git.config, &runtime_dir) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            tracing::error!(worker = %args.name, error = %e, "git");
            return 2;
        }
    };
    let _ = std::fs::remove_file(&args.socket);
    let listener = match UnixListener::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = %args.name, error = %e, socket = %args.socket.display(), "bind");
            return 2;
        }
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let ops = service::Operations::new(git.clone());

    let parent = args.parent_pid;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let shutdown = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tick.tick() => {
                    if unsafe { libc::getppid() } != parent {
                        tracing::warn!("daemon is gone; exiting");
                        return;
                    }
                }
            }
        }
    };
    tracing::info!(worker = %args.name, socket = %args.socket.display(), "worker serving");
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(OperationServiceServer::new(ops))
        .add_service(ConflictsServiceServer::new(service::conflicts::Conflicts::new(git.clone())))
        .add_service(WikiServiceServer::new(service::wiki::Wiki::new(git.clone())))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&args.socket);
    let _ = std::fs::remove_dir_all(&runtime_dir);
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(worker = %args.name, error = %e, "serve");
            1
        }
    }
}

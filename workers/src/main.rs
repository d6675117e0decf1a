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

use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::{
    conflicts_service_server::ConflictsServiceServer, operation_service_server::OperationServiceServer,
    wiki_service_server::WikiServiceServer,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// The command line the daemon's supervisor gives a worker (`src/pool`): a private protocol between two
/// binaries of one release, not a user interface. It is read by hand: clap's parser alone kept ~0.3 MiB of
/// every idle worker resident, and the pool promises an idle worker under 8 MiB.
#[derive(Debug)]
struct Args {
    socket: PathBuf,
    config: PathBuf,
    name: String,
    parent_pid: i32,
}

const USAGE: &str = "usage: rgitaly-worker --socket PATH --config PATH --name NAME --parent-pid PID
(started by the rgitaly daemon, not by hand)";

impl Args {
    fn parse(mut argv: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
        let (mut socket, mut config, mut name, mut parent_pid) = (None, None, None, None);
        while let Some(flag) = argv.next() {
            let flag = flag.to_str().map(str::to_string).ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--socket" => socket = Some(PathBuf::from(value()?)),
                "--config" => config = Some(PathBuf::from(value()?)),
                "--name" => name = Some(value()?.into_string().map_err(|v| format!("invalid --name {v:?}"))?),
                "--parent-pid" => {
                    let v = value()?;
                    let pid = v.to_str().and_then(|v| v.parse().ok()).filter(|p: &i32| *p > 0);
                    parent_pid = Some(pid.ok_or_else(|| format!("invalid --parent-pid {v:?}"))?);
                }
                _ => return Err(format!("unexpected argument {flag:?}")),
            }
        }
        let missing = |f: &str| format!("{f} is required");
        Ok(Args {
            socket: socket.ok_or_else(|| missing("--socket"))?,
            config: config.ok_or_else(|| missing("--config"))?,
            name: name.ok_or_else(|| missing("--name"))?,
            parent_pid: parent_pid.ok_or_else(|| missing("--parent-pid"))?,
        })
    }
}

fn main() {
    let mut argv = std::env::args_os().skip(1).peekable();
    match argv.peek().and_then(|a| a.to_str()) {
        Some("--version" | "-V") => {
            println!("rgitaly-worker {}", rgitaly::VERSION);
            return;
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return;
        }
        _ => {}
    }
    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rgitaly-worker: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
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
    // Idle handles are closed and their memory handed back while the worker waits.
    tokio::spawn(service::handles().sweep_forever());

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

#[cfg(test)]
mod tests {
    use super::Args;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn the_supervisor_command_line_is_read_and_anything_else_refused() {
        let a =
            parse(&["--socket", "/s/w.1.sock", "--config", "/c.toml", "--name", "w1", "--parent-pid", "42"]).unwrap();
        assert_eq!(
            (a.socket.to_str(), a.config.to_str(), a.name.as_str(), a.parent_pid),
            (Some("/s/w.1.sock"), Some("/c.toml"), "w1", 42)
        );
        assert_eq!(parse(&["--socket", "/s"]).unwrap_err(), "--config is required");
        assert_eq!(parse(&["--socket"]).unwrap_err(), "--socket needs a value");
        assert_eq!(parse(&["--bogus", "x"]).unwrap_err(), "unexpected argument \"--bogus\"");
        for pid in ["0", "-3", "x", ""] {
            let e = parse(&["--socket", "s", "--config", "c", "--name", "n", "--parent-pid", pid]).unwrap_err();
            assert_eq!(e, format!("invalid --parent-pid {pid:?}"));
        }
    }
}

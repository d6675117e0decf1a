//! The `rgitaly` binary: see [`rgitaly::cli`].

use clap::Parser;
use rgitaly::cli::{self, Cli, Command};

fn main() {
    let args = cli::normalize_args(std::env::args().collect());
    let cli = Cli::parse_from(args);
    // Before any thread starts: takes listeners handed down by a predecessor and clears their variables.
    let inherited = rgitaly::upgrade::Inherited::from_env();
    rgitaly::memory::tune();
    let runtime = tokio::runtime::Runtime::new().expect("start tokio runtime");
    let code = runtime.block_on(async {
        match cli.command {
            Command::Check { config } => cli::check(&config).await,
            Command::Serve { config } => serve(&config, inherited).await,
            Command::Repo(cmd) => cli::repo(cmd).await.unwrap_or_else(|e| {
                eprintln!("rgitaly: {e}");
                1
            }),
            Command::Admin(cmd) => cli::admin(cmd).await.unwrap_or_else(|e| {
                eprintln!("rgitaly: {e}");
                1
            }),
            Command::Debug(cmd) => cli::debug(cmd).await.unwrap_or_else(|e| {
                eprintln!("rgitaly: {e}");
                1
            }),
            Command::Health { server, service } => cli::health(server, service).await.unwrap_or_else(|e| {
                eprintln!("rgitaly: {e}");
                1
            }),
        }
    });
    std::process::exit(code);
}

async fn serve(path: &std::path::Path, inherited: rgitaly::upgrade::Inherited) -> i32 {
    // First, so a SIGTERM during start-up still means a clean shutdown (and SIGHUP/SIGUSR2 do not kill).
    let signals = rgitaly::server::Signals::install();
    let cfg = match cli::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rgitaly: {e}");
            return 2;
        }
    };
    if let Err(e) = rgitaly::logging::init(&cfg.logging) {
        eprintln!("rgitaly: logging: {e}");
        return 2;
    }
    rgitaly::server::raise_nofile_limit();
    // A scratch directory the daemon chose itself (no internal_socket_dir or runtime_dir) is its own to
    // remove at exit; one the operator named is left for the next start.
    let own_dir = (cfg.internal_socket_dir.is_none() && cfg.runtime_dir.is_none()).then(|| cfg.internal_dir());
    let remove_own_dir = |dir: Option<std::path::PathBuf>| {
        if let Some(dir) = dir.filter(|d| d.exists()) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "could not remove the daemon's scratch directory");
            }
        }
    };
    let ctx = match rgitaly::server::build_context(cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("rgitaly: {e}");
            remove_own_dir(own_dir);
            return 1;
        }
    };
    let code = match rgitaly::server::serve(ctx, path, signals, inherited).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            eprintln!("rgitaly: {e}");
            1
        }
    };
    remove_own_dir(own_dir);
    code
}

//! Command line of the `rgitaly` binary: the daemon itself, config checking, and small operator clients.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client;
use crate::config::Config;
use crate::proto::gitaly::repository_service_client::RepositoryServiceClient;
use crate::proto::gitaly::{CreateRepositoryRequest, RemoveRepositoryRequest, Repository, RepositoryExistsRequest};

#[derive(Debug, Parser)]
#[command(name = "rgitaly", version = crate::VERSION, about = "A Gitaly-compatible Git RPC server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon with an (upstream Gitaly) config file.
    Serve { config: PathBuf },
    /// Validate a config file and exit.
    Check { config: PathBuf },
    /// Manage repositories on a running server.
    #[command(subcommand)]
    Repo(RepoCommand),
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repository (no error if it exists).
    Create(RepoArgs),
    /// Print whether a repository exists ("true"/"false"); exit 1 if it does not.
    Exists(RepoArgs),
    /// Remove a repository.
    Remove(RepoArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server address: unix:PATH, tcp://HOST:PORT or tls://HOST:PORT.
    #[arg(long, env = "GITALY_ADDRESS")]
    pub address: String,
    /// Shared secret for v2 authentication tokens.
    #[arg(long, env = "GITALY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long)]
    pub storage: String,
    /// Path of the repository relative to the storage, e.g. group/project.git.
    #[arg(long)]
    pub path: String,
}

/// Turns the legacy `rgitaly CONFIG` form into `rgitaly serve CONFIG`.
pub fn normalize_args(mut args: Vec<String>) -> Vec<String> {
    let known = ["serve", "check", "repo", "help"];
    if args.len() == 2 && !args[1].starts_with('-') && !known.contains(&args[1].as_str()) {
        args.insert(1, "serve".to_string());
    }
    args
}

/// Loads the config, printing warnings to stderr; errors name the file and key.
pub fn load_config(path: &std::path::Path) -> Result<Config, String> {
    let (cfg, warnings) = Config::load(path).map_err(|e| e.to_string())?;
    for w in warnings.0 {
        eprintln!("rgitaly: warning: {}: {w}", path.display());
    }
    Ok(cfg)
}

pub async fn repo(cmd: RepoCommand) -> Result<i32, String> {
    let (args, what) = match &cmd {
        RepoCommand::Create(a) => (a, "create"),
        RepoCommand::Exists(a) => (a, "exists"),
        RepoCommand::Remove(a) => (a, "remove"),
    };
    let channel =
        client::connect(&args.server.address, args.server.token.as_deref()).await.map_err(|e| e.to_string())?;
    let mut client = RepositoryServiceClient::new(channel);
    let repository =
        Some(Repository { storage_name: args.storage.clone(), relative_path: args.path.clone(), ..Default::default() });
    let fail = |e: tonic::Status| format!("repo {what}: {}: {}", code_name(e.code()), e.message());
    match cmd {
        RepoCommand::Create(_) => {
            client.create_repository(CreateRepositoryRequest { repository }).await.map_err(fail)?;
            println!("created {}/{}", args.storage, args.path);
            Ok(0)
        }
        RepoCommand::Exists(_) => {
            let r = client.repository_exists(RepositoryExistsRequest { repository }).await.map_err(fail)?;
            let exists = r.into_inner().exists;
            println!("{exists}");
            Ok(if exists { 0 } else { 1 })
        }
        RepoCommand::Remove(_) => {
            client.remove_repository(RemoveRepositoryRequest { repository }).await.map_err(fail)?;
            println!("removed {}/{}", args.storage, args.path);
            Ok(0)
        }
    }
}

/// gRPC code names as grpcurl prints them.
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

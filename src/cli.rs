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
    /// Validate a config file and, with `[gitlab] url` set, access to GitLab's internal API; then exit.
    Check { config: PathBuf },
    /// Manage repositories on a running server.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Inspect and steer a running daemon's worker pool.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Diagnose clones (the analogue of upstream's gitaly-debug).
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Ask a running daemon's gRPC health service; exit 0 when it is serving (for container health checks).
    Health {
        #[command(flatten)]
        server: ServerArgs,
        /// A service to ask about (e.g. gitaly.RepositoryService); the whole server when absent.
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Run a full clone's negotiation against a served repository (Smart HTTP, as Workhorse does) without
    /// writing a repository; report time to first byte, pack size, objects, time per phase, throughput.
    SimulateClone {
        #[command(flatten)]
        server: ServerArgs,
        /// The repository: STORAGE/PATH, e.g. default/group/project.git.
        target: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also save the raw answer (for `analyze-clone`).
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Report on a saved upload-pack answer (from `simulate-clone --save`, or a captured response body).
    AnalyzeClone {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the workers: role, pid, memory, health, calls in flight.
    Workers {
        #[command(flatten)]
        server: ServerArgs,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Gracefully rotate one worker, or all of them one at a time.
    RestartWorker {
        #[command(flatten)]
        server: ServerArgs,
        /// The worker to rotate (see `rgitaly admin workers`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
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
    let known = ["serve", "check", "repo", "admin", "health", "debug", "help"];
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

/// `rgitaly check`: the config loads and validates; with `[gitlab] url` set, GitLab's internal API answers
/// and accepts the secret, reported as upstream's `gitaly-hooks check` reports it.
pub async fn check(path: &std::path::Path) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rgitaly: {e}");
            return 2;
        }
    };
    println!("{}: ok", path.display());
    let gitlab = match crate::gitlab::Gitlab::from_config(&cfg) {
        Ok(Some(g)) => g,
        Ok(None) => {
            println!("No [gitlab] url: GitLab's internal API is not called");
            return 0;
        }
        Err(e) => {
            eprintln!("rgitaly: {}: {e}", path.display());
            return 2;
        }
    };
    print!("Checking GitLab API access: ");
    match gitlab.check().await {
        Ok(c) => {
            println!("OK");
            println!("GitLab version: {}", c.gitlab_version);
            println!("GitLab revision: {}", c.gitlab_revision);
            println!("GitLab Api version: {}", c.api_version);
            println!("Redis reachable for GitLab: {}", c.redis);
            println!("OK");
            0
        }
        Err(e) => {
            println!("FAIL");
            eprintln!("rgitaly: {e}");
            1
        }
    }
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

pub async fn admin(cmd: AdminCommand) -> Result<i32, String> {
    use crate::proto::rgitaly::admin_service_client::AdminServiceClient;
    use crate::proto::rgitaly::{ListWorkersRequest, RestartWorkerRequest};
    let server = match &cmd {
        AdminCommand::Workers { server, .. } | AdminCommand::RestartWorker { server, .. } => server,
    };
    let channel = client::connect(&server.address, server.token.as_deref()).await.map_err(|e| e.to_string())?;
    let mut client = AdminServiceClient::new(channel);
    let fail = |e: tonic::Status| format!("admin: {}: {}", code_name(e.code()), e.message());
    match cmd {
        AdminCommand::Workers { json, .. } => {
            let workers = client.list_workers(ListWorkersRequest {}).await.map_err(fail)?.into_inner().workers;
            if json {
                let rows: Vec<serde_json::Value> = workers.iter().map(worker_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
            } else {
                print!("{}", worker_table(&workers));
            }
            Ok(0)
        }
        AdminCommand::RestartWorker { name, all, .. } => {
            let req = RestartWorkerRequest { name: name.unwrap_or_default(), all };
            let done = client.restart_worker(req).await.map_err(fail)?.into_inner().restarted;
            for n in done {
                println!("restarted {n}");
            }
            Ok(0)
        }
    }
}

fn role_word(role: i32) -> &'static str {
    use crate::proto::rgitaly::worker::Role;
    match Role::try_from(role) {
        Ok(Role::Active) => "active",
        Ok(Role::Standby) => "standby",
        Ok(Role::Draining) => "draining",
        Ok(Role::Starting) => "starting",
        _ => "unknown",
    }
}

fn health_word(health: i32) -> &'static str {
    use crate::proto::rgitaly::worker::Health;
    match Health::try_from(health) {
        Ok(Health::Ok) => "ok",
        Ok(Health::Failing) => "failing",
        _ => "unknown",
    }
}

/// One worker as JSON: the proto field names, role and health as lower-case words.
pub fn worker_json(w: &crate::proto::rgitaly::Worker) -> serde_json::Value {
    serde_json::json!({
        "name": w.name,
        "pid": w.pid,
        "socket_path": w.socket_path,
        "role": role_word(w.role),
        "rss_bytes": w.rss_bytes,
        "uptime_seconds": w.uptime_seconds,
        "starts": w.starts,
        "crashes": w.crashes,
        "in_flight": w.in_flight,
        "health": health_word(w.health),
        "health_latency_ms": w.health_latency_ms,
        "last_rotation_reason": w.last_rotation_reason,
        "last_rotation_unix": w.last_rotation_unix,
        "rotations": w.rotations,
    })
}

fn worker_table(workers: &[crate::proto::rgitaly::Worker]) -> String {
    let mut out = format!(
        "{:<10} {:>8} {:<9} {:<8} {:>9} {:>8} {:>6} {:>7} {:>9} {:>9}  {}\n",
        "NAME",
        "PID",
        "ROLE",
        "HEALTH",
        "RSS_MIB",
        "UPTIME",
        "STARTS",
        "CRASHES",
        "ROTATIONS",
        "IN_FLIGHT",
        "LAST_ROTATION"
    );
    for w in workers {
        out.push_str(&format!(
            "{:<10} {:>8} {:<9} {:<8} {:>9.1} {:>7}s {:>6} {:>7} {:>9} {:>9}  {}\n",
            w.name,
            w.pid,
            role_word(w.role),
            health_word(w.health),
            w.rss_bytes as f64 / 1048576.0,
            w.uptime_seconds,
            w.starts,
            w.crashes,
            w.rotations,
            w.in_flight,
            if w.last_rotation_reason.is_empty() { "-" } else { &w.last_rotation_reason },
        ));
    }
    out
}

/// gRPC code names as grpcurl prints them.
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

/// `rgitaly health`: `grpc.health.v1.Health/Check`; prints the status, exit 0 only for SERVING.
pub async fn health(server: ServerArgs, service: String) -> Result<i32, String> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let channel = client::connect(&server.address, server.token.as_deref()).await.map_err(|e| e.to_string())?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?;
    let status = ServingStatus::try_from(resp.into_inner().status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving { 0 } else { 1 })
}

/// `rgitaly debug …`.
pub async fn debug(cmd: DebugCommand) -> Result<i32, String> {
    let (report, json) = match cmd {
        DebugCommand::SimulateClone { server, target, json, save } => {
            let (report, raw) =
                crate::debug::simulate(&server.address, server.token.as_deref(), &target, save.is_some()).await?;
            if let Some(path) = save {
                std::fs::write(&path, raw).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            (report, json)
        }
        DebugCommand::AnalyzeClone { file, json } => {
            let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            (crate::debug::analyze(&data)?, json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.error.is_some() { 1 } else { 0 })
}

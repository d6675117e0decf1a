//! rgitaly: a Rust re-implementation of GitLab's Gitaly.
//!
//! See `docs/architecture.md` for the path of a request through these modules.

pub mod auth;
pub mod bulk;
pub mod cli;
pub mod client;
pub mod config;
pub mod context;
pub mod debug;
pub mod git;
pub mod gitaly_servers;
pub mod gitlab;
pub mod hook;
pub mod layers;
pub mod locator;
pub mod logging;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod odb;
pub mod pktline;
pub mod pool;
pub mod proto;
pub mod registry;
pub mod server;
pub mod service;
pub mod ssh_client;
pub mod storage_metadata;
pub mod streamio;
pub mod tls;
pub mod transport;
pub mod upgrade;

/// The version reported by ServerInfo and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

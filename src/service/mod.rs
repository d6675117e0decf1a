//! gRPC service implementations, one directory per Gitaly service and one file per RPC (or a small family).
//!
//! Handlers only validate requests and shape responses: repositories come from the [`Locator`], processes
//! from the [`GitCmdFactory`], byte pumping from [`crate::streamio`].

use std::sync::Arc;

use crate::config::Config;
use crate::git::GitCmdFactory;
use crate::locator::Locator;

pub mod admin;
pub mod blob;
pub mod chunk;
pub mod commit;
pub mod diff;
pub mod r#ref;
pub mod repository;
pub mod server;
pub mod smarthttp;
pub mod ssh;
pub mod unbuilt;

/// What every handler needs; built once at boot.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub locator: Locator,
    pub git: GitCmdFactory,
    /// Open repositories for in-process reads.
    pub repos: crate::odb::RepoCache,
}

pub type Ctx = Arc<Context>;

/// Reads the first request of a client stream; a stream that ends at once has no first request.
pub async fn first_request<T>(stream: &mut tonic::Streaming<T>) -> Result<T, tonic::Status> {
    stream.message().await?.ok_or_else(|| tonic::Status::invalid_argument("empty request stream"))
}

/// The value of `GIT_PROTOCOL` for a request's `git_protocol`: only `version=2` is passed on, as upstream.
/// Counted in `gitaly_git_protocol_requests_total` by the calling RPC.
pub fn git_protocol_env(git_protocol: &str, service: &str, method: &str) -> Option<&'static str> {
    let (env, label) = match git_protocol {
        "version=2" => (Some("version=2"), "v2"),
        "" => (None, "v0"),
        other => {
            tracing::warn!(git_protocol = other, "invalid git protocol requested");
            (None, "invalid")
        }
    };
    crate::metrics::GIT_PROTOCOL_REQUESTS.with_label_values(&[service, method, label]).inc();
    env
}

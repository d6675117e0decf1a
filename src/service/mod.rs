//! gRPC service implementations, one directory per Gitaly service and one file per RPC (or a small family).
//!
//! Handlers only validate requests and shape responses: repositories come from the [`Locator`], processes
//! from the [`GitCmdFactory`], byte pumping from [`crate::streamio`].

pub use crate::context::{Context, Ctx};

pub mod admin;
pub mod blob;
pub mod chunk;
pub mod cleanup;
pub mod commit;
pub mod diff;
pub mod hook;
pub mod internal;
pub mod namespace;
pub mod objectpool;
pub mod r#ref;
pub mod refupdate;
pub mod remote;
pub mod repository;
pub mod server;
pub mod smarthttp;
pub mod ssh;
pub mod unbuilt;

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

/// Streams a git command's stdout as messages made by `wrap`, as git writes it. A non-zero exit ends the
/// stream with `on_failure(exit code)`, or quietly where upstream ignores git's failure (`None`).
pub fn stream_git_output<R: Send + 'static>(
    cmd: crate::git::GitCommand<'_>,
    wrap: fn(bytes::Bytes) -> R,
    on_failure: Option<fn(i32) -> tonic::Status>,
) -> Result<tonic::codegen::BoxStream<R>, tonic::Status> {
    use crate::streamio::{self, Output};
    let child = cmd.spawn_no_stdin()?;
    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let data = move |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => wrap(data),
        };
        let err = match streamio::run_output(child, &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => match on_failure {
                Some(f) => f(done.exit.code),
                None => return,
            },
            Err(e) => e,
        };
        let _ = tx.send(Err(err)).await;
    });
    Ok(out)
}

/// The default branch (full ref name, empty when there are no branches), by upstream's rule.
pub async fn default_branch(ctx: &Ctx, repo: &std::path::Path) -> Result<Vec<u8>, tonic::Status> {
    let (c, p) = (ctx.clone(), repo.to_path_buf());
    crate::odb::blocking(move || crate::odb::refs::default_branch(&*c.repos.open(&p)?)).await
}

/// The hooks payload of a push (SSHReceivePack, PostReceivePack) for the request's user. GitLab's
/// `gl_repository` is the repository message's, as upstream reads it; the request's own field (which
/// GitLab sets to the same) fills in when the message lacks it.
pub fn receive_pack_payload(
    ctx: &Context,
    repository: Option<&crate::proto::gitaly::Repository>,
    gl_repository: &str,
    gl_id: &str,
    gl_username: &str,
    protocol: &str,
) -> String {
    let mut repo = repository.cloned().unwrap_or_default();
    if repo.gl_repository.is_empty() {
        repo.gl_repository = gl_repository.to_string();
    }
    let user = crate::hook::User { username: gl_username.into(), userid: gl_id.into(), protocol: protocol.into() };
    ctx.hooks.payload(&repo, Some(user), crate::hook::payload::hooks::RECEIVE_PACK)
}

/// Upstream's object id check: 40 lower-case hex digits, no abbreviation.
pub fn validate_object_id(id: &str) -> Result<(), tonic::Status> {
    if crate::git::repo::is_oid(id) {
        Ok(())
    } else {
        Err(tonic::Status::invalid_argument(format!("invalid object ID: {id:?}")))
    }
}

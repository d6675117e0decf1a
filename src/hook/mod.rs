//! The hook chain: what runs when git is about to update refs, and after it did.
//!
//! git (receive-pack, or a worker's update) runs `rgitaly-hooks` as its hooks (`core.hooksPath`, set by
//! `crate::git`); `rgitaly-hooks` calls HookService on the daemon's internal socket; HookService (in
//! `crate::service::hook`) calls this module, which asks GitLab (`crate::gitlab`) and runs the operator's
//! custom hooks ([`custom`]) in upstream's order:
//!
//! - pre-receive: GitLab `/allowed` (with the quarantine directories, so GitLab sees the pushed objects
//!   before anyone else does), custom pre-receive hooks, GitLab `/pre_receive`;
//! - update: custom update hooks;
//! - post-receive: GitLab `/post_receive` (its messages go to the pushing client), custom post-receive.
//!
//! Everything the hook process says about the push (repository, user, requested hooks) is in a payload
//! this daemon signed ([`payload`]); the daemon believes nothing else from it.

pub mod custom;
pub mod payload;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::gitlab::{AllowedParams, Gitlab};
use crate::proto::gitaly::Repository;
pub use payload::{Payload, PayloadError, User};

/// Output of a hook on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub type Out = mpsc::Sender<Chunk>;

/// Why a hook refused, as upstream reports it to git: a custom hook's own exit code (its output already
/// streamed), or exit 1 with a message on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    Exit(i32),
    Failed(String),
}

/// The daemon's side of the hook chain, built once at start.
#[derive(Debug)]
pub struct Hooks {
    gitlab: Option<Gitlab>,
    custom_hooks_dir: Option<PathBuf>,
    /// Signs payloads; never leaves the daemon.
    key: [u8; 32],
    /// What `rgitaly-hooks` presents on the internal socket.
    token: String,
    socket: PathBuf,
}

fn random() -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

impl Hooks {
    /// The internal socket lives in `runtime_dir`, named as upstream names it.
    pub fn new(config: &Config, runtime_dir: &Path) -> Result<Hooks, String> {
        let gitlab = Gitlab::from_config(config)?;
        if gitlab.is_none() {
            tracing::warn!("no [gitlab] url: pushes and writes are not checked by GitLab, only by custom hooks");
        }
        Ok(Hooks {
            gitlab,
            custom_hooks_dir: config.custom_hooks_dir(),
            key: random().map_err(|e| format!("hooks: random key: {e}"))?,
            token: hex::encode(random().map_err(|e| format!("hooks: random token: {e}"))?),
            socket: runtime_dir.join(format!("internal_{}.sock", std::process::id())),
        })
    }

    /// The internal socket `rgitaly-hooks` calls.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The token the internal socket requires.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn gitlab(&self) -> Option<&Gitlab> {
        self.gitlab.as_ref()
    }

    /// The `GITALY_HOOKS_PAYLOAD` value for a git process that updates refs of `repo` for `user`.
    pub fn payload(&self, repo: &Repository, user: Option<User>, requested: u32) -> String {
        Payload {
            requested_hooks: requested,
            internal_socket: self.socket.to_string_lossy().into_owned(),
            internal_socket_token: self.token.clone(),
            receive_hooks_payload: user,
            repository: payload::repository_json(repo),
            ..Default::default()
        }
        .encode(&self.key)
    }

    /// The payload of a hook call, checked: signed by this daemon, for the repository the call names, asking
    /// for this hook (`hook`, a [`payload::hooks`] bit).
    pub fn verify(
        &self,
        env: &[String],
        repo: Option<&Repository>,
        hook: u32,
    ) -> Result<(Payload, Repository), PayloadError> {
        let p = Payload::from_env(env, &self.key)?;
        if p.requested_hooks & hook == 0 {
            return Err(PayloadError::Forged);
        }
        let signed = p.repo()?;
        if let Some(r) = repo {
            if r.storage_name != signed.storage_name || r.relative_path != signed.relative_path {
                return Err(PayloadError::Forged);
            }
        }
        Ok((p, signed))
    }

    /// pre-receive: GitLab's access check, custom hooks, GitLab's reference counter.
    pub async fn pre_receive(&self, call: &Call<'_>, changes: &[u8], out: &Out) -> Result<(), HookError> {
        if changes.is_empty() {
            return Err(failed("hook got no reference updates"));
        }
        let changes_text = String::from_utf8_lossy(changes);
        if let Some(gitlab) = &self.gitlab {
            let user = call.gitlab_user()?;
            let (object_directory, alternate_object_directories) = call.relative_object_dirs()?;
            let params = AllowedParams {
                gl_repository: &call.repo.gl_repository,
                gl_id: &user.userid,
                protocol: &user.protocol,
                changes: &changes_text,
                repo_path: call.repo_path,
                object_directory,
                alternate_object_directories,
            };
            match gitlab.allowed(&params).await {
                Err(e) => return Err(failed(format!("GitLab: {e}"))),
                Ok(a) if !a.status => return Err(failed(a.message)),
                Ok(_) => {}
            }
        }
        custom::run_all(self.custom_hooks_dir.as_deref(), call.custom("pre-receive", Vec::new(), Some(changes)), out)
            .await?;
        if let Some(gitlab) = &self.gitlab {
            match gitlab.pre_receive(&call.repo.gl_repository).await {
                Err(e) => return Err(failed(format!("calling pre_receive endpoint: {e}"))),
                Ok(false) => return Err(failed("")),
                Ok(true) => {}
            }
        }
        Ok(())
    }

    /// update: custom hooks only, once per ref.
    pub async fn update(
        &self,
        call: &Call<'_>,
        reference: &str,
        old: &str,
        new: &str,
        out: &Out,
    ) -> Result<(), HookError> {
        if reference.is_empty() {
            return Err(failed("hook got no reference"));
        }
        if !crate::git::repo::is_oid(old) {
            return Err(failed("hook got invalid old value: invalid object ID"));
        }
        if !crate::git::repo::is_oid(new) {
            return Err(failed("hook got invalid new value: invalid object ID"));
        }
        if call.payload.receive_hooks_payload.is_none() {
            return Err(failed("payload has no receive hooks info"));
        }
        let args = vec![reference.to_string(), old.to_string(), new.to_string()];
        let mut run = call.custom("update", args, None);
        run.push_options = &[];
        custom::run_all(self.custom_hooks_dir.as_deref(), run, out).await
    }

    /// post-receive: GitLab's post_receive (its messages to the client), then custom hooks.
    pub async fn post_receive(&self, call: &Call<'_>, changes: &[u8], out: &Out) -> Result<(), HookError> {
        if changes.is_empty() {
            return Err(failed("hook got no reference updates"));
        }
        if let Some(gitlab) = &self.gitlab {
            // Upstream's checks, in its order for post-receive.
            let user = call
                .payload
                .receive_hooks_payload
                .as_ref()
                .ok_or_else(|| failed("payload has no receive hooks info"))?;
            if user.userid.is_empty() {
                return Err(failed("user ID not set"));
            }
            if call.repo.gl_repository.is_empty() {
                return Err(failed("repository not set"));
            }
            let answer = gitlab
                .post_receive(
                    &call.repo.gl_repository,
                    &user.userid,
                    &String::from_utf8_lossy(changes),
                    call.push_options,
                )
                .await
                .map_err(|e| failed(format!("GitLab: {e}")))?;
            let text = crate::gitlab::format_messages(&answer.messages).map_err(|e| failed(e.0))?;
            if !text.is_empty() {
                let _ = out.send(Chunk::Stdout(text.into())).await;
            }
            if !answer.reference_counter_decreased {
                return Err(failed(""));
            }
        }
        custom::run_all(self.custom_hooks_dir.as_deref(), call.custom("post-receive", Vec::new(), Some(changes)), out)
            .await
    }
}

fn failed(s: impl Into<String>) -> HookError {
    HookError::Failed(s.into())
}

/// One hook call: the checked payload, its repository and the request's environment.
pub struct Call<'a> {
    pub payload: &'a Payload,
    /// The repository the payload was signed for (with gl_repository and gl_project_path).
    pub repo: &'a Repository,
    pub repo_path: &'a Path,
    pub env: &'a [String],
    pub push_options: &'a [String],
}

impl<'a> Call<'a> {
    fn gitlab_user(&self) -> Result<&'a User, HookError> {
        if self.repo.gl_repository.is_empty() {
            return Err(failed("repository not set"));
        }
        let user =
            self.payload.receive_hooks_payload.as_ref().ok_or_else(|| failed("payload has no receive hooks info"))?;
        if user.userid.is_empty() {
            return Err(failed("user ID not set"));
        }
        if user.protocol.is_empty() {
            return Err(failed("protocol not set"));
        }
        Ok(user)
    }

    fn var(&self, name: &str) -> Option<&'a str> {
        let prefix = format!("{name}=");
        self.env.iter().rev().find_map(|e| e.strip_prefix(&prefix)).filter(|v| !v.is_empty())
    }

    /// The push's object directories, relative to the repository as GitLab wants them; only when git gave
    /// both (as upstream), and only when they are inside the repository (a forged path is refused).
    fn relative_object_dirs(&self) -> Result<(Option<String>, Vec<String>), HookError> {
        let (Some(dir), Some(alternates)) =
            (self.var("GIT_OBJECT_DIRECTORY"), self.var("GIT_ALTERNATE_OBJECT_DIRECTORIES"))
        else {
            return Ok((None, Vec::new()));
        };
        let base = std::fs::canonicalize(self.repo_path).map_err(|e| failed(format!("repository: {e}")))?;
        let relative = |d: &str| -> Result<String, HookError> {
            let abs = std::fs::canonicalize(d).map_err(|_| failed(format!("invalid object directory {d:?}")))?;
            let rel = abs
                .strip_prefix(&base)
                .map_err(|_| failed(format!("object directory {d:?} outside the repository")))?;
            Ok(rel.to_string_lossy().into_owned())
        };
        let dir = relative(dir)?;
        let alternates = alternates.split(':').filter(|a| !a.is_empty()).map(relative).collect::<Result<_, _>>()?;
        Ok((Some(dir), alternates))
    }

    fn custom(&self, hook: &'a str, args: Vec<String>, stdin: Option<&[u8]>) -> custom::Run<'a> {
        let user = self.payload.receive_hooks_payload.clone().unwrap_or_default();
        // Object directories a custom hook sees must be this repository's (git's quarantine is inside it).
        let inside = |k: &str| {
            self.var(k).is_some_and(|v| {
                v.split(':').all(|d| {
                    std::fs::canonicalize(d)
                        .ok()
                        .zip(std::fs::canonicalize(self.repo_path).ok())
                        .is_some_and(|(d, r)| d.starts_with(r))
                })
            })
        };
        let keep_dirs = inside("GIT_OBJECT_DIRECTORY") && inside("GIT_ALTERNATE_OBJECT_DIRECTORIES");
        custom::Run {
            hook,
            repo_path: self.repo_path,
            args,
            stdin: stdin.map(Bytes::copy_from_slice),
            request_env: self.env,
            push_options: self.push_options,
            keep_object_dirs: keep_dirs,
            gl_env: vec![
                ("GL_REPOSITORY", self.repo.gl_repository.clone()),
                ("GL_PROJECT_PATH", self.repo.gl_project_path.clone()),
                ("GL_ID", user.userid),
                ("GL_USERNAME", user.username),
                ("GL_PROTOCOL", user.protocol),
            ],
        }
    }
}

//! The only place that runs `git`.
//!
//! Git is powerful enough to run arbitrary programs (hooks, `core.sshCommand`, pagers, filters), so every
//! invocation goes through this one builder: only listed subcommands, client-supplied revisions and paths
//! placed after `--end-of-options` (or refused when they look like options), an environment scrubbed down to
//! what git needs with system and global config switched off, operator `[[git.config]]` and validated
//! per-request `git_config_options` applied as `-c` here and nowhere else.

pub mod bundle;
mod config_options;
pub mod patch;
mod process;
pub mod remote_url;
pub mod repo;
mod revision;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

pub use config_options::{validate_config_option, ConfigOptionError};
pub use process::{grow_pipe, ExitInfo, Killer, Registry, Running};
pub use revision::{validate_revision, RevisionError};

use crate::config::GitConfigEntry;

/// Errors from building or running a git command.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("invalid argument {0:?}: options are not allowed here")]
    OptionLikeArgument(String),
    #[error("invalid argument {0:?}: contains a NUL byte")]
    NulByte(String),
    #[error(transparent)]
    ConfigOption(#[from] ConfigOptionError),
    #[error("spawn git {sub}: {source}")]
    Spawn { sub: &'static str, source: std::io::Error },
    #[error("git {sub}: {source}")]
    Io { sub: &'static str, source: std::io::Error },
    #[error("git {sub} exited with {code}: {stderr}")]
    Failed { sub: &'static str, code: i32, stderr: String },
}

impl From<GitError> for tonic::Status {
    fn from(e: GitError) -> tonic::Status {
        match e {
            GitError::OptionLikeArgument(_) | GitError::NulByte(_) | GitError::ConfigOption(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

/// The git subcommands rgitaly may run. Anything else cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Am,
    Apply,
    Archive,
    Blame,
    Bundle,
    CatFile,
    CheckRefFormat,
    Clone,
    CommitGraph,
    Config,
    CountObjects,
    Diff,
    Fetch,
    ForEachRef,
    FormatPatch,
    Fsck,
    Gc,
    HashObject,
    IndexPack,
    Init,
    Grep,
    Log,
    LsRemote,
    LsTree,
    MergeBase,
    MergeTree,
    Mktag,
    MultiPackIndex,
    PackRefs,
    Push,
    ReadTree,
    ReceivePack,
    Remote,
    Repack,
    RevList,
    RevParse,
    Show,
    ShowRef,
    SymbolicRef,
    UpdateIndex,
    UpdateRef,
    UploadArchive,
    UploadPack,
    Version,
    Worktree,
    WriteTree,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Am => "am",
            Sub::Apply => "apply",
            Sub::Archive => "archive",
            Sub::Blame => "blame",
            Sub::Bundle => "bundle",
            Sub::CatFile => "cat-file",
            Sub::CheckRefFormat => "check-ref-format",
            Sub::Clone => "clone",
            Sub::CommitGraph => "commit-graph",
            Sub::Config => "config",
            Sub::CountObjects => "count-objects",
            Sub::Diff => "diff",
            Sub::Fetch => "fetch",
            Sub::ForEachRef => "for-each-ref",
            Sub::FormatPatch => "format-patch",
            Sub::Fsck => "fsck",
            Sub::Gc => "gc",
            Sub::HashObject => "hash-object",
            Sub::IndexPack => "index-pack",
            Sub::Init => "init",
            Sub::Log => "log",
            Sub::Grep => "grep",
            Sub::LsRemote => "ls-remote",
            Sub::LsTree => "ls-tree",
            Sub::MergeBase => "merge-base",
            Sub::MergeTree => "merge-tree",
            Sub::MultiPackIndex => "multi-pack-index",
            Sub::Mktag => "mktag",
            Sub::PackRefs => "pack-refs",
            Sub::ReadTree => "read-tree",
            Sub::Push => "push",
            Sub::ReceivePack => "receive-pack",
            Sub::Remote => "remote",
            Sub::Repack => "repack",
            Sub::RevList => "rev-list",
            Sub::RevParse => "rev-parse",
            Sub::Show => "show",
            Sub::ShowRef => "show-ref",
            Sub::SymbolicRef => "symbolic-ref",
            Sub::UpdateIndex => "update-index",
            Sub::UpdateRef => "update-ref",
            Sub::UploadArchive => "upload-archive",
            Sub::UploadPack => "upload-pack",
            Sub::Version => "version",
            Sub::Worktree => "worktree",
            Sub::WriteTree => "write-tree",
        }
    }

    /// Config this subcommand always runs with, as upstream sets it per command.
    fn default_config(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Sub::UploadPack => &[
                ("uploadpack.allowFilter", "true"),
                ("uploadpack.allowAnySHA1InWant", "true"),
                ("pack.windowMemory", "100m"),
            ],
            Sub::ReceivePack => &[
                ("core.alternateRefsCommand", "exit 0 #"),
                ("receive.fsckObjects", "true"),
                ("receive.fsck.badTimezone", "ignore"),
                ("receive.advertisePushOptions", "true"),
                ("receive.hideRefs", "refs/environments/"),
                ("receive.hideRefs", "refs/keep-around/"),
                ("receive.hideRefs", "refs/merge-requests/"),
                ("receive.hideRefs", "refs/pipelines/"),
            ],
            Sub::Repack | Sub::Gc | Sub::Bundle => &[("pack.windowMemory", "100m")],
            _ => &[],
        }
    }

    /// Whether the subcommand parses `--end-of-options` (parse-options based). For the others a user
    /// argument that starts with `-` is refused outright.
    fn takes_end_of_options(self) -> bool {
        !matches!(
            self,
            Sub::Archive
                | Sub::Blame
                | Sub::CatFile
                | Sub::Bundle
                | Sub::CheckRefFormat
                | Sub::Mktag
                | Sub::ReceivePack
                | Sub::Remote
                | Sub::UploadPack
                | Sub::UploadArchive
                | Sub::Version
        )
    }
}

/// Config every command runs with, as upstream: durable writes, no automatic gc, no CRLF surprises.
const DEFAULT_CONFIG: &[(&str, &str)] = &[
    ("core.fsync", "objects,derived-metadata,reference"),
    ("core.fsyncMethod", "fsync"),
    ("gc.auto", "0"),
    ("core.autocrlf", "input"),
];

/// The hooks rgitaly runs for ref updates (as upstream installs them).
pub const HOOKS: [&str; 4] = ["pre-receive", "update", "post-receive", "reference-transaction"];
const HOOKS_BINARY: &str = "rgitaly-hooks";

/// Builds git commands; created once from the config and shared.
#[derive(Debug)]
pub struct GitCmdFactory {
    bin: PathBuf,
    /// Isolated HOME / XDG_CONFIG_HOME: an empty directory so no user's global config is read.
    home: PathBuf,
    /// An empty directory used as `core.hooksPath`, so hooks planted in a repository never run.
    hooks_dir: PathBuf,
    /// `rgitaly-hooks` linked as each hook git may run for a ref update; `core.hooksPath` of commands
    /// that carry a hooks payload ([`GitCommand::hooks`]).
    live_hooks_dir: Option<PathBuf>,
    hooks_log_dir: Option<PathBuf>,
    operator_config: Vec<(String, String)>,
    /// `rgitaly-ssh`, git's transport to another Gitaly server ([`GitCommand::internal_remote`]).
    ssh_binary: Option<PathBuf>,
    path_env: OsString,
    spawned: AtomicU64,
    running: Registry,
}

impl GitCmdFactory {
    /// `runtime_dir` is a private directory of the daemon; an empty home and hooks directory are made in it.
    pub fn new(bin: Option<&Path>, config: &[GitConfigEntry], runtime_dir: &Path) -> std::io::Result<Self> {
        let home = runtime_dir.join("git-home");
        let hooks_dir = runtime_dir.join("git-hooks");
        std::fs::create_dir_all(&home)?;
        std::fs::create_dir_all(&hooks_dir)?;
        let bin = match bin {
            Some(b) => b.to_path_buf(),
            None => find_in_path("git").ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "git not found in PATH; set [git] bin_path")
            })?,
        };
        Ok(GitCmdFactory {
            bin,
            home,
            hooks_dir,
            live_hooks_dir: None,
            hooks_log_dir: None,
            operator_config: config.iter().map(|c| (c.key.clone(), c.value.clone())).collect(),
            ssh_binary: None,
            path_env: std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            spawned: AtomicU64::new(0),
            running: Registry::default(),
        })
    }

    /// Installs `hooks_binary` (`rgitaly-hooks`) as git's pre-receive, update, post-receive and
    /// reference-transaction hooks, for commands given a hooks payload: a directory of this daemon's own in
    /// `runtime_dir` (a successor sharing the directory has its own) holding a hard link to the binary, or
    /// a copy, so replacing or removing the installed binary does not take the hooks away — git skips a
    /// hook it cannot find, and a push would land unchecked. [`GitCommand::hooks`] checks it is still
    /// there before every such command.
    /// `log_dir` (`[logging] dir`) is where `rgitaly-hooks` writes what went wrong (`GITALY_LOG_DIR`).
    pub fn with_hooks(
        mut self,
        hooks_binary: &Path,
        runtime_dir: &Path,
        log_dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        if !hooks_binary.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("hooks binary {} not found", hooks_binary.display()),
            ));
        }
        let dir = runtime_dir.join(format!("rgitaly-hooks.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let binary = dir.join(HOOKS_BINARY);
        if std::fs::hard_link(hooks_binary, &binary).is_err() {
            std::fs::copy(hooks_binary, &binary)?;
        }
        for hook in HOOKS {
            std::os::unix::fs::symlink(HOOKS_BINARY, dir.join(hook))?;
        }
        self.live_hooks_dir = Some(dir);
        self.hooks_log_dir = log_dir.map(Path::to_path_buf);
        Ok(self)
    }

    /// Uses `ssh_binary` (`rgitaly-ssh`) for fetches from other Gitaly servers.
    pub fn with_ssh(mut self, ssh_binary: PathBuf) -> Self {
        self.ssh_binary = Some(ssh_binary);
        self
    }

    /// Removes this daemon's hooks directory (at exit, once no git runs).
    pub fn remove_hooks(&self) {
        if let Some(dir) = &self.live_hooks_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    pub fn bin_path(&self) -> &Path {
        &self.bin
    }

    /// How many git processes this factory has started (to prove which paths fork).
    pub fn spawned_total(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// How many git processes are running now.
    pub fn running(&self) -> u64 {
        self.running.len() as u64
    }

    /// Kills every git process still running (for a daemon that must exit now) and any started later;
    /// returns how many were running.
    pub fn kill_all(&self) -> usize {
        self.running.kill_all()
    }

    /// A command inside a repository (`--git-dir=<repo>`).
    pub fn command(&self, repo: &Path, sub: Sub) -> GitCommand<'_> {
        let mut cmd = self.bare(sub);
        cmd.git_dir = Some(repo.to_path_buf());
        cmd
    }

    /// A command outside any repository (`git init`, `git clone`, `git version`).
    pub fn bare(&self, sub: Sub) -> GitCommand<'_> {
        GitCommand {
            factory: self,
            sub,
            git_dir: None,
            cwd: None,
            request_config: Vec::new(),
            internal_config: Vec::new(),
            flags: Vec::new(),
            user_args: Vec::new(),
            paths: Vec::new(),
            env: Vec::new(),
            env_config: Vec::new(),
            hooks: false,
            error: None,
        }
    }

    /// `git version`, e.g. "2.47.3".
    pub async fn version(&self) -> Result<String, GitError> {
        let out = self.bare(Sub::Version).output().await?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.trim().trim_start_matches("git version ").to_string())
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// One git invocation being assembled. Arguments land in this order:
/// `git [-c k=v]… [--git-dir=R] SUB <flags>… [--end-of-options] <user args>… [-- <paths>…]`.
pub struct GitCommand<'a> {
    factory: &'a GitCmdFactory,
    sub: Sub,
    git_dir: Option<PathBuf>,
    cwd: Option<PathBuf>,
    request_config: Vec<String>,
    internal_config: Vec<(String, String)>,
    flags: Vec<OsString>,
    user_args: Vec<OsString>,
    paths: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Config passed in the environment (`GIT_CONFIG_COUNT`), for values that must not show in argv.
    env_config: Vec<(String, String)>,
    /// Runs rgitaly's hooks (a payload was given).
    hooks: bool,
    error: Option<GitError>,
}

impl<'a> GitCommand<'a> {
    /// A flag or option chosen by rgitaly (never client input).
    pub fn flag(mut self, flag: impl AsRef<OsStr>) -> Self {
        self.flags.push(flag.as_ref().to_os_string());
        self
    }

    /// A path or value chosen by rgitaly, e.g. a resolved repository path for `upload-pack <dir>`.
    pub fn trusted_arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.flags.push(arg.as_ref().to_os_string());
        self
    }

    /// Client-supplied revision or name: after `--end-of-options`, refused if it looks like an option.
    pub fn user_arg(mut self, arg: impl AsRef<str>) -> Self {
        let arg = arg.as_ref();
        if arg.contains('\0') {
            self.error.get_or_insert(GitError::NulByte(arg.to_string()));
        } else if arg.starts_with('-') {
            // Even where git has --end-of-options, a revision like "--all" is never what a client means.
            self.error.get_or_insert(GitError::OptionLikeArgument(arg.to_string()));
        }
        self.user_args.push(arg.into());
        self
    }

    /// An option whose value comes from a client, as one `--name=value` argument (so the value can never
    /// become an option of its own); NUL bytes are refused.
    pub fn user_option(mut self, name: &str, value: &str) -> Self {
        if value.contains('\0') {
            self.error.get_or_insert(GitError::NulByte(value.to_string()));
        }
        self.flags.push(format!("{name}={value}").into());
        self
    }

    /// Client-supplied path, after `--`; NUL bytes are refused (an argument cannot carry one).
    pub fn path_arg(mut self, path: impl AsRef<OsStr>) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let path = path.as_ref();
        if path.as_bytes().contains(&0) {
            self.error.get_or_insert(GitError::NulByte(path.to_string_lossy().into_owned()));
        }
        self.paths.push(path.to_os_string());
        self
    }

    /// A config value rgitaly needs for this command (`-c key=value`).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.internal_config.push((key.to_string(), value.to_string()));
        self
    }

    /// A request's `git_config_options` ("key=value" each), validated against the deny list.
    pub fn request_config(mut self, options: &[String]) -> Self {
        for o in options {
            if let Err(e) = validate_config_option(o) {
                self.error.get_or_insert(e.into());
            }
            self.request_config.push(o.clone());
        }
        self
    }

    /// A config value kept out of argv (and so out of `ps` and logs): a URL or header carrying a secret.
    /// Passed as `GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`; NUL bytes are refused.
    pub fn secret_config(mut self, key: &str, value: &str) -> Self {
        if value.contains('\0') || key.contains('\0') {
            self.error.get_or_insert(GitError::NulByte(key.to_string()));
        }
        self.env_config.push((key.to_string(), value.to_string()));
        self
    }

    /// Fetches from another Gitaly server through `rgitaly-ssh`, as [`crate::gitaly_servers`] prepared:
    /// git may use no transport but ssh, and ssh is that binary.
    pub fn internal_remote(mut self, env: &crate::gitaly_servers::UploadPackEnv) -> Self {
        match &self.factory.ssh_binary {
            Some(bin) => {
                let command = crate::gitaly_servers::ssh_command(bin);
                self.env.push(("GIT_SSH_COMMAND".into(), command.into()));
            }
            None => {
                self.error.get_or_insert(GitError::Spawn {
                    sub: self.sub.name(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "rgitaly-ssh is not installed"),
                });
            }
        }
        for (k, v) in &env.vars {
            self.env.push((k.into(), v.into()));
        }
        self.internal_config.push(("protocol.allow".into(), "never".into()));
        self.internal_config.push(("protocol.ssh.allow".into(), "always".into()));
        self
    }

    /// Talks to a URL a client chose: only the network transports (no `file://`, local paths, `ext::`
    /// or `fd::`), no redirects followed, no credential prompts.
    pub fn untrusted_remote(mut self) -> Self {
        for (k, v) in [
            ("protocol.allow", "never"),
            ("protocol.http.allow", "always"),
            ("protocol.https.allow", "always"),
            ("protocol.ssh.allow", "always"),
            ("protocol.git.allow", "always"),
            ("http.followRedirects", "false"),
            ("credential.helper", ""),
            ("core.askPass", "/bin/false"),
        ] {
            self.internal_config.push((k.into(), v.into()));
        }
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Runs rgitaly's hooks (GitLab's checks, custom hooks) for the refs this command updates, with the
    /// daemon-signed `payload` (see `crate::hook`). Only for commands that update refs; a factory built
    /// without the hooks binary refuses to start such a command rather than run it unchecked.
    pub fn hooks(mut self, payload: String) -> Self {
        let usable = self
            .factory
            .live_hooks_dir
            .as_ref()
            .is_some_and(|d| nix::unistd::access(&d.join(HOOKS_BINARY), nix::unistd::AccessFlags::X_OK).is_ok());
        if !usable {
            self.error.get_or_insert(GitError::Spawn {
                sub: self.sub.name(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "hooks are not installed"),
            });
        }
        self.hooks = true;
        self.env.push((crate::hook::payload::ENV.into(), payload.into()));
        if let Some(dir) = &self.factory.hooks_log_dir {
            self.env.push(("GITALY_LOG_DIR".into(), dir.into()));
        }
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The argument vector after `git`, for logs and tests.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        // Later -c wins in git: defaults, then what the request asks, then the operator, then the hooks
        // directory, which nothing may override.
        let defaults = DEFAULT_CONFIG.iter().chain(self.sub.default_config()).map(|(k, v)| format!("{k}={v}"));
        let internal = self.internal_config.iter().map(|(k, v)| format!("{k}={v}"));
        let operator = self.factory.operator_config.iter().map(|(k, v)| format!("{k}={v}"));
        let configs = defaults
            .chain(internal)
            .chain(self.request_config.iter().cloned())
            .chain(operator)
            .chain(std::iter::once(format!("core.hooksPath={}", self.hooks_path().display())));
        for c in configs {
            args.push("-c".into());
            args.push(c.into());
        }
        if let Some(dir) = &self.git_dir {
            let mut s = OsString::from("--git-dir=");
            s.push(dir);
            args.push(s);
        }
        args.push(self.sub.name().into());
        args.extend(self.flags.iter().cloned());
        if !self.user_args.is_empty() && self.sub.takes_end_of_options() {
            args.push("--end-of-options".into());
        }
        args.extend(self.user_args.iter().cloned());
        if !self.paths.is_empty() {
            args.push("--".into());
            args.extend(self.paths.iter().cloned());
        }
        args
    }

    fn hooks_path(&self) -> &Path {
        match (&self.factory.live_hooks_dir, self.hooks) {
            (Some(dir), true) => dir,
            _ => &self.factory.hooks_dir,
        }
    }

    fn std_command(&self) -> std::process::Command {
        let f = self.factory;
        let mut cmd = std::process::Command::new(&f.bin);
        cmd.args(self.args());
        cmd.env_clear()
            .env("PATH", &f.path_env)
            .env("HOME", &f.home)
            .env("XDG_CONFIG_HOME", &f.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("LANG", "C")
            .env("LC_ALL", "C");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if !self.env_config.is_empty() {
            cmd.env("GIT_CONFIG_COUNT", self.env_config.len().to_string());
            for (i, (k, v)) in self.env_config.iter().enumerate() {
                cmd.env(format!("GIT_CONFIG_KEY_{i}"), k).env(format!("GIT_CONFIG_VALUE_{i}"), v);
            }
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        } else if let Some(dir) = &self.git_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts the command with its three standard streams piped, for streaming RPCs.
    pub fn spawn(self) -> Result<Running, GitError> {
        self.spawn_with(Stdio::piped())
    }

    /// Starts the command with stdin closed.
    pub fn spawn_no_stdin(self) -> Result<Running, GitError> {
        self.spawn_with(Stdio::null())
    }

    fn spawn_with(mut self, stdin: Stdio) -> Result<Running, GitError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut cmd = self.std_command();
        cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        let args = self.args();
        let sub = self.sub.name();
        let running = process::Running::start(cmd, sub, args, self.factory.running.clone())
            .map_err(|source| GitError::Spawn { sub, source })?;
        self.factory.spawned.fetch_add(1, Ordering::Relaxed);
        Ok(running)
    }

    /// Runs to completion with stdin closed; a non-zero exit is an error carrying stderr.
    pub async fn output(self) -> Result<Output, GitError> {
        let sub = self.sub.name();
        let out = self.run_to_end().await?;
        if out.exit.code != 0 {
            return Err(GitError::Failed { sub, code: out.exit.code, stderr: out.stderr_text() });
        }
        Ok(out)
    }

    /// Runs to completion with `input` on stdin; a non-zero exit is an error carrying stderr.
    pub async fn output_with_stdin(self, input: Vec<u8>) -> Result<Output, GitError> {
        self.output_with_stdin_as(input, false).await
    }

    /// As [`GitCommand::output_with_stdin`], for a command that must finish even if the caller goes away
    /// (see [`Running::finish_on_drop`]).
    pub async fn output_with_stdin_to_end(self, input: Vec<u8>) -> Result<Output, GitError> {
        self.output_with_stdin_as(input, true).await
    }

    async fn output_with_stdin_as(self, input: Vec<u8>, finish: bool) -> Result<Output, GitError> {
        let sub = self.sub.name();
        let mut child = self.spawn()?;
        if finish {
            child.finish_on_drop();
        }
        let mut stdin = child.stdin.take().expect("stdin piped");
        let writer = async move {
            use tokio::io::AsyncWriteExt;
            // EPIPE means git stopped reading; its exit status says why.
            let _ = stdin.write_all(&input).await;
        };
        let (out, ()) = tokio::join!(Self::collect(child, sub), writer);
        let out = out?;
        if out.exit.code != 0 {
            return Err(GitError::Failed { sub, code: out.exit.code, stderr: out.stderr_text() });
        }
        Ok(out)
    }

    /// Runs to completion with stdin closed and returns whatever it exited with.
    pub async fn run_to_end(self) -> Result<Output, GitError> {
        let sub = self.sub.name();
        Self::collect(self.spawn_no_stdin()?, sub).await
    }

    async fn collect(mut child: Running, sub: &'static str) -> Result<Output, GitError> {
        let mut stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        use tokio::io::AsyncReadExt;
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a.and(b).map_err(|source| GitError::Io { sub, source })?;
        let exit = child.wait().await.map_err(|source| GitError::Io { sub, source })?;
        Ok(Output { stdout: out, stderr: err, exit })
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExitInfo,
}

impl Output {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factory() -> (tempfile::TempDir, GitCmdFactory) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = [GitConfigEntry { key: "core.fsyncObjectFiles".into(), value: "false".into() }];
        let f = GitCmdFactory::new(None, &cfg, dir.path()).unwrap();
        (dir, f)
    }

    #[test]
    fn arguments_are_ordered_and_user_args_separated() {
        let (_d, f) = factory();
        let args = f
            .command(Path::new("/srv/repo.git"), Sub::RevParse)
            .flag("--verify")
            .user_arg("main")
            .request_config(&["uploadpack.allowFilter=true".into()])
            .args();
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let pos = |s: &str| args.iter().position(|a| a == s).unwrap_or_else(|| panic!("{s} in {args:?}"));
        assert!(pos("core.fsyncObjectFiles=false") < pos("rev-parse"));
        assert!(pos("uploadpack.allowFilter=true") < pos("rev-parse"));
        assert!(pos("--git-dir=/srv/repo.git") < pos("rev-parse"));
        assert!(pos("--verify") < pos("--end-of-options"));
        assert_eq!(pos("--end-of-options") + 1, pos("main"));
    }

    #[tokio::test]
    async fn option_like_user_args_are_refused_before_spawning() {
        let (_d, f) = factory();
        let e = f.command(Path::new("/tmp"), Sub::RevParse).user_arg("--output=/tmp/x").output().await.unwrap_err();
        assert!(matches!(e, GitError::OptionLikeArgument(_)), "{e}");
        let e = f
            .command(Path::new("/tmp"), Sub::UploadPack)
            .request_config(&["core.sshCommand=touch /tmp/pwned".into()])
            .output()
            .await
            .unwrap_err();
        assert!(matches!(e, GitError::ConfigOption(_)), "{e}");
        assert_eq!(f.spawned_total(), 0);
    }

    #[tokio::test]
    async fn environment_is_scrubbed() {
        let (_d, f) = factory();
        // Config injected through the environment must not reach git.
        std::env::set_var("GIT_CONFIG_PARAMETERS", "'rgitaly.leak=yes'");
        let out = f.bare(Sub::Config).flag("--get").trusted_arg("rgitaly.leak").run_to_end().await.unwrap();
        assert_eq!(out.exit.code, 1, "leaked: {}", out.stdout_text());
        // Operator config does reach it.
        let out = f.bare(Sub::Config).flag("--get").trusted_arg("core.fsyncObjectFiles").run_to_end().await.unwrap();
        assert_eq!(out.stdout_text(), "false");
        let v = f.version().await.unwrap();
        assert!(v.chars().next().unwrap().is_ascii_digit(), "{v}");
        assert_eq!(f.spawned_total(), 3);
        assert_eq!(f.running(), 0);
    }
}

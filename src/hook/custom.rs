//! Custom server hooks: the operator's own programs run at pre-receive, update and post-receive, in
//! upstream's order — `<repo>/custom_hooks/<hook>`, then `<repo>/custom_hooks/<hook>.d/*`, then the global
//! `<custom_hooks_dir>/<hook>.d/*`, each directory sorted by name. The first that fails stops the rest
//! and refuses the push with its exit code.
//!
//! They are not git, so they are not started by `crate::git`; their environment is built here, from a
//! short allow-list, the way upstream builds it, and each runs in its own process group so a cancelled
//! push takes its children down too.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{HookError, Out};

/// Variables a custom hook inherits from the daemon's environment (upstream's list).
const ALLOWED_ENV: &[&str] = &[
    "HOME",
    "PATH",
    "LD_LIBRARY_PATH",
    "TZ",
    "GIT_TRACE",
    "GIT_TRACE_PACK_ACCESS",
    "GIT_TRACE_PACKET",
    "GIT_TRACE_PERFORMANCE",
    "GIT_TRACE_SETUP",
    "all_proxy",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The executables to run for `hook`, in order.
pub fn find(repo: &Path, global: Option<&Path>, hook: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let single = repo.join("custom_hooks").join(hook);
    if valid(&single) {
        found.push(single);
    }
    let mut dirs = vec![repo.join("custom_hooks").join(format!("{hook}.d"))];
    if let Some(g) = global {
        dirs.push(g.join(format!("{hook}.d")));
    }
    for dir in dirs {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => {
                continue
            }
            Err(e) => return Err(e),
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        found.extend(names.into_iter().filter(|p| valid(p)));
    }
    Ok(found)
}

/// Not a backup (`~`), a file after symlinks, executable by us.
fn valid(p: &Path) -> bool {
    if p.as_os_str().as_encoded_bytes().ends_with(b"~") {
        return false;
    }
    match std::fs::metadata(p) {
        Ok(m) if !m.is_dir() && m.mode() & 0o111 != 0 => nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok(),
        _ => false,
    }
}

/// What a run of custom hooks gets besides its stdin.
pub struct Run<'a> {
    pub hook: &'a str,
    pub repo_path: &'a Path,
    pub args: Vec<String>,
    /// The ref updates for pre- and post-receive; none (`/dev/null`) for update.
    pub stdin: Option<Bytes>,
    /// The hook request's environment (`KEY=VALUE`), filtered here.
    pub request_env: &'a [String],
    pub push_options: &'a [String],
    /// Whether the request's GIT_OBJECT_DIRECTORY and GIT_ALTERNATE_OBJECT_DIRECTORIES (the push's
    /// quarantine) were checked to be inside the repository and may be passed on.
    pub keep_object_dirs: bool,
    /// GL_ID, GL_USERNAME, … as upstream sets them.
    pub gl_env: Vec<(&'static str, String)>,
}

fn env(run: &Run<'_>) -> Vec<(String, String)> {
    // The allowed variables come from the daemon's own environment (git ran with a scrubbed one, and the
    // request's is not signed); from the request only the push's object directories, once checked.
    let mut env: Vec<(String, String)> =
        ALLOWED_ENV.iter().filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))).collect();
    if run.keep_object_dirs {
        for e in run.request_env {
            if let Some((k, v)) = e.split_once('=') {
                if k == "GIT_OBJECT_DIRECTORY" || k == "GIT_ALTERNATE_OBJECT_DIRECTORIES" {
                    env.push((k.to_string(), v.to_string()));
                }
            }
        }
    }
    if !run.push_options.is_empty() {
        env.push(("GIT_PUSH_OPTION_COUNT".into(), run.push_options.len().to_string()));
        for (i, o) in run.push_options.iter().enumerate() {
            env.push((format!("GIT_PUSH_OPTION_{i}"), o.clone()));
        }
    }
    env.push(("GIT_DIR".into(), run.repo_path.to_string_lossy().into_owned()));
    env.extend(run.gl_env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    env
}

/// Runs every custom hook for `run.hook` in turn; a failure stops the rest.
pub async fn run_all(global: Option<&Path>, run: Run<'_>, out: &Out) -> Result<(), HookError> {
    let hooks =
        find(run.repo_path, global, run.hook).map_err(|e| HookError::Failed(format!("executing custom hooks: {e}")))?;
    if hooks.is_empty() {
        return Ok(());
    }
    let env = env(&run);
    for exe in hooks {
        run_one(&exe, &run, &env, out).await?;
    }
    Ok(())
}

/// Process groups of custom hooks running now, so the daemon can stop them when it exits.
static RUNNING: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Sends SIGTERM to every custom hook still running (the daemon is exiting).
pub fn kill_all() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for pgid in running {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// A running hook's process group: SIGTERM to the whole group unless the hook was reaped (a cancelled
/// push), as upstream stops them; the hook may clean up.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn new(pgid: Option<i32>) -> Self {
        if let Some(p) = pgid {
            RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        }
        GroupGuard(pgid)
    }

    fn reaped(&mut self) {
        if let Some(p) = self.0.take() {
            RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| *r != p);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| *r != pgid);
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGTERM);
        }
    }
}

async fn run_one(exe: &Path, run: &Run<'_>, env: &[(String, String)], out: &Out) -> Result<(), HookError> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(&run.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(run.repo_path)
        .stdin(if run.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child =
        cmd.spawn().map_err(|e| HookError::Failed(format!("executing custom hooks: start {}: {e}", exe.display())))?;
    let mut guard = GroupGuard::new(child.id().map(|p| p as i32));
    let stdin = child.stdin.take().zip(run.stdin.clone()).map(|(mut w, data)| async move {
        // A hook that does not read its stdin is not an error.
        let _ = w.write_all(&data).await;
    });
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let feed = async {
        if let Some(s) = stdin {
            s.await;
        }
    };
    let (_, (), (), status) = tokio::join!(
        feed,
        relay(stdout, out, super::Chunk::Stdout),
        relay(stderr, out, super::Chunk::Stderr),
        child.wait()
    );
    guard.reaped();
    let status = status.map_err(|e| HookError::Failed(format!("executing custom hooks: {e}")))?;
    if status.success() {
        return Ok(());
    }
    // Killed by a signal: -1, as upstream reports it.
    Err(HookError::Exit(status.code().unwrap_or(-1)))
}

async fn relay(mut r: impl tokio::io::AsyncRead + Unpin, out: &Out, wrap: fn(Bytes) -> super::Chunk) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // The client went away: keep draining so the hook is not blocked on a full pipe.
                let _ = out.send(wrap(Bytes::copy_from_slice(&buf[..n]))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(p: &Path, body: &str, mode: u32) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn order_and_validity_as_upstream() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("r.git");
        let global = t.path().join("global");
        script(&repo.join("custom_hooks/pre-receive"), "", 0o755);
        script(&repo.join("custom_hooks/pre-receive.d/b"), "", 0o755);
        script(&repo.join("custom_hooks/pre-receive.d/a"), "", 0o755);
        script(&repo.join("custom_hooks/pre-receive.d/c~"), "", 0o755);
        script(&repo.join("custom_hooks/pre-receive.d/not-executable"), "", 0o644);
        std::fs::create_dir_all(repo.join("custom_hooks/pre-receive.d/dir")).unwrap();
        script(&global.join("pre-receive.d/z"), "", 0o755);
        script(&global.join("update.d/u"), "", 0o755);
        let found = find(&repo, Some(&global), "pre-receive").unwrap();
        let rel: Vec<String> = found.iter().map(|p| p.strip_prefix(t.path()).unwrap().display().to_string()).collect();
        assert_eq!(
            rel,
            [
                "r.git/custom_hooks/pre-receive",
                "r.git/custom_hooks/pre-receive.d/a",
                "r.git/custom_hooks/pre-receive.d/b",
                "global/pre-receive.d/z"
            ]
        );
        assert!(find(&repo, None, "post-receive").unwrap().is_empty());
    }
}

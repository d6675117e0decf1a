//! Zero-downtime binary upgrade, and readiness for systemd.
//!
//! On SIGUSR2 the daemon starts its successor (the binary now at its own path, same arguments) and gives it
//! the listening sockets as inherited descriptors. The successor serves on them and says so on a pipe;
//! only then does the old daemon stop accepting and drain as it does on SIGTERM. Both processes share one
//! kernel socket per listener, so a connection waiting in the backlog is accepted by whichever is still
//! accepting: no client sees a refusal, and calls in flight on the old daemon finish there.
//!
//! Under systemd (`Type=notify`) the old daemon, still the main process, tells systemd the successor's pid
//! once it is ready, so the service stays up across the swap.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// `name=fd,…` for the listeners handed to a successor.
const ENV_FDS: &str = "RGITALY_UPGRADE_FDS";
/// The descriptor on which the successor writes `ready`.
const ENV_READY: &str = "RGITALY_UPGRADE_READY_FD";

/// How long a successor may take to come up before the upgrade is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Listener descriptors passed down by a predecessor, by listener name (`unix`, `tcp`, `tls`, `metrics`).
#[derive(Debug, Default)]
pub struct Inherited {
    fds: Vec<(String, OwnedFd)>,
    ready: Option<OwnedFd>,
}

impl Inherited {
    /// Takes the descriptors named in the environment (once, at start-up) and removes the variables so
    /// children do not see them.
    pub fn from_env() -> Inherited {
        let mut out = Inherited::default();
        if let Ok(list) = std::env::var(ENV_FDS) {
            for item in list.split(',').filter(|s| !s.is_empty()) {
                if let Some((name, fd)) = item.split_once('=') {
                    if let Some(fd) = fd.parse::<RawFd>().ok().filter(|fd| valid_fd(*fd)) {
                        // SAFETY: the predecessor passed this descriptor to us for exactly this use, and
                        // nothing else in this process owns it.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        set_cloexec(fd.as_raw_fd());
                        out.fds.push((name.to_string(), fd));
                    }
                }
            }
        }
        if let Some(fd) = std::env::var(ENV_READY).ok().and_then(|v| v.parse::<RawFd>().ok()).filter(|fd| valid_fd(*fd))
        {
            // SAFETY: as above; the write end of the predecessor's readiness pipe.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            set_cloexec(fd.as_raw_fd());
            out.ready = Some(fd);
        }
        // SAFETY: called at start-up, before other threads read the environment.
        unsafe {
            std::env::remove_var(ENV_FDS);
            std::env::remove_var(ENV_READY);
        }
        out
    }

    /// The inherited listener called `name`, if any.
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let i = self.fds.iter().position(|(n, _)| n == name)?;
        Some(self.fds.remove(i).1)
    }

    /// Closes inherited listeners the config no longer names, so their ports stop taking connections that
    /// nobody would accept.
    pub fn close_unused(&mut self) {
        for (name, _) in self.fds.drain(..) {
            tracing::info!(listener = %name, "inherited listener is not configured any more; closed");
        }
    }

    /// True when this process was started by a predecessor's upgrade.
    pub fn is_successor(&self) -> bool {
        self.ready.is_some()
    }

    /// Tells the predecessor (or systemd, for a first start) that this daemon is serving.
    pub fn notify_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let mut f = std::fs::File::from(fd);
            let _ = std::io::Write::write_all(&mut f, b"ready\n");
        } else {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
    }
}

fn valid_fd(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: sets a flag on a descriptor this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// How an upgrade attempt ended.
#[derive(Debug)]
pub enum Upgrade {
    /// The successor (this pid) is serving.
    Ready(u32),
    /// `cancel` fired first (a stop was asked for): the successor was killed.
    Cancelled,
    /// The successor could not be started or did not come up; it is gone.
    Failed(String),
}

/// Starts the successor with `listeners` (name, descriptor) and waits until it reports ready, or until
/// `cancel` resolves. On anything but `Ready` the successor is gone and this daemon carries on.
pub async fn start_successor(
    listeners: &[(&'static str, RawFd)],
    cancel: impl std::future::Future<Output = ()>,
) -> Upgrade {
    match start(listeners, cancel).await {
        Ok(Some(pid)) => Upgrade::Ready(pid),
        Ok(None) => Upgrade::Cancelled,
        Err(e) => Upgrade::Failed(e),
    }
}

async fn start(
    listeners: &[(&'static str, RawFd)],
    cancel: impl std::future::Future<Output = ()>,
) -> Result<Option<u32>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("upgrade: current executable: {e}"))?;
    // The binary may have been replaced since start; /proc/self/exe then reads "… (deleted)".
    let exe_str = exe.to_string_lossy();
    let exe = std::path::PathBuf::from(exe_str.strip_suffix(" (deleted)").unwrap_or(&exe_str));
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("upgrade: pipe: {e}"))?;
    let fds: Vec<(&str, RawFd)> = listeners.to_vec();
    let env_fds = fds.iter().map(|(n, fd)| format!("{n}={fd}")).collect::<Vec<_>>().join(",");
    let ready_fd = ready_w.as_raw_fd();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(std::env::args_os().skip(1)).env(ENV_FDS, env_fds).env(ENV_READY, ready_fd.to_string());
    let keep: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).chain([ready_fd]).collect();
    // SAFETY: between fork and exec only async-signal-safe fcntl calls run.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("upgrade: start {}: {e}", exe.display()))?;
    drop(ready_w);
    let pid = child.id();
    tracing::info!(pid, path = %exe.display(), "upgrade: successor started");
    let mut reader = std::fs::File::from(ready_r);
    let wait = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    });
    let outcome = tokio::select! {
        r = tokio::time::timeout(READY_TIMEOUT, wait) => Some(r),
        _ = cancel => None,
    };
    match outcome {
        Some(Ok(Ok(buf))) if buf.starts_with(b"ready") => {
            // Reaped by init once we exit; the successor is systemd's main process from now on.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::MainPid(pid)]);
            std::mem::forget(child);
            Ok(Some(pid))
        }
        Some(Ok(_)) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!("upgrade: successor exited before it was ready ({status})"))
        }
        Some(Err(_)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("upgrade: successor not ready within {}s", READY_TIMEOUT.as_secs()))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Ok(None)
        }
    }
}

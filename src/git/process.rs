//! A running git child: its pipes as async handles, its exit status and resource usage.
//!
//! `wait4(2)` is used instead of tokio's child handling because it also reports the child's CPU time and
//! peak RSS, which we log per command as upstream does. The child runs in its own process group so that
//! killing it (when the RPC is cancelled and this handle is dropped) also stops the `pack-objects` it spawned.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// How a command ended.
#[derive(Debug, Clone)]
pub struct ExitInfo {
    /// Exit code; for a signal, 128 + signal number (as a shell reports it).
    pub code: i32,
    pub signal: Option<i32>,
    pub real_time: Duration,
    pub user_time: Duration,
    pub system_time: Duration,
    /// Peak resident set size in KiB.
    pub max_rss_kib: i64,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A started git process. Dropping it before it has exited kills its process group.
pub struct Running {
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pid: i32,
    sub: &'static str,
    args: Vec<OsString>,
    exited: Arc<Mutex<bool>>,
    result: Option<oneshot::Receiver<std::io::Result<ExitInfo>>>,
    /// Left to finish when dropped (see [`Running::finish_on_drop`]).
    finish: bool,
}

impl Running {
    pub(super) fn start(
        mut cmd: std::process::Command,
        sub: &'static str,
        args: Vec<OsString>,
        registry: Registry,
    ) -> std::io::Result<Running> {
        cmd.process_group(0);
        let mut child = cmd.spawn()?;
        let started = Instant::now();
        let pid = child.id() as i32;
        let pipes = (|| {
            let stdin =
                child.stdin.take().map(|s| pipe::Sender::from_owned_fd(grow_pipe(OwnedFd::from(s)))).transpose()?;
            let stdout =
                child.stdout.take().map(|s| pipe::Receiver::from_owned_fd(grow_pipe(OwnedFd::from(s)))).transpose()?;
            let stderr = child.stderr.take().map(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s))).transpose()?;
            Ok::<_, std::io::Error>((stdin, stdout, stderr))
        })();
        let (stdin, stdout, stderr) = match pipes {
            Ok(p) => p,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        if !registry.insert(pid) {
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
            return Err(std::io::Error::other("shutting down"));
        }
        // std's Child never reaps unless asked; from here on the waiter thread owns reaping.
        drop(child);

        let exited = Arc::new(Mutex::new(false));
        let (tx, rx) = oneshot::channel();
        let waiter_exited = exited.clone();
        // On the runtime, the exit is a readable pidfd: no thread waits for a child, however long a
        // stalled client keeps it alive. Elsewhere (or on a kernel without pidfd), a small waiter thread.
        match exit_fd(pid) {
            Some(fd) => {
                tokio::spawn(async move {
                    let r = match fd.readable().await {
                        Ok(_) => reap(pid, &waiter_exited, started, &registry),
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(r);
                });
            }
            None => {
                std::thread::Builder::new().name(format!("wait-git-{pid}")).spawn(move || {
                    let r = wait_exit(pid).and_then(|()| reap(pid, &waiter_exited, started, &registry));
                    let _ = tx.send(r);
                })?;
            }
        }
        Ok(Running { stdin, stdout, stderr, pid, sub, args, exited, result: Some(rx), finish: false })
    }

    /// A dropped call does not kill this process: it runs to its end (and is reaped as any other). For
    /// commands that must not stop half way, e.g. `update-ref`, whose SIGKILL between taking and renaming a
    /// ref's lock would leave the lock behind and block every later update of that ref. Its input ending
    /// early makes git refuse the whole update and clean up.
    pub fn finish_on_drop(&mut self) {
        self.finish = true;
    }

    pub fn killer(&self) -> Killer {
        Killer { pid: self.pid, exited: self.exited.clone() }
    }

    /// Waits for the process to exit and reports how it ended. Call after the pipes are drained or dropped.
    pub async fn wait(mut self) -> std::io::Result<ExitInfo> {
        self.stdin.take();
        let rx = self.result.take().expect("wait called once");
        let info = rx.await.map_err(|_| std::io::Error::other("waiter thread vanished"))??;
        tracing::debug!(
            command.name = self.sub,
            command.args = ?self.args,
            command.pid = self.pid,
            command.exit_code = info.code,
            command.real_time_ms = info.real_time.as_millis() as u64,
            command.user_time_ms = info.user_time.as_millis() as u64,
            command.system_time_ms = info.system_time.as_millis() as u64,
            command.maxrss = info.max_rss_kib,
            "git command finished"
        );
        Ok(info)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.result.is_some() && !self.finish {
            self.killer().kill();
        }
    }
}

/// The git processes started and not yet reaped, so the daemon can stop all of them when it must exit.
/// Once stopped it stays closed: a call abandoned at shutdown that starts git afterwards gets its child
/// killed at once instead of leaving it behind the exiting daemon.
#[derive(Debug, Default, Clone)]
pub struct Registry(Arc<Mutex<Processes>>);

#[derive(Debug, Default)]
struct Processes {
    pids: std::collections::HashSet<i32>,
    closed: bool,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Processes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a started child; false when the registry is closed and the child must not run.
    fn insert(&self, pid: i32) -> bool {
        let mut p = self.lock();
        if p.closed {
            return false;
        }
        p.pids.insert(pid);
        true
    }

    fn remove(&self, pid: i32) {
        self.lock().pids.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.lock().pids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SIGKILLs every registered process group and refuses children started from now on. A pid leaves
    /// the registry before it is reaped, so a pid seen here cannot have been reused.
    pub fn kill_all(&self) -> usize {
        let mut p = self.lock();
        p.closed = true;
        for pid in p.pids.iter() {
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        p.pids.len()
    }
}

/// Kills a running command's process group, safely even after it has exited.
#[derive(Debug, Clone)]
pub struct Killer {
    pid: i32,
    exited: Arc<Mutex<bool>>,
}

impl Killer {
    pub fn kill(&self) {
        // Holding the lock means the waiter cannot reap in between, so the pid cannot have been reused.
        let exited = self.exited.lock().unwrap_or_else(|e| e.into_inner());
        if !*exited {
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
            }
        }
    }
}

/// Pipe capacity for bulk streams: 1 MiB (the unprivileged maximum) instead of 64 KiB means far fewer
/// wake-ups and syscalls per pack. Failure just keeps the default.
pub const PIPE_SIZE: i32 = 1 << 20;

pub fn grow_pipe(fd: OwnedFd) -> OwnedFd {
    use std::os::fd::AsRawFd;
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
    fd
}

/// A pidfd for `pid` registered with the runtime (readable once it exits); `None` off the runtime or where
/// the kernel has no pidfd.
fn exit_fd(pid: i32) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    use std::os::fd::FromRawFd;
    tokio::runtime::Handle::try_current().ok()?;
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same while registered.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
}

/// Blocks until `pid` has exited, without reaping it.
fn wait_exit(pid: i32) -> std::io::Result<()> {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// For an exited `pid`: marks it under the lock (so no kill can reach a reused pid), then reaps it with
/// `wait4` for the rusage.
fn reap(pid: i32, exited: &Mutex<bool>, started: Instant, registry: &Registry) -> std::io::Result<ExitInfo> {
    let real_time = started.elapsed();
    let mut guard = exited.lock().unwrap_or_else(|e| e.into_inner());
    *guard = true;
    registry.remove(pid);
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    drop(guard);
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    let (code, signal) = if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (-1, None)
    };
    Ok(ExitInfo {
        code,
        signal,
        real_time,
        user_time: tv(usage.ru_utime),
        system_time: tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_starts_once_everything_was_killed() {
        let registry = Registry::default();
        let sleeper = || {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30");
            cmd
        };
        let running = Running::start(sleeper(), "sleep", Vec::new(), registry.clone()).unwrap();
        assert_eq!(registry.kill_all(), 1);
        let info = running.wait().await.unwrap();
        assert_eq!(info.signal, Some(libc::SIGKILL), "the running child was killed");
        let late = Running::start(sleeper(), "sleep", Vec::new(), registry.clone());
        assert_eq!(late.err().map(|e| e.to_string()).as_deref(), Some("shutting down"));
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_process_left_to_finish_is_not_killed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let run = |finish: bool, marker: &std::path::Path| {
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c").arg(format!("sleep 0.3; touch {}", marker.display()));
            let mut r = Running::start(cmd, "sh", Vec::new(), Registry::default()).unwrap();
            if finish {
                r.finish_on_drop();
            }
            drop(r);
        };
        run(true, &done);
        let killed = dir.path().join("killed");
        run(false, &killed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(done.exists(), "left to finish");
        assert!(!killed.exists(), "killed on drop");
    }
}

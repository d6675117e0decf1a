//! The worker pool: supervised `rgitaly-worker` processes serving the heavy write RPCs.
//!
//! Writes that build objects and move refs (merges, commits, branch and tag changes) run in separate
//! processes so a leak or a crash there never takes the daemon down, and a worker can be replaced without
//! dropping a call. One worker is kept as a passive, healthy standby so a lost active worker is replaced at
//! once. This module owns the processes and their roles; `proxy` forwards calls to them; nothing else talks
//! to workers.

pub mod config;
pub mod fence;
pub mod proxy;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, Notify};
use tonic::transport::Channel;

pub use config::PoolConfig;

use crate::metrics;

/// A worker's place in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Starting,
    Active,
    Standby,
    Draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Failing,
}

/// Why a pool operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no worker named {0:?}")]
    UnknownWorker(String),
    #[error("worker {0:?} is not running")]
    NotRunning(String),
    #[error("worker {0:?} is the last healthy worker; not rotating it")]
    LastHealthy(String),
    #[error("start worker {name} ({bin}): {source}")]
    Spawn { name: String, bin: String, source: std::io::Error },
    #[error("worker {name} did not become healthy within {secs}s")]
    NotReady { name: String, secs: u64 },
    #[error("create {0}: {1}")]
    SocketDir(String, std::io::Error),
}

/// One running worker process.
#[derive(Debug)]
pub struct Worker {
    pub name: String,
    pub pid: i32,
    pub socket: PathBuf,
    pub channel: Channel,
    pub started: Instant,
    in_flight: AtomicU64,
    idle: Notify,
    /// Set before the supervisor stops it on purpose, so its exit is not counted as a crash.
    planned_stop: AtomicBool,
    exited: AtomicBool,
    exit_notify: Notify,
    /// Whether every process of the worker's session (its git children) was gone after it exited.
    settled: tokio::sync::OnceCell<bool>,
}

impl Worker {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }

    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 || self.has_exited() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    async fn wait_exit(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.exit_notify.notified();
            if self.has_exited() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.has_exited();
            }
        }
    }

    /// After the worker has exited, waits for what it left behind: its session's processes (git children
    /// that may be about to move a ref) are let finish — they hold all their input, and one writing to the
    /// dead worker gets EPIPE — since a signal can leave a ref lock behind; any still running after
    /// `SETTLE_WAIT` is killed; then the ref updates the daemon runs for it (`fence`) are waited for. True
    /// once none is left, so the repository can no longer change on this worker's behalf; false when the worker did not exit or its processes would not go. Computed once;
    /// every caller gets the same answer.
    pub async fn settle(&self) -> bool {
        *self
            .settled
            .get_or_init(|| async {
                if !self.wait_exit(SETTLE_EXIT_WAIT).await {
                    return false;
                }
                let started = Instant::now();
                loop {
                    let left = session_members(self.pid);
                    if left.is_empty() {
                        // And the ref updates the daemon runs for it are over, and no more can start.
                        fence::close(self.pid as u32).await;
                        return true;
                    }
                    if started.elapsed() > SETTLE_GIVE_UP {
                        tracing::error!(worker = %self.name, pid = self.pid, left = left.len(), "processes of a dead worker would not exit");
                        return false;
                    }
                    if started.elapsed() > SETTLE_WAIT {
                        tracing::warn!(worker = %self.name, pid = self.pid, left = ?left, "killing processes a dead worker left running");
                        for pid in &left {
                            // SAFETY: plain kill(2) of a member of the dead worker's session, seen a moment ago.
                            unsafe { libc::kill(*pid, libc::SIGKILL) };
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
    }

    fn signal(&self, sig: i32) {
        if !self.has_exited() {
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }
}

/// A call's hold on a worker: counted in flight until dropped.
pub struct Lease {
    pub worker: Arc<Worker>,
    /// A write's share in its repository's writer (see [`Pool::lease_writing`]).
    writing: Option<(Arc<Inner>, PathBuf)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.worker.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.worker.idle.notify_waiters();
        }
        if let Some((inner, repo)) = self.writing.take() {
            let mut writers = inner.writers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = writers.get_mut(&repo) {
                w.calls -= 1;
                if w.calls == 0 {
                    writers.remove(&repo);
                }
            }
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("worker", &self.worker.name).finish_non_exhaustive()
    }
}

/// The worker the writes to one repository go to, while any is in flight.
#[derive(Debug)]
struct Writer {
    pid: i32,
    calls: usize,
}

/// What the admin API shows about a worker.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub name: String,
    pub pid: i32,
    pub socket_path: String,
    pub role: Role,
    pub rss_bytes: u64,
    pub uptime_seconds: u64,
    pub starts: u64,
    pub crashes: u64,
    pub in_flight: u64,
    pub health: Health,
    pub health_latency_ms: u64,
    pub last_rotation_reason: String,
    pub last_rotation_unix: i64,
    pub rotations: u64,
}

#[derive(Debug)]
struct Slot {
    name: String,
    role: Role,
    worker: Option<Arc<Worker>>,
    generation: u64,
    starts: u64,
    crashes: u64,
    crash_times: VecDeque<Instant>,
    health: Health,
    health_latency_ms: u64,
    failing_since: Option<Instant>,
    rss: u64,
    high_rss_since: Option<Instant>,
    last_rotation_reason: String,
    last_rotation_unix: i64,
    rotations: u64,
}

struct Inner {
    cfg: PoolConfig,
    slots: Mutex<Vec<Slot>>,
    /// At most one rotation at a time.
    rotation: tokio::sync::Mutex<()>,
    exits: mpsc::UnboundedSender<(String, i32)>,
    stopping: AtomicBool,
    /// A memory or health rotation is scheduled or running; the loops schedule no other meanwhile.
    auto_rotation: AtomicBool,
    /// Repositories with writes in flight, by canonical path.
    writers: Mutex<std::collections::HashMap<PathBuf, Writer>>,
}

/// The pool handle shared by the proxy, the admin service and the daemon.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// How long a new worker has to answer its first health check.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one health check.
const HEALTH_DEADLINE: Duration = Duration::from_secs(2);
/// Crashes counted toward the circuit breaker within this window.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Removes `workers.<pid>` directories beside `ours` left by daemons that are gone (killed with SIGKILL, say).
fn remove_stale_socket_dirs(ours: &std::path::Path) {
    let Some(parent) = ours.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("workers.")).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let gone =
            unsafe { libc::kill(pid, 0) } == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How long `settle` waits for a worker that failed a call to exit, and for what it left to go.
const SETTLE_EXIT_WAIT: Duration = Duration::from_secs(5);
const SETTLE_WAIT: Duration = Duration::from_secs(5);
const SETTLE_GIVE_UP: Duration = Duration::from_secs(7);

/// Live (not zombie) processes of session `sid`, from /proc. A worker leads its own session, and its git
/// children (each in its own process group) stay in it after the worker is gone.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp session …; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().take(4).collect();
        if let [state, _ppid, _pgrp, session] = fields[..] {
            if session.parse() == Ok(sid) && !matches!(state, "Z" | "X") {
                out.push(pid);
            }
        }
    }
    out
}

/// Pauses between failed attempts to start a slot's worker.
const RESPAWN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Longest wait between SIGTERM and SIGKILL for a stopped worker.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// At the daemon's stop, how long a worker has to exit after SIGTERM once the deadline has passed.
const STOP_GRACE: Duration = Duration::from_secs(1);

impl Pool {
    /// Starts every worker, waits until they are healthy, and begins supervising them.
    pub async fn start(cfg: PoolConfig) -> Result<Pool, PoolError> {
        metrics::register_all();
        remove_stale_socket_dirs(&cfg.socket_dir);
        std::fs::create_dir_all(&cfg.socket_dir)
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&cfg.socket_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| PoolError::SocketDir(cfg.socket_dir.display().to_string(), e))?;
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let slots = (0..cfg.num_workers)
            .map(|i| Slot {
                name: format!("worker-{i}"),
                role: Role::Starting,
                worker: None,
                generation: 0,
                starts: 0,
                crashes: 0,
                crash_times: VecDeque::new(),
                health: Health::Unknown,
                health_latency_ms: 0,
                failing_since: None,
                rss: 0,
                high_rss_since: None,
                last_rotation_reason: String::new(),
                last_rotation_unix: 0,
                rotations: 0,
            })
            .collect();
        let pool = Pool {
            inner: Arc::new(Inner {
                cfg,
                slots: Mutex::new(slots),
                rotation: tokio::sync::Mutex::new(()),
                exits: exits_tx,
                stopping: AtomicBool::new(false),
                auto_rotation: AtomicBool::new(false),
                writers: Mutex::default(),
            }),
        };
        let names: Vec<String> = pool.lock().iter().map(|s| s.name.clone()).collect();
        let started = futures::future::join_all(names.iter().map(|n| pool.spawn(n))).await;
        for r in started {
            r?;
        }
        tokio::spawn(pool.clone().exit_loop(exits_rx));
        tokio::spawn(pool.clone().memory_loop());
        tokio::spawn(pool.clone().health_loop());
        Ok(pool)
    }

    /// How long a stopped worker has between SIGTERM and SIGKILL (it has no calls left by then).
    fn term_grace(&self) -> Duration {
        TERM_GRACE.min(self.inner.cfg.graceful_restart_timeout)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.cfg
    }

    /// Starts the worker process for a slot and waits until it answers health checks; then gives it a role.
    async fn spawn(&self, name: &str) -> Result<(), PoolError> {
        let cfg = &self.inner.cfg;
        let generation = {
            let mut slots = self.lock();
            let slot = slots.iter_mut().find(|s| s.name == name).ok_or(PoolError::UnknownWorker(name.into()))?;
            slot.generation += 1;
            slot.role = Role::Starting;
            slot.health = Health::Unknown;
            slot.failing_since = None;
            slot.high_rss_since = None;
            slot.generation
        };
        let socket = cfg.socket_dir.join(format!("{name}.{generation}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut cmd = tokio::process::Command::new(&cfg.worker_bin);
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&cfg.config_path)
            .arg("--name")
            .arg(name)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false);
        // Its own session: a terminal's Ctrl-C reaches the daemon, which stops workers in order, not the
        // workers directly; and what a dead worker leaves behind can be found by session (see `settle`).
        // SAFETY: setsid(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| if libc::setsid() == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
        }
        let mut child = cmd.spawn().map_err(|source| PoolError::Spawn {
            name: name.into(),
            bin: cfg.worker_bin.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or(0) as i32;
        fence::admit(pid as u32);
        let channel = crate::client::unix_channel_lazy(&socket);
        let worker = Arc::new(Worker {
            name: name.to_string(),
            pid,
            socket: socket.clone(),
            channel,
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            idle: Notify::new(),
            planned_stop: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            exit_notify: Notify::new(),
            settled: tokio::sync::OnceCell::new(),
        });
        {
            let mut slots = self.lock();
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                slot.worker = Some(worker.clone());
                slot.starts += 1;
            }
        }
        metrics::SUPERVISOR_STARTS.with_label_values(&[name]).inc();
        tracing::info!(worker = name, pid, "worker started");

        // Notice the exit the moment it happens.
        let exits = self.inner.exits.clone();
        let watched = worker.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            watched.exited.store(true, Ordering::SeqCst);
            watched.exit_notify.notify_waiters();
            watched.idle.notify_waiters();
            let _ = std::fs::remove_file(&watched.socket);
            tracing::info!(worker = %watched.name, pid = watched.pid, status = ?status.ok(), "worker exited");
            let _ = exits.send((watched.name.clone(), watched.pid));
            // Whatever it left running goes now, whether or not a call is waiting to know.
            watched.settle().await;
        });

        // Ready when it answers a health check.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if worker.has_exited() {
                return Err(PoolError::NotReady { name: name.into(), secs: 0 });
            }
            if self.inner.stopping.load(Ordering::SeqCst) {
                stop_worker(&worker, self.term_grace()).await;
                return Ok(());
            }
            if check_health(&worker).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                worker.planned_stop.store(true, Ordering::SeqCst);
                worker.signal(libc::SIGKILL);
                return Err(PoolError::NotReady { name: name.into(), secs: READY_TIMEOUT.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut slots = self.lock();
        let role = next_role(&slots, cfg.num_workers);
        if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
            if slot.worker.as_ref().is_some_and(|w| Arc::ptr_eq(w, &worker)) {
                slot.role = role;
                slot.health = Health::Ok;
                tracing::info!(worker = name, pid, role = ?role, "worker ready");
            }
        }
        Ok(())
    }

    /// The active worker with the fewest calls in flight, leased to one call.
    pub fn lease(&self) -> Option<Lease> {
        self.lease_excluding(&[])
    }

    /// As `lease`, skipping workers (by pid) that already failed this call.
    pub fn lease_excluding(&self, tried: &[i32]) -> Option<Lease> {
        let worker = Self::pick(&self.lock(), tried)?;
        worker.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(Lease { worker, writing: None })
    }

    /// As `lease_excluding`, for a write to the repository at `repo` (its canonical path): it goes to the
    /// active worker already writing that repository, if any. For writes that take turns on one branch (a
    /// wiki's): in one worker they take them in-process and overlap their hooks and syncs, where across
    /// workers they would wait for each other's whole write.
    pub fn lease_writing(&self, repo: &std::path::Path, tried: &[i32]) -> Option<Lease> {
        let slots = self.lock();
        let mut writers = self.inner.writers.lock().unwrap_or_else(|e| e.into_inner());
        let writing = writers.get(repo).and_then(|w| {
            let mut active = slots.iter().filter(|s| s.role == Role::Active).filter_map(|s| s.worker.as_ref());
            active.find(|x| x.pid == w.pid && !x.has_exited() && !tried.contains(&x.pid)).cloned()
        });
        let worker = writing.or_else(|| Self::pick(&slots, tried))?;
        worker.in_flight.fetch_add(1, Ordering::SeqCst);
        let w = writers.entry(repo.to_path_buf()).or_insert(Writer { pid: worker.pid, calls: 0 });
        w.pid = worker.pid;
        w.calls += 1;
        Some(Lease { worker, writing: Some((self.inner.clone(), repo.to_path_buf())) })
    }

    /// The active worker with the fewest calls in flight, skipping `tried`; a standby serves only when no
    /// active worker is left (e.g. during a crash storm).
    fn pick(slots: &[Slot], tried: &[i32]) -> Option<Arc<Worker>> {
        let pick = |role: Role| {
            slots
                .iter()
                .filter(|s| s.role == role)
                .filter_map(|s| s.worker.as_ref())
                .filter(|w| !w.has_exited() && !tried.contains(&w.pid))
                .min_by_key(|w| w.in_flight())
                .cloned()
        };
        pick(Role::Active).or_else(|| pick(Role::Standby))
    }

    pub fn list(&self) -> Vec<WorkerInfo> {
        let slots = self.lock();
        slots
            .iter()
            .map(|s| {
                let w = s.worker.as_ref().filter(|w| !w.has_exited());
                WorkerInfo {
                    name: s.name.clone(),
                    pid: w.map(|w| w.pid).unwrap_or(0),
                    socket_path: w.map(|w| w.socket.display().to_string()).unwrap_or_default(),
                    role: s.role,
                    rss_bytes: s.rss,
                    uptime_seconds: w.map(|w| w.started.elapsed().as_secs()).unwrap_or(0),
                    starts: s.starts,
                    crashes: s.crashes,
                    in_flight: w.map(|w| w.in_flight()).unwrap_or(0),
                    health: s.health,
                    health_latency_ms: s.health_latency_ms,
                    last_rotation_reason: s.last_rotation_reason.clone(),
                    last_rotation_unix: s.last_rotation_unix,
                    rotations: s.rotations,
                }
            })
            .collect()
    }

    /// Gracefully replaces one worker: out of rotation, drained, stopped, respawned as standby.
    pub async fn rotate(&self, name: &str, reason: &str) -> Result<(), PoolError> {
        let _one_at_a_time = self.inner.rotation.lock().await;
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let worker = {
            let mut slots = self.lock();
            let idx = slots.iter().position(|s| s.name == name).ok_or(PoolError::UnknownWorker(name.into()))?;
            let worker = match &slots[idx].worker {
                Some(w) if !w.has_exited() => w.clone(),
                _ => return Err(PoolError::NotRunning(name.into())),
            };
            let others_healthy = slots.iter().enumerate().any(|(i, s)| {
                i != idx
                    && matches!(s.role, Role::Active | Role::Standby)
                    && s.health != Health::Failing
                    && s.worker.as_ref().is_some_and(|w| !w.has_exited())
            });
            if !others_healthy {
                return Err(PoolError::LastHealthy(name.into()));
            }
            if slots[idx].role == Role::Active {
                promote_standby(&mut slots);
            }
            let slot = &mut slots[idx];
            slot.role = Role::Draining;
            slot.last_rotation_reason = reason.to_string();
            slot.last_rotation_unix = unix_now();
            slot.rotations += 1;
            worker.planned_stop.store(true, Ordering::SeqCst);
            worker
        };
        tracing::info!(worker = name, pid = worker.pid, reason, in_flight = worker.in_flight(), "rotating worker");
        if !worker.wait_idle(self.inner.cfg.graceful_restart_timeout).await {
            tracing::warn!(worker = name, in_flight = worker.in_flight(), "drain timed out; stopping anyway");
        }
        // A worker rotated for failing health checks is hung: it will not act on SIGTERM.
        let grace = if reason == "health" { Duration::ZERO } else { self.term_grace() };
        stop_worker(&worker, grace).await;
        let spawned = self.spawn(name).await;
        if let Err(e) = &spawned {
            // The slot must not stay empty: keep trying, backing off, until it is up.
            tracing::error!(worker = name, error = %e, "respawn after rotation failed; retrying");
            let (pool, name) = (self.clone(), name.to_string());
            tokio::spawn(async move { pool.respawn_until_up(&name, RESPAWN_BACKOFF_MIN).await });
        }
        spawned
    }

    /// Rotates every worker, one at a time; returns the names rotated.
    pub async fn rotate_all(&self, reason: &str) -> Result<Vec<String>, PoolError> {
        let names: Vec<String> = self.lock().iter().map(|s| s.name.clone()).collect();
        let mut done = Vec::new();
        for n in names {
            self.rotate(&n, reason).await?;
            done.push(n);
        }
        Ok(done)
    }

    /// Stops every worker: no new calls, in-flight calls finish (until `deadline`, and no longer than the
    /// workers' graceful timeout), then exit: SIGTERM, SIGKILL after at most [`STOP_GRACE`] past the deadline.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let workers: Vec<Arc<Worker>> = self
            .lock()
            .iter_mut()
            .filter_map(|s| {
                s.role = Role::Draining;
                s.worker.clone()
            })
            .collect();
        let limit = self
            .inner
            .cfg
            .graceful_restart_timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        futures::future::join_all(workers.iter().map(|w| async move {
            w.planned_stop.store(true, Ordering::SeqCst);
            w.wait_idle(limit).await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            stop_worker(w, self.term_grace().min(left.max(STOP_GRACE))).await;
        }))
        .await;
        let _ = std::fs::remove_dir_all(&self.inner.cfg.socket_dir);
    }

    /// Handles unplanned exits: promote the standby, count the crash, respawn (circuit breaker permitting).
    async fn exit_loop(self, mut exits: mpsc::UnboundedReceiver<(String, i32)>) {
        while let Some((name, pid)) = exits.recv().await {
            if self.inner.stopping.load(Ordering::SeqCst) {
                continue;
            }
            {
                let mut slots = self.lock();
                let Some(idx) = slots.iter().position(|s| s.name == name) else { continue };
                let slot = &slots[idx];
                let current = slot.worker.as_ref().is_some_and(|w| w.pid == pid);
                let planned = slot.worker.as_ref().is_some_and(|w| w.planned_stop.load(Ordering::SeqCst));
                // A worker dying while starting is handled by the start itself.
                if !current || planned || slot.role == Role::Starting {
                    continue;
                }
                if slot.role == Role::Active {
                    promote_standby(&mut slots);
                }
                slots[idx].role = Role::Starting;
            }
            tracing::warn!(worker = %name, pid, "worker crashed; respawning");
            let pool = self.clone();
            tokio::spawn(async move { pool.respawn_after_crash(&name).await });
        }
    }

    /// Counts a crash and respawns; when crashes come too fast, waits `crash_wait_time` first.
    async fn respawn_after_crash(&self, name: &str) {
        let wait = self.record_crash(name);
        self.respawn_until_up(name, wait).await;
    }

    /// Spawns the slot's worker after `wait`, and again after each failure with a doubling pause (up to
    /// `RESPAWN_BACKOFF_MAX`), until it is up or the pool stops: the pool always converges back to
    /// `num_workers`.
    async fn respawn_until_up(&self, name: &str, mut wait: Duration) {
        loop {
            tokio::time::sleep(wait).await;
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            match self.spawn(name).await {
                Ok(()) => return,
                Err(e) => {
                    metrics::SUPERVISOR_SPAWN_FAILURES.with_label_values(&[name]).inc();
                    wait = (wait * 2).clamp(RESPAWN_BACKOFF_MIN, RESPAWN_BACKOFF_MAX);
                    tracing::error!(worker = name, error = %e, retry_ms = wait.as_millis() as u64, "respawn failed");
                }
            }
        }
    }

    fn record_crash(&self, name: &str) -> Duration {
        let cfg = &self.inner.cfg;
        let mut slots = self.lock();
        let Some(slot) = slots.iter_mut().find(|s| s.name == name) else { return Duration::ZERO };
        slot.crashes += 1;
        slot.last_rotation_reason = "crash".into();
        slot.last_rotation_unix = unix_now();
        let now = Instant::now();
        slot.crash_times.push_back(now);
        while slot.crash_times.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            slot.crash_times.pop_front();
        }
        if slot.crash_times.len() as u32 >= cfg.crash_threshold {
            tracing::error!(
                worker = name,
                crashes = slot.crash_times.len(),
                wait_ms = cfg.crash_wait_time.as_millis() as u64,
                "worker crash loop: circuit breaker open, waiting before respawning"
            );
            slot.crash_times.clear();
            cfg.crash_wait_time
        } else {
            Duration::ZERO
        }
    }

    /// Starts an automatic rotation unless one is already scheduled or running; returns whether it did.
    fn schedule_rotation(&self, name: String, reason: &'static str) -> bool {
        if self.inner.auto_rotation.swap(true, Ordering::SeqCst) {
            return false;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if let Err(e) = pool.rotate(&name, reason).await {
                tracing::warn!(worker = %name, reason, error = %e, "rotation skipped");
            }
            pool.inner.auto_rotation.store(false, Ordering::SeqCst);
        });
        true
    }

    async fn memory_loop(self) {
        let cfg = self.inner.cfg.clone();
        let mut tick = tokio::time::interval(cfg.memory_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            let mut rotate = None;
            {
                let mut slots = self.lock();
                let now = Instant::now();
                for slot in slots.iter_mut() {
                    let Some(w) = slot.worker.as_ref().filter(|w| !w.has_exited()) else { continue };
                    let rss = read_rss(w.pid).unwrap_or(0);
                    slot.rss = rss;
                    metrics::SUPERVISOR_RSS.with_label_values(&[slot.name.as_str()]).set(rss as i64);
                    if rss > cfg.max_rss && matches!(slot.role, Role::Active | Role::Standby) {
                        let since = *slot.high_rss_since.get_or_insert(now);
                        if now.duration_since(since) >= cfg.restart_delay && rotate.is_none() {
                            rotate = Some(slot.name.clone());
                        }
                    } else {
                        slot.high_rss_since = None;
                    }
                }
            }
            if let Some(name) = rotate {
                if self.schedule_rotation(name.clone(), "memory") {
                    metrics::MEMORY_TERMINATIONS.with_label_values(&[name.as_str()]).inc();
                    tracing::warn!(worker = %name, max_rss = cfg.max_rss, "worker above max_rss for restart_delay");
                }
            }
        }
    }

    async fn health_loop(self) {
        let cfg = self.inner.cfg.clone();
        let mut tick = tokio::time::interval(cfg.health_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            let workers: Vec<Arc<Worker>> = self
                .lock()
                .iter()
                .filter(|s| matches!(s.role, Role::Active | Role::Standby))
                .filter_map(|s| s.worker.clone())
                .filter(|w| !w.has_exited())
                .collect();
            let results = futures::future::join_all(workers.iter().map(|w| async move {
                let started = Instant::now();
                (w.clone(), check_health(w).await.map(|_| started.elapsed()))
            }))
            .await;
            let mut rotate = None;
            {
                let mut slots = self.lock();
                let now = Instant::now();
                for (w, result) in results {
                    let Some(slot) = slots.iter_mut().find(|s| s.worker.as_ref().is_some_and(|x| Arc::ptr_eq(x, &w)))
                    else {
                        continue;
                    };
                    let status = if result.is_ok() { "ok" } else { "failed" };
                    metrics::SUPERVISOR_HEALTH_CHECKS.with_label_values(&[slot.name.as_str(), status]).inc();
                    match result {
                        Ok(latency) => {
                            slot.health = Health::Ok;
                            slot.health_latency_ms = latency.as_millis() as u64;
                            slot.failing_since = None;
                        }
                        Err(e) => {
                            slot.health = Health::Failing;
                            let since = *slot.failing_since.get_or_insert(now);
                            tracing::warn!(worker = %slot.name, error = %e, "worker health check failed");
                            // A worker gets a cool-off after start before failures count.
                            let cooled = w.started.elapsed() >= cfg.health_failure_timeout;
                            if cooled && now.duration_since(since) >= cfg.health_failure_timeout && rotate.is_none() {
                                rotate = Some(slot.name.clone());
                            }
                        }
                    }
                }
            }
            if let Some(name) = rotate {
                self.schedule_rotation(name, "health");
            }
        }
    }
}

/// Promotes the standby (if any and healthy) to active.
fn promote_standby(slots: &mut [Slot]) {
    if let Some(s) = slots.iter_mut().find(|s| {
        s.role == Role::Standby && s.health != Health::Failing && s.worker.as_ref().is_some_and(|w| !w.has_exited())
    }) {
        s.role = Role::Active;
        tracing::info!(worker = %s.name, "standby promoted to active");
    }
}

/// The role a newly ready worker takes: active if none is serving, else standby if there is none, else
/// active.
fn next_role(slots: &[Slot], num_workers: u32) -> Role {
    let active = slots.iter().filter(|s| s.role == Role::Active).count() as u32;
    let standby = slots.iter().any(|s| s.role == Role::Standby);
    if active == 0 {
        Role::Active
    } else if !standby || active >= num_workers - 1 {
        Role::Standby
    } else {
        Role::Active
    }
}

async fn stop_worker(w: &Worker, grace: Duration) {
    w.signal(libc::SIGTERM);
    if !w.wait_exit(grace).await {
        tracing::warn!(worker = %w.name, pid = w.pid, "worker ignored SIGTERM; killing");
        w.signal(libc::SIGKILL);
        w.wait_exit(TERM_GRACE).await;
    }
}

async fn check_health(w: &Worker) -> Result<(), String> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let mut client = HealthClient::new(w.channel.clone());
    let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
    req.set_timeout(HEALTH_DEADLINE);
    match tokio::time::timeout(HEALTH_DEADLINE, client.check(req)).await {
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(r)) => Err(format!("status {}", r.get_ref().status)),
        Ok(Err(e)) => Err(e.message().to_string()),
        Err(_) => Err("deadline exceeded".into()),
    }
}

/// Resident set size from /proc, in bytes.
pub fn read_rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

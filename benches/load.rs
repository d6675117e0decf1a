//! Load script (run: `cargo build --release --workspace && cargo bench --bench load`).
//!
//! Starts the release daemon on a temp dir (Unix socket only, `/metrics` on a loopback port) with
//! `[[concurrency]]` limits and bounded queues, seeds a repository of a few MB and a few hundred commits with
//! plain git, then runs many concurrent clients for a bounded time and a bounded number of operations: real
//! `git clone`s through rgitaly-ssh (~10%) and unary gRPC calls. Reports throughput and latency per kind,
//! errors by gRPC code and limiter reason, the peak RSS of the daemon, its workers and the git it runs, and
//! the limiter queue as seen on `/metrics`.
//!
//! Environment: `LOAD_SECS` (30), `LOAD_OPS` (50000), `LOAD_CLIENTS` (200), `LOAD_CLONE_PERCENT` (10).
//! Exits non-zero if the daemon died, `/metrics` could not be read, or a queue grew past its
//! `max_queue_size`; there are no timing assertions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rgitaly::client::AuthChannel;
use rgitaly::layers::limiter::{QUEUE_FULL, QUEUE_TIMEOUT};
use rgitaly::proto::gitaly::ref_service_client::RefServiceClient;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::ListWorkersRequest;

const REPO: &str = "load.git";
/// The limits under test (per RPC per repository).
const CLONE_RPC: &str = "/gitaly.SSHService/SSHUploadPack";
const CLONE_MAX_PER_REPO: u32 = 4;
const CLONE_QUEUE: u32 = 8;
const CLONE_QUEUE_WAIT: &str = "3s";
const UNARY_RPC: &str = "/gitaly.RepositoryService/HasLocalBranches";
const UNARY_MAX_PER_REPO: u32 = 2;
const UNARY_QUEUE: u32 = 16;
const UNARY_QUEUE_WAIT: &str = "50ms";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR");
    c
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A bare repository of `commits` commits, each rewriting two of 40 files with ~8 KiB of poorly
/// compressible text, written with `git fast-import`.
fn seed_repository(path: &Path, commits: usize) {
    run(git(Path::new("/")).args(["init", "--quiet", "--bare", "-b", "main"]).arg(path));
    let mut stream = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..commits {
        let message = format!("commit {i}\n");
        write!(
            stream,
            "commit refs/heads/main\nmark :{}\ncommitter Load <load@example.com> {} +0000\ndata {}\n{message}",
            i + 1,
            1_600_000_000 + i * 60,
            message.len()
        )
        .unwrap();
        for f in 0..2 {
            let content: String = (0..8192 / 16).map(|_| format!("{:016x}", next())).collect();
            let name = format!("dir{}/file{}.txt", (i + f) % 4, (i * 2 + f) % 40);
            write!(stream, "M 100644 inline {name}\ndata {}\n{content}\n", content.len()).unwrap();
        }
    }
    if commits > 0 {
        writeln!(stream, "reset refs/heads/side\nfrom :{}\n", commits / 2).unwrap();
    }
    let mut child =
        git(path).args(["fast-import", "--quiet"]).stdin(Stdio::piped()).spawn().expect("spawn git fast-import");
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success(), "git fast-import failed");
    run(git(path).args(["repack", "-a", "-d", "-q"]));
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A field (`VmRSS`, `VmHWM`) of /proc/PID/status, in bytes.
fn proc_status(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// All processes below `root` (not `root` itself).
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Peak memory seen by the sampler.
#[derive(Default)]
struct Memory {
    daemon_rss: u64,
    /// Peak VmHWM by worker pid.
    workers: BTreeMap<i32, u64>,
    /// Peak of the summed RSS of the daemon's other descendants (git and its helpers).
    git_sum: u64,
    git_max_procs: usize,
}

/// One scrape of `/metrics`: `(name, labels, value)`.
async fn scrape(port: u16) -> Option<Vec<(String, String, f64)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some((name.to_string(), labels.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
        .map(|v| v.trim_end_matches('"'))
        .unwrap_or("")
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Kind {
    Clone,
    ServerInfo,
    RepositoryExists,
    HasLocalBranches,
    FindDefaultBranchName,
}

#[derive(Default)]
struct Stats {
    ok: BTreeMap<Kind, Vec<Duration>>,
    /// (kind, gRPC code or "git exit") → count.
    errors: BTreeMap<(Kind, String), u64>,
    /// (kind, limiter message) → count.
    limiter: BTreeMap<(Kind, &'static str), u64>,
    /// One example message per (kind, code) for errors that are not the limiter's.
    examples: BTreeMap<(Kind, String), String>,
}

impl Stats {
    fn error(&mut self, kind: Kind, code: String, message: &str) {
        for reason in [QUEUE_FULL, QUEUE_TIMEOUT] {
            if message.contains(reason) {
                *self.limiter.entry((kind, reason)).or_default() += 1;
                *self.errors.entry((kind, code)).or_default() += 1;
                return;
            }
        }
        self.examples.entry((kind, code.clone())).or_insert_with(|| message.trim().to_string());
        *self.errors.entry((kind, code)).or_default() += 1;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A mixing hash of the operation number: picks the kind deterministically.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn repository() -> Option<Repository> {
    Some(Repository { storage_name: "default".into(), relative_path: REPO.into(), ..Default::default() })
}

async fn unary(kind: Kind, channel: &AuthChannel) -> Result<(), tonic::Status> {
    match kind {
        Kind::ServerInfo => ServerServiceClient::new(channel.clone()).server_info(ServerInfoRequest {}).await.map(drop),
        Kind::RepositoryExists => {
            let r = RepositoryServiceClient::new(channel.clone())
                .repository_exists(RepositoryExistsRequest { repository: repository() })
                .await?;
            if !r.into_inner().exists {
                return Err(tonic::Status::internal("RepositoryExists answered false"));
            }
            Ok(())
        }
        Kind::HasLocalBranches => RepositoryServiceClient::new(channel.clone())
            .has_local_branches(HasLocalBranchesRequest { repository: repository() })
            .await
            .map(drop),
        Kind::FindDefaultBranchName => RefServiceClient::new(channel.clone())
            .find_default_branch_name(FindDefaultBranchNameRequest { repository: repository() })
            .await
            .map(drop),
        Kind::Clone => unreachable!("clones are not gRPC calls here"),
    }
}

struct Env {
    ssh: PathBuf,
    address: String,
    clones: PathBuf,
}

/// One `git clone --bare` through rgitaly-ssh; Err carries git's stderr.
async fn clone(env: &Env, n: u64) -> Result<(), String> {
    let dest = env.clones.join(format!("c{n}.git"));
    let out = tokio::process::Command::new("git")
        .args(["clone", "--bare", "--quiet", &format!("ssh://rgitaly/default/{REPO}")])
        .arg(&dest)
        .current_dir(&env.clones)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", &env.ssh)
        .env("GITALY_ADDRESS", &env.address)
        .env_remove("GIT_DIR")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("spawn git: {e}"))?;
    let _ = tokio::fs::remove_dir_all(&dest).await;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::main]
async fn main() {
    let secs: u64 = env_or("LOAD_SECS", 30);
    let max_ops: u64 = env_or("LOAD_OPS", 50_000);
    let clients: usize = env_or("LOAD_CLIENTS", 200);
    let clone_percent: u64 = env_or("LOAD_CLONE_PERCENT", 10);

    let daemon_bin = PathBuf::from(env!("CARGO_BIN_EXE_rgitaly"));
    let ssh = PathBuf::from(env!("CARGO_BIN_EXE_rgitaly-ssh"));
    if !daemon_bin.with_file_name("rgitaly-worker").exists() {
        eprintln!("build the worker first: cargo build --release --workspace");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let clones = dir.path().join("clones");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::create_dir_all(&clones).unwrap();

    let seeded = Instant::now();
    let bare = storage.join(REPO);
    seed_repository(&bare, 300);
    let commits = run(git(&bare).args(["rev-list", "--count", "main"]));
    println!(
        "repository: {commits} commits, {:.1} MiB on disk, seeded in {:.1} s",
        mib(dir_size(&bare)),
        seeded.elapsed().as_secs_f64()
    );

    // `prometheus_listen_addr = "127.0.0.1:0"` binds, but the daemon only logs the configured address, so
    // pick a free port here.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let socket = dir.path().join("rgitaly.socket");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "socket_path = {socket:?}\ninternal_socket_dir = {internal:?}\nprometheus_listen_addr = \"127.0.0.1:{port}\"\n\
             [[storage]]\nname = \"default\"\npath = {storage:?}\n[logging]\nlevel = \"error\"\n\
             [[concurrency]]\nrpc = \"{CLONE_RPC}\"\nmax_per_repo = {CLONE_MAX_PER_REPO}\nmax_queue_size = {CLONE_QUEUE}\nmax_queue_wait = \"{CLONE_QUEUE_WAIT}\"\n\
             [[concurrency]]\nrpc = \"{UNARY_RPC}\"\nmax_per_repo = {UNARY_MAX_PER_REPO}\nmax_queue_size = {UNARY_QUEUE}\nmax_queue_wait = \"{UNARY_QUEUE_WAIT}\"\n",
            internal = dir.path().join("internal"),
        ),
    )
    .unwrap();
    println!(
        "limits: {CLONE_RPC} max_per_repo {CLONE_MAX_PER_REPO} max_queue_size {CLONE_QUEUE} max_queue_wait {CLONE_QUEUE_WAIT}; \
         {UNARY_RPC} max_per_repo {UNARY_MAX_PER_REPO} max_queue_size {UNARY_QUEUE} max_queue_wait {UNARY_QUEUE_WAIT}"
    );
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon(
        Command::new(&daemon_bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start rgitaly"),
    );
    let pid = daemon.0.id() as i32;
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() || scrape(port).await.is_none() {
        if daemon.0.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(30) {
            eprintln!("the daemon did not come up:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            drop(daemon);
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let address = format!("unix:{}", socket.display());
    let admin_channel = rgitaly::client::connect(&address, None).await.expect("connect");

    // Only RPCs the daemon implements: probe the optional one.
    let mut unary_kinds = vec![Kind::ServerInfo, Kind::RepositoryExists, Kind::HasLocalBranches];
    match unary(Kind::FindDefaultBranchName, &admin_channel).await {
        Ok(()) => unary_kinds.push(Kind::FindDefaultBranchName),
        Err(s) if s.code() == tonic::Code::Unimplemented => {}
        Err(s) => panic!("FindDefaultBranchName probe: {s}"),
    }
    for &k in &unary_kinds {
        unary(k, &admin_channel).await.unwrap_or_else(|e| panic!("{k:?} before the run: {e}"));
    }
    println!("unary kinds: {unary_kinds:?}; clones {clone_percent}% of operations");

    // Samplers: memory every 100 ms, /metrics every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let memory = Arc::new(Mutex::new(Memory::default()));
    let worker_pids = Arc::new(Mutex::new(HashSet::<i32>::new()));
    let refresh_workers = {
        let (admin_channel, worker_pids, stop) = (admin_channel.clone(), worker_pids.clone(), stop.clone());
        tokio::spawn(async move {
            let mut admin = AdminServiceClient::new(admin_channel);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = admin.list_workers(ListWorkersRequest {}).await {
                    let mut set = worker_pids.lock().unwrap();
                    set.extend(r.into_inner().workers.iter().map(|w| w.pid).filter(|&p| p > 0));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mem_sampler = {
        let (memory, worker_pids, stop) = (memory.clone(), worker_pids.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                let workers = worker_pids.lock().unwrap().clone();
                let mut m = memory.lock().unwrap();
                m.daemon_rss = m.daemon_rss.max(proc_status(pid, "VmRSS").unwrap_or(0));
                for &w in &workers {
                    if let Some(hwm) = proc_status(w, "VmHWM") {
                        let e = m.workers.entry(w).or_default();
                        *e = (*e).max(hwm);
                    }
                }
                let git: Vec<i32> = descendants(pid).into_iter().filter(|p| !workers.contains(p)).collect();
                let sum: u64 = git.iter().filter_map(|&p| proc_status(p, "VmRSS")).sum();
                m.git_sum = m.git_sum.max(sum);
                m.git_max_procs = m.git_max_procs.max(git.len());
                drop(m);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let queue_max: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    let in_progress_max: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (queue_max, in_progress_max, scrapes, stop) =
            (queue_max.clone(), in_progress_max.clone(), scrapes.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(samples) = scrape(port).await {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    for (name, labels, value) in samples {
                        let target = match name.as_str() {
                            "gitaly_rate_limiting_queued" => &queue_max,
                            "gitaly_rate_limiting_in_progress" => &in_progress_max,
                            _ => continue,
                        };
                        let rpc = format!("/{}/{}", label(&labels, "grpc_service"), label(&labels, "grpc_method"));
                        let mut t = target.lock().unwrap();
                        let e = t.entry(rpc).or_insert(0.0);
                        *e = e.max(value);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The load: `clients` tasks, each with its own connection, taking operation numbers until the count or
    // the time runs out.
    let env = Arc::new(Env { ssh, address: address.clone(), clones });
    let stats = Arc::new(Mutex::new(Stats::default()));
    let next_op = Arc::new(AtomicU64::new(0));
    let unary_kinds = Arc::new(unary_kinds);
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let channel = rgitaly::client::connect(&address, None).await.expect("connect");
        let (env, stats, next_op, unary_kinds) = (env.clone(), stats.clone(), next_op.clone(), unary_kinds.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next_op.fetch_add(1, Ordering::Relaxed);
                if n >= max_ops || Instant::now() >= deadline {
                    break;
                }
                let h = mix(n);
                let kind = if h % 100 < clone_percent {
                    Kind::Clone
                } else {
                    unary_kinds[(h / 100) as usize % unary_kinds.len()]
                };
                let t = Instant::now();
                let result = match kind {
                    Kind::Clone => clone(&env, n).await.map_err(|stderr| ("git exit".to_string(), stderr)),
                    k => unary(k, &channel).await.map_err(|s| (format!("{:?}", s.code()), s.message().to_string())),
                };
                let elapsed = t.elapsed();
                let mut st = stats.lock().unwrap();
                match result {
                    Ok(()) => st.ok.entry(kind).or_default().push(elapsed),
                    Err((code, message)) => {
                        // rgitaly-ssh prints only the status message; a limiter refusal is ResourceExhausted.
                        let code = if kind == Kind::Clone
                            && (message.contains(QUEUE_FULL) || message.contains(QUEUE_TIMEOUT))
                        {
                            "ResourceExhausted".to_string()
                        } else {
                            code
                        };
                        st.error(kind, code, &message)
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = begin.elapsed();
    // One more scrape after the load, so the final gauges and counters are in.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    scraper.await.unwrap();
    mem_sampler.await.unwrap();
    refresh_workers.await.unwrap();
    let final_metrics = scrape(port).await;
    let daemon_hwm = proc_status(pid, "VmHWM").unwrap_or(0);
    let alive = daemon.0.try_wait().unwrap().is_none();

    // Report.
    let stats = stats.lock().unwrap();
    let total_ok: usize = stats.ok.values().map(Vec::len).sum();
    let total_err: u64 = stats.errors.values().sum();
    let total = total_ok as u64 + total_err;
    let secs_f = elapsed.as_secs_f64();
    println!(
        "\n{clients} clients, {:.1} s (limit {secs} s, {max_ops} ops): {total} operations, {:.1} ops/s, {total_ok} ok, {total_err} errors",
        secs_f,
        total as f64 / secs_f
    );
    println!("{:<22} {:>7} {:>8} {:>7} {:>10} {:>10}", "kind", "ok", "ok/s", "errors", "p50 ms", "p99 ms");
    let mut kinds: Vec<Kind> = stats.ok.keys().copied().collect();
    kinds.extend(stats.errors.keys().map(|(k, _)| *k));
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let mut lat = stats.ok.get(&kind).cloned().unwrap_or_default();
        lat.sort();
        let errors: u64 = stats.errors.iter().filter(|((k, _), _)| *k == kind).map(|(_, n)| n).sum();
        println!(
            "{:<22} {:>7} {:>8.1} {:>7} {:>10.2} {:>10.2}",
            format!("{kind:?}"),
            lat.len(),
            lat.len() as f64 / secs_f,
            errors,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    }
    println!("(latency over successful operations)");
    println!("errors by code:");
    if stats.errors.is_empty() {
        println!("  none");
    }
    for ((kind, code), n) in &stats.errors {
        println!("  {kind:?} {code}: {n}");
    }
    println!("errors by limiter reason:");
    if stats.limiter.is_empty() {
        println!("  none");
    }
    for ((kind, reason), n) in &stats.limiter {
        println!("  {kind:?} \"{reason}\": {n}");
    }
    for ((kind, code), msg) in &stats.examples {
        println!("  example {kind:?} {code}: {}", msg.lines().next().unwrap_or(""));
    }

    let m = memory.lock().unwrap();
    println!("\nmemory (sampled every 100 ms):");
    // VmHWM is updated lazily by the kernel and can trail a sampled VmRSS slightly.
    println!(
        "  daemon peak RSS: {:.1} MiB (VmHWM {:.1} MiB, max sampled VmRSS {:.1} MiB)",
        mib(daemon_hwm.max(m.daemon_rss)),
        mib(daemon_hwm),
        mib(m.daemon_rss)
    );
    for (w, hwm) in &m.workers {
        println!("  worker pid {w} peak RSS (VmHWM): {:.1} MiB", mib(*hwm));
    }
    println!(
        "  git and helpers under the daemon: peak summed RSS {:.1} MiB, up to {} processes at once",
        mib(m.git_sum),
        m.git_max_procs
    );

    let mut failed = Vec::new();
    let scraped = scrapes.load(Ordering::Relaxed);
    println!("\nlimiter, from /metrics ({scraped} scrapes during the run, one every 50 ms at most):");
    let bounds = [(CLONE_RPC, CLONE_QUEUE, CLONE_MAX_PER_REPO), (UNARY_RPC, UNARY_QUEUE, UNARY_MAX_PER_REPO)];
    for (rpc, queue, per_repo) in bounds {
        let q = queue_max.lock().unwrap().get(rpc).copied();
        let p = in_progress_max.lock().unwrap().get(rpc).copied();
        // The gauges are per RPC (summed over repositories); there is one repository here.
        let within = q.unwrap_or(0.0) <= queue as f64;
        println!(
            "  {rpc}: max gitaly_rate_limiting_queued {} (max_queue_size {queue}: {}), max in progress {} (max_per_repo {per_repo})",
            q.map(|q| q.to_string()).unwrap_or("0 (never queued)".into()),
            if within { "within" } else { "EXCEEDED" },
            p.map(|p| p.to_string()).unwrap_or("never seen".into()),
        );
        if !within {
            failed.push(format!("queue of {rpc} exceeded max_queue_size {queue}"));
        }
    }
    match &final_metrics {
        Some(samples) => {
            println!("  gitaly_requests_dropped_total at the end:");
            let dropped: Vec<_> = samples.iter().filter(|(n, _, _)| n == "gitaly_requests_dropped_total").collect();
            if dropped.is_empty() {
                println!("    none");
            }
            for (_, labels, v) in dropped {
                println!(
                    "    /{}/{} reason={}: {v}",
                    label(labels, "grpc_service"),
                    label(labels, "grpc_method"),
                    label(labels, "reason")
                );
            }
        }
        None => failed.push("could not read /metrics at the end".into()),
    }
    if scraped == 0 {
        failed.push("no /metrics scrape succeeded during the run".into());
    }
    if !alive {
        failed.push(format!("the daemon died:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    }
    drop(daemon);
    if failed.is_empty() {
        println!("\nOK: daemon alive, queues within bounds");
    } else {
        for f in &failed {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// The daemon under test; stopped (and its workers with it) however the run ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

//! What the read and memory benchmarks share: the generated repository, the daemon they start, and the
//! load loop that times calls.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::Repository;

pub const COMMITS: usize = 50_000;
pub const BRANCHES: usize = 10_000;
/// Bump when the generated repository changes shape.
const REPO_VERSION: u32 = 1;

/// A plain `git` with no user or system config and a fixed identity, for the benches' own set-up.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com");
    c
}

pub fn out(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The benchmark repository: linear history of `COMMITS` commits touching 100 files in 50 directories,
/// `BRANCHES` branches spread over it, written with fast-import.
pub fn repository(cache: &Path) -> PathBuf {
    let repo = cache.join(format!("repo-v{REPO_VERSION}.git"));
    if repo.join("done").exists() {
        return repo;
    }
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(cache).unwrap();
    out(git(cache).args(["init", "--quiet", "--bare", "-b", "main"]).arg(&repo));
    let started = Instant::now();
    let mut fi = git(&repo).args(["fast-import", "--quiet"]).stdin(Stdio::piped()).spawn().unwrap();
    {
        let mut w = std::io::BufWriter::new(fi.stdin.take().unwrap());
        for i in 1..=COMMITS {
            let content = format!("file {} revision {i}\n{}\n", i % 100, "lorem ipsum dolor sit amet ".repeat(20));
            write!(w, "blob\nmark :{}\ndata {}\n{content}\n", 2 * i, content.len()).unwrap();
            let msg = format!("commit {i}\n\nBody of commit {i}, touching dir{}/file{}.txt.\n", i % 50, i % 100);
            write!(
                w,
                "commit refs/heads/main\nmark :{}\nauthor A U Thor <author@example.com> {} +0100\ncommitter C O Mitter <committer@example.com> {} +0100\ndata {}\n{msg}",
                2 * i + 1,
                1_500_000_000 + i,
                1_500_000_000 + i,
                msg.len()
            )
            .unwrap();
            if i > 1 {
                writeln!(w, "from :{}", 2 * i - 1).unwrap();
            }
            write!(w, "M 100644 :{} dir{}/file{}.txt\n\n", 2 * i, i % 50, i % 100).unwrap();
        }
        for b in 0..BRANCHES {
            write!(w, "reset refs/heads/branch-{b:05}\nfrom :{}\n\n", 2 * (1 + b * (COMMITS / BRANCHES)) + 1).unwrap();
        }
    }
    assert!(fi.wait().unwrap().success(), "fast-import failed");
    out(git(&repo).args(["pack-refs", "--all"]));
    std::fs::write(repo.join("done"), "").unwrap();
    eprintln!("generated {} in {:.1}s", repo.display(), started.elapsed().as_secs_f64());
    repo
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub struct Stats {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `calls` calls of `f` spread over `concurrency` tasks (each with its own connection), after a
/// warm-up of a quarter of the same inputs when `warm` is set.
pub async fn measure<F, Fut>(address: &str, concurrency: usize, calls: usize, f: F) -> Stats
where
    F: Fn(AuthChannel, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    // Warm-up over a quarter of the same inputs: connections, first opens, and the pages of the pack the
    // calls will touch, so the figures are the steady state, not the cold start (both servers get the same).
    let ch = rgitaly::client::connect(address, None).await.unwrap();
    for i in (0..calls).step_by(4) {
        f(ch.clone(), i).await;
    }
    run(address, concurrency, calls, f).await
}

/// [`measure`] without the warm-up.
pub async fn run<F, Fut>(address: &str, concurrency: usize, calls: usize, f: F) -> Stats
where
    F: Fn(AuthChannel, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let f = f.clone();
        let ch = rgitaly::client::connect(address, None).await.unwrap();
        let n = calls / concurrency;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let s = Instant::now();
                f(ch.clone(), t * n + i).await;
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    Stats { rps: lat.len() as f64 / elapsed.as_secs_f64(), p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99) }
}

/// Reads a server stream to its end; the sum of `count` over its messages.
pub async fn drain<T>(mut s: tonic::Streaming<T>, count: impl Fn(&T) -> usize) -> usize {
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        n += count(&m);
    }
    n
}

/// Ten of `commits`, spread over the history, picked by `i`.
pub fn ten_commits(commits: &[String], i: usize) -> Vec<String> {
    (0..10).map(|k| commits[(i * 131 + k * 4001) % commits.len()].clone()).collect()
}

/// ListCommitsByOid of `oid`, read to its end; every commit must be found.
pub async fn list_commits_by_oid(ch: AuthChannel, oid: Vec<String>) {
    use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
    let n = oid.len();
    let s = CommitServiceClient::new(ch)
        .list_commits_by_oid(rgitaly::proto::gitaly::ListCommitsByOidRequest { repository: r(), oid })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drain(s, |m| m.commits.len()).await, n);
}

/// TreeEntry of one of the 100 files at `main`, picked by `i`, read to its end.
pub async fn tree_entry(ch: AuthChannel, i: usize) {
    use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
    let s = CommitServiceClient::new(ch)
        .tree_entry(rgitaly::proto::gitaly::TreeEntryRequest {
            repository: r(),
            revision: b"main".to_vec(),
            path: format!("dir{}/file{}.txt", i % 50, (i % 50) + 50 * ((i / 50) % 2)).into_bytes(),
            limit: 0,
            max_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    drain(s, |_| 0).await;
}

/// The metrics endpoint's text.
pub fn scrape(metrics_port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of the sample `name` (with its labels, as printed) in a scrape.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn spawned(metrics_port: u16) -> u64 {
    sample(&scrape(metrics_port), "rgitaly_git_processes_spawned_total").expect("spawn counter") as u64
}

pub fn r() -> Option<Repository> {
    Some(Repository { storage_name: "default".into(), relative_path: "bench.git".into(), ..Default::default() })
}

pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A daemon serving a copy of the bench repository as `default/bench.git`, with `extra_config` appended to
/// its config; returns it, its address, the metrics port, and the repository's path.
pub async fn start(dir: &Path, extra_config: &str) -> (Daemon, String, u16, PathBuf) {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_rgitaly")).parent().unwrap().to_path_buf();
    if !bin_dir.join("rgitaly-worker").exists() {
        eprintln!("build the worker first: cargo build --release --workspace");
        std::process::exit(2);
    }
    let cache = bin_dir.parent().unwrap().join("bench-read");
    let source = repository(&cache);
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let repo = storage.join("bench.git");
    out(git(dir).args(["clone", "--quiet", "--bare", "--mirror", "--no-local"]).arg(&source).arg(&repo));
    let socket = dir.join("rgitaly.socket");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "socket_path = {socket:?}\ninternal_socket_dir = {:?}\nprometheus_listen_addr = \"127.0.0.1:{metrics_port}\"\n[[storage]]\nname = \"default\"\npath = {storage:?}\n[logging]\nlevel = \"error\"\n{extra_config}",
            dir.join("internal")
        ),
    )
    .unwrap();
    let binary = std::env::var_os("RGITALY_BENCH_BINARY").map(PathBuf::from).unwrap_or(bin_dir.join("rgitaly"));
    let mut daemon = Daemon(
        Command::new(binary)
            .arg("serve")
            .arg(&config)
            .env("RGITALY_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!("the daemon exited before serving: {status}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (daemon, format!("unix:{}", socket.display()), metrics_port, repo)
}

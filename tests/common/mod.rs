//! Test harness: starts the real `rgitaly` binary on a temporary directory and socket, and drives it with
//! the real `git` (through `rgitaly-ssh`) and real gRPC clients. Everything is removed on drop.

#![allow(dead_code)]

pub mod gitlab;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rgitaly::client::{self, AuthChannel};
use rgitaly::proto::gitaly::Repository;

pub const STORAGE: &str = "default";

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub storage: PathBuf,
    /// A directory beside the storage that no RPC may touch.
    pub outside: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with("")
    }

    /// Starts a daemon; `extra` is added to the generated config (top-level keys first, then tables).
    pub fn start_with(extra: &str) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    /// As `start_with`, with extra environment for the daemon (and so its workers).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::spawn(extra, env, None)
    }

    /// As `start_with`, the daemon started with a soft open-file limit of `soft`.
    pub fn start_with_nofile(extra: &str, soft: u64) -> Daemon {
        Self::spawn(extra, &[], Some(soft))
    }

    fn spawn(extra: &str, env: &[(&str, &str)], soft_nofile: Option<u64>) -> Daemon {
        let split = extra.find("\n[").map(|i| i + 1).unwrap_or(if extra.starts_with('[') { 0 } else { extra.len() });
        let (top, tables) = extra.split_at(split);
        // Upstream's default maintenance window (12:00 daily) would optimize a test's repositories under it.
        let maintenance =
            if extra.contains("[daily_maintenance]") { "" } else { "[daily_maintenance]\ndisabled = true\n" };
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("sentinel"), "untouched").unwrap();
        let socket = dir.path().join("rgitaly.socket");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "socket_path = {socket:?}\ninternal_socket_dir = {internal:?}\n{top}\n[[storage]]\nname = \"{STORAGE}\"\npath = {storage:?}\n{tables}\n{maintenance}",
                internal = dir.path().join("internal"),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgitaly"));
        cmd.arg("serve")
            .arg(&config)
            .env("RGITALY_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(soft) = soft_nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start rgitaly");
        let d = Daemon { dir, socket, storage, outside, child: Some(child) };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rgitaly did not come up on {}", self.socket.display());
    }

    pub fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub async fn channel(&self) -> AuthChannel {
        client::connect(&self.address(), None).await.expect("connect")
    }

    pub fn repo(&self, relative: &str) -> Repository {
        Repository { storage_name: STORAGE.into(), relative_path: relative.into(), ..Default::default() }
    }

    pub fn repo_path(&self, relative: &str) -> PathBuf {
        self.storage.join(relative)
    }

    /// The URL plain `git` uses for a repository through rgitaly-ssh.
    pub fn url(&self, relative: &str) -> String {
        format!("ssh://rgitaly/{STORAGE}/{relative}")
    }

    /// A `git` command wired to this daemon through rgitaly-ssh.
    pub fn git(&self, cwd: &Path) -> Command {
        let mut c = git(cwd);
        c.env("GIT_SSH_COMMAND", env!("CARGO_BIN_EXE_rgitaly-ssh")).env("GITALY_ADDRESS", self.address());
        c
    }

    /// Creates a bare repository in the storage directly with git (test setup, not through the RPC).
    pub fn seed_repo(&self, relative: &str, source: &Path) -> PathBuf {
        let path = self.repo_path(relative);
        run(git(self.dir.path()).args(["clone", "--bare", "--quiet"]).arg(source).arg(&path));
        path
    }

    /// Asserts nothing beside the storage changed.
    pub fn assert_outside_untouched(&self) {
        let entries: Vec<_> = std::fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("sentinel")], "files appeared outside the storage");
        assert_eq!(std::fs::read_to_string(self.outside.join("sentinel")).unwrap(), "untouched");
        let mut top: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("work"))
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["config.toml", "internal", "outside", "rgitaly.socket", "storage"],
            "unexpected top-level files"
        );
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits for exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Waits up to `secs` for the daemon to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A scratch directory for client-side work, inside the temp dir.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(format!("work-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The user GitLab would send with an operation.
pub fn user() -> Option<rgitaly::proto::gitaly::User> {
    Some(rgitaly::proto::gitaly::User {
        gl_id: "user-1".into(),
        name: b"Jane Doe".to_vec(),
        email: b"jane@example.com".to_vec(),
        gl_username: "jane".into(),
    })
}

/// Whether a process exists.
pub fn process_alive(pid: i32) -> bool {
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(true)
}

/// Polls `f` every 20 ms until it is true or `secs` pass; returns whether it became true.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A plain `git` with a predictable identity and no user or system config.
pub fn git(cwd: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR");
    c
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and returns its trimmed stdout.
pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_string()
}

/// A working repository with a few commits on `main`, a tag, and a side branch.
pub fn sample_worktree(dir: &Path) -> PathBuf {
    let wt = dir.join("sample");
    run(git(dir).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    for i in 1..=3 {
        std::fs::write(wt.join(format!("file{i}.txt")), format!("content {i}\n")).unwrap();
        std::fs::create_dir_all(wt.join("dir")).unwrap();
        std::fs::write(wt.join("dir/nested.txt"), format!("nested {i}\n")).unwrap();
        run(git(&wt).args(["add", "-A"]));
        run(git(&wt).args(["commit", "--quiet", "-m", &format!("commit {i}")]));
    }
    run(git(&wt).args(["tag", "-a", "v1.0", "-m", "release"]));
    run(git(&wt).args(["branch", "side", "HEAD~1"]));
    wt
}

/// Adds a commit to `wt` and returns its id.
pub fn commit_file(wt: &Path, name: &str, content: &str) -> String {
    std::fs::write(wt.join(name), content).unwrap();
    run(git(wt).args(["add", name]));
    run(git(wt).args(["commit", "--quiet", "-m", &format!("add {name}")]));
    stdout(git(wt).args(["rev-parse", "HEAD"]))
}

/// Reads a gRPC stream of `data` messages into one buffer.
#[macro_export]
macro_rules! collect_data {
    ($stream:expr) => {{
        let mut s = $stream;
        let mut out = Vec::new();
        while let Some(m) = s.message().await.expect("stream") {
            out.extend_from_slice(&m.data);
        }
        out
    }};
}

/// A TCP port free at the moment of asking (for listeners a test configures).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every file under a directory, with size and modification time: compared before and after hostile input.
pub type Snapshot = std::collections::BTreeMap<String, (u64, std::time::SystemTime)>;

/// Every file under `dir` with its size and modification time.
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.insert(e.path().display().to_string(), (m.len(), m.modified().unwrap()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A new CA and a "localhost" certificate it signs. The CA goes to `dir/<name>-ca.pem` (returned); the
/// certificate and key are written to temporary names and renamed to `cert` and `key`, as certificate
/// managers do, so a daemon watching them never reads half a file.
pub fn issue_certificate(dir: &Path, name: &str, cert: &Path, key: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: with rcgen's default for both, BoringSSL (gRPC C-core) takes the leaf for self-signed.
    ca_params.distinguished_name.push(DnType::CommonName, format!("rgitaly test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &issuer).unwrap();
    let ca_path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let (tmp_cert, tmp_key) = (dir.join("cert.tmp"), dir.join("key.tmp"));
    std::fs::write(&tmp_cert, server.pem()).unwrap();
    std::fs::write(&tmp_key, server_key.serialize_pem()).unwrap();
    std::fs::rename(&tmp_key, key).unwrap();
    std::fs::rename(&tmp_cert, cert).unwrap();
    ca_path
}

/// A CA and a "localhost" certificate, as PEM files in `dir`: (CA, certificate, key).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ca = issue_certificate(dir, "test", &cert, &key);
    (ca, cert, key)
}

// A codec that sends and receives message bytes as they are, to put on the wire what a generated
// client never would (invalid UTF-8 in string fields, broken protobuf).

#[derive(Clone, Copy, Default)]
pub struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` with raw message bytes (any shape) and returns the raw answers.
pub async fn raw_call(
    ch: tonic::transport::Channel,
    path: &str,
    token: Option<&str>,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(futures::stream::iter(messages));
    if let Some(secret) = token {
        let v = rgitaly::auth::bearer_now(secret);
        req.metadata_mut().insert("authorization", v.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::try_from(path).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let mut stream = grpc.streaming(req, path, Raw).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// A plain HTTP/1.1 GET on localhost (the Prometheus endpoint): status line, headers and body.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A gauge's or counter's value in a Prometheus text body (the first series whose line starts with
/// `series`); 0 when absent.
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A process's thread count and resident set (bytes), from /proc.
pub fn threads_and_rss(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

//! Hostile input, part two (part one is tests/hostile.rs): authentication on every listener, messages
//! above the size limit, malformed and oversized pkt-lines into push and fetch, invalid UTF-8 where the
//! protocol wants a string, hostile ref names, the `git_config_options` that part one does not try,
//! missing repositories, unknown storages and the path and symlink forms part one does not try.
//!
//! Every case is a row in a table (name, input, expected code) and every test asserts its table's size,
//! so the counts here stay true. This file throws 105 distinct hostile inputs at the running daemon:
//!
//! | test                                    | cases                                                         |
//! |-----------------------------------------|---------------------------------------------------------------|
//! | `auth_on_every_listener`                | 15 headers (each on 3 listeners × 7 services) + 3 raw garbage connections |
//! | `messages_above_the_size_limit`         | 5                                                             |
//! | `malformed_pkt_lines_end_cleanly`       | 14                                                            |
//! | `invalid_utf8_and_garbage_protobuf`     | 8                                                             |
//! | `hostile_ref_names`                     | 26                                                            |
//! | `dangerous_config_options`              | 15 (each on 4 RPCs)                                           |
//! | `missing_repository_storages_and_paths` | 19                                                            |
//!
//! tests/hostile.rs throws 48 (16 relative paths and 2 storages on every RPC family, 7 wrong first
//! messages, 12 config options, 3 option-like revisions, 5 malformed pkt-line bodies, 1 stalled
//! negotiation, 2 smuggling attempts through the worker proxy), so the family has 153 ≥ 50.
//!
//! Two more cases, at the end of this file, are regressions for daemon bugs this suite found (auth checked
//! only after the first message; a quadratic locator).
//!
//! After each test: nothing under `outside` changed, no file appeared beside the storage, and the daemon
//! is alive and still answers.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::smart_http_service_client::SmartHttpServiceClient;
use rgitaly::proto::gitaly::ssh_service_client::SshServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::ListWorkersRequest;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// No single call may take longer than this: a hang is a failure, not a slow test.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const ZERO_OID: &str = "0000000000000000000000000000000000000000";

// ---------------------------------------------------------------------------------------------------------
// Shared helpers.

struct Setup {
    d: Daemon,
    outside_before: Snapshot,
}

/// A daemon with `good.git` (branches main and side, tag v1.0) in its storage.
fn setup_with(extra: &str) -> Setup {
    let d = Daemon::start_with(extra);
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("good.git", &wt);
    let outside_before = snapshot(&d.outside);
    Setup { d, outside_before }
}

fn setup() -> Setup {
    setup_with("")
}

impl Setup {
    fn channel(&self) -> Channel {
        rgitaly::client::unix_channel_lazy(&self.d.socket)
    }

    fn good(&self) -> Option<Repository> {
        Some(self.d.repo("good.git"))
    }

    fn good_path(&self) -> std::path::PathBuf {
        self.d.repo_path("good.git")
    }

    /// Nothing outside the storage changed and the daemon still serves (`token`: when auth is on).
    async fn check(&mut self, token: Option<&str>) {
        assert_eq!(snapshot(&self.d.outside), self.outside_before, "something outside the storage changed");
        self.d.assert_outside_untouched();
        assert!(self.d.alive(), "daemon died");
        let mut req = tonic::Request::new(ServerInfoRequest {});
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", rgitaly::auth::bearer_now(t).parse().unwrap());
        }
        let info = ServerServiceClient::new(self.channel()).server_info(req).await;
        assert!(info.is_ok(), "daemon no longer answers: {info:?}");
    }
}

/// Refs and HEAD of a repository, to show a refused call changed nothing.
fn refs(repo: &Path) -> String {
    let head = std::fs::read_to_string(repo.join("HEAD")).unwrap();
    let refs = stdout(git(repo).args(["for-each-ref", "--format=%(refname) %(objectname)"]));
    format!("HEAD: {head}{refs}")
}

fn rev(repo: &Path, r: &str) -> String {
    stdout(git(repo).args(["rev-parse", r]))
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL_TIMEOUT, f).await.unwrap_or_else(|_| panic!("{what}: no answer within {CALL_TIMEOUT:?}"))
}

/// Reads a response stream to its end; the first error ends it.
async fn drain<T>(r: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Result<Vec<T>, Status> {
    let mut s = r?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m);
    }
    Ok(out)
}

fn code_of<T>(r: &Result<T, Status>) -> Code {
    r.as_ref().err().map(|e| e.code()).unwrap_or(Code::Ok)
}

fn message_of<T>(r: &Result<T, Status>) -> String {
    r.as_ref().err().map(|e| e.message().to_string()).unwrap_or_default()
}

/// A length-delimited protobuf field.
fn field(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let varint = |mut v: u64, out: &mut Vec<u8>| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    varint(u64::from(tag << 3 | 2), &mut out);
    varint(data.len() as u64, &mut out);
    out.extend_from_slice(data);
    out
}

/// `Repository{storage_name, relative_path}` as raw fields 2 and 3.
fn raw_repo(storage: &[u8], path: &[u8]) -> Vec<u8> {
    [field(2, storage), field(3, path)].concat()
}

async fn raw_call(
    ch: Channel,
    path: &'static str,
    header: Option<&[u8]>,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(futures::stream::iter(messages));
    if let Some(h) = header {
        req.metadata_mut().insert("authorization", tonic::metadata::AsciiMetadataValue::try_from(h).unwrap());
    }
    let resp = grpc.streaming(req, http::uri::PathAndQuery::from_static(path), Raw).await;
    drain(resp).await
}

// ---------------------------------------------------------------------------------------------------------
// 1. Authentication on every listener.

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn hmac_hex(secret: &[u8], message: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

const SECRET: &str = "listener-secret";

/// The `authorization` values tried on every listener and service, with the code upstream gives each.
fn auth_headers() -> Vec<(&'static str, Option<Vec<u8>>, Code)> {
    use Code::{PermissionDenied as Denied, Unauthenticated as Unauth};
    let t = now();
    let bearer = |token: String| Some(format!("Bearer {token}").into_bytes());
    let good = rgitaly::auth::sign_v2(SECRET.as_bytes(), t);
    let sig = good.split('.').nth(1).unwrap().to_string();
    vec![
        ("no authorization header", None, Unauth),
        ("Bearer garbage", bearer("garbage".into()), Unauth),
        ("Basic scheme", Some(b"Basic x".to_vec()), Unauth),
        ("unparsable signature and time", bearer("v2.zz.notanumber".into()), Unauth),
        ("v1-style token (base64 of the secret)", bearer("bGlzdGVuZXItc2VjcmV0".into()), Unauth),
        ("scheme without token", Some(b"Bearer".to_vec()), Unauth),
        ("non-ASCII bytes in the header", Some(b"Bearer v2.\xff\xfe.1".to_vec()), Unauth),
        ("version v1 with a valid signature", bearer(good.replacen("v2.", "v1.", 1)), Denied),
        ("v2 signed with the wrong secret", bearer(rgitaly::auth::sign_v2(b"not-the-secret", t)), Denied),
        ("v2 signed with an empty secret", bearer(rgitaly::auth::sign_v2(b"", t)), Denied),
        ("v2 issued 10 minutes ago", bearer(rgitaly::auth::sign_v2(SECRET.as_bytes(), t - 600)), Denied),
        ("v2 issued 10 minutes ahead", bearer(rgitaly::auth::sign_v2(SECRET.as_bytes(), t + 600)), Denied),
        (
            "v2 correctly signed over a non-number",
            bearer(format!("v2.{}.notanumber", hmac_hex(SECRET.as_bytes(), "notanumber"))),
            Denied,
        ),
        ("v2 with a truncated signature", bearer(format!("v2.{}.{t}", &sig[..32])), Denied),
        ("two spaces after Bearer", Some(format!("Bearer  {good}").into_bytes()), Denied),
        ("valid v2 token (control)", bearer(good), Code::Ok),
    ]
}

/// Calls seven services (unary, server streaming, bidi, proxied to a worker, the admin API, health and
/// reflection) with `header`; returns each one's result.
async fn auth_matrix(
    ch: &Channel,
    header: Option<&[u8]>,
    repo: &Repository,
    tag: &str,
) -> Vec<(&'static str, Code, String)> {
    fn req<T>(msg: T, header: Option<&[u8]>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", tonic::metadata::AsciiMetadataValue::try_from(h).unwrap());
        }
        r
    }
    let mut out = Vec::new();
    let mut push = |name, r: Result<(), Status>| out.push((name, code_of(&r), message_of(&r)));
    push(
        "ServerInfo",
        ServerServiceClient::new(ch.clone()).server_info(req(ServerInfoRequest {}, header)).await.map(|_| ()),
    );
    push(
        "RepositoryExists",
        RepositoryServiceClient::new(ch.clone())
            .repository_exists(req(RepositoryExistsRequest { repository: Some(repo.clone()) }, header))
            .await
            .map(|_| ()),
    );
    push(
        "Health/Check",
        tonic_health::pb::health_client::HealthClient::new(ch.clone())
            .check(req(tonic_health::pb::HealthCheckRequest { service: String::new() }, header))
            .await
            .map(|_| ()),
    );
    push(
        "AdminService/ListWorkers",
        AdminServiceClient::new(ch.clone()).list_workers(req(ListWorkersRequest {}, header)).await.map(|_| ()),
    );
    let upload = vec![
        SshUploadPackRequest { repository: Some(repo.clone()), ..Default::default() },
        SshUploadPackRequest { stdin: b"0000".to_vec().into(), ..Default::default() },
    ];
    let r = SshServiceClient::new(ch.clone()).ssh_upload_pack(req(futures::stream::iter(upload), header)).await;
    push("SSHUploadPack", drain(r).await.map(|_| ()));
    let branch = UserCreateBranchRequest {
        repository: Some(repo.clone()),
        branch_name: format!("auth-{tag}").into_bytes(),
        user: user(),
        start_point: b"main".to_vec(),
    };
    push(
        "UserCreateBranch",
        OperationServiceClient::new(ch.clone()).user_create_branch(req(branch, header)).await.map(|_| ()),
    );
    // ServerReflectionRequest{list_services: ""}: field 7.
    let r =
        raw_call(ch.clone(), "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", header, vec![field(7, b"")])
            .await;
    push("ServerReflection", r.map(|_| ()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_every_listener() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let (tcp, tls) = (free_port(), free_port());
    let mut s = setup_with(&format!(
        "listen_addr = \"127.0.0.1:{tcp}\"\ntls_listen_addr = \"127.0.0.1:{tls}\"\n[tls]\ncertificate_path = {cert:?}\nkey_path = {key:?}\n[auth]\ntoken = \"{SECRET}\"\n"
    ));
    let wait = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err() && wait.elapsed().as_secs() < 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let repo = s.d.repo("good.git");
    let tls_config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let listeners: Vec<(&str, Channel)> = vec![
        ("unix", s.channel()),
        (
            "tcp",
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{tcp}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        ),
        (
            "tls",
            tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{tls}"))
                .unwrap()
                .tls_config(tls_config)
                .unwrap()
                .connect()
                .await
                .unwrap(),
        ),
    ];
    let headers = auth_headers();
    assert_eq!(headers.iter().filter(|(_, _, c)| *c != Code::Ok).count(), 15);
    let before = refs(&s.good_path());
    let mut calls = 0;
    for (listener, ch) in &listeners {
        for (i, (case, header, want)) in headers.iter().enumerate() {
            let results = timed(case, auth_matrix(ch, header.as_deref(), &repo, &format!("{listener}-{i}"))).await;
            for (rpc, code, message) in results {
                assert_eq!(code, *want, "{listener}: {case}: {rpc}: {message}");
                let expected_message = match want {
                    Code::Unauthenticated => "authentication required",
                    Code::PermissionDenied => "permission denied",
                    _ => "",
                };
                assert_eq!(message, expected_message, "{listener}: {case}: {rpc}");
                calls += 1;
            }
        }
    }
    assert_eq!(calls, 3 * 16 * 7);
    // Only the control calls (one branch per listener) changed the repository.
    let after = refs(&s.good_path());
    let new_refs: Vec<&str> = after.lines().filter(|l| !before.lines().any(|b| b == *l)).collect();
    assert_eq!(new_refs.len(), 3, "{new_refs:?}");
    assert!(new_refs.iter().all(|l| l.starts_with("refs/heads/auth-") && l.contains("-15 ")), "{new_refs:?}");

    // Raw garbage instead of HTTP/2 (or TLS) on each listener: the server drops the connection.
    let unix = tokio::net::UnixStream::connect(&s.d.socket).await.unwrap();
    let plain = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    let tls_plain = tokio::net::TcpStream::connect(("127.0.0.1", tls)).await.unwrap();
    let raw: Vec<(&str, std::io::Result<()>)> = vec![
        ("garbage on the unix socket", garbage_is_dropped(unix).await),
        ("garbage on the tcp listener", garbage_is_dropped(plain).await),
        ("garbage on the tls listener", garbage_is_dropped(tls_plain).await),
    ];
    assert_eq!(raw.len(), 3);
    for (name, r) in raw {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    s.check(Some(SECRET)).await;
}

/// Sends bytes that are neither HTTP/2 nor TLS; Ok when the server then closes the connection (EOF or a
/// reset, after whatever it answers: a GOAWAY, a TLS alert) instead of leaving it open.
async fn garbage_is_dropped(
    mut conn: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage \x16\x03\x01").await;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connection left open")),
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Messages above the size limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_the_size_limit() {
    let mut s = setup();
    let ch = s.channel();
    let before = refs(&s.good_path());
    let big = rgitaly::transport::MAX_MESSAGE + 1024 * 1024;
    let huge = || "a".repeat(big);
    let client_limit = 64 * 1024 * 1024;
    let mut ssh = SshServiceClient::new(ch.clone()).max_encoding_message_size(client_limit);
    let mut http = SmartHttpServiceClient::new(ch.clone()).max_encoding_message_size(client_limit);
    let mut r = RepositoryServiceClient::new(ch.clone()).max_encoding_message_size(client_limit);
    let mut ops = OperationServiceClient::new(ch.clone()).max_encoding_message_size(client_limit);

    // tonic's decoder answers OutOfRange for a message above the server's limit; the worker proxy, which
    // reads the first message itself, answers ResourceExhausted (as upstream's grpc-go does everywhere).
    let mut cases: Vec<(&str, Result<(), Status>, Code)> = Vec::new();
    let first = SshReceivePackRequest { repository: s.good(), gl_id: "user-1".into(), ..Default::default() };
    let push = vec![first, SshReceivePackRequest { stdin: vec![b'0'; big].into(), ..Default::default() }];
    let res =
        timed("SSHReceivePack", async { drain(ssh.ssh_receive_pack(futures::stream::iter(push)).await).await }).await;
    cases.push(("SSHReceivePack: 5 MiB stdin message", res.map(|_| ()), Code::OutOfRange));

    let fetch = vec![
        PostUploadPackRequest { repository: s.good(), ..Default::default() },
        PostUploadPackRequest { data: vec![b'0'; big].into(), ..Default::default() },
    ];
    let res =
        timed("PostUploadPack", async { drain(http.post_upload_pack(futures::stream::iter(fetch)).await).await }).await;
    cases.push(("PostUploadPack: 5 MiB data message", res.map(|_| ()), Code::OutOfRange));

    let first = SshUploadPackRequest { repository: s.good(), git_config_options: vec![huge()], ..Default::default() };
    let res =
        timed("SSHUploadPack", async { drain(ssh.ssh_upload_pack(futures::stream::iter(vec![first])).await).await })
            .await;
    cases.push(("SSHUploadPack: 5 MiB config option in the first message", res.map(|_| ()), Code::OutOfRange));

    let res = timed("RepositoryExists", async {
        r.repository_exists(RepositoryExistsRequest { repository: Some(s.d.repo(&huge())) }).await
    })
    .await;
    cases.push(("RepositoryExists: 5 MiB relative path", res.map(|_| ()), Code::OutOfRange));

    let res = timed("UserCreateBranch", async {
        ops.user_create_branch(UserCreateBranchRequest {
            repository: s.good(),
            branch_name: huge().into_bytes(),
            user: user(),
            start_point: b"main".to_vec(),
        })
        .await
    })
    .await;
    cases.push(("UserCreateBranch: 5 MiB branch name", res.map(|_| ()), Code::ResourceExhausted));

    assert_eq!(cases.len(), 5);
    for (name, res, want) in cases {
        assert_eq!(code_of(&res), want, "{name}: {}", message_of(&res));
        let prefix = match want {
            Code::OutOfRange => "Error, decoded message length too large: found ",
            _ => "request message too large",
        };
        assert!(message_of(&res).starts_with(prefix), "{name}: {}", message_of(&res));
    }
    assert_eq!(refs(&s.good_path()), before);
    s.check(None).await;
}

// ---------------------------------------------------------------------------------------------------------
// 3. Malformed and oversized pkt-lines into push and fetch.

enum Pkt {
    UploadPack(Box<SshUploadPackRequest>, Vec<u8>),
    ReceivePack(Vec<u8>),
    UploadArchive(Vec<u8>),
    PostReceivePack(Vec<u8>),
}

/// How a git-speaking call ended: an RPC error, or OK with the exit status git reported (None: 0) and
/// what git wrote (stdout and stderr).
async fn run_pkt(ch: &Channel, repo: &Option<Repository>, case: Pkt) -> Result<(Option<i32>, String), Status> {
    fn exit(messages: impl Iterator<Item = (Option<ExitStatus>, Vec<u8>, Vec<u8>)>) -> (Option<i32>, String) {
        let (mut status, mut output) = (None, Vec::new());
        for (s, stdout, stderr) in messages {
            status = s.map(|s| s.value).or(status);
            output.extend_from_slice(&stdout);
            output.extend_from_slice(&stderr);
        }
        (status, String::from_utf8_lossy(&output).into_owned())
    }
    match case {
        Pkt::UploadPack(first, stdin) => {
            let reqs = vec![*first, SshUploadPackRequest { stdin: stdin.into(), ..Default::default() }];
            let r = SshServiceClient::new(ch.clone()).ssh_upload_pack(futures::stream::iter(reqs)).await;
            Ok(exit(drain(r).await?.into_iter().map(|m| (m.exit_status, m.stdout.to_vec(), m.stderr.to_vec()))))
        }
        Pkt::ReceivePack(stdin) => {
            let reqs = vec![
                SshReceivePackRequest { repository: repo.clone(), gl_id: "user-1".into(), ..Default::default() },
                SshReceivePackRequest { stdin: stdin.into(), ..Default::default() },
            ];
            let r = SshServiceClient::new(ch.clone()).ssh_receive_pack(futures::stream::iter(reqs)).await;
            Ok(exit(drain(r).await?.into_iter().map(|m| (m.exit_status, m.stdout.to_vec(), m.stderr.to_vec()))))
        }
        Pkt::UploadArchive(stdin) => {
            let reqs = vec![
                SshUploadArchiveRequest { repository: repo.clone(), ..Default::default() },
                SshUploadArchiveRequest { stdin: stdin.into(), ..Default::default() },
            ];
            let r = SshServiceClient::new(ch.clone()).ssh_upload_archive(futures::stream::iter(reqs)).await;
            Ok(exit(drain(r).await?.into_iter().map(|m| (m.exit_status, m.stdout.to_vec(), m.stderr.to_vec()))))
        }
        Pkt::PostReceivePack(data) => {
            let reqs = vec![
                PostReceivePackRequest { repository: repo.clone(), gl_id: "user-1".into(), ..Default::default() },
                PostReceivePackRequest { data: data.into(), ..Default::default() },
            ];
            let r = SmartHttpServiceClient::new(ch.clone()).post_receive_pack(futures::stream::iter(reqs)).await;
            drain(r).await.map(|_| (None, String::new()))
        }
    }
}

fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, PartialEq)]
enum Ends {
    /// OK call whose last message is a non-zero exit status (git's own answer, as upstream reports it).
    NonZeroExit,
    /// An RPC error with this code.
    Error(Code),
    /// OK call, git exited 0.
    Clean,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pkt_lines_end_cleanly() {
    let mut s = setup();
    let ch = s.channel();
    let good = s.good();
    let before = refs(&s.good_path());
    let main = rev(&s.good_path(), "main");
    let pwned = s.d.outside.join("pwned");
    let upload = |git_protocol: &str| {
        Box::new(SshUploadPackRequest {
            repository: good.clone(),
            git_protocol: git_protocol.into(),
            ..Default::default()
        })
    };
    let short_ffff = [&b"ffff"[..], &[b'x'; 10]].concat();
    let over_max = [&b"fff5"[..], &vec![b'x'; 0xfff5 - 4]].concat(); // 65525 > git's 65520
    let k65 = [&b"ffff"[..], &vec![b'y'; 65 * 1024]].concat(); // a 65 KiB pkt-line behind a 65535 header
                                                               // (name, input, how the call ends, what git says about it)
    let cases: Vec<(&str, Pkt, Ends, &str)> = vec![
        (
            "receive-pack: ffff header, 10 bytes, EOF",
            Pkt::ReceivePack(short_ffff.clone()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 65531",
        ),
        (
            "receive-pack: length 65525 > 65520",
            Pkt::ReceivePack(over_max.clone()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 65521",
        ),
        (
            "receive-pack: 65 KiB pkt-line",
            Pkt::ReceivePack(k65.clone()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 65531",
        ),
        (
            "receive-pack: non-hex length 00zz",
            Pkt::ReceivePack(b"00zzupdate".to_vec()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length character: 00zz",
        ),
        (
            "receive-pack: length 0003 (< 4)",
            Pkt::ReceivePack(b"0003".to_vec()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 3",
        ),
        (
            "receive-pack: command line cut mid-way",
            Pkt::ReceivePack(format!("00a0{ZERO_OID} {main} refs/heads/x").into_bytes()),
            Ends::NonZeroExit,
            "fatal: the remote end hung up unexpectedly",
        ),
        (
            "upload-pack: ffff header, 10 bytes, EOF",
            Pkt::UploadPack(upload(""), short_ffff.clone()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 65531",
        ),
        (
            "upload-pack: 65 KiB pkt-line",
            Pkt::UploadPack(upload(""), k65.clone()),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 65531",
        ),
        (
            "upload-pack v2: unknown command",
            Pkt::UploadPack(upload("version=2"), [pkt(b"command=evil\n"), b"0000".to_vec()].concat()),
            Ends::NonZeroExit,
            "fatal: invalid command 'evil'",
        ),
        (
            "upload-pack: GIT_PROTOCOL injection is ignored, not passed on",
            Pkt::UploadPack(upload(&format!("version=2\0--upload-pack=touch {}", pwned.display())), b"0000".to_vec()),
            Ends::Clean,
            "",
        ),
        (
            "upload-archive: ffff header, 10 bytes, EOF",
            Pkt::UploadArchive(short_ffff),
            Ends::NonZeroExit,
            "fatal: protocol error: bad line length 65531",
        ),
        (
            "upload-archive: --output into outside",
            Pkt::UploadArchive(
                [
                    pkt(format!("argument --output={}", pwned.display()).as_bytes()),
                    pkt(b"argument HEAD"),
                    b"0000".to_vec(),
                ]
                .concat(),
            ),
            Ends::NonZeroExit,
            "fatal: Unexpected option --output",
        ),
        (
            "upload-archive: --remote and --exec",
            Pkt::UploadArchive(
                [
                    pkt(format!("argument --remote={}", s.d.outside.display()).as_bytes()),
                    pkt(format!("argument --exec=touch {}", pwned.display()).as_bytes()),
                    pkt(b"argument HEAD"),
                    b"0000".to_vec(),
                ]
                .concat(),
            ),
            Ends::NonZeroExit,
            "fatal: Unexpected option --remote",
        ),
        (
            "PostReceivePack: length 65525 > 65520",
            Pkt::PostReceivePack(over_max),
            Ends::Error(Code::Unavailable),
            "PostReceivePack: exit status 128: fatal: protocol error: bad line length 65521",
        ),
    ];
    assert_eq!(cases.len(), 14);
    for (name, case, want, says) in cases {
        let (got, output) = match timed(name, run_pkt(&ch, &good, case)).await {
            Ok((Some(v), output)) if v != 0 => (Ends::NonZeroExit, output),
            Ok((_, output)) => (Ends::Clean, output),
            Err(e) => (Ends::Error(e.code()), e.message().to_string()),
        };
        assert_eq!(got, want, "{name}: {output}");
        assert!(output.contains(says), "{name}: {output:?}");
        assert_eq!(refs(&s.good_path()), before, "{name} changed the repository");
    }
    assert!(!pwned.exists());
    s.check(None).await;
}

// ---------------------------------------------------------------------------------------------------------
// 4. Invalid UTF-8 in string fields, and broken protobuf.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_garbage_protobuf() {
    let mut s = setup();
    let ch = s.channel();
    let before = refs(&s.good_path());
    let good = raw_repo(b"default", b"good.git");
    let user = field(3, &[field(1, b"user-1"), field(2, b"Jane"), field(3, b"jane@example.com")].concat());
    // Decoding a string field that is not UTF-8 fails in the generated server code: upstream (grpc-go)
    // and tonic both answer Internal. The worker proxy decodes the first message itself and answers
    // InvalidArgument.
    let cases: Vec<(&str, &'static str, Vec<u8>, Code)> = vec![
        (
            "RepositoryExists: relative_path not UTF-8",
            "/gitaly.RepositoryService/RepositoryExists",
            field(1, &raw_repo(b"default", b"good\xff.git")),
            Code::Internal,
        ),
        (
            "RepositoryExists: storage_name with a cut multi-byte sequence",
            "/gitaly.RepositoryService/RepositoryExists",
            field(1, &raw_repo(b"def\xc3ault", b"good.git")),
            Code::Internal,
        ),
        (
            "SSHUploadPack: git_config_options not UTF-8",
            "/gitaly.SSHService/SSHUploadPack",
            [field(1, &good), field(4, b"uploadpack.allowFilter=\xfe")].concat(),
            Code::Internal,
        ),
        (
            "GetArchive: commit_id not UTF-8",
            "/gitaly.RepositoryService/GetArchive",
            [field(1, &good), field(2, b"main\x80")].concat(),
            Code::Internal,
        ),
        ("Health/Check: service not UTF-8", "/grpc.health.v1.Health/Check", field(1, b"\xc0\xaf"), Code::Internal),
        (
            "UserCreateBranch (proxied): relative_path not UTF-8",
            "/gitaly.OperationService/UserCreateBranch",
            [field(1, &raw_repo(b"default", b"good\xff.git")), field(2, b"b"), user.clone(), field(4, b"main")]
                .concat(),
            Code::InvalidArgument,
        ),
        (
            "RepositoryExists: truncated protobuf",
            "/gitaly.RepositoryService/RepositoryExists",
            vec![0x0a, 0x7f, 0x12],
            Code::Internal,
        ),
        (
            "UserCreateBranch (proxied): truncated protobuf",
            "/gitaly.OperationService/UserCreateBranch",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            Code::InvalidArgument,
        ),
    ];
    assert_eq!(cases.len(), 8);
    for (name, path, msg, want) in cases {
        let r = timed(name, raw_call(ch.clone(), path, None, vec![msg])).await;
        assert_eq!(code_of(&r), want, "{name}: {}", message_of(&r));
        let prefix = match want {
            Code::Internal => "failed to decode Protobuf message: ",
            _ => "decode request: ",
        };
        assert!(message_of(&r).starts_with(prefix), "{name}: {}", message_of(&r));
    }
    assert_eq!(refs(&s.good_path()), before);
    assert!(!s.d.storage.join("good\u{fffd}.git").exists());
    s.check(None).await;
}

// ---------------------------------------------------------------------------------------------------------
// 5. Hostile ref names.

enum RefCall {
    WriteRef(WriteRefRequest),
    CreateBranch(UserCreateBranchRequest),
    UpdateBranch(UserUpdateBranchRequest),
    DeleteBranch(UserDeleteBranchRequest),
    CreateTag(UserCreateTagRequest),
    DeleteTag(UserDeleteTagRequest),
    FfBranch(UserFfBranchRequest),
    MergeToRef(UserMergeToRefRequest),
}

async fn run_ref_call(ch: &Channel, call: RefCall) -> Result<(), Status> {
    let mut ops = OperationServiceClient::new(ch.clone());
    match call {
        RefCall::WriteRef(r) => RepositoryServiceClient::new(ch.clone()).write_ref(r).await.map(|_| ()),
        RefCall::CreateBranch(r) => ops.user_create_branch(r).await.map(|_| ()),
        RefCall::UpdateBranch(r) => ops.user_update_branch(r).await.map(|_| ()),
        RefCall::DeleteBranch(r) => ops.user_delete_branch(r).await.map(|_| ()),
        RefCall::CreateTag(r) => ops.user_create_tag(r).await.map(|_| ()),
        RefCall::DeleteTag(r) => ops.user_delete_tag(r).await.map(|_| ()),
        RefCall::FfBranch(r) => ops.user_ff_branch(r).await.map(|_| ()),
        RefCall::MergeToRef(r) => ops.user_merge_to_ref(r).await.map(|_| ()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ref_names() {
    let mut s = setup();
    let ch = s.channel();
    let good_path = s.good_path();
    let main = rev(&good_path, "main");
    let side = rev(&good_path, "side");
    let pwned = s.d.outside.join("pwned");
    let option = format!("--upload-pack=touch {}", pwned.display());
    let repo = s.good();
    let write_ref = |r: &[u8], revision: &[u8], old: &[u8]| {
        RefCall::WriteRef(WriteRefRequest {
            repository: repo.clone(),
            r#ref: r.to_vec(),
            revision: revision.to_vec(),
            old_revision: old.to_vec(),
            ..Default::default()
        })
    };
    let create_branch = |name: &[u8]| {
        RefCall::CreateBranch(UserCreateBranchRequest {
            repository: repo.clone(),
            branch_name: name.to_vec(),
            user: user(),
            start_point: b"main".to_vec(),
        })
    };
    let delete_branch = |name: &[u8]| {
        RefCall::DeleteBranch(UserDeleteBranchRequest {
            repository: repo.clone(),
            branch_name: name.to_vec(),
            user: user(),
        })
    };
    let update_branch = |name: &[u8]| {
        RefCall::UpdateBranch(UserUpdateBranchRequest {
            repository: repo.clone(),
            branch_name: name.to_vec(),
            user: user(),
            newrev: main.clone().into_bytes(),
            oldrev: ZERO_OID.into(),
        })
    };
    let create_tag = |name: &[u8]| {
        RefCall::CreateTag(UserCreateTagRequest {
            repository: repo.clone(),
            tag_name: name.to_vec(),
            user: user(),
            target_revision: b"main".to_vec(),
            ..Default::default()
        })
    };
    let merge_to_ref = |first_parent: &[u8], target: &[u8]| {
        RefCall::MergeToRef(UserMergeToRefRequest {
            repository: repo.clone(),
            user: user(),
            source_sha: side.clone(),
            first_parent_ref: first_parent.to_vec(),
            target_ref: target.to_vec(),
            message: b"merge".to_vec(),
            ..Default::default()
        })
    };
    // A NUL in a branch name must not split git's `update-ref -z --stdin` input into extra commands: this
    // one would create refs/heads/inj, delete the tag v1.0 and create refs/heads/inj2 in one transaction.
    let injected =
        [b"inj\0", main.as_bytes(), b"\0", ZERO_OID.as_bytes(), b"\0delete refs/tags/v1.0\0\0update refs/heads/inj2"]
            .concat();
    // Without a space no command can be added, but `commit` needs none: it would apply "update
    // refs/tags/v1.0 <side> <any old value>" before git dies on what follows.
    let moved_tag = [b"v1.0\0", side.as_bytes(), b"\0\0commit"].concat();
    let long_ref = format!("refs/heads/{}", "a".repeat(300));
    use Code::{FailedPrecondition, Internal, InvalidArgument, Unknown};
    // (name, call, expected code, expected message or "" for any, repository changes?)
    let cases: Vec<(&str, RefCall, Code, String, bool)> = vec![
        ("WriteRef: refs/heads/../x", write_ref(b"refs/heads/../x", b"main", b""), Internal, String::new(), false),
        (
            "WriteRef: NUL in ref",
            write_ref(b"refs/heads/a\0b", b"main", b""),
            InvalidArgument,
            "invalid ref: revision can't contain NUL".into(),
            false,
        ),
        (
            "WriteRef: whitespace in ref",
            write_ref(b"refs/heads/a b", b"main", b""),
            InvalidArgument,
            "invalid ref: revision can't contain whitespace".into(),
            false,
        ),
        (
            "WriteRef: newline in revision (stdin command injection)",
            write_ref(b"refs/heads/x", format!("{main}\nupdate refs/heads/side {ZERO_OID}").as_bytes(), b""),
            InvalidArgument,
            "invalid revision: revision can't contain whitespace".into(),
            false,
        ),
        (
            "WriteRef: colon in ref",
            write_ref(b"refs/heads/x:refs/heads/main", b"main", b""),
            InvalidArgument,
            "invalid ref: revision can't contain ':'".into(),
            false,
        ),
        (
            "WriteRef: not a full ref",
            write_ref(b"heads/x", b"main", b""),
            InvalidArgument,
            "ref has to be a full reference".into(),
            false,
        ),
        ("WriteRef: .lock suffix", write_ref(b"refs/heads/x.lock", b"main", b""), Internal, String::new(), false),
        ("WriteRef: 300-byte ref name", write_ref(long_ref.as_bytes(), b"main", b""), Internal, String::new(), false),
        (
            "WriteRef: HEAD pointed out of refs/",
            write_ref(b"HEAD", b"refs/heads/../../../outside", b""),
            Internal,
            String::new(),
            false,
        ),
        (
            "WriteRef: option as old revision",
            write_ref(b"refs/heads/x", b"main", option.as_bytes()),
            InvalidArgument,
            "invalid OldRevision: revision can't start with '-'".into(),
            false,
        ),
        // Upstream creates such a branch verbatim: it is a valid ref name and never reaches git as an
        // argument. The next row deletes it again.
        (
            "UserCreateBranch: option-like name is data",
            create_branch(b"--upload-pack=evil"),
            Code::Ok,
            String::new(),
            true,
        ),
        (
            "UserDeleteBranch: option-like name is data",
            delete_branch(b"--upload-pack=evil"),
            Code::Ok,
            String::new(),
            true,
        ),
        (
            "UserCreateBranch: ../x",
            create_branch(b"../x"),
            FailedPrecondition,
            "Could not update refs/heads/../x. Please refresh and try again.".into(),
            false,
        ),
        ("UserCreateBranch: NUL in name", create_branch(b"a\0b"), Internal, String::new(), false),
        (
            "UserDeleteBranch: ../../HEAD",
            delete_branch(b"../../HEAD"),
            FailedPrecondition,
            "branch not found: ../../HEAD".into(),
            false,
        ),
        (
            "UserDeleteBranch: NUL in name",
            delete_branch(b"a\0b"),
            FailedPrecondition,
            "branch not found: a\0b".into(),
            false,
        ),
        (
            "UserUpdateBranch: ../x",
            update_branch(b"../x"),
            FailedPrecondition,
            "Could not update ../x. Please refresh and try again.".into(),
            false,
        ),
        (
            "UserUpdateBranch: NUL-separated update-ref commands in the name",
            update_branch(&injected),
            FailedPrecondition,
            format!("Could not update {}. Please refresh and try again.", String::from_utf8_lossy(&injected)),
            false,
        ),
        (
            "UserCreateTag: ../x",
            create_tag(b"../x"),
            Unknown,
            "Gitlab::Git::CommitError: Could not update refs/tags/../x. Please refresh and try again.".into(),
            false,
        ),
        ("UserCreateTag: NUL in name", create_tag(b"a\0b"), Internal, String::new(), false),
        (
            "UserCreateTag: NUL-separated `commit` that would move the existing tag v1.0",
            create_tag(&moved_tag),
            Internal,
            String::new(),
            false,
        ),
        (
            "UserDeleteTag: NUL in name",
            RefCall::DeleteTag(UserDeleteTagRequest {
                repository: repo.clone(),
                tag_name: b"a\0b".to_vec(),
                user: user(),
            }),
            FailedPrecondition,
            "tag not found: a\0b".into(),
            false,
        ),
        (
            "UserDeleteTag: ../../HEAD",
            RefCall::DeleteTag(UserDeleteTagRequest {
                repository: repo.clone(),
                tag_name: b"../../HEAD".to_vec(),
                user: user(),
            }),
            FailedPrecondition,
            "tag not found: ../../HEAD".into(),
            false,
        ),
        (
            "UserFFBranch: option-like branch",
            RefCall::FfBranch(UserFfBranchRequest {
                repository: repo.clone(),
                user: user(),
                commit_id: main.clone(),
                branch: option.clone().into_bytes(),
            }),
            InvalidArgument,
            "reference not found".into(),
            false,
        ),
        // Upstream lets update-ref refuse this one (Unknown, "Could not update …"); the daemon checks the
        // name first. Either way nothing is written.
        (
            "UserMergeToRef: target ref escaping refs/merge-requests",
            merge_to_ref(b"refs/heads/main", b"refs/merge-requests/../../HEAD"),
            InvalidArgument,
            "invalid target ref".into(),
            false,
        ),
        (
            "UserMergeToRef: option-like first parent",
            merge_to_ref(option.as_bytes(), b"refs/merge-requests/1/merge"),
            InvalidArgument,
            "Invalid merge source".into(),
            false,
        ),
    ];
    assert_eq!(cases.len(), 26);
    let mut before = refs(&good_path);
    for (name, call, want, message, changes) in cases {
        let r = timed(name, run_ref_call(&ch, call)).await;
        assert_eq!(code_of(&r), want, "{name}: {}", message_of(&r));
        if !message.is_empty() {
            assert_eq!(message_of(&r), message, "{name}");
        }
        let after = refs(&good_path);
        if changes {
            before = after;
        } else {
            assert_eq!(after, before, "{name} changed the repository");
        }
    }
    // The option-like branch existed, verbatim, between its two rows; now the refs are as at the start.
    assert!(!refs(&good_path).contains("upload-pack"));
    assert!(refs(&good_path).contains("refs/tags/v1.0"));
    assert!(!pwned.exists());
    s.check(None).await;
}

// ---------------------------------------------------------------------------------------------------------
// 6. git_config_options that tests/hostile.rs does not try, on the receive-pack RPCs too.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_config_options() {
    let mut s = setup();
    let ch = s.channel();
    let before = refs(&s.good_path());
    let pwned = s.d.outside.join("pwned");
    let touch = format!("touch {}", pwned.display());
    let (denied, shape, value) =
        ("is not allowed in git_config_options", "failed regexp validation", "contains a newline or NUL byte");
    // (name, option, why it is refused)
    let options: Vec<(&str, String, &str)> = vec![
        ("core.fsmonitor runs a program", format!("core.fsmonitor={touch}"), denied),
        ("protocol.ext.allow enables ext::", "protocol.ext.allow=always".into(), denied),
        (
            "includeIf reads another file",
            format!("includeIf.gitdir:/.path={}", s.d.outside.join("sentinel").display()),
            shape,
        ),
        ("url.insteadOf rewrites remotes", "url.evil.insteadOf=ext::sh".into(), denied),
        ("core.askPass runs a program", format!("core.askPass={touch}"), denied),
        ("credential.helper runs a program", format!("credential.helper=!{touch}"), denied),
        ("core.gitProxy runs a program", format!("core.gitProxy={touch}"), denied),
        ("packObjectsHook in upper case", format!("UPLOADPACK.PACKOBJECTSHOOK={touch}"), denied),
        ("sshCommand on a push", format!("core.sshCommand={touch}"), denied),
        ("newline in an allowed key's value", "uploadpack.allowFilter=true\n[core]\n\tsshCommand=sh".into(), value),
        ("NUL in an allowed key's value", "uploadpack.allowFilter=true\0x".into(), value),
        ("NUL in the key", format!("core.ssh\0Command={touch}"), shape),
        ("empty key", "=true".into(), shape),
        ("space before the key", " core.sshCommand=sh".into(), shape),
        ("space after the key", "uploadpack.allowFilter =true".into(), shape),
    ];
    assert_eq!(options.len(), 15);
    for (name, opt, why) in &options {
        let opts = vec![opt.clone()];
        let results = vec![
            (
                "SSHUploadPack",
                drain(
                    SshServiceClient::new(ch.clone())
                        .ssh_upload_pack(futures::stream::iter(vec![SshUploadPackRequest {
                            repository: s.good(),
                            git_config_options: opts.clone(),
                            ..Default::default()
                        }]))
                        .await,
                )
                .await
                .map(|_| ()),
            ),
            (
                "SSHReceivePack",
                drain(
                    SshServiceClient::new(ch.clone())
                        .ssh_receive_pack(futures::stream::iter(vec![SshReceivePackRequest {
                            repository: s.good(),
                            gl_id: "user-1".into(),
                            git_config_options: opts.clone(),
                            ..Default::default()
                        }]))
                        .await,
                )
                .await
                .map(|_| ()),
            ),
            (
                "InfoRefsReceivePack",
                drain(
                    SmartHttpServiceClient::new(ch.clone())
                        .info_refs_receive_pack(InfoRefsRequest {
                            repository: s.good(),
                            git_config_options: opts.clone(),
                            ..Default::default()
                        })
                        .await,
                )
                .await
                .map(|_| ()),
            ),
            (
                "PostReceivePack",
                drain(
                    SmartHttpServiceClient::new(ch.clone())
                        .post_receive_pack(futures::stream::iter(vec![PostReceivePackRequest {
                            repository: s.good(),
                            gl_id: "user-1".into(),
                            git_config_options: opts.clone(),
                            ..Default::default()
                        }]))
                        .await,
                )
                .await
                .map(|_| ()),
            ),
        ];
        for (rpc, r) in results {
            assert_eq!(code_of(&r), Code::InvalidArgument, "{name} on {rpc}: {opt:?}: {}", message_of(&r));
            assert!(message_of(&r).ends_with(why), "{name} on {rpc}: {}", message_of(&r));
        }
    }
    assert_eq!(refs(&s.good_path()), before);
    assert!(!pwned.exists());
    s.check(None).await;
}

// ---------------------------------------------------------------------------------------------------------
// 7. Missing repository, storages that are not quite the configured one, paths and symlinks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repository_storages_and_paths() {
    let mut s = setup();
    let ch = s.channel();
    let before = refs(&s.good_path());
    // A chain of symlinks that ends outside, and a loop.
    std::os::unix::fs::symlink(s.d.storage.join("chain2"), s.d.storage.join("chain1")).unwrap();
    std::os::unix::fs::symlink(&s.d.outside, s.d.storage.join("chain2")).unwrap();
    std::os::unix::fs::symlink(s.d.storage.join("loop.git"), s.d.storage.join("loop.git")).unwrap();
    let mut r = RepositoryServiceClient::new(ch.clone());
    let mut ssh = SshServiceClient::new(ch.clone());
    let mut http = SmartHttpServiceClient::new(ch.clone());
    let mut ops = OperationServiceClient::new(ch.clone());
    let no_storage = "GetStorageByName: no such storage: \"\"";

    // Missing repository: upstream resolves it as a repository with an empty storage name.
    let mut cases: Vec<(&str, Result<(), Status>, Code, String)> = vec![
        (
            "RepositoryExists without repository",
            r.repository_exists(RepositoryExistsRequest { repository: None }).await.map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "RepositorySize without repository",
            r.repository_size(RepositorySizeRequest { repository: None }).await.map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "CreateRepository without repository",
            r.create_repository(CreateRepositoryRequest { repository: None }).await.map(|_| ()),
            Code::InvalidArgument,
            format!("locate repository: {no_storage}"),
        ),
        (
            "CalculateChecksum without repository",
            r.calculate_checksum(CalculateChecksumRequest { repository: None }).await.map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "FindMergeBase without repository",
            r.find_merge_base(FindMergeBaseRequest { repository: None, revisions: vec![b"a".to_vec(), b"b".to_vec()] })
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "GetArchive without repository",
            drain(r.get_archive(GetArchiveRequest { commit_id: "main".into(), ..Default::default() }).await)
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "InfoRefsUploadPack without repository",
            drain(http.info_refs_upload_pack(InfoRefsRequest::default()).await).await.map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "SSHUploadPack without repository",
            drain(ssh.ssh_upload_pack(futures::stream::iter(vec![SshUploadPackRequest::default()])).await)
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
        (
            "UserCreateBranch (proxied) without repository",
            ops.user_create_branch(UserCreateBranchRequest {
                repository: None,
                branch_name: b"x".to_vec(),
                user: user(),
                start_point: b"main".to_vec(),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            no_storage.into(),
        ),
    ];
    // Storage names that are almost the configured one.
    for storage in ["DEFAULT", "default/", "default\0", "../storage"] {
        let repo = Repository { storage_name: storage.into(), relative_path: "good.git".into(), ..Default::default() };
        let name = match storage {
            "DEFAULT" => "storage name in another case",
            "default/" => "storage name with a trailing slash",
            "default\0" => "storage name with a NUL",
            _ => "storage name as a path",
        };
        let res = ops
            .user_create_branch(UserCreateBranchRequest {
                repository: Some(repo.clone()),
                branch_name: b"x".to_vec(),
                user: user(),
                start_point: b"main".to_vec(),
            })
            .await
            .map(|_| ());
        let exists = r.repository_exists(RepositoryExistsRequest { repository: Some(repo) }).await;
        assert_eq!(code_of(&exists), Code::InvalidArgument, "{name}: RepositoryExists");
        cases.push((name, res, Code::InvalidArgument, format!("GetStorageByName: no such storage: {storage:?}")));
    }
    // Paths and symlinks beyond tests/hostile.rs.
    let escapes = "GetRepoPath: relative path escapes root directory".to_string();
    let path_cases: Vec<(&str, &str, Code, String)> = vec![
        ("chain of symlinks out of the storage", "chain1/new.git", Code::InvalidArgument, escapes.clone()),
        ("symlink loop", "loop.git", Code::InvalidArgument, escapes.clone()),
        (
            "traversal that comes back (upstream allows it; refused here)",
            "good.git/../good.git",
            Code::InvalidArgument,
            escapes,
        ),
    ];
    for (name, path, want, message) in path_cases {
        let res = r.create_repository(CreateRepositoryRequest { repository: Some(s.d.repo(path)) }).await.map(|_| ());
        cases.push((name, res, want, format!("locate repository: {message}")));
    }
    // The other path fields of Repository: upstream joins them to the repository path unchecked and hands
    // them to git (GIT_OBJECT_DIRECTORY, GIT_ALTERNATE_OBJECT_DIRECTORIES); the daemon ignores them, so
    // housekeeping writes only inside the repository.
    let objects_outside = Repository { git_object_directory: "../../outside".into(), ..s.d.repo("good.git") };
    let res =
        r.garbage_collect(GarbageCollectRequest { repository: Some(objects_outside), ..Default::default() }).await;
    cases.push(("git_object_directory pointing outside (GarbageCollect)", res.map(|_| ()), Code::Ok, String::new()));
    let alternates_outside = Repository {
        git_alternate_object_directories: vec!["../../outside".into(), "/".into()],
        ..s.d.repo("good.git")
    };
    let res = r.repack_full(RepackFullRequest { repository: Some(alternates_outside), create_bitmap: true }).await;
    cases.push(("git_alternate_object_directories outside (RepackFull)", res.map(|_| ()), Code::Ok, String::new()));
    let long_component = format!("{}.git", "x".repeat(300));
    let res = r.create_repository(CreateRepositoryRequest { repository: Some(s.d.repo(&long_component)) }).await;
    cases.push((
        "300-byte path component",
        res.map(|_| ()),
        Code::Internal,
        "create directories: File name too long (os error 36)".into(),
    ));
    assert_eq!(cases.len(), 19);
    for (name, res, want, message) in cases {
        assert_eq!(code_of(&res), want, "{name}: {}", message_of(&res));
        assert_eq!(message_of(&res), message, "{name}");
    }
    assert!(!s.d.outside.join("new.git").exists());
    assert_eq!(refs(&s.good_path()), before);
    s.check(None).await;
}

// ---------------------------------------------------------------------------------------------------------
// Two daemon bugs this file found, now fixed; kept as regressions.

/// Upstream's auth interceptor refuses a call before its handler reads anything. LogLayer used to wait for
/// and buffer the first request message before AuthLayer saw the call, so a client without a token could
/// hold streams open (and make the daemon buffer up to 4 MiB each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_stream_is_refused_before_its_first_message() {
    let s = setup_with("[auth]\ntoken = \"secret\"\n");
    let (tx, rx) = tokio::sync::mpsc::channel::<SshUploadPackRequest>(1);
    let mut ssh = SshServiceClient::new(s.channel());
    let call = ssh.ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx));
    let r = tokio::time::timeout(Duration::from_secs(5), call).await.expect("no answer before the first message");
    assert_eq!(r.map(|_| ()).unwrap_err().code(), Code::Unauthenticated);
    drop(tx);
}

/// The locator used to find the first existing ancestor of a path from the full path upwards, copying the
/// whole path at each step: quadratic in its length (a 4 MiB path, a legal message, took minutes on a
/// runtime thread). It now walks down from the top and stops at the first missing component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_path_just_under_the_size_limit_is_answered_quickly() {
    let s = setup();
    let long = "a/".repeat((rgitaly::transport::MAX_MESSAGE - 4096) / 2);
    let mut r = RepositoryServiceClient::new(s.channel()).max_encoding_message_size(64 << 20);
    let call = r.repository_exists(RepositoryExistsRequest { repository: Some(s.d.repo(&long)) });
    let res = tokio::time::timeout(Duration::from_secs(10), call).await.expect("no answer within 10 s");
    assert!(!res.unwrap().into_inner().exists);
}

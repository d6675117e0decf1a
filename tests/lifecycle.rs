//! Process lifecycle beyond SIGTERM: systemd readiness, TLS certificate reload (SIGHUP and file change)
//! without dropping connections, and the zero-downtime upgrade on SIGUSR2.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use rgitaly::pktline;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::ssh_service_client::SshServiceClient;
use rgitaly::proto::gitaly::{ServerInfoRequest, SshUploadPackRequest};
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::ListWorkersRequest;

/// A `NOTIFY_SOCKET` as systemd provides one, and the messages sent to it.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Notify { socket, path, _dir: dir }
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Kills a successor daemon if the test ends without stopping it.
struct Successor(i32);

impl Successor {
    fn stop(&self) -> bool {
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        wait_gone(self.0, 30)
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if process_alive(self.0) {
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

fn wait_gone(pid: i32, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_and_stopping() {
    let notify = Notify::new();
    let mut d = Daemon::start_with_env("", &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    // READY=1 comes only once the worker pool is up: a call that needs a worker works at once.
    assert_eq!(notify.next(), "READY=1\n");
    let workers = AdminServiceClient::new(d.channel().await).list_workers(ListWorkersRequest {}).await.unwrap();
    assert!(workers.into_inner().workers.iter().filter(|w| w.pid > 0).count() >= 2);
    assert_eq!(d.stop(), Some(0));
    assert_eq!(notify.next(), "STOPPING=1\n");
}

/// Whether a new TLS connection that trusts only `ca` completes a call.
async fn tls_call_ok(port: u16, ca: &std::path::Path) -> bool {
    // This test binary's only user of SSL_CERT_FILE.
    std::env::set_var("SSL_CERT_FILE", ca);
    match rgitaly::client::connect(&format!("tls://localhost:{port}"), None).await {
        Ok(ch) => ServerServiceClient::new(ch).server_info(ServerInfoRequest {}).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_reloads_without_dropping_connections() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let ca_a = issue_certificate(certs.path(), "a", &cert, &key);
    let port = free_port();
    let d = Daemon::start_with(&format!(
        "tls_listen_addr = \"127.0.0.1:{port}\"\n[tls]\ncertificate_path = {cert:?}\nkey_path = {key:?}\n"
    ));
    assert!(eventually(20, || tls_call_ok(port, &ca_a)).await, "tls listener did not come up");
    std::env::set_var("SSL_CERT_FILE", &ca_a);
    let established = rgitaly::client::connect(&format!("tls://localhost:{port}"), None).await.unwrap();
    let mut established = ServerServiceClient::new(established);
    established.server_info(ServerInfoRequest {}).await.unwrap();

    // SIGHUP: new handshakes get certificate B; the connection made with A keeps working.
    let ca_b = issue_certificate(certs.path(), "b", &cert, &key);
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    assert!(eventually(10, || tls_call_ok(port, &ca_b)).await, "certificate B not served after SIGHUP");
    assert!(!tls_call_ok(port, &ca_a).await, "certificate A still served after SIGHUP");
    established.server_info(ServerInfoRequest {}).await.expect("established connection dropped by reload");

    // A broken pair is refused and the current certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tls_call_ok(port, &ca_b).await, "a failed reload replaced the certificate");

    // Without a signal: the files change and the daemon notices.
    let ca_c = issue_certificate(certs.path(), "c", &cert, &key);
    assert!(eventually(20, || tls_call_ok(port, &ca_c)).await, "changed certificate files were not picked up");
    established.server_info(ServerInfoRequest {}).await.expect("established connection dropped by reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_over_to_a_successor_without_downtime() {
    let notify = Notify::new();
    let metrics_port = free_port();
    let mut d = Daemon::start_with_env(
        &format!("prometheus_listen_addr = \"127.0.0.1:{metrics_port}\"\n"),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    assert_eq!(notify.next(), "READY=1\n");
    let old = d.pid();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));

    // A clone in flight on the old daemon: advertisement received, wants not yet sent.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(SshUploadPackRequest { repository: Some(d.repo("p.git")), ..Default::default() }).await.unwrap();
    let mut clone = SshServiceClient::new(d.channel().await)
        .ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let advert = clone.message().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&advert.stdout).contains(&head));

    // New connections, one call each, all the way through the upgrade.
    let address = d.address();
    let stop_probe = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let stop = stop_probe.clone();
        async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = match rgitaly::client::connect(&address, None).await {
                    Ok(ch) => ServerServiceClient::new(ch).server_info(ServerInfoRequest {}).await.map(|_| ()),
                    Err(e) => Err(tonic::Status::unavailable(e.to_string())),
                };
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        }
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(old, libc::SIGUSR2) };
    // systemd hears of the new main process from the old one, once the successor serves.
    let msg = notify.next();
    let new: i32 = msg.trim().strip_prefix("MAINPID=").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{msg}"));
    let successor = Successor(new);
    assert_ne!(new, old);
    // New connections now reach the successor: its own workers answer ListWorkers.
    let served_by_new = eventually(20, || {
        let address = d.address();
        async move {
            let Ok(ch) = rgitaly::client::connect(&address, None).await else { return false };
            let Ok(r) = AdminServiceClient::new(ch).list_workers(ListWorkersRequest {}).await else { return false };
            let w = r.into_inner().workers;
            !w.is_empty() && w.iter().all(|w| w.pid > 0 && parent_of(w.pid) == Some(new))
        }
    })
    .await;
    assert!(served_by_new, "new connections are not served by the successor");
    assert!(process_alive(old), "the old daemon left before its clone finished");

    // The clone in flight completes on the old daemon.
    tx.send(SshUploadPackRequest {
        stdin: [pktline::encode(format!("want {head}\n").as_bytes()), b"0000".to_vec(), pktline::encode(b"done\n")]
            .concat()
            .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(tx);
    let (mut pack, mut exit) = (Vec::new(), None);
    while let Some(m) = clone.message().await.expect("in-flight clone failed during the upgrade") {
        pack.extend_from_slice(&m.stdout);
        if let Some(s) = m.exit_status {
            exit = Some(s.value);
        }
    }
    // As upstream, a successful upload-pack ends without an exit status message.
    assert_eq!(exit.unwrap_or(0), 0);
    assert!(pack.windows(4).any(|w| w == b"PACK"), "no pack in the clone's output");

    // Then the old daemon exits cleanly, leaving the socket to its successor.
    assert_eq!(d.wait_exit(30), Some(0), "old daemon did not exit cleanly after draining");
    ServerServiceClient::new(d.channel().await).server_info(ServerInfoRequest {}).await.unwrap();
    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.contains("gitaly_build_info"), "metrics endpoint not handed over: {metrics}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_probe.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = probe.await.unwrap();
    assert!(failed.is_empty(), "calls failed during the upgrade ({ok} ok): {failed:?}");
    assert!(ok > 10, "too few probe calls ({ok}) to say anything");

    // A real git clone through the successor, then its clean stop removes the socket.
    run(d.git(&d.work_dir("after")).args(["clone", "--quiet", &d.url("p.git"), "c"]));
    assert!(successor.stop(), "successor did not stop on SIGTERM");
    assert!(!d.socket.exists(), "successor left its socket behind");
}

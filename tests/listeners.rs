//! TCP and TLS listeners beside the Unix socket: the same services on each, and rgitaly-ssh over `tls://`.

mod common;

use common::*;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::ServerInfoRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_tls_serve_the_same_api() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let (tcp, tls) = (free_port(), free_port());
    let d = Daemon::start_with(&format!(
        "listen_addr = \"127.0.0.1:{tcp}\"\ntls_listen_addr = \"127.0.0.1:{tls}\"\n[tls]\ncertificate_path = {cert:?}\nkey_path = {key:?}\n"
    ));
    let wait = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err() && wait.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let ch = rgitaly::client::connect(&format!("tcp://127.0.0.1:{tcp}"), None).await.unwrap();
    let info = ServerServiceClient::new(ch).server_info(ServerInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.storage_statuses[0].storage_name, STORAGE);

    std::env::set_var("SSL_CERT_FILE", &ca);
    let ch = rgitaly::client::connect(&format!("tls://localhost:{tls}"), None).await.unwrap();
    let info = ServerServiceClient::new(ch).server_info(ServerInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.server_version, rgitaly::VERSION);

    // A plain-text client on the TLS port fails cleanly.
    let plain_failed = match rgitaly::client::connect(&format!("tcp://127.0.0.1:{tls}"), None).await {
        Err(_) => true,
        Ok(ch) => ServerServiceClient::new(ch).server_info(ServerInfoRequest {}).await.is_err(),
    };
    assert!(plain_failed, "plain text was served on the TLS port");

    // git through rgitaly-ssh over TLS.
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let work = d.work_dir("tls");
    let mut cmd = d.git(&work);
    cmd.env("GITALY_ADDRESS", format!("tls://localhost:{tls}")).env("SSL_CERT_FILE", &ca).args([
        "clone",
        "--quiet",
        &d.url("p.git"),
        "c",
    ]);
    run(&mut cmd);
    assert_eq!(stdout(git(&work.join("c")).args(["rev-parse", "HEAD"])), stdout(git(&wt).args(["rev-parse", "HEAD"])));
}

//! The concurrency limiter: per RPC per repository, slots held for the whole stream, a bounded queue with
//! two distinct refusals, other repositories unaffected.

mod common;

use std::time::Duration;

use common::*;
use rgitaly::proto::gitaly::ssh_service_client::SshServiceClient;
use rgitaly::proto::gitaly::{SshUploadPackRequest, SshUploadPackResponse};
use tonic::Code;

/// Opens an SSHUploadPack that reads the ref advertisement and then holds its slot (never sends "done").
async fn hold(
    d: &Daemon,
    repo: &str,
) -> Result<(tokio::sync::mpsc::Sender<SshUploadPackRequest>, tonic::Streaming<SshUploadPackResponse>), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(SshUploadPackRequest { repository: Some(d.repo(repo)), ..Default::default() }).await.unwrap();
    let mut stream = SshServiceClient::new(d.channel().await)
        .ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = stream.message().await?;
    assert!(first.is_some_and(|m| !m.stdout.is_empty()), "advertisement");
    Ok((tx, stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_queue_and_refusals() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = Daemon::start_with(&format!(
        "prometheus_listen_addr = \"127.0.0.1:{port}\"\n[[concurrency]]\nrpc = \"/gitaly.SSHService/SSHUploadPack\"\nmax_per_repo = 1\nmax_queue_size = 1\nmax_queue_wait = \"700ms\"\n"
    ));
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    d.seed_repo("q.git", &wt);

    // A holds p.git's only slot for as long as its stream lives.
    let a = hold(&d, "p.git").await.unwrap();
    // B queues behind it and times out; C finds the queue full at once.
    let b = tokio::spawn({
        let d_addr = d.address();
        let repo = d.repo("p.git");
        async move {
            let ch = rgitaly::client::connect(&d_addr, None).await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(SshUploadPackRequest { repository: Some(repo), ..Default::default() }).await.unwrap();
            let started = std::time::Instant::now();
            let r = SshServiceClient::new(ch).ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
            (r.map(|_| ()), started.elapsed(), tx)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = hold(&d, "p.git").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "maximum queue size reached"));
    let (b_result, waited, _tx) = b.await.unwrap();
    let e = b_result.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "maximum time in concurrency queue reached"));
    assert!(waited >= Duration::from_millis(600), "{waited:?}");

    // Another repository is not affected.
    let other = hold(&d, "q.git").await.unwrap();
    drop(other);

    // When A's stream ends its slot is free again.
    drop(a);
    let mut again = None;
    for _ in 0..50 {
        match hold(&d, "p.git").await {
            Ok(h) => {
                again = Some(h);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(again.is_some(), "slot not released when the stream ended");

    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    for want in [
        "gitaly_requests_dropped_total{grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",reason=\"max_size\",system=\"gitaly\"} 1",
        "gitaly_requests_dropped_total{grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",reason=\"max_time\",system=\"gitaly\"} 1",
        "gitaly_rate_limiting_in_progress{grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",system=\"gitaly\"} 1",
        "gitaly_rate_limiting_queued{grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",system=\"gitaly\"} 0",
        "gitaly_rate_limiting_acquiring_seconds_count",
    ] {
        assert!(body.contains(want), "missing {want}\n{body}");
    }
}

/// Every spelling of one repository is one repository to the limiter: with one slot and no queue, each
/// alias is refused while `p.git` holds the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_of_one_repository_share_its_slots() {
    let d = Daemon::start_with(
        "[[concurrency]]\nrpc = \"/gitaly.SSHService/SSHUploadPack\"\nmax_per_repo = 1\nmax_queue_size = 0\n",
    );
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let _held = hold(&d, "p.git").await.unwrap();
    for alias in ["./p.git", "p.git/", "././p.git", "p.git//", "./p.git/.", "p.git"] {
        let e = hold(&d, alias).await.expect_err(alias);
        assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "maximum queue size reached"), "{alias}");
    }
    // A symlink inside the storage names the same repository too.
    std::os::unix::fs::symlink(d.repo_path("p.git"), d.repo_path("link.git")).unwrap();
    let e = hold(&d, "link.git").await.expect_err("symlink");
    assert_eq!(e.code(), Code::ResourceExhausted);
}

/// A client that cancels while queued gives its place back at once: the queue gauge returns to 0 and the
/// queue has room again, however many cancelled. 20 rounds of 3 cancels; `RGITALY_TEST_CANCELS_PER_ROUND=50`
/// makes it 1,000 (the figure measured for the hardening issue), printing gauges, threads and RSS after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_release_their_queue_place() {
    let per_round: usize =
        std::env::var("RGITALY_TEST_CANCELS_PER_ROUND").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let port = free_port();
    let d = Daemon::start_with(&format!(
        "prometheus_listen_addr = \"127.0.0.1:{port}\"\n[[concurrency]]\nrpc = \"/gitaly.SSHService/SSHUploadPack\"\nmax_per_repo = 1\nmax_queue_size = {per_round}\n"
    ));
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let held = hold(&d, "p.git").await.unwrap();
    let (threads_before, rss_before) = threads_and_rss(d.pid());
    let queued = "gitaly_rate_limiting_queued{grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",system=\"gitaly\"}";
    for round in 0..20 {
        // Waiters fill the queue, then their clients give up.
        let mut waiters = Vec::new();
        for _ in 0..per_round {
            let (addr, repo) = (d.address(), d.repo("p.git"));
            waiters.push(tokio::spawn(async move {
                let ch = rgitaly::client::connect(&addr, None).await.unwrap();
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(SshUploadPackRequest { repository: Some(repo), ..Default::default() }).await.unwrap();
                let r =
                    SshServiceClient::new(ch).ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
                (r.map(|_| ()), tx)
            }));
        }
        assert!(
            eventually(20, || async { http_get(port, "/metrics").contains(&format!("{queued} {per_round}")) }).await,
            "round {round}: {per_round} waiters never queued"
        );
        for w in &waiters {
            w.abort();
        }
        assert!(
            eventually(10, || async { http_get(port, "/metrics").contains(&format!("{queued} 0")) }).await,
            "round {round}: cancelled waiters kept their places:\n{}",
            http_get(port, "/metrics").lines().filter(|l| l.contains("rate_limiting")).collect::<Vec<_>>().join("\n")
        );
    }
    let body = http_get(port, "/metrics");
    let (threads, rss) = threads_and_rss(d.pid());
    eprintln!(
        "after {} cancels: {}; in progress {}; daemon threads {threads_before} -> {threads}, rss {:.1} -> {:.1} MiB",
        20 * per_round,
        body.lines().find(|l| l.starts_with(queued)).unwrap_or("no queue gauge"),
        metric_value(&body, "gitaly_rate_limiting_in_progress"),
        rss_before as f64 / (1 << 20) as f64,
        rss as f64 / (1 << 20) as f64
    );
    // The queue has room: a new waiter queues (and gets the slot when the holder ends) instead of being
    // refused with "maximum queue size reached".
    let waiter = tokio::spawn({
        let (addr, repo) = (d.address(), d.repo("p.git"));
        async move {
            let ch = rgitaly::client::connect(&addr, None).await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(SshUploadPackRequest { repository: Some(repo), ..Default::default() }).await.unwrap();
            let r = SshServiceClient::new(ch).ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
            r.map(|_| ())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("waiter never served").unwrap().unwrap();
}

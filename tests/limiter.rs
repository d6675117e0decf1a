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

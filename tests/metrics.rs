//! The Prometheus endpoint: upstream's metric families, fed by real calls.

mod common;

use common::*;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::ServerInfoRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_upstream_families() {
    let port = free_port();
    let d = Daemon::start_with(&format!(
        "prometheus_listen_addr = \"127.0.0.1:{port}\"\n[prometheus]\ngrpc_latency_buckets = [0.001, 0.01, 0.1, 1.0]\n"
    ));
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let ch = d.channel().await;
    ServerServiceClient::new(ch.clone()).server_info(ServerInfoRequest {}).await.unwrap();
    run(d.git(&d.work_dir("c")).args(["clone", "--quiet", &d.url("p.git"), "c"]));
    let wait = std::time::Instant::now();
    let body = loop {
        let text = http_get(port, "/metrics");
        if text.contains("grpc_method=\"SSHUploadPack\"") || wait.elapsed().as_secs() > 10 {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for want in [
        "grpc_server_started_total{grpc_method=\"ServerInfo\",grpc_service=\"gitaly.ServerService\",grpc_type=\"unary\"}",
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"ServerInfo\",grpc_service=\"gitaly.ServerService\",grpc_type=\"unary\"} 1",
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",grpc_type=\"bidi_stream\"} 1",
        "grpc_server_handling_seconds_bucket{grpc_method=\"ServerInfo\"",
        "gitaly_connections_total{type=\"unix\"}",
        "gitaly_authentications_total{enforced=\"true\",status=\"server disabled authentication\"}",
        "gitaly_supervisor_starts_total{name=\"worker-0\"} 1",
        "gitaly_commands_running 0",
        "gitaly_build_info{",
        "grpc_server_msg_received_total{grpc_method=\"ServerInfo\",grpc_service=\"gitaly.ServerService\",grpc_type=\"unary\"} 1",
        "grpc_server_msg_sent_total{grpc_method=\"ServerInfo\",grpc_service=\"gitaly.ServerService\",grpc_type=\"unary\"} 1",
        "grpc_server_msg_received_total{grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\",grpc_type=\"bidi_stream\"}",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "gitaly_git_protocol_requests_total{git_protocol=\"v2\",grpc_method=\"SSHUploadPack\",grpc_service=\"gitaly.SSHService\"} 1",
    ] {
        assert!(body.contains(want), "missing {want}\n{body}");
    }
    // A clone streams several messages each way.
    for family in ["grpc_server_msg_received_total", "grpc_server_msg_sent_total"] {
        let line = body
            .lines()
            .find(|l| l.starts_with(family) && l.contains("SSHUploadPack"))
            .unwrap_or_else(|| panic!("no {family} for SSHUploadPack"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 2, "{line}");
    }
    assert!(http_get(port, "/nope").starts_with("HTTP/1.1 404"));
}

/// Calls on made-up method names, without a token, cost one `unknown` label set: a client-chosen path never
/// becomes a metric label, and every such call is answered Unimplemented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_one_label() {
    let port = free_port();
    let d = Daemon::start_with(&format!("prometheus_listen_addr = \"127.0.0.1:{port}\"\n[auth]\ntoken = \"secret\"\n"));
    let ch = rgitaly::client::unix_channel_lazy(&d.socket);
    let before = http_get(port, "/metrics").len();
    for i in 0..2_000 {
        let path = format!("/gitaly.Made{i}Service/Up{i}");
        let e = raw_call(ch.clone(), &path, None, vec![vec![]]).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{path}: {e:?}");
    }
    // A known service with an unknown method, and a path that is no gRPC method at all.
    for path in ["/gitaly.CommitService/NoSuchMethod", "/x", "/gitaly.CommitService/FindCommit/extra"] {
        let e = raw_call(ch.clone(), path, None, vec![vec![]]).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{path}");
    }
    let body = http_get(port, "/metrics");
    assert!(!body.contains("Made") && !body.contains("NoSuchMethod"), "client-chosen names in the metrics");
    assert!(
        body.contains("grpc_server_handled_total{grpc_code=\"Unimplemented\",grpc_method=\"unknown\",grpc_service=\"unknown\",grpc_type=\"unary\"} 2003"),
        "{body}"
    );
    // The exposition grew by a handful of lines, not by one set per name.
    assert!(body.len() < before + 4096, "metrics grew from {before} to {} bytes", body.len());
}

//! ServerService, health, reflection, and UNIMPLEMENTED for RPCs not built yet.

mod common;

use common::*;
use rgitaly::proto::gitaly::diff_service_client::DiffServiceClient;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
use rgitaly::proto::gitaly::{
    CreateRepositoryRequest, DiskStatisticsRequest, FindChangedPathsRequest, ServerInfoRequest, WikiFindPageRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_info_and_disk_statistics() {
    let d = Daemon::start();
    let mut c = ServerServiceClient::new(d.channel().await);
    let info = c.server_info(ServerInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.server_version, rgitaly::VERSION);
    let git_version = stdout(std::process::Command::new("git").arg("version"));
    assert_eq!(format!("git version {}", info.git_version), git_version);
    assert_eq!(info.storage_statuses.len(), 1);
    let s = &info.storage_statuses[0];
    assert_eq!(s.storage_name, STORAGE);
    assert!(s.readable && s.writeable);
    assert_eq!(s.replication_factor, 1);
    let meta = std::fs::read_to_string(d.storage.join(".gitaly-metadata")).unwrap();
    assert_eq!(meta, format!("{{\"gitaly_filesystem_id\":\"{}\"}}\n", s.filesystem_id));
    assert!(!s.fs_type.is_empty());
    assert!(!d.storage.join("+testWrite").exists());

    let stats = c.disk_statistics(DiskStatisticsRequest {}).await.unwrap().into_inner();
    let st = &stats.storage_statuses[0];
    assert_eq!(st.storage_name, STORAGE);
    assert!(st.available > 0 && st.used > 0, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_id_survives_restart() {
    let mut d = Daemon::start();
    let first = std::fs::read_to_string(d.storage.join(".gitaly-metadata")).unwrap();
    assert_eq!(d.stop(), Some(0), "clean exit on SIGTERM");
    assert!(!d.socket.exists(), "socket removed on exit");
    let meta_path = d.storage.join(".gitaly-metadata");
    // Start a second daemon on the same storage directory.
    let config = d.dir.path().join("config.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .arg(&config)
        .env("RGITALY_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !d.socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(d.socket.exists(), "legacy `rgitaly CONFIG` form serves");
    assert_eq!(std::fs::read_to_string(meta_path).unwrap(), first);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_unimplemented() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["", "gitaly.SSHService", "gitaly.RepositoryService"] {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(r.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    }
    // The workers' internal RefUpdateService is not served on the daemon's listeners: not reported either.
    let e = health.check(tonic_health::pb::HealthCheckRequest { service: "rgitaly.RefUpdateService".into() }).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl.server_reflection_info(futures::stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "gitaly.SSHService",
        "gitaly.SmartHTTPService",
        "gitaly.RepositoryService",
        "gitaly.ServerService",
        "gitaly.RefService",
        "gitaly.CommitService",
        "gitaly.BlobService",
        "gitaly.DiffService",
        "gitaly.OperationService",
        "gitaly.WikiService",
        "gitaly.ConflictsService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }

    let e =
        DiffServiceClient::new(ch.clone()).find_changed_paths(FindChangedPathsRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    // Wiki RPCs are answered by a worker through the proxy, with upstream's validation.
    let repo = Some(d.repo("u.git"));
    RepositoryServiceClient::new(ch.clone())
        .create_repository(CreateRepositoryRequest { repository: repo.clone() })
        .await
        .unwrap();
    let e = WikiServiceClient::new(ch)
        .wiki_find_page(WikiFindPageRequest { repository: repo, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, "WikiFindPage: empty Title"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_log_line_per_call_with_upstream_fields() {
    let logs = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_env(
        &format!("[logging]\nformat = \"json\"\ndir = {:?}\n", logs.path()),
        &[("RGITALY_LOG", "info")],
    );
    let mut req = tonic::Request::new(rgitaly::proto::gitaly::RepositoryExistsRequest {
        repository: Some(rgitaly::proto::gitaly::Repository {
            gl_project_path: "group/project".into(),
            ..d.repo("p.git")
        }),
    });
    req.metadata_mut().insert("x-gitlab-correlation-id", "corr-123".parse().unwrap());
    RepositoryServiceClient::new(d.channel().await).repository_exists(req).await.unwrap();
    let line = {
        let mut found = None;
        for _ in 0..100 {
            let text = std::fs::read_to_string(logs.path().join("rgitaly.log")).unwrap_or_default();
            found = text.lines().find(|l| l.contains("corr-123")).map(str::to_string);
            if found.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        found.expect("a log line for the call")
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["grpc.service"], "gitaly.RepositoryService");
    assert_eq!(v["grpc.method"], "RepositoryExists");
    assert_eq!(v["grpc.code"], "OK");
    assert_eq!(v["grpc.request.repoStorage"], STORAGE);
    assert_eq!(v["grpc.request.repoPath"], "p.git");
    assert_eq!(v["grpc.request.glProjectPath"], "group/project");
    assert_eq!(v["correlation_id"], "corr-123");
    assert!(v["grpc.time_ms"].as_f64().is_some());
}

//! v2 token authentication on every listener and every service: missing, malformed, wrong and stale tokens,
//! previous secrets during rotation, transitioning mode, and real clients carrying GITALY_TOKEN.

mod common;

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::{RepositoryExistsRequest, ServerInfoRequest, UserCreateBranchRequest};
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::ListWorkersRequest;
use tonic::Code;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Calls a handful of services, each with `authorization` set to `header` (or absent); returns their codes.
async fn codes(ch: &AuthChannel, header: Option<&str>, d: &Daemon) -> Vec<(&'static str, Code)> {
    fn req<T>(msg: T, header: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }
    let code = |r: Result<(), tonic::Status>| r.err().map(|e| e.code()).unwrap_or(Code::Ok);
    let mut out = Vec::new();
    out.push((
        "ServerInfo",
        code(ServerServiceClient::new(ch.clone()).server_info(req(ServerInfoRequest {}, header)).await.map(|_| ())),
    ));
    out.push((
        "RepositoryExists",
        code(
            RepositoryServiceClient::new(ch.clone())
                .repository_exists(req(RepositoryExistsRequest { repository: Some(d.repo("p.git")) }, header))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "ListWorkers",
        code(AdminServiceClient::new(ch.clone()).list_workers(req(ListWorkersRequest {}, header)).await.map(|_| ())),
    ));
    out.push((
        "Health",
        code(
            tonic_health::pb::health_client::HealthClient::new(ch.clone())
                .check(req(tonic_health::pb::HealthCheckRequest { service: String::new() }, header))
                .await
                .map(|_| ()),
        ),
    ));
    let branch = UserCreateBranchRequest {
        repository: Some(d.repo("p.git")),
        branch_name: format!("b{}", rand_suffix()).into_bytes(),
        user: user(),
        start_point: b"main".to_vec(),
    };
    out.push((
        "UserCreateBranch",
        code(OperationServiceClient::new(ch.clone()).user_create_branch(req(branch, header)).await.map(|_| ())),
    ));
    out
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn all(codes: &[(&str, Code)], want: Code) {
    for (rpc, code) in codes {
        assert_eq!(*code, want, "{rpc}: {codes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_and_service_requires_a_valid_token() {
    let tcp = free_port();
    let d = Daemon::start_with(&format!(
        "listen_addr = \"127.0.0.1:{tcp}\"\n[auth]\ntoken = \"secret\"\nprevious_tokens = [\"old-secret\"]\n"
    ));
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    for address in [d.address(), format!("tcp://127.0.0.1:{tcp}")] {
        let ch = rgitaly::client::connect(&address, None).await.unwrap();
        let t = now();
        all(&codes(&ch, None, &d).await, Code::Unauthenticated);
        all(&codes(&ch, Some("Bearer nonsense"), &d).await, Code::Unauthenticated);
        all(
            &codes(&ch, Some(&format!("Bearer {}", rgitaly::auth::sign_v2(b"wrong", t))), &d).await,
            Code::PermissionDenied,
        );
        all(
            &codes(&ch, Some(&format!("Bearer {}", rgitaly::auth::sign_v2(b"secret", t - 120))), &d).await,
            Code::PermissionDenied,
        );
        all(&codes(&ch, Some(&format!("Bearer {}", rgitaly::auth::sign_v2(b"secret", t))), &d).await, Code::Ok);
        // During a rotation the previous secret still works.
        all(&codes(&ch, Some(&format!("Bearer {}", rgitaly::auth::sign_v2(b"old-secret", t))), &d).await, Code::Ok);
        // The client helper signs every call.
        let signed = rgitaly::client::connect(&address, Some("secret")).await.unwrap();
        let info = ServerServiceClient::new(signed).server_info(ServerInfoRequest {}).await;
        assert!(info.is_ok(), "{info:?}");
    }
    let e = ServerServiceClient::new(d.channel().await).server_info(ServerInfoRequest {}).await.unwrap_err();
    assert_eq!(e.message(), "authentication required");

    // Real git through rgitaly-ssh: refused without the token, served with it.
    let work = d.work_dir("clone");
    let out = d.git(&work).args(["clone", "--quiet", &d.url("p.git"), "no"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication required"));
    run(d.git(&work).env("GITALY_TOKEN", "secret").args(["clone", "--quiet", &d.url("p.git"), "yes"]));
    // And the admin CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .args(["admin", "workers", "--json", "--address", &d.address(), "--token", "secret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitioning_counts_but_allows() {
    let d = Daemon::start_with("[auth]\ntoken = \"secret\"\ntransitioning = true\n");
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let ch = d.channel().await;
    all(&codes(&ch, None, &d).await, Code::Ok);
    all(&codes(&ch, Some(&format!("Bearer {}", rgitaly::auth::sign_v2(b"wrong", now()))), &d).await, Code::Ok);
}

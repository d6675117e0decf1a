//! The worker pool with the real binaries: roles, crashes, memory and health rotation, the circuit breaker,
//! RestartWorker, the UserMergeBranch safety net, and no worker left behind.

mod common;

use std::time::Duration;

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::{worker, ListWorkersRequest, RestartWorkerRequest, Worker};

/// Fast timings so pool behaviour shows within seconds.
const FAST: &str = "[workers]\nnum_workers = 3\nmemory_check_interval = \"100ms\"\nhealth_check_interval = \"200ms\"\nhealth_failure_timeout = \"1s\"\ngraceful_restart_timeout = \"5s\"\ncrash_threshold = 3\ncrash_wait_time = \"3s\"\n";

fn setup(extra: &str) -> Daemon {
    setup_env(extra, &[])
}

fn setup_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
    let d = Daemon::start_with_env(extra, env);
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    d
}

async fn workers(ch: &AuthChannel) -> Vec<Worker> {
    AdminServiceClient::new(ch.clone()).list_workers(ListWorkersRequest {}).await.unwrap().into_inner().workers
}

fn count(ws: &[Worker], role: worker::Role) -> usize {
    ws.iter().filter(|w| w.role == role as i32).count()
}

async fn create_branch(d: &Daemon, ch: &AuthChannel, name: &str) -> Result<(), tonic::Status> {
    let req = UserCreateBranchRequest {
        repository: Some(d.repo("p.git")),
        branch_name: name.as_bytes().to_vec(),
        user: user(),
        start_point: b"main".to_vec(),
    };
    OperationServiceClient::new(ch.clone()).user_create_branch(req).await.map(|_| ())
}

fn kill(pid: i32, sig: i32) {
    assert!(pid > 0);
    unsafe { libc::kill(pid, sig) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_kill_9_of_an_active_worker() {
    let d = setup(FAST);
    let ch = d.channel().await;
    let ws = workers(&ch).await;
    assert_eq!(ws.len(), 3);
    assert_eq!(count(&ws, worker::Role::Active), 2, "{ws:?}");
    assert_eq!(count(&ws, worker::Role::Standby), 1, "{ws:?}");
    for w in &ws {
        assert!(process_alive(w.pid), "{w:?}");
        assert!(std::path::Path::new(&w.socket_path).exists());
        assert_eq!(w.starts, 1);
    }
    // Sockets live in a private directory.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(&ws[0].socket_path).parent().unwrap();
    assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);

    create_branch(&d, &ch, "before").await.unwrap();
    let victim = ws.iter().find(|w| w.role == worker::Role::Active as i32).unwrap().clone();
    kill(victim.pid, libc::SIGKILL);
    // The very next call succeeds.
    create_branch(&d, &ch, "after-kill").await.unwrap();
    let bare = d.repo_path("p.git");
    assert!(stdout(git(&bare).args(["branch", "--list", "after-kill"])).contains("after-kill"));

    // The replacement comes up as the standby; the old standby was promoted.
    let replaced = eventually(10, || {
        let ch = ch.clone();
        let name = victim.name.clone();
        async move {
            let ws = workers(&ch).await;
            let w = ws.iter().find(|w| w.name == name).unwrap();
            w.pid != victim.pid
                && w.pid > 0
                && w.role == worker::Role::Standby as i32
                && w.crashes == 1
                && count(&ws, worker::Role::Active) == 2
        }
    })
    .await;
    assert!(replaced, "{:?}", workers(&ch).await);

    // The CLI shows the same, as a table and as JSON with the proto field names.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .args(["admin", "workers", "--json", "--address", &d.address()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for key in [
        "name",
        "pid",
        "socket_path",
        "role",
        "rss_bytes",
        "uptime_seconds",
        "starts",
        "crashes",
        "in_flight",
        "health",
        "health_latency_ms",
        "last_rotation_reason",
        "last_rotation_unix",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    let roles: Vec<&str> = rows.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "active").count(), 2);
    assert_eq!(roles.iter().filter(|r| **r == "standby").count(), 1);
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .args(["admin", "workers"])
        .env("GITALY_ADDRESS", d.address())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("NAME") && table.contains("standby") && table.contains("crash"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rotation_under_load_fails_no_call() {
    // Every worker is "too big": they rotate one at a time, continuously.
    let d = setup(&format!("{FAST}max_rss = 1\nrestart_delay = \"300ms\"\n"));
    let ch = d.channel().await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let ch = ch.clone();
        let repo = d.repo("p.git");
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(6) {
                i += 1;
                let req = UserCreateBranchRequest {
                    repository: Some(repo.clone()),
                    branch_name: format!("load-{t}-{i}").into_bytes(),
                    user: user(),
                    start_point: b"main".to_vec(),
                };
                match OperationServiceClient::new(ch.clone()).user_create_branch(req).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    let mut total = 0;
    for t in tasks {
        let (ok, failed) = t.await.unwrap();
        assert!(failed.is_empty(), "failed calls during rotation: {failed:?}");
        total += ok;
    }
    assert!(total > 20, "only {total} calls");
    let ws = workers(&ch).await;
    let rotations: u64 = ws.iter().map(|w| w.starts - 1).sum();
    assert!(rotations >= 2, "{ws:?}");
    assert!(ws.iter().any(|w| w.last_rotation_reason == "memory"), "{ws:?}");
    assert!(ws.iter().all(|w| w.crashes == 0), "{ws:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_answering_is_rotated() {
    let d = setup(FAST);
    let ch = d.channel().await;
    // Past the cool-off after start.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ws = workers(&ch).await;
    let hung = ws.iter().find(|w| w.role == worker::Role::Active as i32).unwrap().clone();
    kill(hung.pid, libc::SIGSTOP);
    let rotated = eventually(20, || {
        let ch = ch.clone();
        let hung = hung.clone();
        async move {
            let ws = workers(&ch).await;
            let w = ws.iter().find(|w| w.name == hung.name).unwrap();
            w.pid != hung.pid
                && w.pid > 0
                && w.last_rotation_reason == "health"
                && w.health == worker::Health::Ok as i32
        }
    })
    .await;
    assert!(rotated, "{:?}", workers(&ch).await);
    assert!(!process_alive(hung.pid), "hung worker still there");
    create_branch(&d, &ch, "after-health").await.unwrap();
    assert_eq!(count(&workers(&ch).await, worker::Role::Active), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_opens_the_circuit_breaker() {
    let d = setup(FAST);
    let ch = d.channel().await;
    let name = "worker-2";
    for i in 1..=3u64 {
        let ws = workers(&ch).await;
        let w = ws.iter().find(|w| w.name == name).unwrap().clone();
        assert!(w.pid > 0, "round {i}: {w:?}");
        kill(w.pid, libc::SIGKILL);
        if i < 3 {
            let back = eventually(10, || {
                let ch = ch.clone();
                async move {
                    let ws = workers(&ch).await;
                    let n = ws.iter().find(|x| x.name == name).unwrap();
                    n.pid > 0 && n.pid != w.pid && n.crashes == i
                }
            })
            .await;
            assert!(back, "round {i}: {:?}", workers(&ch).await);
        }
    }
    // Third crash within the window: no respawn for crash_wait_time (3s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ws = workers(&ch).await;
    let w = ws.iter().find(|w| w.name == name).unwrap();
    assert_eq!((w.pid, w.crashes), (0, 3), "{ws:?}");
    // Calls still work meanwhile.
    create_branch(&d, &ch, "during-breaker").await.unwrap();
    let back = eventually(10, || {
        let ch = ch.clone();
        async move {
            workers(&ch).await.iter().any(|w| w.name == name && w.pid > 0 && w.health == worker::Health::Ok as i32)
        }
    })
    .await;
    assert!(back, "{:?}", workers(&ch).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_worker_one_and_all() {
    let d = setup(FAST);
    let ch = d.channel().await;
    let before = workers(&ch).await;
    let mut admin = AdminServiceClient::new(ch.clone());
    let r =
        admin.restart_worker(RestartWorkerRequest { name: "worker-1".into(), all: false }).await.unwrap().into_inner();
    assert_eq!(r.restarted, vec!["worker-1".to_string()]);
    let after = workers(&ch).await;
    let (b, a) = (&before[1], &after[1]);
    assert_ne!(b.pid, a.pid);
    assert_eq!((a.starts, a.crashes, a.last_rotation_reason.as_str()), (2, 0, "admin"));
    assert!(a.last_rotation_unix > 0);
    assert!(!process_alive(b.pid));
    assert_eq!(count(&after, worker::Role::Active), 2);
    assert_eq!(count(&after, worker::Role::Standby), 1);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .args(["admin", "restart-worker", "--all", "--address", &d.address()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let all = workers(&ch).await;
    for (x, y) in after.iter().zip(&all) {
        assert_ne!(x.pid, y.pid, "{} not restarted", x.name);
    }
    let e = admin.restart_worker(RestartWorkerRequest { name: "nope".into(), all: false }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    create_branch(&d, &ch, "after-restarts").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_worker_is_unavailable_not_a_hang() {
    let d = setup(FAST);
    let ch = d.channel().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = UserCommitFilesRequestHeader {
        repository: Some(d.repo("p.git")),
        user: user(),
        branch_name: b"main".to_vec(),
        commit_message: b"streamed".to_vec(),
        ..Default::default()
    };
    use user_commit_files_request::UserCommitFilesRequestPayload as P;
    tx.send(UserCommitFilesRequest { user_commit_files_request_payload: Some(P::Header(header)) }).await.unwrap();
    let call = tokio::spawn({
        let ch = ch.clone();
        async move {
            OperationServiceClient::new(ch).user_commit_files(tokio_stream::wrappers::ReceiverStream::new(rx)).await
        }
    });
    // Find the worker serving it, and kill it mid-call.
    assert!(
        eventually(10, || {
            let ch = ch.clone();
            async move { workers(&ch).await.iter().any(|w| w.in_flight == 1) }
        })
        .await
    );
    let serving = workers(&ch).await.into_iter().find(|w| w.in_flight == 1).unwrap();
    kill(serving.pid, libc::SIGKILL);
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_that_landed_is_reported_even_if_the_worker_dies() {
    let d = setup_env(FAST, &[("RGITALY_FAILPOINT", "merge-after-apply")]);
    let ch = d.channel().await;
    let bare = d.repo_path("p.git");
    let side = stdout(git(&bare).args(["rev-parse", "side"]));
    // A commit on a new branch from main, to merge into main.
    let wt = d.work_dir("src").join("sample");
    run(git(&wt).args(["checkout", "--quiet", "-b", "topic", "side"]));
    let topic = commit_file(&wt, "topic.txt", "topic\n");
    run(git(&wt).arg("push").arg("--quiet").arg(&bare).arg("topic"));
    let _ = side;

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(UserMergeBranchRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        commit_id: topic.clone(),
        branch: b"main".to_vec(),
        message: b"Merge topic".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = OperationServiceClient::new(ch.clone())
        .user_merge_branch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.commit_id.len(), 40);
    tx.send(UserMergeBranchRequest { apply: true, ..Default::default() }).await.unwrap();
    let second = responses.message().await.expect("merge that landed reported as failure").unwrap();
    let update = second.branch_update.expect("branch update");
    assert_eq!(update.commit_id, first.commit_id);
    assert_eq!(stdout(git(&bare).args(["rev-parse", "main"])), first.commit_id);
    // The worker did die, and was replaced.
    assert!(
        eventually(10, || {
            let ch = ch.clone();
            async move { workers(&ch).await.iter().any(|w| w.crashes == 1) }
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_outlives_the_daemon() {
    // Graceful exit.
    let mut d = setup(FAST);
    let ch = d.channel().await;
    let pids: Vec<i32> = workers(&ch).await.iter().map(|w| w.pid).collect();
    assert_eq!(d.stop(), Some(0));
    for pid in &pids {
        assert!(!process_alive(*pid), "worker {pid} left behind");
    }
    // The daemon killed outright: workers follow it.
    let d = setup(FAST);
    let ch = d.channel().await;
    let pids: Vec<i32> = workers(&ch).await.iter().map(|w| w.pid).collect();
    kill(d.pid(), libc::SIGKILL);
    let gone = eventually(10, || {
        let pids = pids.clone();
        async move { pids.iter().all(|p| !process_alive(*p)) }
    })
    .await;
    assert!(gone, "workers survived a killed daemon");
}

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

/// A UserCommitFiles whose client has sent its header and then nothing: the sender (keep it to keep the
/// call open) and the call.
async fn stalled_commit_files(
    d: &Daemon,
    ch: &AuthChannel,
) -> (
    tokio::sync::mpsc::Sender<UserCommitFilesRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<UserCommitFilesResponse>, tonic::Status>>,
) {
    stalled_commit_files_to(d, ch, "p.git").await
}

/// As `stalled_commit_files`, to the repository at `relative`.
async fn stalled_commit_files_to(
    d: &Daemon,
    ch: &AuthChannel,
    relative: &str,
) -> (
    tokio::sync::mpsc::Sender<UserCommitFilesRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<UserCommitFilesResponse>, tonic::Status>>,
) {
    let header = UserCommitFilesRequestHeader {
        repository: Some(d.repo(relative)),
        user: user(),
        branch_name: b"main".to_vec(),
        commit_message: b"never finished".to_vec(),
        ..Default::default()
    };
    use user_commit_files_request::UserCommitFilesRequestPayload as P;
    let first = UserCommitFilesRequest { user_commit_files_request_payload: Some(P::Header(header)) };
    let ch = ch.clone();
    stalled(first, |rx| async move { OperationServiceClient::new(ch).user_commit_files(rx).await }).await
}

/// A client-streamed call whose client has sent `first` and then nothing: the sender (keep it to keep the
/// call open) and the call, which `call` makes from the request stream.
async fn stalled<Q, R, F>(
    first: Q,
    call: impl FnOnce(tokio_stream::wrappers::ReceiverStream<Q>) -> F,
) -> (tokio::sync::mpsc::Sender<Q>, tokio::task::JoinHandle<Result<tonic::Response<R>, tonic::Status>>)
where
    Q: Send + 'static,
    R: Send + 'static,
    F: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    (tx, tokio::spawn(call(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
        "rotations",
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
                    // Ready again (a kill while it starts is a failed start, not a crash).
                    n.pid > 0 && n.pid != w.pid && n.crashes == i && n.health == worker::Health::Ok as i32
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
    assert_eq!((a.starts, a.crashes, a.rotations, a.last_rotation_reason.as_str()), (2, 0, 1, "admin"));
    assert_eq!(b.rotations, 0);
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
    let (tx, call) = stalled_commit_files(&d, &ch).await;
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

/// A write whose worker dies is never repeated once it may have landed, and is repeated (on another worker)
/// when it is proven that it did not: the answer always matches the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_repeated_only_when_proven_not_applied() {
    let once = tempfile::NamedTempFile::new().unwrap();
    let once_path = once.path().to_str().unwrap().to_string();
    let arm = || std::fs::write(&once_path, "").unwrap();
    for (point, expect_ok) in [("create-branch-after-update", false), ("create-branch-before-update", true)] {
        let d = setup_env(FAST, &[("RGITALY_FAILPOINT", point), ("RGITALY_FAILPOINT_ONCE", &once_path)]);
        let ch = d.channel().await;
        arm();
        let r = create_branch(&d, &ch, "landed").await;
        assert!(!std::path::Path::new(&once_path).exists(), "{point}: the failpoint fired");
        let bare = d.repo_path("p.git");
        let exists = stdout(git(&bare).args(["branch", "--list", "landed"])).contains("landed");
        if expect_ok {
            // Died before the update: proven unchanged, so the call went to another worker and succeeded.
            r.unwrap_or_else(|e| panic!("{point}: {e:?}"));
            assert!(exists, "{point}");
        } else {
            // Died after the update: not repeated (which would answer "already exists"), and not OK either.
            let e = r.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unavailable, "{point}: {e:?}");
            assert!(e.message().contains("outcome is unknown"), "{point}: {e:?}");
            assert!(exists, "{point}: the update landed");
        }
        // Nothing of the dead worker is left holding a ref lock.
        assert!(!bare.join("refs/heads/landed.lock").exists());
    }
}

/// Workers killed with SIGKILL at random moments during 2,000 mixed writes: every answer matches the
/// repository afterwards, the repository is intact, and the pool is back at full strength.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_9_during_mixed_writes() {
    use futures::StreamExt as _;
    const WRITES: usize = 2_000;
    let d = setup("[workers]\nnum_workers = 3\nmemory_check_interval = \"100ms\"\nhealth_check_interval = \"200ms\"\nhealth_failure_timeout = \"1s\"\ngraceful_restart_timeout = \"5s\"\ncrash_threshold = 100000\ncrash_wait_time = \"1s\"\n");
    let ch = d.channel().await;
    let bare = d.repo_path("p.git");
    let main = stdout(git(&bare).args(["rev-parse", "main"]));
    let old = stdout(git(&bare).args(["rev-parse", "main~1"]));
    // Branches to delete and to move, one per write that needs one.
    let mut setup_refs = String::new();
    for i in 0..WRITES {
        setup_refs.push_str(&format!("create refs/heads/del-{i} {main}\ncreate refs/heads/upd-{i} {old}\n"));
    }
    let mut c = git(&bare);
    c.args(["update-ref", "--stdin"]).stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(setup_refs.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = tokio::spawn({
        let (ch, stop) = (ch.clone(), stop.clone());
        async move {
            let mut kills = 0u32;
            let mut n = 1u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                tokio::time::sleep(Duration::from_millis(50 + (n >> 33) % 250)).await;
                let ws = workers(&ch).await;
                let busy: Vec<_> = ws.iter().filter(|w| w.pid > 0 && w.in_flight > 0).collect();
                if let Some(w) = busy.get((n as usize >> 7) % busy.len().max(1)) {
                    kill(w.pid, libc::SIGKILL);
                    kills += 1;
                }
            }
            kills
        }
    });

    // Each write touches its own ref, so its answer alone says what the repository must show.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Outcome {
        Applied,
        NotApplied,
        Refused,
        Unknown,
    }
    let calls = futures::stream::iter(0..WRITES).map(|i| {
        let (ch, repo) = (ch.clone(), d.repo("p.git"));
        let main = main.clone();
        let old = old.clone();
        async move {
            let mut ops = OperationServiceClient::new(ch);
            let r = match i % 4 {
                0 => ops
                    .user_create_branch(UserCreateBranchRequest {
                        repository: Some(repo),
                        branch_name: format!("new-{i}").into_bytes(),
                        user: user(),
                        start_point: b"main".to_vec(),
                    })
                    .await
                    .map(|_| ()),
                1 => ops
                    .user_delete_branch(UserDeleteBranchRequest {
                        repository: Some(repo),
                        branch_name: format!("del-{i}").into_bytes(),
                        user: user(),
                    })
                    .await
                    .map(|_| ()),
                2 => ops
                    .user_update_branch(UserUpdateBranchRequest {
                        repository: Some(repo),
                        branch_name: format!("upd-{i}").into_bytes(),
                        user: user(),
                        newrev: main.into_bytes(),
                        oldrev: old.into_bytes(),
                    })
                    .await
                    .map(|_| ()),
                _ => ops
                    .user_create_tag(UserCreateTagRequest {
                        repository: Some(repo),
                        tag_name: format!("tag-{i}").into_bytes(),
                        user: user(),
                        target_revision: b"main".to_vec(),
                        message: if i % 8 == 3 { b"annotated".to_vec() } else { Vec::new() },
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            };
            let outcome = match &r {
                Ok(()) => Outcome::Applied,
                Err(e) if e.code() == tonic::Code::Unavailable && e.message().contains("nothing was written") => {
                    Outcome::NotApplied
                }
                Err(e) if e.code() == tonic::Code::Unavailable && e.message().contains("outcome is unknown") => {
                    Outcome::Unknown
                }
                Err(e) if e.code() == tonic::Code::Unavailable && e.message().contains("no worker available") => {
                    Outcome::NotApplied
                }
                // Any other error (a ref lock held by a write in flight, say) means nothing was done.
                Err(e) if e.code() != tonic::Code::Unavailable => Outcome::Refused,
                Err(e) => panic!("write {i}: Unavailable without saying what was written: {e:?}"),
            };
            (i, outcome)
        }
    });
    let results: Vec<(usize, Outcome)> = calls.buffer_unordered(8).collect().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let kills = killer.await.unwrap();

    let refs = stdout(git(&bare).args(["for-each-ref", "--format=%(refname) %(objectname)"]));
    let refs: std::collections::HashMap<&str, &str> = refs.lines().filter_map(|l| l.split_once(' ')).collect();
    let mut tally = std::collections::HashMap::new();
    for (i, outcome) in results {
        *tally.entry(format!("{outcome:?}")).or_insert(0) += 1;
        let applied = match i % 4 {
            0 => refs.contains_key(format!("refs/heads/new-{i}").as_str()),
            1 => !refs.contains_key(format!("refs/heads/del-{i}").as_str()),
            2 => refs.get(format!("refs/heads/upd-{i}").as_str()) == Some(&main.as_str()),
            _ => refs.contains_key(format!("refs/tags/tag-{i}").as_str()),
        };
        match outcome {
            Outcome::Applied => assert!(applied, "write {i} answered OK but did not land"),
            Outcome::NotApplied => assert!(!applied, "write {i} answered 'nothing was written' but landed"),
            Outcome::Refused => assert!(!applied, "write {i} was refused but landed"),
            Outcome::Unknown => {}
        }
    }
    eprintln!("chaos: {kills} workers killed; outcomes {tally:?}");
    assert!(kills >= 5, "the chaos killed only {kills} workers");
    let fsck = git(&bare).args(["fsck", "--no-progress"]).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
    let locks = stdout(std::process::Command::new("find").arg(&bare).args(["-name", "*.lock"]));
    assert!(locks.is_empty(), "lock files left: {locks}");
    // Back to full strength: every slot running and healthy, two active and one standby.
    let full = eventually(20, || {
        let ch = ch.clone();
        async move {
            let ws = workers(&ch).await;
            ws.len() == 3
                && ws.iter().all(|w| w.pid > 0 && process_alive(w.pid))
                && count(&ws, worker::Role::Active) == 2
                && count(&ws, worker::Role::Standby) == 1
        }
    })
    .await;
    assert!(full, "{:?}", workers(&ch).await);
}

/// SIGTERM ends the daemon within `graceful_restart_timeout`, however long the workers' own drain timeout,
/// while a worker call and an upload-pack never finish: the stuck client gets an error, no worker or git
/// outlives the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_within_the_graceful_timeout() {
    use rgitaly::proto::gitaly::ssh_service_client::SshServiceClient;
    // The workers' drain timeout stays at its default (10 minutes).
    let mut d = setup("graceful_restart_timeout = \"2s\"\n[workers]\nnum_workers = 2\n");
    let ch = d.channel().await;
    let pids: Vec<i32> = workers(&ch).await.iter().map(|w| w.pid).collect();
    // A UserCommitFiles whose client sends its header and then nothing.
    let (tx, commit) = stalled_commit_files(&d, &ch).await;
    // An SSHUploadPack whose client reads the advertisement and then says nothing.
    let (up_tx, up_rx) = tokio::sync::mpsc::channel(4);
    up_tx.send(SshUploadPackRequest { repository: Some(d.repo("p.git")), ..Default::default() }).await.unwrap();
    let mut upload = SshServiceClient::new(ch.clone())
        .ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await
        .unwrap()
        .into_inner();
    assert!(!upload.message().await.unwrap().unwrap().stdout.is_empty(), "advertisement");
    assert!(
        eventually(10, || {
            let ch = ch.clone();
            async move { workers(&ch).await.iter().any(|w| w.in_flight == 1) }
        })
        .await
    );

    let started = std::time::Instant::now();
    let code = d.stop();
    let took = started.elapsed();
    assert_eq!(code, Some(0), "no clean exit within 20 s");
    // 2 s of drain, then workers stopped: well under the 10 minutes the workers' own timeout allows.
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
    assert!(commit.await.unwrap().is_err(), "the unfinished write was answered as if it had finished");
    // As upstream reports a git killed by a signal: exit status -1, or the call cut.
    let mut ended = Vec::new();
    while let Ok(Some(m)) = upload.message().await {
        ended.push(m.exit_status.map(|s| s.value));
    }
    assert!(ended.iter().all(|s| *s != Some(0)), "the unfinished upload-pack ended as if it had finished: {ended:?}");
    for pid in &pids {
        assert!(!process_alive(*pid), "worker {pid} left behind");
    }
    let repo = d.repo_path("p.git").display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("upload-pack") && c.contains(&repo))
        .collect();
    assert!(left.is_empty(), "git left behind: {left:?}");
    drop((tx, up_tx));
}

/// A WikiWritePage whose client has sent its first message and then nothing: the sender (keep it to keep
/// the call open) and the call.
async fn stalled_wiki_write(
    d: &Daemon,
    ch: &AuthChannel,
    relative: &str,
) -> (
    tokio::sync::mpsc::Sender<WikiWritePageRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<WikiWritePageResponse>, tonic::Status>>,
) {
    use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
    let first = WikiWritePageRequest {
        repository: Some(d.repo(relative)),
        name: b"Never finished".to_vec(),
        format: "markdown".into(),
        commit_details: Some(WikiCommitDetails {
            name: b"Jane".to_vec(),
            email: b"jane@example.com".to_vec(),
            message: b"never finished".to_vec(),
            user_id: 1,
            user_name: b"jane".to_vec(),
        }),
        content: Vec::new(),
    };
    let ch = ch.clone();
    stalled(first, |rx| async move { WikiServiceClient::new(ch).wiki_write_page(rx).await }).await
}

/// Calls in flight, summed over the workers, reach `n`.
async fn in_flight_reaches(ch: &AuthChannel, n: u64) -> bool {
    let ch = ch.clone();
    eventually(10, move || {
        let ch = ch.clone();
        async move { workers(&ch).await.iter().map(|w| w.in_flight).sum::<u64>() == n }
    })
    .await
}

/// Writes to one wiki go to the worker already writing it (in one worker they overlap their hooks and
/// syncs); a write to another wiki, and other writes to the same repository, go to the least busy worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_one_wiki_go_to_the_worker_writing_it() {
    let d = setup(FAST);
    for wiki in ["w.git", "v.git"] {
        run(git(&d.work_dir("src")).args(["init", "--quiet", "--bare", "-b", "master"]).arg(d.repo_path(wiki)));
    }
    let ch = d.channel().await;
    let mut held = Vec::new();
    for n in 1..=4 {
        held.push(stalled_wiki_write(&d, &ch, "w.git").await);
        // Each call reaches its worker before the next is leased.
        assert!(in_flight_reaches(&ch, n).await);
    }
    let ws = workers(&ch).await;
    let busy: Vec<_> = ws.iter().filter(|w| w.in_flight > 0).collect();
    assert_eq!(busy.len(), 1, "{ws:?}");
    assert_eq!(busy[0].in_flight, 4, "{ws:?}");
    let writing = busy[0].pid;

    held.push(stalled_wiki_write(&d, &ch, "v.git").await);
    assert!(in_flight_reaches(&ch, 5).await);
    let ws = workers(&ch).await;
    let other = ws.iter().find(|w| w.pid != writing && w.in_flight == 1);
    assert!(other.is_some_and(|w| w.role == worker::Role::Active as i32), "{ws:?}");

    // Other services' writes are spread as before: two to the repository being written go one to each.
    let (tx1, c1) = stalled_commit_files_to(&d, &ch, "w.git").await;
    assert!(in_flight_reaches(&ch, 6).await);
    let (tx2, c2) = stalled_commit_files_to(&d, &ch, "w.git").await;
    assert!(in_flight_reaches(&ch, 7).await);
    let ws = workers(&ch).await;
    let mut loads: Vec<u64> =
        ws.iter().filter(|w| w.role == worker::Role::Active as i32).map(|w| w.in_flight).collect();
    loads.sort();
    assert_eq!(loads, [3, 4], "{ws:?}");
    for (tx, call) in [(tx1, c1), (tx2, c2)] {
        drop(tx);
        let _ = call.await.unwrap();
    }
    for (tx, call) in held {
        drop(tx);
        let _ = call.await.unwrap();
    }
}

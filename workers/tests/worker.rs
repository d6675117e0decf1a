//! The worker binary on its own: it serves health, refuses calls that did not come through the daemon,
//! and exits when its parent is gone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::{Repository, User, UserCreateBranchRequest};

fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(path.exists(), "{} did not appear", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_calls_without_daemon_metadata_and_follows_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("socket_path = \"{0}/s\"\n[[storage]]\nname = \"default\"\npath = {storage:?}\n", dir.path().display()),
    )
    .unwrap();
    let socket = dir.path().join("w.sock");
    // A shell stands in for the daemon, so the test can make the parent disappear.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --socket {} --config {} --name worker-0 --parent-pid $$ & echo $! ; wait",
            env!("CARGO_BIN_EXE_rgitaly-worker"),
            socket.display(),
            config.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid_line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(parent.stdout.take().unwrap()).read_line(&mut pid_line).unwrap();
    let worker_pid: i32 = pid_line.trim().parse().unwrap();
    wait_for(&socket);

    let channel = rgitaly::client::connect(&format!("unix:{}", socket.display()), None).await.unwrap();
    let mut client = OperationServiceClient::new(channel);
    let req = UserCreateBranchRequest {
        repository: Some(Repository {
            storage_name: "default".into(),
            relative_path: "../../etc".into(),
            ..Default::default()
        }),
        branch_name: b"x".to_vec(),
        user: Some(User { name: b"a".to_vec(), email: b"a@b".to_vec(), ..Default::default() }),
        start_point: b"main".to_vec(),
    };
    let e = client.user_create_branch(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("missing repository path"));

    // The parent dies with SIGKILL: the worker follows.
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while unsafe { libc::kill(worker_pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(unsafe { libc::kill(worker_pid, 0) }, 0, "worker outlived its parent");
}

//! What an operator meets running the daemon by hand: Ctrl-C (SIGINT to the whole foreground process
//! group) stops it as SIGTERM does without touching its workers first; a second `serve` on the same config
//! refuses to start while the first answers, and takes over only a stale socket; the scratch directory
//! the daemon chose itself is gone after it exits; logs carry no colour codes when they do not go to a
//! terminal and `grpc.time_ms` is rounded as upstream's; `rgitaly-ssh --help` answers.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::ServerInfoRequest;

/// A config with a socket and a storage under `dir`, and `extra` appended.
fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "socket_path = {:?}\n{extra}\n[[storage]]\nname = \"default\"\npath = {storage:?}\n[daily_maintenance]\ndisabled = true\n",
            dir.join("rgitaly.socket")
        ),
    )
    .unwrap();
    path
}

fn wait_socket(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_config_refuses_to_start() {
    let d = Daemon::start();
    let config = d.dir.path().join("config.toml");
    let second = Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("another daemon is serving on {}", d.socket.display())), "{stderr}");
    // The first is untouched: its socket is there and answers.
    let mut c = ServerServiceClient::new(d.channel().await);
    c.server_info(ServerInfoRequest {}).await.unwrap();

    // A stale socket (nothing answers on it) is taken over.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_stale_socket(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .arg("serve")
        .arg(&cfg)
        .env("RGITALY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_socket(&dir.path().join("rgitaly.socket"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child, 30).is_some_and(|s| s.success()));
}

fn config_with_stale_socket(dir: &std::path::Path) -> std::path::PathBuf {
    let socket = dir.join("rgitaly.socket");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    config(dir, &format!("internal_socket_dir = {:?}", dir.join("internal")))
}

#[test]
fn ctrl_c_stops_the_daemon_like_sigterm_and_leaves_no_scratch_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // No internal_socket_dir: the daemon makes its own scratch directory in TMPDIR.
    let cfg = config(dir.path(), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .arg("serve")
        .arg(&cfg)
        .env("TMPDIR", &tmp)
        .env("RGITALY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_socket(&dir.path().join("rgitaly.socket"));
    let pid = child.id() as i32;
    let scratch = tmp.join(format!("rgitaly-{pid}"));
    assert!(scratch.is_dir());
    // Wait for the workers, then Ctrl-C as a terminal sends it: to the whole foreground process group.
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(-pid, libc::SIGINT) };
    let status = wait_exit(&mut child, 60).expect("daemon stopped");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("SIGINT"), "{stderr}");
    assert!(!stderr.contains("crashed") && !stderr.contains("respawn"), "workers were hit by the SIGINT:\n{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{stderr}");
    assert!(!scratch.exists(), "scratch directory left behind");
    assert!(!dir.path().join("rgitaly.socket").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_logs_carry_rounded_times() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!("internal_socket_dir = {:?}\n[logging]\nformat = \"json\"", dir.path().join("internal")),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgitaly"))
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("rgitaly.socket");
    wait_socket(&socket);
    let ch = rgitaly::client::connect(&format!("unix:{}", socket.display()), None).await.unwrap();
    for _ in 0..5 {
        ServerServiceClient::new(ch.clone()).server_info(ServerInfoRequest {}).await.unwrap();
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_exit(&mut child, 30).expect("stopped");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let times: Vec<String> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["grpc.method"] == "ServerInfo")
        .map(|v| v["grpc.time_ms"].to_string())
        .collect();
    assert_eq!(times.len(), 5, "{stderr}");
    for t in times {
        let decimals = t.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "grpc.time_ms {t} is not rounded to the microsecond");
    }
}

#[test]
fn rgitaly_ssh_help() {
    for arg in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_rgitaly-ssh")).arg(arg).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("usage: rgitaly-ssh") && text.contains("GITALY_ADDRESS"), "{text}");
    }
}

fn rgitaly_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rgitaly"))
}

#[test]
fn clone_debugger_reports_what_a_clone_costs() {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    let repo = d.seed_repo("group/p.git", &wt);
    let objects: usize = stdout(git(&repo).args(["rev-list", "--objects", "--all"])).lines().count();
    let refs = stdout(git(&repo).args(["for-each-ref"])).lines().count();
    let saved = d.work_dir("debug").join("answer.bin");
    let out = rgitaly_cmd()
        .args(["debug", "simulate-clone", "--address", &d.address(), "default/group/p.git", "--json", "--save"])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["objects"].as_u64(), Some(objects as u64), "{report}");
    assert_eq!(report["refs"].as_u64(), Some(refs as u64 + 1), "HEAD and every ref: {report}");
    assert_eq!(report["pack_version"].as_u64(), Some(2));
    assert!(report["pack_bytes"].as_u64().unwrap() > 12);
    for key in ["advertisement_ms", "first_response_byte_ms", "first_pack_byte_ms", "total_ms", "pack_mib_per_s"] {
        assert!(report[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {report}");
    }
    // Nothing was written in the storage (no repository was created by the simulated clone).
    assert_eq!(std::fs::read_dir(d.repo_path("group")).unwrap().count(), 1);

    // The saved answer, analysed offline, gives the same pack.
    let out = rgitaly_cmd().args(["debug", "analyze-clone", "--json"]).arg(&saved).output().unwrap();
    assert!(out.status.success());
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline["objects"], report["objects"]);
    assert_eq!(offline["pack_bytes"], report["pack_bytes"]);
    let text = rgitaly_cmd().args(["debug", "analyze-clone"]).arg(&saved).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("{objects} objects")));

    // A missing repository is a clear error, not a report.
    let out = rgitaly_cmd()
        .args(["debug", "simulate-clone", "--address", &d.address(), "default/nope.git"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a git repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The health command the container image uses.
    let out = rgitaly_cmd().args(["health", "--address", &d.address()]).output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).trim()), (Some(0), "SERVING"));
    let out = rgitaly_cmd().args(["health", "--address", "unix:/nonexistent.sock"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

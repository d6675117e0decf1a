//! Hook chain benchmark (run: `cargo build --release --workspace && cargo bench --bench hooks`).
//!
//! 1. The wall time of `git push` of one new commit through rgitaly-ssh, three ways, in alternating order:
//!    hooks with a GitLab stand-in that answers at once (`/allowed`, `/pre_receive`, `/post_receive`);
//!    hooks with no `[gitlab] url` (rgitaly-hooks and HookService only); and, when
//!    `HOOKS_BENCH_BASELINE=path/to/rgitaly` names a build from before the hook chain, hooks off.
//! 2. 100 pushes at once, one to each of 100 repositories, against the GitLab stand-in: all must be
//!    accepted, and GitLab must have heard of every one (`/post_receive` calls counted).
//!
//! `HOOKS_BENCH_PUSHES` sets the pushes per way (default 30). Loopback only.

#[path = "../tests/common/gitlab.rs"]
mod gitlab;

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::git;
use gitlab::{allow_all, FakeGitlab};

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    storage: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start(binary: &Path, dir: &Path, extra: &str) -> Daemon {
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let socket = dir.join("rgitaly.socket");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "socket_path = {socket:?}\ninternal_socket_dir = {:?}\n[[storage]]\nname = \"default\"\npath = {storage:?}\n[logging]\nlevel = \"error\"\n{extra}",
            dir.join("internal")
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg(&config)
        .env("RGITALY_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "{} did not come up", binary.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon { child, socket, storage }
}

/// A clone of `source` as `default/<name>` and a working copy pushing to it through rgitaly-ssh.
fn repo_and_clone(d: &Daemon, source: &Path, name: &str, work: &Path) -> PathBuf {
    ok(git(&d.storage).args(["clone", "--quiet", "--bare"]).arg(source).arg(name));
    std::fs::create_dir_all(work).unwrap();
    let wt = work.join(name);
    ok(git(work).args(["clone", "--quiet"]).arg(source).arg(&wt));
    wt
}

fn push(d: &Daemon, wt: &Path, name: &str, branch: &str) -> Duration {
    ok(git(wt).args(["commit", "--quiet", "--allow-empty", "-m", branch]));
    let started = Instant::now();
    ok(git(wt)
        .args(["push", "--quiet", &format!("ssh://rgitaly/default/{name}"), &format!("HEAD:refs/heads/{branch}")])
        .env("GIT_SSH_COMMAND", env!("CARGO_BIN_EXE_rgitaly-ssh"))
        .env("GITALY_ADDRESS", format!("unix:{}", d.socket.display()))
        .env("GL_ID", "user-1")
        .env("GL_USERNAME", "bench")
        .env("GL_REPOSITORY", "project-1"));
    started.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    ok(git(dir.path()).args(["init", "--quiet", "-b", "main"]).arg(&source));
    std::fs::write(source.join("README"), "bench\n").unwrap();
    ok(git(&source).args(["add", "README"]));
    ok(git(&source).args(["commit", "--quiet", "-m", "first"]));

    let current = PathBuf::from(env!("CARGO_BIN_EXE_rgitaly"));
    let gitlab = FakeGitlab::tcp(allow_all);
    let gitlab_dir = dir.path().join("gitlab");
    std::fs::create_dir_all(&gitlab_dir).unwrap();
    let with_gitlab = gitlab.config(&gitlab_dir, "");
    let mut ways: Vec<(&str, Daemon)> = Vec::new();
    let mk = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    ways.push(("hooks + GitLab stand-in", start(&current, &mk("gitlab-on"), &with_gitlab)));
    ways.push(("hooks, no GitLab", start(&current, &mk("gitlab-off"), "")));
    if let Some(base) = std::env::var_os("HOOKS_BENCH_BASELINE") {
        ways.push(("hooks off (baseline build)", start(Path::new(&base), &mk("baseline"), "")));
    }
    let pushes: usize = std::env::var("HOOKS_BENCH_PUSHES").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let work = mk("work");
    let clones: Vec<PathBuf> = ways
        .iter()
        .enumerate()
        .map(|(i, (_, d))| repo_and_clone(d, &source, "p.git", &work.join(i.to_string())))
        .collect();
    for (i, wt) in clones.iter().enumerate() {
        push(&ways[i].1, wt, "p.git", "warm-up");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    for n in 0..pushes {
        // Alternate the order each round so neither way always runs on a just-warmed machine.
        let order: Vec<usize> = if n % 2 == 0 { (0..ways.len()).collect() } else { (0..ways.len()).rev().collect() };
        for i in order {
            times[i].push(push(&ways[i].1, &clones[i], "p.git", &format!("b{n}")));
        }
    }
    println!("git push of one commit through rgitaly-ssh, {pushes} each:\n");
    println!("| way | median ms | p90 ms | min ms |\n|---|---|---|---|");
    let mut medians = Vec::new();
    for (i, (name, _)) in ways.iter().enumerate() {
        let t = &mut times[i];
        t.sort();
        let median = t[t.len() / 2];
        medians.push(median);
        println!("| {name} | {:.1} | {:.1} | {:.1} |", ms(median), ms(t[t.len() * 9 / 10]), ms(t[0]));
    }
    if medians.len() == 3 {
        println!(
            "\nthe whole chain costs {:.1} ms per push (median, against hooks off)",
            ms(medians[0]) - ms(medians[2])
        );
    }
    let posts_before = gitlab.paths().iter().filter(|p| p.ends_with("/post_receive")).count();

    // 100 pushes at once, to 100 repositories.
    let d = &ways[0].1;
    let many = mk("many");
    let wts: Vec<PathBuf> = (0..100).map(|i| repo_and_clone(d, &source, &format!("r{i}.git"), &many)).collect();
    let started = Instant::now();
    let handles: Vec<_> = wts
        .into_iter()
        .enumerate()
        .map(|(i, wt)| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                ok(git(&wt).args(["commit", "--quiet", "--allow-empty", "-m", "concurrent"]));
                git(&wt)
                    .args(["push", "--quiet", &format!("ssh://rgitaly/default/r{i}.git"), "HEAD:refs/heads/concurrent"])
                    .env("GIT_SSH_COMMAND", env!("CARGO_BIN_EXE_rgitaly-ssh"))
                    .env("GITALY_ADDRESS", format!("unix:{}", socket.display()))
                    .env("GL_ID", "user-1")
                    .env("GL_REPOSITORY", format!("project-{i}"))
                    .output()
                    .unwrap()
                    .status
                    .success()
            })
        })
        .collect();
    let accepted = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    let took = started.elapsed();
    let posts = gitlab.paths().iter().filter(|p| p.ends_with("/post_receive")).count() - posts_before;
    println!(
        "\n100 concurrent pushes to 100 repositories: {accepted} accepted, {posts} post_receive calls, {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!((accepted, posts), (100, 100), "a push or a hook call was lost");
}

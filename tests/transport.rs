//! End to end: a real `git` cloning, fetching and pushing through rgitaly-ssh and the SSHService.

mod common;

use common::*;

fn sample(d: &Daemon) -> std::path::PathBuf {
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("group/project.git", &wt);
    wt
}

#[test]
fn clone_protocol_v0_and_v2() {
    let d = Daemon::start();
    let wt = sample(&d);
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    for (version, name) in [("0", "v0"), ("2", "v2")] {
        let work = d.work_dir(name);
        let out = run(d.git(&work).env("GIT_TRACE_PACKET", "1").args([
            "-c",
            &format!("protocol.version={version}"),
            "clone",
            "--quiet",
            &d.url("group/project.git"),
            "c",
        ]));
        let trace = String::from_utf8_lossy(&out.stderr);
        assert_eq!(trace.contains("version 2"), version == "2", "protocol {version} not negotiated");
        assert_eq!(stdout(git(&work.join("c")).args(["rev-parse", "origin/main"])), head);
        assert_eq!(std::fs::read_to_string(work.join("c/file3.txt")).unwrap(), "content 3\n");
        let tags = stdout(git(&work.join("c")).args(["tag", "-l"]));
        assert_eq!(tags, "v1.0");
        run(git(&work.join("c")).args(["fsck", "--strict"]));
    }
    d.assert_outside_untouched();
}

#[test]
fn shallow_clone_and_incremental_fetch() {
    let d = Daemon::start();
    let wt = sample(&d);
    let work = d.work_dir("shallow");
    run(d.git(&work).args(["clone", "--quiet", "--depth=1", "--branch=main", &d.url("group/project.git"), "c"]));
    let c = work.join("c");
    assert_eq!(stdout(git(&c).args(["rev-list", "--count", "HEAD"])), "1");
    assert!(c.join(".git/shallow").exists());

    // New commits upstream arrive with an incremental fetch.
    let new = commit_file(&wt, "later.txt", "later\n");
    run(git(&wt).args(["push", "--quiet"]).arg(d.repo_path("group/project.git")).arg("main"));
    run(d.git(&c).args(["fetch", "--quiet", "origin"]));
    assert_eq!(stdout(git(&c).args(["rev-parse", "origin/main"])), new);
    run(d.git(&c).args(["fetch", "--quiet", "--unshallow", "origin"]));
    assert_eq!(stdout(git(&c).args(["rev-list", "--count", "origin/main"])), "4");
}

#[test]
fn push_new_branch_fast_forward_rejection_and_deletion() {
    let d = Daemon::start();
    let _ = sample(&d);
    let work = d.work_dir("push");
    run(d.git(&work).args(["clone", "--quiet", &d.url("group/project.git"), "c"]));
    let c = work.join("c");
    let bare = d.repo_path("group/project.git");

    // A new branch.
    run(git(&c).args(["checkout", "--quiet", "-b", "feature"]));
    let f1 = commit_file(&c, "feature.txt", "one\n");
    run(d.git(&c).args(["push", "--quiet", "origin", "feature"]));
    assert_eq!(stdout(git(&bare).args(["rev-parse", "refs/heads/feature"])), f1);

    // Fast-forward.
    let f2 = commit_file(&c, "feature.txt", "two\n");
    run(d.git(&c).args(["push", "--quiet", "origin", "feature"]));
    assert_eq!(stdout(git(&bare).args(["rev-parse", "refs/heads/feature"])), f2);

    // Non-fast-forward is rejected and the ref stays.
    run(git(&c).args(["reset", "--quiet", "--hard", "HEAD~1"]));
    commit_file(&c, "other.txt", "diverged\n");
    let out = d.git(&c).args(["push", "origin", "feature"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected") && err.contains("non-fast-forward"), "{err}");
    assert_eq!(stdout(git(&bare).args(["rev-parse", "refs/heads/feature"])), f2);

    // Branch and tag deletion.
    run(d.git(&c).args(["push", "--quiet", "origin", ":feature", ":refs/tags/v1.0"]));
    let refs = stdout(git(&bare).args(["for-each-ref", "--format=%(refname)"]));
    assert!(!refs.contains("feature") && !refs.contains("v1.0"), "{refs}");
    assert!(refs.contains("refs/heads/main"));
    d.assert_outside_untouched();
}

#[test]
fn ls_remote_and_archive_remote() {
    let d = Daemon::start();
    let wt = sample(&d);
    let work = d.work_dir("ls");
    let listed = stdout(d.git(&work).args(["ls-remote", &d.url("group/project.git")]));
    let local = stdout(git(&d.repo_path("group/project.git")).args(["show-ref", "--head", "-d"]));
    let mut remote_lines: Vec<String> = listed.lines().map(|l| l.replace('\t', " ")).collect();
    let mut local_lines: Vec<String> = local.lines().map(str::to_string).collect();
    remote_lines.sort();
    local_lines.sort();
    assert_eq!(remote_lines, local_lines);

    let out = run(d.git(&work).args([
        "archive",
        "--format=tar",
        &format!("--remote={}", d.url("group/project.git")),
        "main",
    ]));
    let tar_path = work.join("a.tar");
    std::fs::write(&tar_path, &out.stdout).unwrap();
    let listing = stdout(std::process::Command::new("tar").arg("tf").arg(&tar_path));
    let mut files: Vec<&str> = listing.lines().collect();
    files.sort();
    assert_eq!(files, ["dir/", "dir/nested.txt", "file1.txt", "file2.txt", "file3.txt"]);
    let _ = wt;
}

#[test]
fn remote_errors_are_one_clear_line() {
    let d = Daemon::start();
    let work = d.work_dir("err");
    let out = d.git(&work).args(["ls-remote", &d.url("missing.git")]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rgitaly-ssh: upload-pack: GetRepoPath: not a git repository"), "{err}");
    let out = d.git(&work).args(["ls-remote", "ssh://rgitaly/nosuchstorage/a.git"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such storage: \"nosuchstorage\""));
}

/// Over 100 MB of incompressible content pushed and cloned back, byte for byte.
#[test]
fn large_push_and_clone() {
    let d = Daemon::start();
    let work = d.work_dir("large");
    let wt = work.join("src");
    run(git(&work).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    // 105 MiB of pseudo-random bytes in 5 files (a fast xorshift keeps setup quick).
    let mut state: u64 = 0x9e3779b97f4a7c15;
    for i in 0..5 {
        let mut data = vec![0u8; 21 * 1024 * 1024];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(wt.join(format!("blob{i}.bin")), data).unwrap();
    }
    run(git(&wt).args(["-c", "core.compression=0", "add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "big"]));
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));

    run(d.git(&wt).args(["init", "--quiet", "--bare"]).arg(d.repo_path("big.git")));
    run(d.git(&wt).args(["-c", "pack.compression=0", "push", "--quiet", &d.url("big.git"), "main"]));
    let bare = d.repo_path("big.git");
    assert_eq!(stdout(git(&bare).args(["rev-parse", "refs/heads/main"])), head);

    run(d.git(&work).args(["clone", "--quiet", "--bare", &d.url("big.git"), "back.git"]));
    let back = work.join("back.git");
    assert_eq!(stdout(git(&back).args(["rev-parse", "main"])), head);
    run(git(&back).args(["fsck", "--no-progress"]));
    let size: u64 =
        std::fs::read_dir(back.join("objects/pack")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(size > 100 * 1024 * 1024, "pack is only {size} bytes");
}

//! The command-line surface: `rgitaly check`, `rgitaly repo …`, and rgitaly-ssh in both modes.

mod common;

use std::process::Command;

use common::*;

fn rgitaly() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rgitaly"))
}

#[test]
fn check_reports_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!("socket_path = \"/tmp/x\"\n[[storage]]\nname = \"a\"\npath = \"{}/missing\"\n", dir.path().display()),
    )
    .unwrap();
    let out = rgitaly().arg("check").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("storage[0].path"), "{err}");

    std::fs::write(&cfg, "socket_path = 5\n").unwrap();
    let err = String::from_utf8_lossy(&rgitaly().arg("check").arg(&cfg).output().unwrap().stderr).into_owned();
    assert!(err.contains("bad.toml") && err.contains("socket_path"), "{err}");

    // An upstream config with Ruby-only keys passes with warnings.
    std::fs::write(&cfg, format!("socket_path = \"/tmp/x\"\nruby_thing = 1\n[[storage]]\nname = \"a\"\npath = \"{}\"\n[gitaly-ruby]\ndir = \"/srv/ruby\"\n", dir.path().display())).unwrap();
    let out = rgitaly().arg("check").arg(&cfg).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key \"ruby_thing\""));

    // The shipped sample is valid as the README uses it: from a directory holding run/storages/default.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.sample");
    std::fs::copy(&sample, dir.path().join("config.toml.sample")).unwrap();
    std::fs::create_dir_all(dir.path().join("run/storages/default")).unwrap();
    let out = rgitaly().current_dir(dir.path()).args(["check", "config.toml.sample"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unknown key"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn repo_commands_then_push_and_clone() {
    let d = Daemon::start();
    let addr = d.address();
    let repo_cmd = |verb: &str| {
        let mut c = rgitaly();
        c.args(["repo", verb, "--address", &addr, "--storage", STORAGE, "--path", "team/app.git"]);
        c
    };
    let out = repo_cmd("exists").output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).trim()), (Some(1), "false"));
    run(&mut repo_cmd("create"));
    assert_eq!(stdout(&mut repo_cmd("exists")), "true");

    let wt = sample_worktree(&d.work_dir("src"));
    run(d.git(&wt).args(["push", "--quiet", &d.url("team/app.git"), "main", "side", "v1.0"]));
    let work = d.work_dir("clone");
    run(d.git(&work).args(["clone", "--quiet", "--branch", "main", &d.url("team/app.git"), "c"]));
    assert_eq!(stdout(git(&work.join("c")).args(["rev-parse", "HEAD"])), stdout(git(&wt).args(["rev-parse", "HEAD"])));

    run(&mut repo_cmd("remove"));
    assert_eq!(repo_cmd("exists").output().unwrap().status.code(), Some(1));

    // GITALY_ADDRESS is read when --address is absent; errors carry the gRPC code.
    let out = rgitaly()
        .args(["repo", "create", "--storage", "nope", "--path", "x.git"])
        .env("GITALY_ADDRESS", &addr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InvalidArgument") && err.contains("no such storage"), "{err}");
}

#[test]
fn rgitaly_ssh_upstream_compatible_mode() {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("good.git", &wt);
    let work = d.work_dir("compat");
    for (variant, payload) in [
        ("simple", r#"{"repository":{"storage_name":"default","relative_path":"good.git"}}"#),
        ("", r#"{"repository":{"storageName":"default","relativePath":"good.git"},"gitProtocol":"version=2"}"#),
    ] {
        let target = format!("c-{}", if variant.is_empty() { "auto" } else { variant });
        let mut cmd = git(&work);
        cmd.env("GIT_SSH_COMMAND", format!("{} upload-pack", env!("CARGO_BIN_EXE_rgitaly-ssh")))
            .env("GITALY_ADDRESS", d.address())
            .env("GITALY_PAYLOAD", payload)
            .args(["clone", "--quiet", "ssh://gitaly/internal.git", &target]);
        if !variant.is_empty() {
            cmd.env("GIT_SSH_VARIANT", variant);
        }
        run(&mut cmd);
        assert_eq!(
            stdout(git(&work.join(&target)).args(["rev-parse", "origin/main"])),
            stdout(git(&wt).args(["rev-parse", "main"]))
        );
    }

    // Push in compatible mode needs gl_id in the payload, as upstream.
    let c = work.join("c-simple");
    commit_file(&c, "n.txt", "n\n");
    let push = |payload: &str| {
        git(&c)
            .env("GIT_SSH_COMMAND", format!("{} receive-pack", env!("CARGO_BIN_EXE_rgitaly-ssh")))
            .env("GIT_SSH_VARIANT", "simple")
            .env("GITALY_ADDRESS", d.address())
            .env("GITALY_PAYLOAD", payload)
            .args(["push", "--quiet", "origin", "HEAD:refs/heads/compat"])
            .output()
            .unwrap()
    };
    let out = push(r#"{"repository":{"storage_name":"default","relative_path":"good.git"}}"#);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rgitaly-ssh: receive-pack: empty GlId"));
    let out = push(r#"{"repository":{"storage_name":"default","relative_path":"good.git"},"gl_id":"user-1"}"#);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout(git(&d.repo_path("good.git")).args(["rev-parse", "compat"])),
        stdout(git(&c).args(["rev-parse", "HEAD"]))
    );

    // Missing address and bad payloads are one clear line and exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_rgitaly-ssh"))
        .args(["upload-pack", "h", "git-upload-pack x"])
        .env_remove("GITALY_ADDRESS")
        .env("GITALY_PAYLOAD", "{}")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("rgitaly-ssh: gitaly address can not be empty"));
    let out = Command::new(env!("CARGO_BIN_EXE_rgitaly-ssh"))
        .args(["upload-pack"])
        .env("GITALY_PAYLOAD", "{nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// The README's quickstart, run as written (but for the two `export`s, which point at this test's
/// daemon and binaries), in a temporary directory.
#[test]
fn readme_quickstart_runs_as_written() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Quickstart").nth(1).expect("quickstart section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("quickstart block");
    let script: String = block.lines().filter(|l| !l.starts_with("export ")).map(|l| format!("{l}\n")).collect();
    assert!(script.contains("rgitaly repo create") && script.contains("archive"), "{script}");
    let d = Daemon::start();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_rgitaly")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let tmp = d.work_dir("quickstart");
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("GITALY_ADDRESS", d.address())
        .env("TMPDIR", &tmp)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .current_dir(&tmp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("README.md"), "git archive listed the file: {stdout}");
    assert!(stdout.trim_end().ends_with("true"), "{stdout}");
    assert!(stdout.contains("refs/heads/master"), "{stdout}");
}

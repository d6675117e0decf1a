//! The hook chain end to end: real `git push` through rgitaly-ssh and PostReceivePack, a real HTTP server
//! standing in for GitLab's internal API (on TCP and on a Unix socket) that records every call and answers
//! from each test's script, and real custom hooks.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::gitlab::*;
use common::*;
use rgitaly::pktline;
use rgitaly::proto::gitaly::hook_service_client::HookServiceClient;
use rgitaly::proto::gitaly::smart_http_service_client::SmartHttpServiceClient;
use rgitaly::proto::gitaly::*;

/// A clone of the seeded repository through rgitaly-ssh, as user 1 of project 1.
fn clone(d: &Daemon, name: &str) -> PathBuf {
    let c = d.work_dir(name);
    let mut cmd = d.git(&c);
    cmd.args(["clone", "--quiet", &d.url("p.git"), "."]);
    run(&mut cmd);
    c
}

fn as_user(mut cmd: std::process::Command) -> std::process::Command {
    cmd.env("GL_ID", "user-1").env("GL_USERNAME", "jane").env("GL_REPOSITORY", "project-1");
    cmd
}

fn refs(repo: &Path) -> String {
    stdout(git(repo).args(["for-each-ref", "--format=%(refname) %(objectname)"]))
}

fn setup(extra: &str) -> (Daemon, PathBuf) {
    let d = Daemon::start_with(extra);
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    (d, wt)
}

#[test]
fn allowed_push_is_checked_announced_and_shows_gitlab_messages() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(allow_all);
    let (d, _) = setup(&gitlab.config(dir.path(), ""));
    let c = clone(&d, "c");
    let new = commit_file(&c, "a.txt", "a\n");
    let out = as_user(d.git(&c))
        .args(["push", "-o", "ci.skip", "-o", "merge_request.create", "origin", "HEAD:feature"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("remote: To create a merge request for feature, visit:"), "{stderr}");
    assert_eq!(stdout(git(&d.repo_path("p.git")).args(["rev-parse", "feature"])), new);

    assert_eq!(
        gitlab.paths(),
        ["/api/v4/internal/allowed", "/api/v4/internal/pre_receive", "/api/v4/internal/post_receive"]
    );
    let calls = gitlab.calls();
    let secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
    assert!(calls.iter().all(|c| c.secret == secret), "{calls:?}");
    let allowed = &calls[0].body;
    let change = format!("{} {new} refs/heads/feature", "0".repeat(40));
    assert_eq!(allowed["action"], "git-receive-pack");
    assert_eq!(allowed["gl_repository"], "project-1");
    assert_eq!(allowed["user_id"], "1");
    assert_eq!(allowed["protocol"], "ssh");
    assert_eq!(allowed["changes"].as_str().unwrap().trim(), change);
    assert_eq!(allowed["project"], d.repo_path("p.git").canonicalize().unwrap().to_str().unwrap());
    // The quarantine, relative to the repository, so GitLab can read the objects before they land.
    let env: serde_json::Value = serde_json::from_str(allowed["env"].as_str().unwrap()).unwrap();
    let quarantine = env["GIT_OBJECT_DIRECTORY_RELATIVE"].as_str().unwrap();
    assert!(quarantine.starts_with("objects/") && quarantine.contains("incoming-"), "{env}");
    assert_eq!(env["GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE"], serde_json::json!(["objects"]));
    assert_eq!(calls[1].body, serde_json::json!({"gl_repository": "project-1"}));
    let post = &calls[2].body;
    assert_eq!(post["identifier"], "user-1");
    assert_eq!(post["gl_repository"], "project-1");
    assert_eq!(post["changes"].as_str().unwrap().trim(), change);
    assert_eq!(post["push_options"], serde_json::json!(["ci.skip", "merge_request.create"]));
    run(git(&d.repo_path("p.git")).args(["fsck", "--no-progress"]));
}

#[test]
fn denied_push_shows_gitlab_message_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::unix(dir.path(), |path, body| {
        if path == "/api/v4/internal/allowed" && body["changes"].as_str().unwrap_or("").contains("refs/heads/protected")
        {
            return (
                403,
                serde_json::json!({"status": false, "message": "You are not allowed to push code to protected branches on this project."}),
                Duration::ZERO,
            );
        }
        allow_all(path, body)
    });
    let (d, _) = setup(&gitlab.config(dir.path(), ""));
    let c = clone(&d, "c");
    commit_file(&c, "b.txt", "b\n");
    let repo = d.repo_path("p.git");
    let before = refs(&repo);
    let objects_before = stdout(git(&repo).args(["count-objects", "-v"]));
    let out = as_user(d.git(&c)).args(["push", "origin", "HEAD:protected"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("remote: GitLab: You are not allowed to push code to protected branches on this project."),
        "{stderr}"
    );
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");
    assert_eq!(refs(&repo), before);
    // The pushed objects stayed in the quarantine, which git removed.
    assert_eq!(stdout(git(&repo).args(["count-objects", "-v"])), objects_before);
    run(git(&repo).args(["fsck", "--no-progress"]));
    assert_eq!(gitlab.paths(), ["/api/v4/internal/allowed"]);

    // Another branch is allowed by the same GitLab, over the same Unix socket.
    run(as_user(d.git(&c)).args(["push", "--quiet", "origin", "HEAD:feature"]));
    assert_eq!(gitlab.paths().len(), 4);
}

#[test]
fn gitlab_failures_refuse_the_push() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(|path, body| match body["changes"].as_str() {
        Some(c) if path.ends_with("/allowed") && c.contains("refs/heads/error") => {
            (500, serde_json::json!("no json message"), Duration::ZERO)
        }
        Some(c) if path.ends_with("/allowed") && c.contains("refs/heads/slow") => {
            (200, serde_json::json!({"status": true}), Duration::from_secs(60))
        }
        Some(c) if path.ends_with("/allowed") && c.contains("refs/heads/no-message") => {
            (403, serde_json::json!({"status": false}), Duration::ZERO)
        }
        Some(c) if path.ends_with("/allowed") && c.contains("refs/heads/status-false") => (
            200,
            serde_json::json!({"status": false, "message": "push rule: commit message must mention an issue"}),
            Duration::ZERO,
        ),
        _ => allow_all(path, body),
    });
    let (d, _) = setup(&gitlab.config(dir.path(), "read_timeout = 5"));
    let c = clone(&d, "c");
    commit_file(&c, "c.txt", "c\n");
    let repo = d.repo_path("p.git");
    let before = refs(&repo);
    for (branch, message) in [
        ("error", "remote: GitLab: Internal API error (500)"),
        ("slow", "remote: GitLab: Internal API unreachable"),
        ("status-false", "remote: push rule: commit message must mention an issue"),
        ("no-message", "remote: GitLab: \n"),
    ] {
        let out = as_user(d.git(&c)).args(["push", "origin", &format!("HEAD:{branch}")]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{branch}: {stderr}");
        assert!(stderr.contains(message), "{branch}: {stderr}");
        assert_eq!(refs(&repo), before, "{branch}");
    }
    assert!(!gitlab.paths().iter().any(|p| p.ends_with("post_receive")));
}

fn script(p: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn custom_hooks_run_in_order_with_upstreams_environment_and_can_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let global = dir.path().join("global-hooks");
    let log = dir.path().join("log");
    let (d, _) = setup(&format!("[hooks]\ncustom_hooks_dir = {global:?}\n"));
    let repo = d.repo_path("p.git");
    let record = |name: &str| {
        format!(
            "echo \"{name} $GL_ID $GL_USERNAME $GL_REPOSITORY $GL_PROTOCOL opts=$GIT_PUSH_OPTION_COUNT:$GIT_PUSH_OPTION_0 args=$*\" >> {log:?}; cat > /dev/null"
        )
    };
    script(&repo.join("custom_hooks/pre-receive"), &record("repo-pre"));
    script(&repo.join("custom_hooks/pre-receive.d/02-second"), &record("repo-pre.d/02"));
    script(&repo.join("custom_hooks/pre-receive.d/01-first"), &record("repo-pre.d/01"));
    script(
        &global.join("pre-receive.d/00-global"),
        &format!("{}\necho 'hello from the global hook' >&2", record("global-pre.d/00")),
    );
    script(
        &global.join("update.d/check"),
        &format!(
            "{}\n[ \"$1\" != refs/heads/frozen ] || {{ echo 'frozen is frozen' >&2; exit 3; }}",
            record("global-update.d")
        ),
    );
    script(&repo.join("custom_hooks/post-receive"), &format!("{}\necho 'post-receive says hi'", record("repo-post")));

    let c = clone(&d, "c");
    let new = commit_file(&c, "d.txt", "d\n");
    let out = as_user(d.git(&c)).args(["push", "-o", "ci.skip", "origin", "HEAD:feature"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("remote: hello from the global hook"), "{stderr}");
    assert!(stderr.contains("remote: post-receive says hi"), "{stderr}");
    let lines = std::fs::read_to_string(&log).unwrap();
    let zero = "0".repeat(40);
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            "repo-pre user-1 jane project-1 ssh opts=1:ci.skip args=".to_string(),
            "repo-pre.d/01 user-1 jane project-1 ssh opts=1:ci.skip args=".into(),
            "repo-pre.d/02 user-1 jane project-1 ssh opts=1:ci.skip args=".into(),
            "global-pre.d/00 user-1 jane project-1 ssh opts=1:ci.skip args=".into(),
            format!("global-update.d user-1 jane project-1 ssh opts=: args=refs/heads/feature {zero} {new}"),
            "repo-post user-1 jane project-1 ssh opts=1:ci.skip args=".into(),
        ]
    );

    // A failing hook refuses its ref with its message; the ref stays as it was.
    let before = refs(&repo);
    let out = as_user(d.git(&c)).args(["push", "origin", "HEAD:frozen"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("remote: frozen is frozen"), "{stderr}");
    assert!(stderr.contains("hook declined"), "{stderr}");
    assert_eq!(refs(&repo), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_receive_pack_runs_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(|path, body| {
        if path.ends_with("/allowed") && body["changes"].as_str().unwrap_or("").contains("refs/heads/main") {
            return (403, serde_json::json!({"message": "main is protected"}), Duration::ZERO);
        }
        allow_all(path, body)
    });
    let (d, wt) = setup(&gitlab.config(dir.path(), ""));
    let old = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let new = commit_file(&wt, "pushed.txt", "via smart http\n");
    let mut pack_objects = git(&wt)
        .args(["pack-objects", "--stdout", "--revs", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    pack_objects.stdin.take().unwrap().write_all(format!("{new}\n^{old}\n").as_bytes()).unwrap();
    let pack = pack_objects.wait_with_output().unwrap().stdout;
    let push = |from: &str, target: &str| {
        let mut body =
            pktline::encode(format!("{from} {new} {target}\0report-status side-band-64k push-options\n").as_bytes());
        body.extend_from_slice(pktline::FLUSH);
        body.extend_from_slice(&pktline::encode(b"ci.skip\n"));
        body.extend_from_slice(pktline::FLUSH);
        body.extend_from_slice(&pack);
        vec![
            PostReceivePackRequest {
                repository: Some(Repository { gl_repository: "project-7".into(), ..d.repo("p.git") }),
                gl_id: "key-42".into(),
                gl_username: "jane".into(),
                ..Default::default()
            },
            PostReceivePackRequest { data: body.into(), ..Default::default() },
        ]
    };
    let mut c = SmartHttpServiceClient::new(d.channel().await);
    let data = collect_data!(c
        .post_receive_pack(futures::stream::iter(push(&old, "refs/heads/main")))
        .await
        .unwrap()
        .into_inner());
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("GitLab: main is protected"), "{text}");
    assert!(text.contains("ng refs/heads/main pre-receive hook declined"), "{text}");
    assert_eq!(stdout(git(&d.repo_path("p.git")).args(["rev-parse", "main"])), old);

    let data = collect_data!(c
        .post_receive_pack(futures::stream::iter(push(&"0".repeat(40), "refs/heads/other")))
        .await
        .unwrap()
        .into_inner());
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("ok refs/heads/other"), "{text}");
    assert!(text.contains("To create a merge request for feature"), "{text}");
    assert_eq!(stdout(git(&d.repo_path("p.git")).args(["rev-parse", "other"])), new);
    let calls = gitlab.calls();
    let allowed = calls.iter().rfind(|c| c.path.ends_with("/allowed")).unwrap();
    assert_eq!((allowed.body["key_id"].as_str(), allowed.body["protocol"].as_str()), (Some("42"), Some("http")));
    assert_eq!(allowed.body["gl_repository"], "project-7");
    let post = calls.iter().find(|c| c.path.ends_with("/post_receive")).unwrap();
    assert_eq!(post.body["push_options"], serde_json::json!(["ci.skip"]));
    assert_eq!(post.body["identifier"], "key-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_calls_need_the_internal_token_and_a_signed_payload() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(allow_all);
    let (d, _) = setup(&gitlab.config(dir.path(), ""));
    let internal = std::fs::read_dir(d.dir.path().join("internal"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("internal_"))
        .expect("internal socket");
    let zero = "0".repeat(40);
    let request = |payload: String| PreReceiveHookRequest {
        repository: Some(d.repo("p.git")),
        environment_variables: vec![format!("GITALY_HOOKS_PAYLOAD={payload}")],
        stdin: format!("{zero} {} refs/heads/x\n", "1".repeat(40)).into_bytes(),
        ..Default::default()
    };
    // A payload as a hook process would carry it, for another repository, unsigned.
    let forged = rgitaly::hook::Payload {
        requested_hooks: 15,
        internal_socket: internal.display().to_string(),
        internal_socket_token: "guess".into(),
        receive_hooks_payload: Some(rgitaly::hook::User {
            username: "a".into(),
            userid: "user-1".into(),
            protocol: "ssh".into(),
        }),
        repository: rgitaly::hook::payload::repository_json(&d.repo("p.git")),
        ..Default::default()
    }
    .encode(b"not the daemon's key");

    // On the internal socket: no token, a wrong token (as upstream's auth answers them).
    for (token, code) in [(None, tonic::Code::Unauthenticated), (Some("guess"), tonic::Code::PermissionDenied)] {
        let ch = rgitaly::client::connect(&format!("unix:{}", internal.display()), token).await.unwrap();
        let e = HookServiceClient::new(ch)
            .pre_receive_hook(futures::stream::iter([request(forged.clone())]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{token:?}: {e:?}");
    }
    // On the public socket (no token configured): the payload is not the daemon's.
    let mut c = HookServiceClient::new(d.channel().await);
    let e = c.pre_receive_hook(futures::stream::iter([request(forged)])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = c.pre_receive_hook(futures::stream::iter([request(String::new())])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e =
        c.update_hook(UpdateHookRequest { repository: Some(d.repo("p.git")), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(gitlab.calls().is_empty());
    d.assert_outside_untouched();
}

#[test]
fn check_reports_gitlab_and_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(|path, body| {
        if path.ends_with("/check") && body.is_null() {
            return allow_all(path, body);
        }
        (401, serde_json::json!({"message": "401 Unauthorized"}), Duration::ZERO)
    });
    let config = dir.path().join("config.toml");
    let storage = dir.path().join("s");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::write(
        &config,
        format!(
            "socket_path = {:?}\n[[storage]]\nname = \"default\"\npath = {storage:?}\n{}",
            dir.path().join("sock"),
            gitlab.config(dir.path(), "")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly")).arg("check").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let expected = "Checking GitLab API access: OK\nGitLab version: 13.12.0\nGitLab revision: abc\nGitLab Api version: v4\nRedis reachable for GitLab: true\nOK\n";
    assert!(text.ends_with(expected), "{text}");
    let check = &gitlab.calls()[0];
    assert_eq!(check.secret, base64::engine::general_purpose::STANDARD.encode(SECRET));

    // A GitLab that refuses the secret.
    let refusing = FakeGitlab::tcp(|_, _| (401, serde_json::json!({"message": "401 Unauthorized"}), Duration::ZERO));
    std::fs::write(
        &config,
        format!(
            "socket_path = {:?}\n[[storage]]\nname = \"default\"\npath = {storage:?}\n{}",
            dir.path().join("sock"),
            refusing.config(dir.path(), "")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgitaly")).arg("check").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("FAIL") && text.contains("401 Unauthorized"), "{text}");
}

/// GitLab refusing any change to a ref whose name contains "denied".
fn deny_named(path: &str, body: &serde_json::Value) -> (u16, serde_json::Value, Duration) {
    if path.ends_with("/allowed") && body["changes"].as_str().unwrap_or("").contains("denied") {
        return (403, serde_json::json!({"status": false, "message": "denied by GitLab"}), Duration::ZERO);
    }
    allow_all(path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_writes_run_the_chain() {
    use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
    use rgitaly::proto::gitaly::user_commit_files_action::UserCommitFilesActionPayload as ActionPayload;
    use rgitaly::proto::gitaly::user_commit_files_action_header::ActionType;
    use rgitaly::proto::gitaly::user_commit_files_request::UserCommitFilesRequestPayload as FilesPayload;

    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(deny_named);
    let (d, _) = setup(&gitlab.config(dir.path(), ""));
    let bare = d.repo_path("p.git");
    for (name, at) in
        [("denied-delete", "main"), ("denied-ff", "main~1"), ("denied-merge", "side"), ("ok-ff", "main~1")]
    {
        run(git(&bare).args(["branch", name, at]));
    }
    run(git(&bare).args(["tag", "denied-old-tag", "main"]));
    let repo = Some(Repository { gl_repository: "project-1".into(), ..d.repo("p.git") });
    let main = stdout(git(&bare).args(["rev-parse", "main"]));
    let mut ops = OperationServiceClient::new(d.channel().await);
    let denied = "GitLab: denied by GitLab";

    // Refused: each answers upstream's pre_receive_error and leaves every ref as it was.
    let before = refs(&bare);
    let branch = |name: &str| UserCreateBranchRequest {
        repository: repo.clone(),
        branch_name: name.into(),
        user: user(),
        start_point: b"main".to_vec(),
    };
    let r = ops.user_create_branch(branch("denied-new")).await.unwrap().into_inner();
    assert_eq!((r.pre_receive_error.as_str(), r.branch.is_none()), (denied, true));
    let r = ops
        .user_delete_branch(UserDeleteBranchRequest {
            repository: repo.clone(),
            branch_name: b"denied-delete".to_vec(),
            user: user(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.pre_receive_error, denied);
    let r = ops
        .user_update_branch(UserUpdateBranchRequest {
            repository: repo.clone(),
            branch_name: b"denied-delete".to_vec(),
            user: user(),
            newrev: stdout(git(&bare).args(["rev-parse", "side"])).into_bytes(),
            oldrev: main.clone().into_bytes(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.pre_receive_error, denied);
    let r = ops
        .user_create_tag(UserCreateTagRequest {
            repository: repo.clone(),
            tag_name: b"denied-tag".to_vec(),
            user: user(),
            target_revision: b"main".to_vec(),
            message: b"annotated".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.pre_receive_error.as_str(), r.tag.is_none(), r.exists), (denied, true, false));
    let r = ops
        .user_delete_tag(UserDeleteTagRequest {
            repository: repo.clone(),
            tag_name: b"denied-old-tag".to_vec(),
            user: user(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.pre_receive_error, denied);
    let r = ops
        .user_ff_branch(UserFfBranchRequest {
            repository: repo.clone(),
            user: user(),
            commit_id: main.clone(),
            branch: b"denied-ff".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.pre_receive_error.as_str(), r.branch_update.is_none()), (denied, true));
    let files = |branch: &str| {
        vec![
            UserCommitFilesRequest {
                user_commit_files_request_payload: Some(FilesPayload::Header(UserCommitFilesRequestHeader {
                    repository: repo.clone(),
                    user: user(),
                    branch_name: branch.into(),
                    commit_message: b"add a file".to_vec(),
                    start_branch_name: b"main".to_vec(),
                    ..Default::default()
                })),
            },
            UserCommitFilesRequest {
                user_commit_files_request_payload: Some(FilesPayload::Action(UserCommitFilesAction {
                    user_commit_files_action_payload: Some(ActionPayload::Header(UserCommitFilesActionHeader {
                        action: ActionType::Create as i32,
                        file_path: b"new.txt".to_vec(),
                        ..Default::default()
                    })),
                })),
            },
            UserCommitFilesRequest {
                user_commit_files_request_payload: Some(FilesPayload::Action(UserCommitFilesAction {
                    user_commit_files_action_payload: Some(ActionPayload::Content(b"new\n".to_vec())),
                })),
            },
        ]
    };
    let r = ops.user_commit_files(futures::stream::iter(files("denied-files"))).await.unwrap().into_inner();
    assert_eq!((r.pre_receive_error.as_str(), r.branch_update.is_none()), (denied, true));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(UserMergeBranchRequest {
        repository: repo.clone(),
        user: user(),
        commit_id: main.clone(),
        branch: b"denied-merge".to_vec(),
        message: b"merge".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = ops.user_merge_branch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert!(!stream.message().await.unwrap().unwrap().commit_id.is_empty());
    tx.send(UserMergeBranchRequest { apply: true, ..Default::default() }).await.unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!((second.pre_receive_error.as_str(), second.branch_update.is_none()), (denied, true));
    let r = ops
        .user_revert(UserRevertRequest {
            repository: repo.clone(),
            user: user(),
            commit: Some(GitCommit { id: main.clone(), ..Default::default() }),
            branch_name: b"denied-revert".to_vec(),
            message: b"Revert".to_vec(),
            start_branch_name: b"main".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.pre_receive_error.as_str(), r.branch_update.is_none()), (denied, true));
    assert_eq!(refs(&bare), before);
    assert!(!gitlab.paths().iter().any(|p| p.ends_with("post_receive")), "{:?}", gitlab.paths());

    // Allowed: the ref moves, GitLab hears of it as a web change by the request's user.
    let r = ops.user_create_branch(branch("ok-new")).await.unwrap().into_inner();
    assert_eq!((r.pre_receive_error.as_str(), r.branch.is_some()), ("", true));
    let r = ops
        .user_ff_branch(UserFfBranchRequest {
            repository: repo.clone(),
            user: user(),
            commit_id: main.clone(),
            branch: b"ok-ff".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.branch_update.is_some());
    let r = ops.user_commit_files(futures::stream::iter(files("ok-files"))).await.unwrap().into_inner();
    assert!(r.branch_update.is_some(), "{r:?}");
    assert_eq!(stdout(git(&bare).args(["rev-parse", "ok-new"])), main);
    assert_eq!(stdout(git(&bare).args(["rev-parse", "ok-ff"])), main);
    let side = stdout(git(&bare).args(["rev-parse", "side"]));
    let r = ops
        .user_update_branch(UserUpdateBranchRequest {
            repository: repo.clone(),
            branch_name: b"ok-new".to_vec(),
            user: user(),
            newrev: side.clone().into_bytes(),
            oldrev: main.clone().into_bytes(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.pre_receive_error, "");
    assert_eq!(stdout(git(&bare).args(["rev-parse", "ok-new"])), side);
    let r = ops
        .user_create_tag(UserCreateTagRequest {
            repository: repo.clone(),
            tag_name: b"ok-tag".to_vec(),
            user: user(),
            target_revision: b"main".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.tag.is_some() && r.pre_receive_error.is_empty(), "{r:?}");
    let r = ops
        .user_delete_tag(UserDeleteTagRequest { repository: repo.clone(), tag_name: b"ok-tag".to_vec(), user: user() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.pre_receive_error, "");
    let r = ops
        .user_delete_branch(UserDeleteBranchRequest {
            repository: repo.clone(),
            branch_name: b"ok-new".to_vec(),
            user: user(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.pre_receive_error, "");
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(UserMergeBranchRequest {
        repository: repo.clone(),
        user: user(),
        commit_id: side.clone(),
        branch: b"ok-ff".to_vec(),
        message: b"merge".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = ops.user_merge_branch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let merged = stream.message().await.unwrap().unwrap().commit_id;
    tx.send(UserMergeBranchRequest { apply: true, ..Default::default() }).await.unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!(second.branch_update.map(|b| b.commit_id), Some(merged.clone()));
    assert_eq!(stdout(git(&bare).args(["rev-parse", "ok-ff"])), merged);
    assert!(stdout(git(&bare).args(["tag", "-l", "ok-tag"])).is_empty());
    assert!(stdout(git(&bare).args(["branch", "--list", "ok-new"])).is_empty());
    let calls = gitlab.calls();
    let allowed: Vec<&ApiCall> = calls.iter().filter(|c| c.path.ends_with("/allowed")).collect();
    assert!(allowed
        .iter()
        .all(|c| c.body["protocol"] == "web" && c.body["user_id"] == "1" && c.body["gl_repository"] == "project-1"));
    let posts: Vec<&ApiCall> = calls.iter().filter(|c| c.path.ends_with("/post_receive")).collect();
    assert_eq!(posts.len(), 8, "{:?}", gitlab.paths());
    assert_eq!(
        posts[0].body["changes"].as_str().unwrap().trim(),
        format!("{} {main} refs/heads/ok-new", "0".repeat(40))
    );
    assert_eq!(posts[0].body["identifier"], "user-1");
    run(git(&bare).args(["fsck", "--no-progress"]));
}

/// What a process on the host that reads another's environment (same user) can do with a push's payload:
/// nothing beyond that push's own repository and hooks, and the internal socket opens nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_payload_reaches_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(allow_all);
    let (d, wt) = setup(&gitlab.config(dir.path(), ""));
    d.seed_repo("victim.git", &wt);
    let repo = d.repo_path("p.git");
    let stolen = dir.path().join("stolen");
    let env_seen = dir.path().join("env");
    // The hook runs while git receive-pack waits for it: it finds the payload in the environment of the git
    // working in this repository (other tests' pushes run in theirs).
    script(
        &repo.join("custom_hooks/pre-receive"),
        &format!(
            "env > {env_seen:?}\nfor p in /proc/[0-9]*; do [ \"$(readlink $p/cwd)\" = \"$PWD\" ] || continue; tr '\\0' '\\n' < $p/environ 2>/dev/null | grep '^GITALY_HOOKS_PAYLOAD=' | head -1; done | head -1 | cut -d= -f2- > {stolen:?}\ncat > /dev/null"
        ),
    );
    let c = clone(&d, "c");
    commit_file(&c, "e.txt", "e\n");
    run(as_user(d.git(&c)).args(["push", "--quiet", "origin", "HEAD:feature"]));
    let payload = std::fs::read_to_string(&stolen).unwrap().trim().to_string();
    assert!(!payload.is_empty(), "the test hook found no payload");
    let env = std::fs::read_to_string(&env_seen).unwrap();
    assert!(!env.contains("GITALY_HOOKS_PAYLOAD"), "{env}");
    assert!(env.contains(&format!("GIT_DIR={}\n", repo.canonicalize().unwrap().display())), "{env}");
    assert!(env.contains("GL_ID=user-1") && env.contains("GL_PROTOCOL=ssh"), "{env}");

    let decoded = rgitaly::hook::Payload::decode(&payload).unwrap();
    let internal = format!("unix:{}", decoded.internal_socket);
    let ch = rgitaly::client::connect(&internal, Some(&decoded.internal_socket_token)).await.unwrap();
    let zero = "0".repeat(40);
    let request = |repo: &str| PreReceiveHookRequest {
        repository: Some(d.repo(repo)),
        environment_variables: vec![format!("GITALY_HOOKS_PAYLOAD={payload}")],
        stdin: format!("{zero} {} refs/heads/x\n", "1".repeat(40)).into_bytes(),
        ..Default::default()
    };
    // Signed by the daemon, but for p.git: refused for another repository.
    let e = HookServiceClient::new(ch.clone())
        .pre_receive_hook(futures::stream::iter([request("victim.git")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // The internal socket's token opens HookService only.
    let e = rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient::new(ch.clone())
        .repository_exists(RepositoryExistsRequest { repository: Some(d.repo("victim.git")) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    // The workers' ref updates: for p.git only, compare-and-swap, and never on the daemon's own socket.
    let before = (refs(&repo), refs(&d.repo_path("victim.git")));
    let feature = before.0.lines().find_map(|l| l.strip_prefix("refs/heads/feature ")).unwrap();
    let update = |repo: &str, old: &str| rgitaly::proto::rgitaly::UpdateReferenceRequest {
        repository: Some(d.repo(repo)),
        environment_variables: vec![format!("GITALY_HOOKS_PAYLOAD={payload}")],
        reference: b"refs/heads/feature".to_vec(),
        new_value: zero.clone(),
        old_value: old.to_string(),
    };
    use rgitaly::proto::rgitaly::ref_update_service_client::RefUpdateServiceClient;
    let e = RefUpdateServiceClient::new(ch.clone()).update_reference(update("victim.git", "")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e =
        RefUpdateServiceClient::new(ch.clone()).update_reference(update("p.git", &"1".repeat(40))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e =
        RefUpdateServiceClient::new(d.channel().await).update_reference(update("p.git", feature)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    assert_eq!((refs(&repo), refs(&d.repo_path("victim.git"))), before);
    let calls_before = gitlab.calls().len();
    // For its own repository it is what it was: the same checks as the push (GitLab asked again).
    let mut s = HookServiceClient::new(ch)
        .pre_receive_hook(futures::stream::iter([request("p.git")]))
        .await
        .unwrap()
        .into_inner();
    while s.message().await.unwrap().is_some() {}
    assert_eq!(gitlab.calls().len(), calls_before + 2);
    d.assert_outside_untouched();
}

#[test]
fn pushes_are_refused_when_the_hooks_are_gone() {
    let (d, _) = setup("");
    let installed: Vec<PathBuf> = std::fs::read_dir(d.dir.path().join("internal"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("rgitaly-hooks."))
        .collect();
    assert_eq!(installed.len(), 1, "{installed:?}");
    let c = clone(&d, "c");
    commit_file(&c, "f.txt", "f\n");
    std::fs::remove_file(installed[0].join("rgitaly-hooks")).unwrap();
    let before = refs(&d.repo_path("p.git"));
    let out = as_user(d.git(&c)).args(["push", "origin", "HEAD:feature"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("hooks are not installed"), "{stderr}");
    assert_eq!(refs(&d.repo_path("p.git")), before);
}

#[test]
fn gitlab_over_https_with_a_ca_file_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let gitlab = FakeGitlab::https(&cert, &key, allow_all);
    let (d, _) = setup(&gitlab.config(dir.path(), &format!("ca_file = {ca:?}\nuser = \"api\"\npassword = \"s3cret\"")));
    let c = clone(&d, "c");
    commit_file(&c, "g.txt", "g\n");
    run(as_user(d.git(&c)).args(["push", "--quiet", "origin", "HEAD:feature"]));
    let calls = gitlab.calls();
    assert_eq!(calls.len(), 3, "{:?}", gitlab.paths());
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("api:s3cret"));
    assert!(calls.iter().all(|c| c.authorization == basic), "{calls:?}");

    // Without the CA the certificate is not trusted: the push is refused, nothing lands.
    let other = tempfile::tempdir().unwrap();
    let (d2, _) = setup(&gitlab.config(other.path(), ""));
    let c2 = clone(&d2, "c");
    commit_file(&c2, "h.txt", "h\n");
    let out = as_user(d2.git(&c2)).args(["push", "origin", "HEAD:feature"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("GitLab: Internal API unreachable"), "{stderr}");
    assert_eq!(gitlab.calls().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebase_push_options_reach_gitlab() {
    use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
    use rgitaly::proto::gitaly::user_rebase_confirmable_request::{Header, UserRebaseConfirmableRequestPayload as P};
    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(allow_all);
    let (d, wt) = setup(&gitlab.config(dir.path(), ""));
    let bare = d.repo_path("p.git");
    run(git(&wt).args(["checkout", "--quiet", "-B", "feature", "main~1"]));
    commit_file(&wt, "f.txt", "f\n");
    run(git(&wt).arg("push").arg("--quiet").arg(&bare).arg("feature"));
    let feature = stdout(git(&bare).args(["rev-parse", "feature"]));
    let repo = Some(Repository { gl_repository: "project-1".into(), ..d.repo("p.git") });
    let header = Header {
        repository: repo.clone(),
        user: user(),
        rebase_id: "1".into(),
        branch: b"feature".to_vec(),
        branch_sha: feature.clone(),
        remote_repository: repo,
        remote_branch: b"main".to_vec(),
        git_push_options: vec!["ci.skip".into(), "test=value".into()],
        timestamp: None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Header(header)) })
        .await
        .unwrap();
    let mut ops = OperationServiceClient::new(d.channel().await);
    let mut stream =
        ops.user_rebase_confirmable(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    tx.send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Apply(true)) })
        .await
        .unwrap();
    while stream.message().await.unwrap().is_some() {}
    assert_ne!(stdout(git(&bare).args(["rev-parse", "feature"])), feature);
    let calls = gitlab.calls();
    let post = calls.iter().find(|c| c.path.ends_with("/post_receive")).expect("post_receive");
    assert_eq!(post.body["push_options"], serde_json::json!(["ci.skip", "test=value"]));
    assert_eq!(calls.iter().find(|c| c.path.ends_with("/allowed")).unwrap().body["protocol"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_conflicts_runs_the_chain() {
    use rgitaly::proto::gitaly::conflicts_service_client::ConflictsServiceClient;
    use rgitaly::proto::gitaly::resolve_conflicts_request::ResolveConflictsRequestPayload as Payload;

    let dir = tempfile::tempdir().unwrap();
    let gitlab = FakeGitlab::tcp(deny_named);
    let (d, _) = setup(&gitlab.config(dir.path(), ""));
    let bare = d.repo_path("p.git");
    run(git(&bare).args(["branch", "denied-src", "side"]));
    run(git(&bare).args(["branch", "ok-src", "side"]));
    let repo = Some(Repository { gl_repository: "project-1".into(), ..d.repo("p.git") });
    let (side, main) = (stdout(git(&bare).args(["rev-parse", "side"])), stdout(git(&bare).args(["rev-parse", "main"])));
    let mut client = ConflictsServiceClient::new(d.channel().await);
    let resolve = |source: &str| {
        let header = ResolveConflictsRequestHeader {
            repository: repo.clone(),
            our_commit_oid: side.clone(),
            target_repository: repo.clone(),
            their_commit_oid: main.clone(),
            source_branch: source.as_bytes().to_vec(),
            target_branch: b"main".to_vec(),
            commit_message: b"Merge main".to_vec(),
            user: user(),
            timestamp: None,
        };
        // Nothing conflicts (side is behind main): no resolutions, a plain merge commit.
        tokio_stream::iter(vec![
            ResolveConflictsRequest { resolve_conflicts_request_payload: Some(Payload::Header(header)) },
            ResolveConflictsRequest { resolve_conflicts_request_payload: Some(Payload::FilesJson(b"[]".to_vec())) },
        ])
    };
    let e = client.resolve_conflicts(resolve("denied-src")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::FailedPrecondition, "GitLab: denied by GitLab"));
    assert_eq!(stdout(git(&bare).args(["rev-parse", "denied-src"])), side);
    assert!(!gitlab.paths().iter().any(|p| p.ends_with("post_receive")));

    let r = client.resolve_conflicts(resolve("ok-src")).await.unwrap().into_inner();
    assert_eq!(r.resolution_error, "");
    let merged = stdout(git(&bare).args(["rev-parse", "ok-src"]));
    assert_eq!(stdout(git(&bare).args(["log", "-1", "--format=%P", &merged])), format!("{side} {main}"));
    assert!(gitlab.paths().iter().any(|p| p.ends_with("post_receive")), "{:?}", gitlab.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiki_writes_run_the_chain_as_the_committing_user() {
    use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;

    let dir = tempfile::tempdir().unwrap();
    // GitLab refuses user 9's changes.
    let gitlab = FakeGitlab::tcp(|path, body| {
        if path.ends_with("/allowed") && body["user_id"] == "9" {
            return (403, serde_json::json!({"status": false, "message": "wiki is read-only for you"}), Duration::ZERO);
        }
        allow_all(path, body)
    });
    let (d, _) = setup(&gitlab.config(dir.path(), ""));
    let bare = d.repo_path("w.git");
    run(git(&d.work_dir("src")).args(["init", "--quiet", "--bare", "-b", "master"]).arg(&bare));
    let repo = Some(Repository { gl_repository: "wiki-1".into(), ..d.repo("w.git") });
    let mut client = WikiServiceClient::new(d.channel().await);
    let page = |user_id: i32, name: &str| {
        tokio_stream::iter(vec![WikiWritePageRequest {
            repository: repo.clone(),
            name: name.as_bytes().to_vec(),
            format: "markdown".into(),
            commit_details: Some(WikiCommitDetails {
                name: b"Jane".to_vec(),
                email: b"jane@example.com".to_vec(),
                message: b"page".to_vec(),
                user_id,
                user_name: b"jane".to_vec(),
            }),
            content: b"text\n".to_vec(),
        }])
    };
    let r = client.wiki_write_page(page(7, "Home")).await.unwrap().into_inner();
    assert!(r.duplicate_error.is_empty());
    let calls = gitlab.calls();
    let allowed = calls.iter().find(|c| c.path.ends_with("/allowed")).expect("access check");
    assert_eq!((allowed.body["user_id"].as_str(), allowed.body["protocol"].as_str()), (Some("7"), Some("web")));
    assert!(calls.iter().any(|c| c.path.ends_with("post_receive")));

    let before = stdout(git(&bare).args(["rev-parse", "master"]));
    let e = client.wiki_write_page(page(9, "Other")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::FailedPrecondition, "Hook failed: GitLab: wiki is read-only for you")
    );
    assert_eq!(stdout(git(&bare).args(["rev-parse", "master"])), before);
}

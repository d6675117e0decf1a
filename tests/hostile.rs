//! Hostile input for every RPC family served: traversal in its forms, symlinks out of the storage, unknown
//! storages, wrong first messages, option-like revisions and dangerous config. Each gets the right code,
//! nothing outside the storage changes, and the daemon stays up.

mod common;

use common::*;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::smart_http_service_client::SmartHttpServiceClient;
use rgitaly::proto::gitaly::ssh_service_client::SshServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::Code;

struct Setup {
    d: Daemon,
    outside_before: Snapshot,
}

fn setup() -> Setup {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("good.git", &wt);
    // A real repository outside the storage, reachable only through symlinks planted inside it.
    run(git(d.dir.path()).args(["clone", "--bare", "--quiet"]).arg(&wt).arg(d.outside.join("victim.git")));
    std::os::unix::fs::symlink(d.outside.join("victim.git"), d.storage.join("evil.git")).unwrap();
    std::os::unix::fs::symlink(&d.outside, d.storage.join("evil-dir")).unwrap();
    let outside_before = snapshot(&d.outside);
    Setup { d, outside_before }
}

impl Setup {
    fn check(&mut self) {
        assert_eq!(snapshot(&self.d.outside), self.outside_before, "something outside the storage changed");
        assert!(self.d.alive(), "daemon died");
    }
}

const HOSTILE_PATHS: &[&str] = &[
    "../outside/victim.git",
    "../../etc",
    "/etc",
    "/tmp/x.git",
    "good.git/../../outside/victim.git",
    "./../outside/victim.git",
    "..",
    ".",
    "a/./../../outside/victim.git",
    "evil.git",
    "evil-dir/victim.git",
    "evil-dir/new.git",
    "good.git\0/../../outside",
    "",
    "+gitaly/tmp/x.git",
    ".gitaly-metadata",
];

fn repo(storage: &str, path: &str) -> Option<Repository> {
    Some(Repository { storage_name: storage.into(), relative_path: path.into(), ..Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_symlink_escapes_on_every_family() {
    let mut s = setup();
    let ch = s.d.channel().await;
    let mut r = RepositoryServiceClient::new(ch.clone());
    let mut ssh = SshServiceClient::new(ch.clone());
    let mut http = SmartHttpServiceClient::new(ch.clone());
    let mut cases = 0;
    for (storage, path) in HOSTILE_PATHS.iter().map(|p| (STORAGE, *p)).chain([("nope", "good.git"), ("", "good.git")]) {
        let rp = || repo(storage, path);
        let codes = vec![
            ("RepositoryExists", r.repository_exists(RepositoryExistsRequest { repository: rp() }).await.map(|_| ())),
            ("CreateRepository", r.create_repository(CreateRepositoryRequest { repository: rp() }).await.map(|_| ())),
            ("RemoveRepository", r.remove_repository(RemoveRepositoryRequest { repository: rp() }).await.map(|_| ())),
            ("RepositorySize", r.repository_size(RepositorySizeRequest { repository: rp() }).await.map(|_| ())),
            (
                "WriteRef",
                r.write_ref(WriteRefRequest {
                    repository: rp(),
                    r#ref: b"refs/heads/x".to_vec(),
                    revision: b"HEAD".to_vec(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            (
                "GarbageCollect",
                r.garbage_collect(GarbageCollectRequest { repository: rp(), ..Default::default() }).await.map(|_| ()),
            ),
            ("CreateBundle", r.create_bundle(CreateBundleRequest { repository: rp() }).await.map(|_| ())),
            (
                "CreateRepositoryFromBundle",
                r.create_repository_from_bundle(futures::stream::iter(vec![CreateRepositoryFromBundleRequest {
                    repository: rp(),
                    data: b"x".to_vec(),
                }]))
                .await
                .map(|_| ()),
            ),
            (
                "InfoRefsUploadPack",
                http.info_refs_upload_pack(InfoRefsRequest { repository: rp(), ..Default::default() })
                    .await
                    .map(|_| ()),
            ),
            (
                "InfoRefsReceivePack",
                http.info_refs_receive_pack(InfoRefsRequest { repository: rp(), ..Default::default() })
                    .await
                    .map(|_| ()),
            ),
            (
                "PostUploadPack",
                http.post_upload_pack(futures::stream::iter(vec![PostUploadPackRequest {
                    repository: rp(),
                    ..Default::default()
                }]))
                .await
                .map(|_| ()),
            ),
            (
                "SSHUploadArchive",
                ssh.ssh_upload_archive(futures::stream::iter(vec![SshUploadArchiveRequest {
                    repository: rp(),
                    ..Default::default()
                }]))
                .await
                .map(|_| ()),
            ),
            ("HasLocalBranches", r.has_local_branches(HasLocalBranchesRequest { repository: rp() }).await.map(|_| ())),
            (
                "FindMergeBase",
                r.find_merge_base(FindMergeBaseRequest {
                    repository: rp(),
                    revisions: vec![b"a".to_vec(), b"b".to_vec()],
                })
                .await
                .map(|_| ()),
            ),
            (
                "CalculateChecksum",
                r.calculate_checksum(CalculateChecksumRequest { repository: rp() }).await.map(|_| ()),
            ),
            ("Fsck", r.fsck(FsckRequest { repository: rp() }).await.map(|_| ())),
            (
                "RepackFull",
                r.repack_full(RepackFullRequest { repository: rp(), create_bitmap: true }).await.map(|_| ()),
            ),
            (
                "RepackIncremental",
                r.repack_incremental(RepackIncrementalRequest { repository: rp() }).await.map(|_| ()),
            ),
            (
                "GetArchive",
                r.get_archive(GetArchiveRequest { repository: rp(), commit_id: "HEAD".into(), ..Default::default() })
                    .await
                    .map(|_| ()),
            ),
            (
                "PostReceivePack",
                http.post_receive_pack(futures::stream::iter(vec![PostReceivePackRequest {
                    repository: rp(),
                    gl_id: "u".into(),
                    ..Default::default()
                }]))
                .await
                .map(|_| ()),
            ),
            (
                "SSHUploadPack",
                ssh.ssh_upload_pack(futures::stream::iter(vec![SshUploadPackRequest {
                    repository: rp(),
                    ..Default::default()
                }]))
                .await
                .map(|_| ()),
            ),
            (
                "SSHReceivePack",
                ssh.ssh_receive_pack(futures::stream::iter(vec![SshReceivePackRequest {
                    repository: rp(),
                    gl_id: "u".into(),
                    ..Default::default()
                }]))
                .await
                .map(|_| ()),
            ),
        ];
        for (rpc, result) in codes {
            let e = result.expect_err(&format!("{rpc} accepted {storage:?}/{path:?}"));
            assert_eq!(e.code(), Code::InvalidArgument, "{rpc} {storage:?}/{path:?}: {}", e.message());
            cases += 1;
        }
    }
    assert!(cases >= 300, "{cases}");
    s.check();
    // The symlinked repository outside is still intact and the storage holds no stray repository.
    assert!(!s.d.storage.join("evil-dir/new.git").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_first_messages() {
    let mut s = setup();
    let ch = s.d.channel().await;
    let mut ssh = SshServiceClient::new(ch.clone());
    let good = || repo(STORAGE, "good.git");
    let e = ssh
        .ssh_upload_pack(futures::stream::iter(vec![SshUploadPackRequest {
            repository: good(),
            stdin: b"0000".to_vec().into(),
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "non-empty stdin in first request"));
    let e = ssh
        .ssh_upload_archive(futures::stream::iter(vec![SshUploadArchiveRequest {
            repository: good(),
            stdin: b"x".to_vec().into(),
        }]))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "non-empty stdin in first request"));
    for (req, msg) in [
        (SshReceivePackRequest { repository: good(), ..Default::default() }, "empty GlId"),
        (
            SshReceivePackRequest {
                repository: good(),
                gl_id: "u".into(),
                stdin: b"x".to_vec().into(),
                ..Default::default()
            },
            "non-empty data in first request",
        ),
        (SshReceivePackRequest { gl_id: "u".into(), ..Default::default() }, "repository is empty"),
    ] {
        let e = ssh.ssh_receive_pack(futures::stream::iter(vec![req])).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
    // No first message at all.
    let e = ssh.ssh_upload_pack(futures::stream::iter(Vec::<SshUploadPackRequest>::new())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = RepositoryServiceClient::new(ch)
        .create_repository_from_bundle(futures::stream::iter(Vec::<CreateRepositoryFromBundleRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    s.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_injection_is_refused() {
    let mut s = setup();
    let ch = s.d.channel().await;
    let mut ssh = SshServiceClient::new(ch.clone());
    let mut http = SmartHttpServiceClient::new(ch.clone());
    let mut r = RepositoryServiceClient::new(ch);
    let pwned = s.d.outside.join("pwned");
    let good = || repo(STORAGE, "good.git");
    for opt in [
        format!("core.sshCommand=touch {}", pwned.display()),
        format!("uploadpack.packObjectsHook=touch {}", pwned.display()),
        format!("include.path={}", s.d.outside.join("victim.git/config").display()),
        format!("core.hooksPath={}", s.d.outside.display()),
        "core.pager=sh".to_string(),
        "core.bare=false".to_string(),
        "receive.denyCurrentBranch=updateInstead".to_string(),
        format!("receive.fsck.skipList={}", s.d.outside.join("sentinel").display()),
        "core.worktree=/tmp".to_string(),
        "alias.upload-pack=!touch /tmp/x".to_string(),
        "not-a-key-value".to_string(),
        "core.x=a\nb".to_string(),
    ] {
        let opts = vec![opt.clone()];
        let e = ssh
            .ssh_upload_pack(futures::stream::iter(vec![SshUploadPackRequest {
                repository: good(),
                git_config_options: opts.clone(),
                ..Default::default()
            }]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{opt}: {}", e.message());
        let e = http
            .info_refs_upload_pack(InfoRefsRequest {
                repository: good(),
                git_config_options: opts.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{opt}");
        let e = http
            .post_upload_pack(futures::stream::iter(vec![PostUploadPackRequest {
                repository: good(),
                git_config_options: opts.clone(),
                ..Default::default()
            }]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{opt}");
    }
    for rev in ["--all", "--output=/tmp/x", "-n1"] {
        let e = r
            .find_merge_base(FindMergeBaseRequest { repository: good(), revisions: vec![rev.into(), b"main".to_vec()] })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{rev}");
        let e = r
            .write_ref(WriteRefRequest {
                repository: good(),
                r#ref: b"refs/heads/x".to_vec(),
                revision: rev.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{rev}");
        let e = r
            .write_ref(WriteRefRequest {
                repository: good(),
                r#ref: rev.into(),
                revision: b"main".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{rev}");
        let e = r
            .get_archive(GetArchiveRequest { repository: good(), commit_id: rev.into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{rev}");
    }
    assert!(!pwned.exists());
    s.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pkt_lines_do_not_hurt() {
    let mut s = setup();
    let ch = s.d.channel().await;
    let mut http = SmartHttpServiceClient::new(ch.clone());
    for body in [
        &b"zzzzgarbage"[..],
        b"ffffwant",
        b"0004",
        b"0032want 0000000000000000000000000000000000000000\n00000009done\n",
    ] {
        let reqs = vec![
            PostUploadPackRequest { repository: repo(STORAGE, "good.git"), ..Default::default() },
            PostUploadPackRequest { data: body.to_vec().into(), ..Default::default() },
        ];
        let mut stream = http.post_upload_pack(futures::stream::iter(reqs)).await.unwrap().into_inner();
        let mut result = Ok(());
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let e = result.expect_err("git upload-pack accepted garbage");
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    }
    // An SSH upload-pack fed garbage ends with a non-zero exit status on an OK call, even though it stops
    // reading long before the client stops sending (EPIPE on its stdin is not an RPC error).
    let mut reqs = vec![
        SshUploadPackRequest { repository: repo(STORAGE, "good.git"), ..Default::default() },
        SshUploadPackRequest { stdin: b"zzzznot a pkt line".to_vec().into(), ..Default::default() },
    ];
    for _ in 0..64 {
        reqs.push(SshUploadPackRequest { stdin: vec![b'x'; 256 * 1024].into(), ..Default::default() });
    }
    let mut stream = SshServiceClient::new(ch).ssh_upload_pack(futures::stream::iter(reqs)).await.unwrap().into_inner();
    let mut exit = None;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(st) = m.exit_status {
            exit = Some(st.value);
        }
    }
    assert!(matches!(exit, Some(code) if code != 0), "{exit:?}");
    s.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_negotiation_is_cut_off() {
    let d = Daemon::start_with("[timeout]\nupload_pack_negotiation = \"1s\"\n");
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("good.git", &wt);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(SshUploadPackRequest { repository: repo(STORAGE, "good.git"), ..Default::default() }).await.unwrap();
    let mut ssh = SshServiceClient::new(d.channel().await);
    // The client never sends "done" and never closes its side.
    let mut stream = ssh.ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let started = std::time::Instant::now();
    let mut exit = None;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(st) = m.exit_status {
            exit = Some(st.value);
        }
    }
    assert_eq!(exit, Some(-1), "killed git reports -1 as upstream");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_calls_cannot_smuggle_paths() {
    use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
    let mut s = setup();
    let ch = s.d.channel().await;
    let mut ops = OperationServiceClient::new(ch);
    let user = Some(User {
        gl_id: "u".into(),
        name: b"A".to_vec(),
        email: b"a@example.com".to_vec(),
        gl_username: "a".into(),
    });
    // Traversal in every form, through the proxy.
    for path in HOSTILE_PATHS {
        let req = UserCreateBranchRequest {
            repository: repo(STORAGE, path),
            branch_name: b"x".to_vec(),
            user: user.clone(),
            start_point: b"main".to_vec(),
        };
        let e = ops.user_create_branch(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{path:?}: {}", e.message());
    }
    // A client cannot hand the worker a path of its own: the daemon drops x-rgitaly-* metadata.
    let victim = s.d.outside.join("victim.git");
    let mut req = tonic::Request::new(UserCreateBranchRequest {
        repository: repo(STORAGE, "good.git"),
        branch_name: b"smuggled".to_vec(),
        user: user.clone(),
        start_point: b"main".to_vec(),
    });
    let bin = tonic::metadata::MetadataValue::from_bytes(victim.as_os_str().as_encoded_bytes());
    req.metadata_mut().insert_bin("x-rgitaly-repo-path-bin", bin.clone());
    req.metadata_mut().insert_bin("x-rgitaly-storage-path-bin", bin);
    req.metadata_mut().insert("x-rgitaly-repo-path", "/tmp".parse().unwrap());
    ops.user_create_branch(req).await.unwrap();
    assert!(stdout(git(&s.d.repo_path("good.git")).args(["branch", "--list", "smuggled"])).contains("smuggled"));
    // Option-like names never become git options.
    let req = UserCreateBranchRequest {
        repository: repo(STORAGE, "good.git"),
        branch_name: b"x".to_vec(),
        user,
        start_point: b"--upload-pack=touch /tmp/pwned".to_vec(),
    };
    let e = ops.user_create_branch(req).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    s.check();
}

/// Path fields that reach git as arguments: a NUL (which no argument can carry, and which would cut the
/// path short) is `InvalidArgument` on every one; a line break is just a byte of a file name, answered
/// from that file and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_fields_with_nul_and_line_breaks() {
    use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
    use rgitaly::proto::gitaly::diff_service_client::DiffServiceClient;
    let mut s = setup();
    let wt = s.d.work_dir("nl");
    run(git(&wt).args(["init", "--quiet", "-b", "main"]));
    let bare = commit_file(&wt, "plain.txt", "plain\n");
    let odd = commit_file(&wt, "odd\nname.txt", "odd\n");
    commit_file(&wt, "plain.txt", "changed\n");
    s.d.seed_repo("nl.git", &wt);
    let ch = s.d.channel().await;
    let mut c = CommitServiceClient::new(ch.clone());
    let mut diff = DiffServiceClient::new(ch.clone());
    let mut r = RepositoryServiceClient::new(ch);
    let nl = || repo(STORAGE, "nl.git");
    let bad = b"plain.txt\0odd\nname.txt".to_vec();
    let code = |r: Result<Code, tonic::Status>| r.unwrap_or_else(|e| e.code());

    let mut codes = Vec::new();
    let last = c
        .last_commit_for_path(LastCommitForPathRequest {
            repository: nl(),
            revision: b"main".to_vec(),
            path: bad.clone(),
            ..Default::default()
        })
        .await;
    codes.push(("LastCommitForPath", code(last.map(|_| Code::Ok))));
    let tree = c
        .list_last_commits_for_tree(ListLastCommitsForTreeRequest {
            repository: nl(),
            revision: "main".into(),
            path: bad.clone(),
            limit: 10,
            ..Default::default()
        })
        .await;
    let tree = match tree {
        Ok(s) => code(s.into_inner().message().await.map(|_| Code::Ok)),
        Err(e) => e.code(),
    };
    codes.push(("ListLastCommitsForTree", tree));
    let blame =
        match c.raw_blame(RawBlameRequest { repository: nl(), revision: b"main".to_vec(), path: bad.clone() }).await {
            Ok(s) => code(s.into_inner().message().await.map(|_| Code::Ok)),
            Err(e) => e.code(),
        };
    codes.push(("RawBlame", blame));
    let count = c
        .count_commits(CountCommitsRequest {
            repository: nl(),
            revision: b"main".to_vec(),
            path: bad.clone(),
            ..Default::default()
        })
        .await;
    codes.push(("CountCommits", code(count.map(|_| Code::Ok))));
    let find = match c
        .find_commits(FindCommitsRequest {
            repository: nl(),
            revision: b"main".to_vec(),
            paths: vec![bad.clone()],
            limit: 10,
            ..Default::default()
        })
        .await
    {
        Ok(s) => code(s.into_inner().message().await.map(|_| Code::Ok)),
        Err(e) => e.code(),
    };
    codes.push(("FindCommits", find));
    let d = match diff
        .commit_diff(CommitDiffRequest {
            repository: nl(),
            left_commit_id: bare.trim().into(),
            right_commit_id: "main".into(),
            paths: vec![bad.clone()],
            ..Default::default()
        })
        .await
    {
        Ok(s) => code(s.into_inner().message().await.map(|_| Code::Ok)),
        Err(e) => e.code(),
    };
    codes.push(("CommitDiff", d));
    let archive = match r
        .get_archive(GetArchiveRequest {
            repository: nl(),
            commit_id: "main".into(),
            path: bad.clone(),
            format: get_archive_request::Format::Tar as i32,
            ..Default::default()
        })
        .await
    {
        Ok(s) => code(s.into_inner().message().await.map(|_| Code::Ok)),
        Err(e) => e.code(),
    };
    codes.push(("GetArchive", archive));
    for (rpc, got) in codes {
        assert_eq!(got, Code::InvalidArgument, "{rpc}");
    }

    // A name with a line break is one file: its own last commit, its own blame, its own count.
    let last = c
        .last_commit_for_path(LastCommitForPathRequest {
            repository: nl(),
            revision: b"main".to_vec(),
            path: b"odd\nname.txt".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.commit.unwrap().id, odd.trim());
    let count = c
        .count_commits(CountCommitsRequest {
            repository: nl(),
            revision: b"main".to_vec(),
            path: b"odd\nname.txt".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 1);
    let mut blame = c
        .raw_blame(RawBlameRequest { repository: nl(), revision: b"main".to_vec(), path: b"odd\nname.txt".to_vec() })
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(m) = blame.message().await.unwrap() {
        text.extend_from_slice(&m.data);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with(odd.trim()) && text.contains("\todd\n") && !text.contains("plain"), "{text}");
    s.check();
}

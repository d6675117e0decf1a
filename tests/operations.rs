//! OperationService through the daemon and its workers, checked with `git`: refs, trees, commit metadata,
//! conflicts, stale expected values, and invalid input.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::user_commit_files_action::UserCommitFilesActionPayload as ActionPayload;
use rgitaly::proto::gitaly::user_commit_files_action_header::ActionType;
use rgitaly::proto::gitaly::user_commit_files_request::UserCommitFilesRequestPayload as Payload;
use rgitaly::proto::gitaly::*;
use tonic::Code;

type Ops = OperationServiceClient<AuthChannel>;

async fn setup() -> (Daemon, PathBuf, PathBuf, Ops) {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    let bare = d.seed_repo("p.git", &wt);
    let ops = OperationServiceClient::new(d.channel().await);
    (d, wt, bare, ops)
}

fn rev(repo: &Path, r: &str) -> String {
    stdout(git(repo).args(["rev-parse", r]))
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_delete_branch() {
    let (d, _wt, bare, mut ops) = setup().await;
    let repo = Some(d.repo("p.git"));
    let create = |name: &str, start: &str| UserCreateBranchRequest {
        repository: repo.clone(),
        branch_name: name.as_bytes().to_vec(),
        user: user(),
        start_point: start.as_bytes().to_vec(),
    };
    let r = ops.user_create_branch(create("feature", "side")).await.unwrap().into_inner();
    let side = rev(&bare, "side");
    assert_eq!(rev(&bare, "refs/heads/feature"), side);
    let branch = r.branch.unwrap();
    assert_eq!(branch.name, b"feature");
    let commit = branch.target_commit.unwrap();
    assert_eq!(commit.id, side);
    assert_eq!(commit.subject, b"commit 2");
    assert_eq!(commit.author.unwrap().email, b"test@example.com");
    assert_eq!(commit.tree_id, rev(&bare, "side^{tree}"));
    assert_eq!(commit.parent_ids, vec![rev(&bare, "side~1")]);

    for (req, code, msg) in [
        (
            create("feature", "main"),
            Code::FailedPrecondition,
            "Could not update feature. Please refresh and try again.",
        ),
        (create("x", "nope"), Code::FailedPrecondition, "revspec 'nope' not found"),
        (create("x", "--all"), Code::FailedPrecondition, "revspec '--all' not found"),
        (create("", "main"), Code::InvalidArgument, "Bad Request (empty branch name)"),
        (UserCreateBranchRequest { user: None, ..create("x", "main") }, Code::InvalidArgument, "empty user"),
        (create("x", ""), Code::InvalidArgument, "empty start point"),
        (
            create("bad..name", "main"),
            Code::FailedPrecondition,
            "Could not update refs/heads/bad..name. Please refresh and try again.",
        ),
    ] {
        let e = ops.user_create_branch(req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }
    assert!(!stdout(git(&bare).args(["for-each-ref", "--format=%(refname)"])).contains("bad..name"));

    // Update with compare-and-swap.
    let main = rev(&bare, "main");
    let update = |new: &str, old: &str| UserUpdateBranchRequest {
        repository: repo.clone(),
        branch_name: b"feature".to_vec(),
        user: user(),
        newrev: new.as_bytes().to_vec(),
        oldrev: old.as_bytes().to_vec(),
    };
    ops.user_update_branch(update(&main, &side)).await.unwrap();
    assert_eq!(rev(&bare, "feature"), main);
    let e = ops.user_update_branch(update(&side, &side)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "Could not update feature. Please refresh and try again.")
    );
    assert_eq!(rev(&bare, "feature"), main, "stale old value must not update");
    let e = ops.user_update_branch(update("nothex", &main)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);

    // Delete.
    let delete = |name: &str| UserDeleteBranchRequest {
        repository: repo.clone(),
        branch_name: name.as_bytes().to_vec(),
        user: user(),
    };
    ops.user_delete_branch(delete("feature")).await.unwrap();
    assert!(stdout(git(&bare).args(["branch", "--list", "feature"])).is_empty());
    let e = ops.user_delete_branch(delete("feature")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "branch not found: feature"));
    let e = ops.user_delete_branch(UserDeleteBranchRequest { user: None, ..delete("main") }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "Bad Request (empty user)"));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_delete_tags() {
    let (d, _wt, bare, mut ops) = setup().await;
    let repo = Some(d.repo("p.git"));
    let tag = |name: &str, target: &str, message: &str| UserCreateTagRequest {
        repository: repo.clone(),
        tag_name: name.as_bytes().to_vec(),
        user: user(),
        target_revision: target.as_bytes().to_vec(),
        message: message.as_bytes().to_vec(),
        timestamp: ts(12345),
    };
    // Lightweight.
    let r = ops.user_create_tag(tag("light", "side", "")).await.unwrap().into_inner();
    let t = r.tag.unwrap();
    assert_eq!(t.id, rev(&bare, "side"));
    assert_eq!(rev(&bare, "refs/tags/light"), rev(&bare, "side"));
    assert_eq!(t.target_commit.unwrap().id, rev(&bare, "side"));
    assert!(t.message.is_empty());

    // Annotated: the object has exactly upstream's bytes.
    let r = ops.user_create_tag(tag("heavy", "main", "my message")).await.unwrap().into_inner();
    let t = r.tag.unwrap();
    assert_eq!(rev(&bare, "refs/tags/heavy"), t.id);
    assert_eq!(stdout(git(&bare).args(["cat-file", "-t", &t.id])), "tag");
    let raw = run(git(&bare).args(["cat-file", "tag", &t.id])).stdout;
    let expected = format!(
        "object {}\ntype commit\ntag heavy\ntagger Jane Doe <jane@example.com> 12345 +0000\n\nmy message",
        rev(&bare, "main")
    );
    assert_eq!(String::from_utf8_lossy(&raw), expected);
    assert_eq!((t.message.as_slice(), t.message_size), (&b"my message"[..], 10));
    assert_eq!(t.target_commit.unwrap().id, rev(&bare, "main"));

    // Existing tag: an answer, not an error.
    let r = ops.user_create_tag(tag("heavy", "side", "")).await.unwrap().into_inner();
    assert!(r.exists && r.tag.is_none());
    assert_eq!(rev(&bare, "refs/tags/heavy"), t.id);

    for (req, code, msg) in [
        (tag("", "main", ""), Code::InvalidArgument, "empty tag name"),
        (
            tag("a b", "main", ""),
            Code::Unknown,
            "Gitlab::Git::CommitError: Could not update refs/tags/a b. Please refresh and try again.",
        ),
        (tag("x", "", ""), Code::InvalidArgument, "empty target revision"),
        (tag("x", "nope", ""), Code::FailedPrecondition, "revspec 'nope' not found"),
        (tag("x", "main", "a\0b"), Code::Unknown, "ArgumentError: string contains null byte"),
    ] {
        let e = ops.user_create_tag(req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }

    // Delete.
    let del = |name: &str| UserDeleteTagRequest {
        repository: repo.clone(),
        tag_name: name.as_bytes().to_vec(),
        user: user(),
    };
    ops.user_delete_tag(del("heavy")).await.unwrap();
    assert!(stdout(git(&bare).args(["tag", "-l", "heavy"])).is_empty());
    let e = ops.user_delete_tag(del("heavy")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "tag not found: heavy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ff_branch() {
    let (d, wt, bare, mut ops) = setup().await;
    let repo = Some(d.repo("p.git"));
    run(git(&wt).args(["checkout", "--quiet", "-b", "ahead", "main"]));
    let ahead = commit_file(&wt, "ahead.txt", "ahead\n");
    run(git(&wt).arg("push").arg("--quiet").arg(&bare).arg("ahead"));
    let ff = |branch: &str, commit: &str| UserFfBranchRequest {
        repository: repo.clone(),
        user: user(),
        commit_id: commit.to_string(),
        branch: branch.as_bytes().to_vec(),
    };
    let r = ops.user_ff_branch(ff("main", &ahead)).await.unwrap().into_inner();
    assert_eq!(r.branch_update.unwrap().commit_id, ahead);
    assert_eq!(rev(&bare, "main"), ahead);
    let side = rev(&bare, "side");
    let e = ops.user_ff_branch(ff("main", &side)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "not fast forward"));
    let e = ops.user_ff_branch(ff("nope", &side)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "reference not found"));
    let e = ops.user_ff_branch(ff("main", "f001")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(rev(&bare, "main"), ahead);
}

/// Pushes a commit that changes `file` on a new branch from `base`; returns its id.
fn branch_with_change(wt: &Path, bare: &Path, branch: &str, base: &str, file: &str, content: &str) -> String {
    run(git(wt).args(["checkout", "--quiet", "-B", branch, base]));
    let c = commit_file(wt, file, content);
    run(git(wt).arg("push").arg("--quiet").arg("--force").arg(bare).arg(branch));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_branch_two_phase() {
    let (d, wt, bare, mut ops) = setup().await;
    let topic = branch_with_change(&wt, &bare, "topic", "side", "topic.txt", "topic\n");
    let head = rev(&bare, "main");
    let merge = |commit: &str, message: &str| UserMergeBranchRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        commit_id: commit.to_string(),
        branch: b"main".to_vec(),
        message: message.as_bytes().to_vec(),
        timestamp: ts(12),
        apply: false,
    };
    async fn exchange(
        ops: &mut Ops,
        first: UserMergeBranchRequest,
        apply: bool,
    ) -> Result<Vec<UserMergeBranchResponse>, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(first).await.unwrap();
        let mut stream = ops.user_merge_branch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        let mut out = vec![stream.message().await?.unwrap()];
        tx.send(UserMergeBranchRequest { apply, ..Default::default() }).await.unwrap();
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        Ok(out)
    }

    // apply = false: the branch stays.
    let e = exchange(&mut ops, merge(&topic, "Merged by Gitaly"), false).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "merge aborted by client"));
    assert_eq!(rev(&bare, "main"), head);

    let out = exchange(&mut ops, merge(&topic, "Merged by Gitaly"), true).await.unwrap();
    let merged = out[0].commit_id.clone();
    assert_eq!(out[1].branch_update.as_ref().unwrap().commit_id, merged);
    assert_eq!(rev(&bare, "main"), merged);
    // Same tree as git's own merge; parents, identity, date and message as upstream writes them.
    let git_tree = stdout(git(&bare).args(["merge-tree", "--write-tree", &head, &topic]));
    assert_eq!(rev(&bare, &format!("{merged}^{{tree}}")), git_tree.lines().next().unwrap());
    let raw = String::from_utf8(run(git(&bare).args(["cat-file", "commit", &merged])).stdout).unwrap();
    assert!(raw.contains(&format!("parent {head}\nparent {topic}\n")), "{raw}");
    assert!(raw.contains("author Jane Doe <jane@example.com> 12 +0000\ncommitter Jane Doe <jane@example.com> 12 +0000\n\nMerged by Gitaly"));
    assert!(raw.ends_with("\n\nMerged by Gitaly"), "message verbatim: {raw:?}");

    // Conflicts.
    let a = branch_with_change(&wt, &bare, "a", "main", "file1.txt", "ours\n");
    let _ = a;
    run(git(&bare).args(["update-ref", "refs/heads/main", "a"]));
    let b = branch_with_change(&wt, &bare, "b", "side", "file1.txt", "theirs\n");
    let before = rev(&bare, "main");
    let e = exchange(&mut ops, merge(&b, "conflict"), true).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unknown, "merge: could not auto-merge due to conflicts\n"));
    assert_eq!(rev(&bare, "main"), before);

    // Validation.
    for (req, msg) in [
        (UserMergeBranchRequest { user: None, ..merge(&topic, "m") }, "empty user"),
        (UserMergeBranchRequest { branch: Vec::new(), ..merge(&topic, "m") }, "empty branch name"),
        (merge("", "m"), "empty commit ID"),
        (merge(&topic, ""), "empty message"),
    ] {
        let e = exchange(&mut ops, req, true).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_branch_never_tramples_a_concurrent_update() {
    let (d, wt, bare, mut ops) = setup().await;
    let topic = branch_with_change(&wt, &bare, "topic", "side", "topic.txt", "topic\n");
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(UserMergeBranchRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        commit_id: topic,
        branch: b"main".to_vec(),
        message: b"m".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = ops.user_merge_branch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let announced = stream.message().await.unwrap().unwrap().commit_id;
    // Someone else moves main between the two phases.
    run(git(&bare).args(["update-ref", "refs/heads/main", "side"]));
    tx.send(UserMergeBranchRequest { apply: true, ..Default::default() }).await.unwrap();
    let last = stream.message().await.unwrap().unwrap();
    assert!(last.branch_update.is_none() && last.commit_id.is_empty(), "{last:?}");
    assert_eq!(rev(&bare, "main"), rev(&bare, "side"));
    assert_ne!(rev(&bare, "main"), announced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_to_ref() {
    let (d, wt, bare, mut ops) = setup().await;
    let topic = branch_with_change(&wt, &bare, "topic", "side", "topic.txt", "topic\n");
    let main = rev(&bare, "main");
    let req = |target: &str, first: &str, source: &str| UserMergeToRefRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        source_sha: source.to_string(),
        branch: Vec::new(),
        target_ref: target.as_bytes().to_vec(),
        message: b"Merge message".to_vec(),
        first_parent_ref: first.as_bytes().to_vec(),
        allow_conflicts: false,
        timestamp: ts(12),
    };
    let r = ops
        .user_merge_to_ref(req("refs/merge-requests/1/merge", "refs/heads/main", &topic))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rev(&bare, "refs/merge-requests/1/merge"), r.commit_id);
    assert_eq!(rev(&bare, "main"), main, "branches are never touched");
    assert_eq!(
        stdout(git(&bare).args(["rev-list", "--parents", "-n1", &r.commit_id])),
        format!("{} {main} {topic}", r.commit_id)
    );
    for (r, msg) in [
        (req("refs/heads/x", "refs/heads/main", &topic), "invalid target ref"),
        (req("refs/merge-requests/1/merge", "refs/heads/nope", &topic), "Invalid merge source"),
        (req("", "refs/heads/main", &topic), "empty target ref"),
        (req("refs/merge-requests/1/merge", "refs/heads/main", ""), "empty source SHA"),
    ] {
        let e = ops.user_merge_to_ref(r).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
}

fn header(d: &Daemon, branch: &str) -> UserCommitFilesRequestHeader {
    UserCommitFilesRequestHeader {
        repository: Some(d.repo("p.git")),
        user: user(),
        branch_name: branch.as_bytes().to_vec(),
        commit_message: b"commit message".to_vec(),
        timestamp: ts(12345),
        ..Default::default()
    }
}

fn action(kind: ActionType, path: &str, content: &[u8]) -> Vec<UserCommitFilesRequest> {
    action_full(
        UserCommitFilesActionHeader { action: kind as i32, file_path: path.as_bytes().to_vec(), ..Default::default() },
        content,
    )
}

fn action_full(h: UserCommitFilesActionHeader, content: &[u8]) -> Vec<UserCommitFilesRequest> {
    let msg = |p| UserCommitFilesRequest {
        user_commit_files_request_payload: Some(Payload::Action(UserCommitFilesAction {
            user_commit_files_action_payload: Some(p),
        })),
    };
    let mut out = vec![msg(ActionPayload::Header(h))];
    for chunk in content.chunks(3) {
        out.push(msg(ActionPayload::Content(chunk.to_vec())));
    }
    out
}

async fn commit_files(
    ops: &mut Ops,
    h: UserCommitFilesRequestHeader,
    actions: Vec<Vec<UserCommitFilesRequest>>,
) -> Result<UserCommitFilesResponse, tonic::Status> {
    let mut reqs = vec![UserCommitFilesRequest { user_commit_files_request_payload: Some(Payload::Header(h)) }];
    reqs.extend(actions.into_iter().flatten());
    ops.user_commit_files(futures::stream::iter(reqs)).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_files_actions() {
    let (d, _wt, bare, mut ops) = setup().await;
    let main = rev(&bare, "main");
    let r = commit_files(
        &mut ops,
        header(&d, "main"),
        vec![
            action(ActionType::Create, "new/file.txt", b"hello\r\nworld\n"),
            action(ActionType::Update, "file1.txt", b"updated\n"),
            action(ActionType::Delete, "file2.txt", b""),
            action_full(
                UserCommitFilesActionHeader {
                    action: ActionType::Move as i32,
                    file_path: b"moved.txt".to_vec(),
                    previous_path: b"file3.txt".to_vec(),
                    infer_content: true,
                    ..Default::default()
                },
                b"",
            ),
            action_full(
                UserCommitFilesActionHeader {
                    action: ActionType::Chmod as i32,
                    file_path: b"dir/nested.txt".to_vec(),
                    execute_filemode: true,
                    ..Default::default()
                },
                b"",
            ),
            action(ActionType::CreateDir, "empty-dir", b""),
            action_full(
                UserCommitFilesActionHeader {
                    action: ActionType::Create as i32,
                    file_path: b"b64.bin".to_vec(),
                    base64_content: true,
                    ..Default::default()
                },
                b"AAEC/w==",
            ),
        ],
    )
    .await
    .unwrap();
    let update = r.branch_update.unwrap();
    assert_eq!(rev(&bare, "main"), update.commit_id);
    assert!(!update.branch_created && !update.repo_created);
    let show = |p: &str| run(git(&bare).args(["show", &format!("main:{p}")])).stdout;
    assert_eq!(show("new/file.txt"), b"hello\nworld\n", "CRLF normalized as upstream");
    assert_eq!(show("file1.txt"), b"updated\n");
    assert_eq!(show("moved.txt"), b"content 3\n");
    assert_eq!(show("b64.bin"), vec![0u8, 1, 2, 255]);
    assert_eq!(show("empty-dir/.gitkeep"), b"");
    let tree = stdout(git(&bare).args(["ls-tree", "-r", "main"]));
    assert!(tree.contains("100755 blob") && tree.contains("dir/nested.txt"), "{tree}");
    assert!(!tree.contains("file2.txt") && !tree.contains("file3.txt"), "{tree}");
    let raw = String::from_utf8(run(git(&bare).args(["cat-file", "commit", "main"])).stdout).unwrap();
    assert!(raw.contains(&format!("parent {main}\nauthor Jane Doe <jane@example.com> 12345 +0000\ncommitter Jane Doe <jane@example.com> 12345 +0000\n\ncommit message")), "{raw}");
    assert!(raw.ends_with("\n\ncommit message"));

    // Index errors come back in the response and change nothing.
    let head = rev(&bare, "main");
    for (acts, msg) in [
        (vec![action(ActionType::Create, "file1.txt", b"x")], "A file with this name already exists"),
        (vec![action(ActionType::Update, "missing.txt", b"x")], "A file with this name doesn't exist"),
        (vec![action(ActionType::Delete, "missing.txt", b"")], "A file with this name doesn't exist"),
        (vec![action(ActionType::CreateDir, "dir", b"")], "A directory with this name already exists"),
        (vec![action(ActionType::Create, "../escape.txt", b"x")], "Path cannot include directory traversal"),
        (vec![action(ActionType::Create, "", b"x")], "You must provide a file path"),
        (vec![action(ActionType::Create, ".git/hooks/pre-commit", b"x")], "invalid path: '.git/hooks/pre-commit'"),
    ] {
        let r = commit_files(&mut ops, header(&d, "main"), acts).await.unwrap();
        assert_eq!(r.index_error, msg);
        assert!(r.branch_update.is_none());
    }
    assert_eq!(rev(&bare, "main"), head);

    // Header validation.
    let e = commit_files(
        &mut ops,
        UserCommitFilesRequestHeader { commit_message: Vec::new(), ..header(&d, "main") },
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "UserCommitFiles: empty CommitMessage"));
    let e = commit_files(&mut ops, UserCommitFilesRequestHeader { user: None, ..header(&d, "main") }, vec![])
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "UserCommitFiles: empty User"));
    let e =
        commit_files(&mut ops, UserCommitFilesRequestHeader { start_sha: "xyz".into(), ..header(&d, "main") }, vec![])
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_files_start_points_and_empty_repository() {
    let (d, _wt, bare, mut ops) = setup().await;
    // A new branch from another branch.
    let h = UserCommitFilesRequestHeader { start_branch_name: b"side".to_vec(), ..header(&d, "from-side") };
    let r = commit_files(&mut ops, h, vec![action(ActionType::Create, "x.txt", b"x")]).await.unwrap();
    let c = r.branch_update.unwrap().commit_id;
    assert_eq!(rev(&bare, "from-side"), c);
    assert_eq!(rev(&bare, "from-side~1"), rev(&bare, "side"));

    // From an explicit commit.
    let h = UserCommitFilesRequestHeader { start_sha: rev(&bare, "main~2"), ..header(&d, "from-sha") };
    commit_files(&mut ops, h, vec![action(ActionType::Create, "y.txt", b"y")]).await.unwrap();
    assert_eq!(rev(&bare, "from-sha~1"), rev(&bare, "main~2"));

    // From a branch of another repository in the storage.
    rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient::new(d.channel().await)
        .create_repository(CreateRepositoryRequest { repository: Some(d.repo("fork.git")) })
        .await
        .unwrap();
    let h = UserCommitFilesRequestHeader {
        repository: Some(d.repo("fork.git")),
        start_repository: Some(d.repo("p.git")),
        start_branch_name: b"main".to_vec(),
        ..header(&d, "main")
    };
    let r = commit_files(&mut ops, h, vec![action(ActionType::Create, "fork.txt", b"f")]).await.unwrap();
    let fork = d.repo_path("fork.git");
    assert_eq!(rev(&fork, "main~1"), rev(&bare, "main"));
    assert!(r.branch_update.unwrap().repo_created);

    // Into an empty repository: a root commit.
    rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient::new(d.channel().await)
        .create_repository(CreateRepositoryRequest { repository: Some(d.repo("empty.git")) })
        .await
        .unwrap();
    let h = UserCommitFilesRequestHeader { repository: Some(d.repo("empty.git")), ..header(&d, "master") };
    let r = commit_files(&mut ops, h, vec![action(ActionType::Create, "README.md", b"# hi\n")]).await.unwrap();
    let u = r.branch_update.unwrap();
    assert!(u.repo_created && u.branch_created);
    let empty = d.repo_path("empty.git");
    assert_eq!(stdout(git(&empty).args(["rev-list", "--count", "master"])), "1");
    assert_eq!(stdout(git(&empty).args(["show", "master:README.md"])), "# hi");
    // A stale view of the branch (start point behind the head, no force) is refused.
    let h = UserCommitFilesRequestHeader { start_sha: rev(&bare, "main~1"), ..header(&d, "main") };
    let e = commit_files(&mut ops, h, vec![]).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "Could not update refs/heads/main. Please refresh and try again.")
    );
    d.assert_outside_untouched();
}

/// `ls-tree -r -z` of a revision, as raw (mode, type, id, path) entries.
fn tree_entries(repo: &Path, rev: &str) -> Vec<Vec<u8>> {
    let out = run(git(repo).args(["ls-tree", "-r", "-z", "--full-tree", rev])).stdout;
    out.split(|b| *b == 0).filter(|e| !e.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Paths are bytes end to end: a commit that only adds a file keeps every other entry exactly, non-UTF-8
/// names included, and a new non-UTF-8 name is stored as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_files_keeps_non_utf8_paths() {
    use std::os::unix::ffi::OsStrExt;
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    for name in [&b"caf\xe8.txt"[..], b"caf\xe9.txt"] {
        std::fs::write(wt.join(std::ffi::OsStr::from_bytes(name)), name).unwrap();
    }
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "latin-1 names"]));
    let bare = d.seed_repo("p.git", &wt);
    let mut ops = OperationServiceClient::new(d.channel().await);
    let before = tree_entries(&bare, "main");
    let r = commit_files(&mut ops, header(&d, "main"), vec![action(ActionType::Create, "unrelated.txt", b"x\n")])
        .await
        .unwrap();
    assert!(r.index_error.is_empty(), "{}", r.index_error);
    let after = tree_entries(&bare, "main");
    assert_eq!(after.len(), before.len() + 1);
    for e in &before {
        assert!(after.contains(e), "entry changed or lost: {}", String::from_utf8_lossy(e));
    }
    // A new name that is not UTF-8 is stored as those bytes.
    let h = UserCommitFilesActionHeader {
        action: ActionType::Create as i32,
        file_path: b"na\xefve.txt".to_vec(),
        ..Default::default()
    };
    commit_files(&mut ops, header(&d, "main"), vec![action_full(h, b"y\n")]).await.unwrap();
    let paths: Vec<Vec<u8>> = tree_entries(&bare, "main")
        .into_iter()
        .map(|e| e[e.iter().position(|b| *b == b'\t').unwrap() + 1..].to_vec())
        .collect();
    assert!(paths.contains(&b"na\xefve.txt".to_vec()) && paths.contains(&b"caf\xe8.txt".to_vec()));
    run(git(&bare).args(["fsck", "--strict"]));
}

/// A NUL or a line break in a path would end one index entry and start another (a gitlink to any id, a
/// symlink to any blob): refused with InvalidArgument, and the branch is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_files_refuses_nul_and_line_breaks_in_paths() {
    let (d, _wt, bare, mut ops) = setup().await;
    let main = rev(&bare, "main");
    let blob = stdout(git(&bare).args(["rev-parse", "main:file1.txt"]));
    let injected = format!("x\u{0}160000 {main}\tsub\u{0}120000 {blob}\tlink").into_bytes();
    let moves = [
        (injected.clone(), b"file3.txt".to_vec()),
        (b"moved.txt".to_vec(), [&b"file3.txt\0"[..], b"100644 x\tfile1.txt"].concat()),
        (b"a\nb.txt".to_vec(), b"file3.txt".to_vec()),
        (b"a\rb.txt".to_vec(), b"file3.txt".to_vec()),
    ];
    for (to, from) in moves {
        let h = UserCommitFilesActionHeader {
            action: ActionType::Move as i32,
            file_path: to.clone(),
            previous_path: from,
            infer_content: true,
            ..Default::default()
        };
        let e = commit_files(&mut ops, header(&d, "main"), vec![action_full(h, b"")]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{:?}: {e:?}", String::from_utf8_lossy(&to));
    }
    for kind in [ActionType::Create, ActionType::Update, ActionType::Delete, ActionType::Chmod, ActionType::CreateDir] {
        let h = UserCommitFilesActionHeader { action: kind as i32, file_path: injected.clone(), ..Default::default() };
        let e = commit_files(&mut ops, header(&d, "main"), vec![action_full(h, b"z")]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{kind:?}: {e:?}");
    }
    assert_eq!(rev(&bare, "main"), main);
    let modes: Vec<Vec<u8>> = tree_entries(&bare, "main").into_iter().map(|e| e[..6].to_vec()).collect();
    assert!(modes.iter().all(|m| m == b"100644" || m == b"100755"), "a gitlink or symlink appeared");
}

fn pick_request(d: &Daemon, commit: &str, parents: usize, branch: &str, start: &str) -> UserCherryPickRequest {
    UserCherryPickRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        commit: Some(GitCommit { id: commit.into(), parent_ids: vec![String::new(); parents], ..Default::default() }),
        branch_name: branch.into(),
        message: b"picked\n\n(cherry picked from commit x)".to_vec(),
        start_branch_name: start.into(),
        timestamp: ts(12345),
        ..Default::default()
    }
}

fn revert_request(p: UserCherryPickRequest) -> UserRevertRequest {
    UserRevertRequest {
        repository: p.repository,
        user: p.user,
        commit: p.commit,
        branch_name: p.branch_name,
        message: p.message,
        start_branch_name: p.start_branch_name,
        start_repository: p.start_repository,
        dry_run: p.dry_run,
        timestamp: p.timestamp,
    }
}

/// The tree plain git makes of the same cherry-pick or revert, in a scratch worktree.
fn git_tree(d: &Daemon, bare: &Path, onto: &str, verb: &str, commit: &str, mainline: bool) -> Option<String> {
    let wt = d.work_dir(&format!("plain-{verb}-{commit}"));
    run(git(&wt).args(["clone", "--quiet"]).arg(bare).arg("."));
    run(git(&wt).args(["checkout", "--quiet", "--detach", onto]));
    let mut cmd = git(&wt);
    cmd.arg(verb).arg("--no-edit");
    if mainline {
        cmd.args(["-m", "1"]);
    }
    cmd.arg(commit);
    cmd.output().unwrap().status.success().then(|| rev(&wt, "HEAD^{tree}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cherry_pick_and_revert_as_git_does_them() {
    let (d, wt, bare, mut ops) = setup().await;
    let main = rev(&bare, "main");
    let topic = branch_with_change(&wt, &bare, "topic", "side", "topic.txt", "topic\n");

    // Cherry-pick onto main: git's tree, one parent, the original author, the user as committer.
    let r = ops.user_cherry_pick(pick_request(&d, &topic, 1, "main", "")).await.unwrap().into_inner();
    let update = r.branch_update.expect("branch update");
    assert_eq!((update.branch_created, update.repo_created), (false, false));
    let picked = update.commit_id;
    assert_eq!(rev(&bare, "main"), picked);
    assert_eq!(
        Some(rev(&bare, &format!("{picked}^{{tree}}"))),
        git_tree(&d, &bare, &main, "cherry-pick", &topic, false)
    );
    assert_eq!(rev(&bare, &format!("{picked}^")), main);
    let raw = stdout(git(&bare).args(["cat-file", "commit", &picked]));
    let original = stdout(git(&bare).args(["cat-file", "commit", &topic]));
    let author = |c: &str| c.lines().find(|l| l.starts_with("author ")).unwrap().to_string();
    assert_eq!(author(&raw), author(&original));
    assert!(raw.contains("\ncommitter Jane Doe <jane@example.com> 12345 +0000\n"), "{raw}");
    assert!(raw.ends_with("\n\npicked\n\n(cherry picked from commit x)"), "{raw}");

    // The same again: nothing left to apply.
    let r = ops.user_cherry_pick(pick_request(&d, &topic, 1, "main", "")).await.unwrap().into_inner();
    assert_eq!(
        (r.create_tree_error.as_str(), r.create_tree_error_code, r.branch_update.is_none()),
        ("cherry-pick: could not apply because the result was empty", 1, true)
    );

    // Revert it on a new branch started from main: git's tree; the user as author and committer.
    let r =
        ops.user_revert(revert_request(pick_request(&d, &picked, 1, "reverted", "main"))).await.unwrap().into_inner();
    let update = r.branch_update.expect("branch update");
    assert!(update.branch_created && !update.repo_created);
    assert_eq!(rev(&bare, "reverted"), update.commit_id);
    assert_eq!(Some(rev(&bare, "reverted^{tree}")), git_tree(&d, &bare, &picked, "revert", &picked, false));
    let raw = stdout(git(&bare).args(["cat-file", "commit", "reverted"]));
    assert!(raw.contains("\nauthor Jane Doe <jane@example.com> 12345 +0000\n"), "{raw}");

    // Into a repository without branches, from a start repository: the start commit is fetched, then read
    // (with the commit to revert, which it holds), and the new branch is the repository's first.
    rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient::new(d.channel().await)
        .create_repository(CreateRepositoryRequest { repository: Some(d.repo("revert-into.git")) })
        .await
        .unwrap();
    let mut req = revert_request(pick_request(&d, &topic, 1, "first", "topic"));
    req.repository = Some(d.repo("revert-into.git"));
    req.start_repository = Some(d.repo("p.git"));
    let update = ops.user_revert(req).await.unwrap().into_inner().branch_update.expect("branch update");
    assert!(update.branch_created && update.repo_created);
    let into = d.repo_path("revert-into.git");
    assert_eq!(rev(&into, "first"), update.commit_id);
    assert_eq!(rev(&into, "first^"), topic);
    assert_eq!(Some(rev(&into, "first^{tree}")), git_tree(&d, &bare, &topic, "revert", &topic, false));

    // Conflicts: both change file1.txt.
    let a = branch_with_change(&wt, &bare, "a", "main", "file1.txt", "a\n");
    let b = branch_with_change(&wt, &bare, "b", "main", "file1.txt", "b\n");
    let r = ops.user_cherry_pick(pick_request(&d, &a, 1, "b", "")).await.unwrap().into_inner();
    assert_eq!(
        (r.create_tree_error.as_str(), r.create_tree_error_code),
        ("cherry-pick: could not apply due to conflicts", 2)
    );
    let r = ops.user_revert(revert_request(pick_request(&d, &a, 1, "b", ""))).await.unwrap().into_inner();
    assert_eq!(r.create_tree_error_code, 2, "{r:?}");
    assert_eq!(rev(&bare, "b"), b);

    // A branch that is not an ancestor of the result: diverged, untouched.
    let r = ops.user_cherry_pick(pick_request(&d, &topic, 1, "a", "side")).await.unwrap().into_inner();
    assert_eq!(r.commit_error, "Branch diverged");
    assert_eq!(rev(&bare, "a"), a);

    // Dry run: computed, but the branch is created at the start revision.
    let mut req = pick_request(&d, &topic, 1, "dry", "b");
    req.dry_run = true;
    let r = ops.user_cherry_pick(req).await.unwrap().into_inner();
    assert_eq!(r.branch_update.map(|u| (u.commit_id, u.branch_created)), Some((b.clone(), true)));
    assert_eq!(rev(&bare, "dry"), b);

    // A merge commit with its parents given: mainline 1, as git's `-m 1`.
    run(git(&wt).args(["checkout", "--quiet", "-B", "merged", "a"]));
    run(git(&wt).args(["merge", "--quiet", "--no-edit", "topic"]));
    run(git(&wt).arg("push").arg("--quiet").arg(&bare).arg("merged"));
    let merge = rev(&bare, "merged");
    let r = ops.user_cherry_pick(pick_request(&d, &merge, 2, "onto-b", "b")).await.unwrap().into_inner();
    let done = r.branch_update.clone().unwrap_or_else(|| panic!("picked merge: {r:?}")).commit_id;
    assert_eq!(Some(rev(&bare, &format!("{done}^{{tree}}"))), git_tree(&d, &bare, &b, "cherry-pick", &merge, true));

    // Errors as upstream's.
    for (req, code, msg) in [
        (
            UserCherryPickRequest { user: None, ..pick_request(&d, &topic, 1, "main", "") },
            Code::InvalidArgument,
            "UserCherryPick: empty User",
        ),
        (
            UserCherryPickRequest { commit: None, ..pick_request(&d, &topic, 1, "main", "") },
            Code::InvalidArgument,
            "UserCherryPick: empty Commit",
        ),
        (pick_request(&d, &topic, 1, "", ""), Code::InvalidArgument, "UserCherryPick: empty BranchName"),
        (
            UserCherryPickRequest { message: vec![], ..pick_request(&d, &topic, 1, "main", "") },
            Code::InvalidArgument,
            "UserCherryPick: empty Message",
        ),
        (pick_request(&d, &topic, 1, "nope", ""), Code::InvalidArgument, "resolve start ref: reference not found"),
    ] {
        let e = ops.user_cherry_pick(req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }
    let e = ops.user_revert(revert_request(pick_request(&d, &topic, 1, "", ""))).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "empty BranchName"));
    let e = ops.user_cherry_pick(pick_request(&d, &"1".repeat(40), 1, "main", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().starts_with("cherry-pick command: cherry-pick: commit lookup:"), "{e:?}");
    run(git(&bare).args(["fsck", "--no-progress"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_submodule_moves_the_gitlink() {
    let (d, wt, bare, mut ops) = setup().await;
    let (one, two) = ("1".repeat(40), "2".repeat(40));
    run(git(&wt).args(["checkout", "--quiet", "main"]));
    run(git(&wt).args(["update-index", "--add", "--cacheinfo", &format!("160000,{one},sub/mod")]));
    run(git(&wt).args(["commit", "--quiet", "-m", "add a submodule"]));
    run(git(&wt).arg("push").arg("--quiet").arg("--force").arg(&bare).arg("main"));
    let head = rev(&bare, "main");
    let req = |path: &str, sha: &str, branch: &str| UserUpdateSubmoduleRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        commit_sha: sha.into(),
        branch: branch.into(),
        submodule: path.into(),
        commit_message: b"Update Submodule message".to_vec(),
        timestamp: ts(12345),
    };
    let r = ops.user_update_submodule(req("sub/mod", &two, "main")).await.unwrap().into_inner();
    let update = r.branch_update.unwrap_or_else(|| panic!("{:?}", r.commit_error));
    assert_eq!(rev(&bare, "main"), update.commit_id);
    assert_eq!(rev(&bare, "main^"), head);
    assert_eq!(stdout(git(&bare).args(["ls-tree", "main", "sub/mod"])), format!("160000 commit {two}\tsub/mod"));
    // Only the gitlink changed.
    assert_eq!(stdout(git(&bare).args(["diff", "--name-only", &head, "main"])), "sub/mod");
    let raw = stdout(git(&bare).args(["cat-file", "commit", "main"]));
    assert!(
        raw.contains(
            "\nauthor Jane Doe <jane@example.com> 12345 +0000\ncommitter Jane Doe <jane@example.com> 12345 +0000\n"
        ),
        "{raw}"
    );
    assert!(raw.ends_with("\n\nUpdate Submodule message"), "{raw}");

    let moved = rev(&bare, "main");
    for (path, sha, want) in [
        ("sub/mod", two.as_str(), format!("The submodule sub/mod is already at {two}")),
        ("sub", one.as_str(), "Invalid submodule path".to_string()),
        ("./sub/mod", one.as_str(), "Invalid submodule path".to_string()),
        ("sub/mod/", one.as_str(), "Invalid submodule path".to_string()),
        ("file1.txt", one.as_str(), "Invalid submodule path".to_string()),
        ("nope", one.as_str(), "Invalid submodule path".to_string()),
    ] {
        let r = ops.user_update_submodule(req(path, sha, "main")).await.unwrap().into_inner();
        assert_eq!((r.commit_error.as_str(), r.branch_update.is_none()), (want.as_str(), true), "{path}");
    }
    assert_eq!(rev(&bare, "main"), moved);
    for (r, code, msg) in [
        (req("sub/mod", &one, "non/existent"), Code::InvalidArgument, "Cannot find branch"),
        (req("sub/mod", "xyz", "main"), Code::InvalidArgument, "UserUpdateSubmodule: invalid CommitSha"),
        (req("", &one, "main"), Code::InvalidArgument, "UserUpdateSubmodule: empty Submodule"),
        (
            UserUpdateSubmoduleRequest { user: None, ..req("sub/mod", &one, "main") },
            Code::InvalidArgument,
            "UserUpdateSubmodule: empty User",
        ),
    ] {
        let e = ops.user_update_submodule(r).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }
    run(git(&bare).args(["fsck", "--no-progress"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squash_as_git_diff_and_apply_make_it() {
    let (d, wt, bare, mut ops) = setup().await;
    run(git(&wt).args(["checkout", "--quiet", "-B", "topic", "side"]));
    commit_file(&wt, "topic.txt", "one\n");
    commit_file(&wt, "file1.txt", "changed by topic\n");
    run(git(&wt).arg("push").arg("--quiet").arg("--force").arg(&bare).arg("topic"));
    let (main, topic) = (rev(&bare, "main"), rev(&bare, "topic"));
    let before = stdout(git(&bare).args(["for-each-ref"]));
    let author =
        || Some(User { name: b"John Doe".to_vec(), email: b"johndoe@example.com".to_vec(), ..Default::default() });
    let req = |start: &str, end: &str| UserSquashRequest {
        repository: Some(d.repo("p.git")),
        user: user(),
        squash_id: "1".into(),
        start_sha: start.into(),
        end_sha: end.into(),
        author: author(),
        commit_message: b"Squashed commit".to_vec(),
        timestamp: ts(1234512345),
    };
    let r = ops.user_squash(req(&main, &topic)).await.unwrap().into_inner();
    assert_eq!(r.git_error, "");
    let squash = r.squash_sha;
    // What upstream's steps give with plain git: the three-dot diff applied with --3way onto start, committed.
    let plain = d.work_dir("plain-squash");
    run(git(&plain).args(["clone", "--quiet"]).arg(&bare).arg("."));
    run(git(&plain).args(["checkout", "--quiet", "--detach", &main]));
    let patch = git(&plain).args(["diff", "--binary", &format!("{main}...{topic}")]).output().unwrap().stdout;
    let mut apply = git(&plain)
        .args(["apply", "--index", "--3way", "--whitespace=nowarn"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    apply.stdin.take().unwrap().write_all(&patch).unwrap();
    assert!(apply.wait().unwrap().success());
    run(git(&plain).args(["commit", "--quiet", "-m", "Squashed commit"]));
    assert_eq!(rev(&bare, &format!("{squash}^{{tree}}")), rev(&plain, "HEAD^{tree}"));
    assert_eq!(rev(&bare, &format!("{squash}^")), main);
    let raw = stdout(git(&bare).args(["cat-file", "commit", &squash]));
    assert!(raw.contains("\nauthor John Doe <johndoe@example.com> 1234512345 +0000\ncommitter Jane Doe <jane@example.com> 1234512345 +0000\n"), "{raw}");
    assert!(raw.ends_with("\n\nSquashed commit"), "{raw}");
    assert_eq!(
        stdout(git(&bare).args(["cat-file", "-s", &squash])),
        (raw.len() + 1).to_string(),
        "message ends with a newline"
    );
    // No ref moved.
    assert_eq!(stdout(git(&bare).args(["for-each-ref"])), before);

    // git's refusals are git_error.
    let r = ops.user_squash(req("doesntexist", &topic)).await.unwrap().into_inner();
    assert!(r.git_error.contains(&format!("fatal: ambiguous argument 'doesntexist...{topic}'")), "{r:?}");
    let r = ops.user_squash(req(&topic, &topic)).await.unwrap().into_inner();
    assert!(r.git_error.contains("No valid patches in input"), "{r:?}");
    assert!(r.squash_sha.is_empty());
    let r = ops
        .user_squash(UserSquashRequest {
            author: Some(User { email: b"janedoe@example.com".to_vec(), ..Default::default() }),
            ..req(&main, &topic)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.git_error, "fatal: empty ident name (for <janedoe@example.com>) not allowed");
    // A conflict: main and the topic change file1.txt differently.
    let conflicting = branch_with_change(&wt, &bare, "other", "main", "file1.txt", "changed by other\n");
    let r = ops.user_squash(req(&conflicting, &topic)).await.unwrap().into_inner();
    assert!(!r.git_error.is_empty() && r.squash_sha.is_empty(), "{r:?}");

    for (r, msg) in [
        (UserSquashRequest { user: None, ..req(&main, &topic) }, "UserSquash: empty User"),
        (UserSquashRequest { squash_id: String::new(), ..req(&main, &topic) }, "UserSquash: empty SquashId"),
        (req("", &topic), "UserSquash: empty StartSha"),
        (req(&main, ""), "UserSquash: empty EndSha"),
        (UserSquashRequest { commit_message: vec![], ..req(&main, &topic) }, "UserSquash: empty CommitMessage"),
        (UserSquashRequest { author: None, ..req(&main, &topic) }, "UserSquash: empty Author"),
        (UserSquashRequest { squash_id: "a/b".into(), ..req(&main, &topic) }, "worktree id can't contain slashes"),
    ] {
        let e = ops.user_squash(r).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
}

fn patch_messages(d: &Daemon, branch: &str, patches: &[u8], chunk: usize) -> Vec<UserApplyPatchRequest> {
    use rgitaly::proto::gitaly::user_apply_patch_request::{Header, UserApplyPatchRequestPayload as P};
    let mut out = vec![UserApplyPatchRequest {
        user_apply_patch_request_payload: Some(P::Header(Header {
            repository: Some(d.repo("p.git")),
            user: user(),
            target_branch: branch.into(),
            timestamp: ts(1234512345),
        })),
    }];
    for c in patches.chunks(chunk) {
        out.push(UserApplyPatchRequest { user_apply_patch_request_payload: Some(P::Patches(c.to_vec())) });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_patch_as_git_am_does_it() {
    let (d, wt, bare, mut ops) = setup().await;
    run(git(&wt).args(["checkout", "--quiet", "-B", "topic", "main"]));
    commit_file(&wt, "patched.txt", "from a patch\n");
    commit_file(&wt, "file1.txt", "changed by a patch\n");
    let patches = git(&wt).args(["format-patch", "--stdout", "-2"]).output().unwrap().stdout;
    let topic_tree = rev(&wt, "topic^{tree}");
    let main = rev(&bare, "main");

    // Onto an existing branch, the series split at odd places: one commit per patch.
    let r = ops
        .user_apply_patch(futures::stream::iter(patch_messages(&d, "main", &patches, 7)))
        .await
        .unwrap()
        .into_inner();
    let update = r.branch_update.expect("branch update");
    assert_eq!((update.branch_created, update.repo_created), (false, false));
    assert_eq!(rev(&bare, "main"), update.commit_id);
    assert_eq!(rev(&bare, "main^{tree}"), topic_tree);
    assert_eq!(rev(&bare, "main~2"), main);
    let raw = stdout(git(&bare).args(["cat-file", "commit", "main"]));
    assert!(raw.contains("\nauthor Test <test@example.com> "), "{raw}");
    assert!(raw.contains("\ncommitter Jane Doe <jane@example.com> 1234512345 +0000\n"), "{raw}");
    assert!(raw.ends_with("\n\nadd file1.txt"), "{raw}");

    // A new branch starts at the default branch.
    let r = ops
        .user_apply_patch(futures::stream::iter(patch_messages(&d, "fresh", &patches, 1 << 20)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.branch_update.expect("branch update").branch_created);
    assert_eq!(rev(&bare, "fresh~2"), rev(&bare, "main~2"));

    // A patch against the old file1.txt does not apply to the new one, even with --3way: git am's refusal,
    // nothing moved.
    run(git(&wt).args(["checkout", "--quiet", "-B", "conflict", &main]));
    commit_file(&wt, "file1.txt", "conflicting change\n");
    let conflicting = git(&wt).args(["format-patch", "--stdout", "-1"]).output().unwrap().stdout;
    let before = rev(&bare, "main");
    let e = ops
        .user_apply_patch(futures::stream::iter(patch_messages(&d, "main", &conflicting, 1 << 20)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(rev(&bare, "main"), before);
    // No worktree left behind, however the call ended.
    for dir in ["gitlab-worktree", "worktrees"] {
        let left: Vec<_> = std::fs::read_dir(bare.join(dir)).map(|r| r.flatten().collect()).unwrap_or_default();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }

    // Not a series, and a series whose path climbs out of the tree.
    let e =
        ops.user_apply_patch(futures::stream::iter(patch_messages(&d, "main", b"garbage\n", 100))).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "not a patch series from git format-patch"));
    let evil = String::from_utf8(patches.clone()).unwrap().replace("patched.txt", "../escaped.txt");
    let e = ops
        .user_apply_patch(futures::stream::iter(patch_messages(&d, "main", evil.as_bytes(), 100)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(rev(&bare, "main"), before);

    // Header checks, as upstream's.
    let mut msgs = patch_messages(&d, "", &patches, 1 << 20);
    let e = ops.user_apply_patch(futures::stream::iter(msgs.clone())).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "UserApplyPatch: missing Branch"));
    msgs.remove(0);
    msgs.insert(0, patch_messages(&d, "main", b"", 1).remove(0));
    if let Some(rgitaly::proto::gitaly::user_apply_patch_request::UserApplyPatchRequestPayload::Header(h)) =
        msgs[0].user_apply_patch_request_payload.as_mut()
    {
        h.user = None;
    }
    let e = ops.user_apply_patch(futures::stream::iter(msgs)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "UserApplyPatch: missing User"));
    run(git(&bare).args(["fsck", "--no-progress"]));
}

async fn rebase_exchange(
    ops: &mut Ops,
    header: rgitaly::proto::gitaly::user_rebase_confirmable_request::Header,
    apply: Option<bool>,
) -> Result<Vec<UserRebaseConfirmableResponse>, tonic::Status> {
    use rgitaly::proto::gitaly::user_rebase_confirmable_request::UserRebaseConfirmableRequestPayload as P;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Header(header)) })
        .await
        .unwrap();
    let mut stream = ops.user_rebase_confirmable(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut out = vec![];
    match stream.message().await? {
        Some(m) => out.push(m),
        None => return Ok(out),
    }
    match apply {
        // The server may have ended the call already (a conflict is its last word): then nobody reads this.
        Some(a) => {
            let _ = tx
                .send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Apply(a)) })
                .await;
        }
        None => drop(tx),
    }
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebase_confirmable_as_git_rebase_does_it() {
    use rgitaly::proto::gitaly::user_rebase_confirmable_response::UserRebaseConfirmableResponsePayload as R;
    let (d, wt, bare, mut ops) = setup().await;
    run(git(&wt).args(["checkout", "--quiet", "-B", "feature", "main~1"]));
    commit_file(&wt, "feature-1.txt", "one\n");
    commit_file(&wt, "feature-2.txt", "two\n");
    run(git(&wt).arg("push").arg("--quiet").arg("--force").arg(&bare).arg("feature"));
    let feature = rev(&bare, "feature");
    let header = |branch_sha: &str| rgitaly::proto::gitaly::user_rebase_confirmable_request::Header {
        repository: Some(d.repo("p.git")),
        user: user(),
        rebase_id: "1".into(),
        branch: b"feature".to_vec(),
        branch_sha: branch_sha.into(),
        remote_repository: Some(d.repo("p.git")),
        remote_branch: b"main".to_vec(),
        git_push_options: vec!["ci.skip".into()],
        timestamp: ts(100000000),
    };

    // The client aborts: nothing moves.
    let e = rebase_exchange(&mut ops, header(&feature), Some(false)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "rebase aborted by client"));
    let e = rebase_exchange(&mut ops, header(&feature), None).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Internal, "recv: EOF"));
    assert_eq!(rev(&bare, "feature"), feature);

    let out = rebase_exchange(&mut ops, header(&feature), Some(true)).await.unwrap();
    let Some(R::RebaseSha(sha)) = out[0].user_rebase_confirmable_response_payload.clone() else { panic!("{out:?}") };
    assert_eq!(out[1].user_rebase_confirmable_response_payload, Some(R::RebaseApplied(true)));
    assert_eq!(rev(&bare, "feature"), sha);
    assert_eq!(rev(&bare, "feature~2"), rev(&bare, "main"));
    // git's own rebase gives the same tree.
    let plain = d.work_dir("plain-rebase");
    run(git(&plain).args(["clone", "--quiet"]).arg(&bare).arg("."));
    run(git(&plain).args(["checkout", "--quiet", "--detach", &feature]));
    run(git(&plain).args(["rebase", "--quiet", "origin/main"]));
    assert_eq!(rev(&bare, "feature^{tree}"), rev(&plain, "HEAD^{tree}"));
    let raw = stdout(git(&bare).args(["cat-file", "commit", "feature"]));
    let original = stdout(git(&bare).args(["cat-file", "commit", &feature]));
    let author = |c: &str| c.lines().find(|l| l.starts_with("author ")).unwrap().to_string();
    assert_eq!(author(&raw), author(&original));
    assert!(raw.contains("\ncommitter Jane Doe <jane@example.com> 100000000 +0000\n"), "{raw}");
    assert!(raw.ends_with("\n\nadd feature-2.txt"), "{raw}");

    // Onto another repository's branch (a fork's), whose commit is fetched in.
    run(git(&wt).args(["checkout", "--quiet", "-B", "upstream-main", "main"]));
    let extra = commit_file(&wt, "upstream.txt", "only in the fork\n");
    let fork = d.seed_repo("fork.git", &wt);
    run(git(&wt).arg("push").arg("--quiet").arg("--force").arg(&fork).arg("upstream-main:main"));
    assert!(git(&bare).args(["cat-file", "-e", &extra]).output().unwrap().status.code() != Some(0));
    let current = rev(&bare, "feature");
    let out = rebase_exchange(
        &mut ops,
        rgitaly::proto::gitaly::user_rebase_confirmable_request::Header {
            remote_repository: Some(d.repo("fork.git")),
            ..header(&current)
        },
        Some(true),
    )
    .await
    .unwrap();
    assert_eq!(out.last().unwrap().user_rebase_confirmable_response_payload, Some(R::RebaseApplied(true)), "{out:?}");
    assert_eq!(rev(&bare, "feature~2"), extra);
    let sha = rev(&bare, "feature");

    // A stale branch_sha: upstream's error, the branch as it is.
    let e = rebase_exchange(&mut ops, header(&feature), Some(true)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "Could not update refs/heads/feature. Please refresh and try again.")
    );
    assert_eq!(rev(&bare, "feature"), sha);

    // A conflict is git_error on an OK call.
    run(git(&wt).args(["checkout", "--quiet", "-B", "clash", "main~1"]));
    commit_file(&wt, "file3.txt", "clash\n");
    run(git(&wt).arg("push").arg("--quiet").arg("--force").arg(&bare).arg("clash"));
    let clash = rev(&bare, "clash");
    let out = rebase_exchange(
        &mut ops,
        rgitaly::proto::gitaly::user_rebase_confirmable_request::Header { branch: b"clash".to_vec(), ..header(&clash) },
        Some(true),
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].git_error.contains("conflict"), "{out:?}");
    assert_eq!(rev(&bare, "clash"), clash);

    for (h, code, msg) in [
        (
            rgitaly::proto::gitaly::user_rebase_confirmable_request::Header {
                rebase_id: String::new(),
                ..header(&sha)
            },
            Code::InvalidArgument,
            "UserRebaseConfirmable: empty RebaseId",
        ),
        (
            rgitaly::proto::gitaly::user_rebase_confirmable_request::Header {
                remote_branch: b"+dev:master".to_vec(),
                ..header(&sha)
            },
            Code::InvalidArgument,
            "UserRebaseConfirmable: invalid branch name",
        ),
        (header("nope"), Code::NotFound, "invalid object ID: \"nope\""),
        (
            rgitaly::proto::gitaly::user_rebase_confirmable_request::Header {
                remote_branch: b"missing".to_vec(),
                ..header(&sha)
            },
            Code::Internal,
            "resolve start ref: reference not found",
        ),
    ] {
        let e = rebase_exchange(&mut ops, h, Some(true)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }
    run(git(&bare).args(["fsck", "--no-progress"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebase_loses_to_a_push_between_its_phases() {
    use rgitaly::proto::gitaly::user_rebase_confirmable_request::UserRebaseConfirmableRequestPayload as P;
    let (d, wt, bare, mut ops) = setup().await;
    run(git(&wt).args(["checkout", "--quiet", "-B", "feature", "main~1"]));
    commit_file(&wt, "feature-1.txt", "one\n");
    run(git(&wt).arg("push").arg("--quiet").arg("--force").arg(&bare).arg("feature"));
    let feature = rev(&bare, "feature");
    let header = rgitaly::proto::gitaly::user_rebase_confirmable_request::Header {
        repository: Some(d.repo("p.git")),
        user: user(),
        rebase_id: "1".into(),
        branch: b"feature".to_vec(),
        branch_sha: feature.clone(),
        remote_repository: Some(d.repo("p.git")),
        remote_branch: b"main".to_vec(),
        git_push_options: vec![],
        timestamp: None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Header(header)) })
        .await
        .unwrap();
    let mut stream =
        ops.user_rebase_confirmable(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("rebase_sha");
    // Someone pushes to the branch while the client looks at the rebase.
    commit_file(&wt, "pushed.txt", "pushed meanwhile\n");
    run(git(&wt).arg("push").arg("--quiet").arg(&bare).arg("feature"));
    let pushed = rev(&bare, "feature");
    tx.send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Apply(true)) })
        .await
        .unwrap();
    let e = stream.message().await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "Could not update refs/heads/feature. Please refresh and try again.")
    );
    assert_eq!(rev(&bare, "feature"), pushed, "the push is kept");
    run(git(&bare).args(["fsck", "--no-progress"]));
}

//! ConflictsService through the daemon and its workers: the conflict text and section names GitLab's
//! editor relies on, resolutions by section and by content, upstream's resolution errors, a target branch
//! in another repository (a fork), and hostile or careless input.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::conflict_file::ConflictFilePayload;
use rgitaly::proto::gitaly::conflicts_service_client::ConflictsServiceClient;
use rgitaly::proto::gitaly::resolve_conflicts_request::ResolveConflictsRequestPayload as Payload;
use rgitaly::proto::gitaly::*;
use sha1::{Digest, Sha1};
use tonic::Code;

type Client = ConflictsServiceClient<AuthChannel>;

fn rev(repo: &Path, r: &str) -> String {
    stdout(git(repo).args(["rev-parse", r]))
}

fn write(wt: &Path, name: &str, content: &[u8]) {
    std::fs::write(wt.join(name), content).unwrap();
    run(git(wt).args(["add", name]));
}

fn commit(wt: &Path, message: &str) {
    run(git(wt).args(["commit", "--quiet", "-m", message]));
}

/// `main` and `feature` from a common base, conflicting in f.txt (two sections) and g.txt, with a clean
/// change in clean.txt.
fn conflicting_worktree(dir: &Path) -> PathBuf {
    let wt = dir.join("wt");
    run(git(dir).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    write(&wt, "f.txt", b"a\nb\nc1\nc2\nc3\nc4\nd\ne\n");
    write(&wt, "g.txt", b"one\n");
    write(&wt, "clean.txt", b"x\n");
    commit(&wt, "base");
    run(git(&wt).args(["checkout", "--quiet", "-b", "feature"]));
    write(&wt, "f.txt", b"a\nb-feature\nc1\nc2\nc3\nc4\nd-feature\ne\n");
    write(&wt, "g.txt", b"one feature\n");
    commit(&wt, "feature work");
    run(git(&wt).args(["checkout", "--quiet", "main"]));
    write(&wt, "f.txt", b"a\nb-main\nc1\nc2\nc3\nc4\nd-main\ne\n");
    write(&wt, "g.txt", b"one main\n");
    write(&wt, "clean.txt", b"y\n");
    commit(&wt, "main work");
    wt
}

async fn setup() -> (Daemon, PathBuf, Client) {
    let d = Daemon::start();
    let wt = conflicting_worktree(&d.work_dir("src"));
    let bare = d.seed_repo("p.git", &wt);
    let client = ConflictsServiceClient::new(d.channel().await);
    (d, bare, client)
}

fn list_request(d: &Daemon, ours: &str, theirs: &str) -> ListConflictFilesRequest {
    ListConflictFilesRequest {
        repository: Some(d.repo("p.git")),
        our_commit_oid: ours.into(),
        their_commit_oid: theirs.into(),
        ..Default::default()
    }
}

/// Headers and contents of a ListConflictFiles answer, and the number of messages it came in.
async fn list(
    c: &mut Client,
    req: ListConflictFilesRequest,
) -> Result<(Vec<(ConflictFileHeader, Vec<u8>)>, usize), tonic::Status> {
    let mut stream = c.list_conflict_files(req).await?.into_inner();
    let mut files: Vec<(ConflictFileHeader, Vec<u8>)> = Vec::new();
    let mut messages = 0;
    while let Some(m) = stream.message().await? {
        messages += 1;
        let mut size = 0;
        for f in m.files {
            match f.conflict_file_payload.unwrap() {
                ConflictFilePayload::Header(h) => files.push((h, Vec::new())),
                ConflictFilePayload::Content(c) => {
                    size += c.len();
                    files.last_mut().expect("content after a header").1.extend_from_slice(&c);
                }
            }
        }
        assert!(size <= 128 * 1024, "a message carries at most 128 KiB of content, got {size}");
    }
    Ok((files, messages))
}

fn header(d: &Daemon, bare: &Path, source: &str, target: &str, message: &str) -> ResolveConflictsRequestHeader {
    ResolveConflictsRequestHeader {
        repository: Some(d.repo("p.git")),
        our_commit_oid: rev(bare, source),
        target_repository: Some(d.repo("p.git")),
        their_commit_oid: rev(bare, target),
        source_branch: source.as_bytes().to_vec(),
        target_branch: target.as_bytes().to_vec(),
        commit_message: message.as_bytes().to_vec(),
        user: user(),
        timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
    }
}

/// Sends a header and the resolutions' JSON, split into small pieces as a client may.
async fn resolve(c: &mut Client, h: ResolveConflictsRequestHeader, json: &str) -> Result<String, tonic::Status> {
    let mut msgs = vec![ResolveConflictsRequest { resolve_conflicts_request_payload: Some(Payload::Header(h)) }];
    for chunk in json.as_bytes().chunks(7) {
        msgs.push(ResolveConflictsRequest {
            resolve_conflicts_request_payload: Some(Payload::FilesJson(chunk.to_vec())),
        });
    }
    c.resolve_conflicts(tokio_stream::iter(msgs)).await.map(|r| r.into_inner().resolution_error)
}

fn section(path: &str, old: u32, new: u32) -> String {
    format!("{}_{old}_{new}", hex::encode(Sha1::digest(path.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_conflicts_as_gitlab_shows_them() {
    let (d, bare, mut c) = setup().await;
    let (feature, main) = (rev(&bare, "feature"), rev(&bare, "main"));
    let (files, _) = list(&mut c, list_request(&d, &feature, &main)).await.unwrap();
    assert_eq!(files.len(), 2, "clean.txt merges cleanly and is not listed");
    let (h, content) = &files[0];
    assert_eq!(
        (h.our_path.as_slice(), h.their_path.as_slice(), h.ancestor_path.as_slice()),
        (&b"f.txt"[..], &b"f.txt"[..], &b"f.txt"[..])
    );
    assert_eq!((h.commit_oid.as_str(), h.our_mode), (feature.as_str(), 0o100644));
    // Markers labelled with paths, as libgit2 labelled them for Rails.
    assert_eq!(
        String::from_utf8_lossy(content),
        "a\n<<<<<<< f.txt\nb-feature\n=======\nb-main\n>>>>>>> f.txt\nc1\nc2\nc3\nc4\n<<<<<<< f.txt\nd-feature\n=======\nd-main\n>>>>>>> f.txt\ne\n"
    );
    assert_eq!(files[1].0.our_path, b"g.txt");
    assert_eq!(String::from_utf8_lossy(&files[1].1), "<<<<<<< g.txt\none feature\n=======\none main\n>>>>>>> g.txt\n");

    // Revisions are peeled to commits; skip_content sends headers only.
    let (files, _) =
        list(&mut c, ListConflictFilesRequest { skip_content: true, ..list_request(&d, "feature", "main") })
            .await
            .unwrap();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|(_, content)| content.is_empty()));

    // A clean merge has nothing to list.
    let (files, messages) = list(&mut c, list_request(&d, &main, &main)).await.unwrap();
    assert_eq!((files.len(), messages), (0, 0));

    for (req, code, msg) in [
        (list_request(&d, "", &main), Code::InvalidArgument, "empty OurCommitOid"),
        (list_request(&d, &feature, ""), Code::InvalidArgument, "empty TheirCommitOid"),
        (list_request(&d, "nope", &main), Code::FailedPrecondition, "could not lookup 'our' OID: reference not found"),
        (
            list_request(&d, &feature, "--all"),
            Code::FailedPrecondition,
            "could not lookup 'their' OID: reference not found",
        ),
        (
            list_request(&d, &format!("{feature}^{{tree}}"), &main),
            Code::FailedPrecondition,
            "could not lookup 'our' OID: reference not found",
        ),
    ] {
        let e = list(&mut c, req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_conflicts_binary_and_large_files() {
    let d = Daemon::start();
    let dir = d.work_dir("src");
    let wt = dir.join("wt");
    run(git(&dir).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    let big =
        |tag: &str| -> Vec<u8> { (0..6000).map(|i| format!("line {i} {tag}\n")).collect::<String>().into_bytes() };
    write(&wt, "gone.txt", b"base\n");
    write(&wt, "bin.dat", b"\x00\xff base");
    write(&wt, "big.txt", &big("base"));
    commit(&wt, "base");
    run(git(&wt).args(["checkout", "--quiet", "-b", "feature"]));
    write(&wt, "gone.txt", b"changed\n");
    write(&wt, "bin.dat", b"\x00\xff feature");
    write(&wt, "big.txt", &big("feature"));
    commit(&wt, "feature");
    run(git(&wt).args(["checkout", "--quiet", "main"]));
    run(git(&wt).args(["rm", "--quiet", "gone.txt"]));
    write(&wt, "bin.dat", b"\x00\xff main");
    write(&wt, "big.txt", &big("main"));
    commit(&wt, "main");
    let bare = d.seed_repo("p.git", &wt);
    let mut c = ConflictsServiceClient::new(d.channel().await);
    let (feature, main) = (rev(&bare, "feature"), rev(&bare, "main"));

    // A deleted side fails the call, unless tree conflicts are asked for.
    let req = ListConflictFilesRequest { skip_content: true, ..list_request(&d, &feature, &main) };
    let e = list(&mut c, req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "conflict side missing"));
    let req = ListConflictFilesRequest {
        allow_tree_conflicts: true,
        skip_content: true,
        ..list_request(&d, &feature, &main)
    };
    let (files, _) = list(&mut c, req).await.unwrap();
    let gone = files.iter().find(|(h, _)| h.our_path == b"gone.txt").expect("gone.txt listed");
    assert!(gone.0.their_path.is_empty());
    assert_eq!(gone.0.ancestor_path, b"gone.txt");
    assert!(files.iter().any(|(h, _)| h.our_path == b"big.txt"));

    // Content Rails cannot show (not UTF-8) fails the call, as upstream.
    let req = ListConflictFilesRequest { allow_tree_conflicts: true, ..list_request(&d, &feature, &main) };
    let e = list(&mut c, req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "unsupported encoding"));

    // A big file's conflict comes in chunks over several messages, whole.
    run(git(&wt).args(["checkout", "--quiet", "feature"]));
    run(git(&wt).args(["rm", "--quiet", "bin.dat", "gone.txt"]));
    commit(&wt, "feature without the others");
    run(git(&wt).args(["push", "--quiet"]).arg(&bare).arg("feature"));
    let feature = rev(&bare, "feature");
    let req = ListConflictFilesRequest { allow_tree_conflicts: true, ..list_request(&d, &feature, &main) };
    let e = list(&mut c, req.clone()).await.unwrap_err();
    assert_eq!(e.message(), "unsupported encoding", "bin.dat is now a delete/modify conflict with binary content");
    run(git(&wt).args(["checkout", "--quiet", "main"]));
    run(git(&wt).args(["rm", "--quiet", "bin.dat"]));
    commit(&wt, "main without bin.dat");
    run(git(&wt).args(["push", "--quiet"]).arg(&bare).arg("main"));
    let main = rev(&bare, "main");
    let (files, messages) = list(&mut c, list_request(&d, &feature, &main)).await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(messages >= 2, "{} bytes in {messages} messages", files[0].1.len());
    let text = String::from_utf8(files[0].1.clone()).unwrap();
    assert!(text.starts_with("<<<<<<< big.txt\nline 0 feature\n") && text.ends_with(">>>>>>> big.txt\n"));
    assert_eq!(text.lines().count(), 6000 * 2 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_by_section_and_by_content() {
    let (d, bare, mut c) = setup().await;
    let (feature, main) = (rev(&bare, "feature"), rev(&bare, "main"));
    let json = format!(
        r#"[{{"old_path":"f.txt","new_path":"f.txt","sections":{{"{}":"head","{}":"origin"}}}},
            {{"old_path":"g.txt","new_path":"g.txt","content":"resolved by hand\n"}}]"#,
        section("f.txt", 2, 2),
        section("f.txt", 7, 7)
    );
    let error = resolve(&mut c, header(&d, &bare, "feature", "main", "Merge main into feature"), &json).await.unwrap();
    assert_eq!(error, "");
    let merged = rev(&bare, "feature");
    assert_eq!(stdout(git(&bare).args(["log", "-1", "--format=%P", &merged])), format!("{feature} {main}"));
    assert_eq!(
        stdout(git(&bare).args(["show", &format!("{merged}:f.txt")])),
        "a\nb-feature\nc1\nc2\nc3\nc4\nd-main\ne"
    );
    assert_eq!(stdout(git(&bare).args(["show", &format!("{merged}:g.txt")])), "resolved by hand");
    assert_eq!(stdout(git(&bare).args(["show", &format!("{merged}:clean.txt")])), "y", "the clean change is merged");
    assert_eq!(
        stdout(git(&bare).args(["log", "-1", "--format=%an <%ae> %at|%cn <%ce> %ct|%B", &merged])),
        "Jane Doe <jane@example.com> 1700000000|Jane Doe <jane@example.com> 1700000000|Merge main into feature"
    );
    assert_eq!(rev(&bare, "main"), main, "the target branch does not move");
    run(git(&bare).args(["fsck", "--strict", "--no-progress"]));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_errors_and_bad_input_write_nothing() {
    let (d, bare, mut c) = setup().await;
    let feature = rev(&bare, "feature");
    let h = || header(&d, &bare, "feature", "main", "merge");
    let f_sections =
        format!(r#""sections":{{"{}":"head","{}":"origin"}}"#, section("f.txt", 2, 2), section("f.txt", 7, 7));
    let g_content = r#"{"old_path":"g.txt","new_path":"g.txt","content":"x\n"}"#;

    // Answers in resolution_error, the branch untouched.
    let cases = [
        (
            format!(
                r#"[{{"old_path":"f.txt","new_path":"f.txt","sections":{{"{}":"head"}}}},{g_content}]"#,
                section("f.txt", 2, 2)
            ),
            format!("Missing resolution for section ID: {}", section("f.txt", 7, 7)),
        ),
        (
            format!(r#"[{{"old_path":"f.txt","new_path":"f.txt",{f_sections}}}]"#),
            "Missing resolutions for the following files: g.txt".to_string(),
        ),
        (
            format!(
                r#"[{{"old_path":"f.txt","new_path":"f.txt",{f_sections}}},{{"old_path":"g.txt","new_path":"g.txt","content":"<<<<<<< g.txt\none feature\n=======\none main\n>>>>>>> g.txt\n"}}]"#
            ),
            "Resolved content has no changes for file g.txt".to_string(),
        ),
    ];
    for (json, want) in cases {
        assert_eq!(resolve(&mut c, h(), &json).await.unwrap(), want);
        assert_eq!(rev(&bare, "feature"), feature);
    }

    // gRPC errors, as upstream codes them.
    let good = format!(r#"[{{"old_path":"f.txt","new_path":"f.txt",{f_sections}}},{g_content}]"#);
    let cases: Vec<(ResolveConflictsRequestHeader, String, Code, &str)> = vec![
        (
            ResolveConflictsRequestHeader { user: None, ..h() },
            good.clone(),
            Code::InvalidArgument,
            "ResolveConflicts: empty User",
        ),
        (
            ResolveConflictsRequestHeader { source_branch: vec![], ..h() },
            good.clone(),
            Code::InvalidArgument,
            "ResolveConflicts: empty SourceBranch",
        ),
        (
            ResolveConflictsRequestHeader { target_repository: None, ..h() },
            good.clone(),
            Code::InvalidArgument,
            "ResolveConflicts: empty TargetRepository",
        ),
        (
            ResolveConflictsRequestHeader { commit_message: vec![], ..h() },
            good.clone(),
            Code::InvalidArgument,
            "ResolveConflicts: empty CommitMessage",
        ),
        (
            h(),
            r#"[{"old_path":"f.txt","new_path":"f.txt"}]"#.into(),
            Code::InvalidArgument,
            "missing sections or content for a resolution",
        ),
        (
            h(),
            r#"[{"old_path":"clean.txt","new_path":"clean.txt","content":"z"}]"#.into(),
            Code::Unknown,
            "NoMethodError: undefined method `resolve_lines' for nil:NilClass",
        ),
        (
            ResolveConflictsRequestHeader { our_commit_oid: "--upload-pack=touch /tmp/x".into(), ..h() },
            good.clone(),
            Code::Unknown,
            "Rugged::InvalidError: unable to parse OID - contains invalid characters",
        ),
        (
            ResolveConflictsRequestHeader { target_branch: b"nope".to_vec(), ..h() },
            good.clone(),
            Code::Unknown,
            "could not resolve target revision \"refs/heads/nope^{commit}\": reference not found",
        ),
        (
            ResolveConflictsRequestHeader { source_branch: b"bad..name".to_vec(), ..h() },
            good.clone(),
            Code::InvalidArgument,
            "invalid source branch: \"refs/heads/bad..name\"",
        ),
        (
            ResolveConflictsRequestHeader { source_branch: b"x\0y".to_vec(), ..h() },
            good.clone(),
            Code::InvalidArgument,
            "invalid source branch: \"refs/heads/x\\0y\"",
        ),
    ];
    for (hdr, json, code, msg) in cases {
        let e = resolve(&mut c, hdr, &json).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg), "{json}");
    }
    let e = resolve(&mut c, h(), "[{not json").await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown);
    // No header first: the daemon finds no repository to resolve.
    let msgs =
        vec![ResolveConflictsRequest { resolve_conflicts_request_payload: Some(Payload::FilesJson(b"[]".to_vec())) }];
    let e = c.resolve_conflicts(tokio_stream::iter(msgs)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "GetStorageByName: no such storage: \"\""));
    assert_eq!(rev(&bare, "feature"), feature, "nothing moved the branch");

    // A stale view of the source branch loses the compare-and-swap.
    let stale = h();
    run(git(&bare).args(["update-ref", "refs/heads/feature", &rev(&bare, "feature~1")]));
    let e = resolve(&mut c, stale, &good).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "Could not update refs/heads/feature. Please refresh and try again.")
    );
    assert_eq!(rev(&bare, "feature"), rev(&bare, &format!("{feature}~1")));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_branch_from_a_fork_parent() {
    let (d, bare, mut c) = setup().await;
    // The fork has feature only; main (the merge request's target) lives in p.git.
    let fork = d.repo_path("fork.git");
    run(git(&bare).args(["init", "--quiet", "--bare"]).arg(&fork));
    run(git(&bare).args(["push", "--quiet"]).arg(&fork).arg("feature"));
    let main = rev(&bare, "main");
    assert!(git(&fork).args(["cat-file", "-e", &main]).output().unwrap().status.code() != Some(0));
    let h = ResolveConflictsRequestHeader {
        repository: Some(d.repo("fork.git")),
        ..header(&d, &bare, "feature", "main", "Merge main")
    };
    let json = format!(
        r#"[{{"old_path":"f.txt","new_path":"f.txt","content":"merged\n"}},{{"old_path":"g.txt","new_path":"g.txt","sections":{{"{}":"origin"}}}}]"#,
        section("g.txt", 1, 1)
    );
    assert_eq!(resolve(&mut c, h, &json).await.unwrap(), "");
    let merged = rev(&fork, "feature");
    assert_eq!(
        stdout(git(&fork).args(["log", "-1", "--format=%P", &merged])),
        format!("{} {main}", rev(&bare, "feature"))
    );
    assert_eq!(stdout(git(&fork).args(["show", &format!("{merged}:g.txt")])), "one main");
    assert_eq!(stdout(git(&fork).args(["show", &format!("{merged}:f.txt")])), "merged");
    assert!(
        git(&fork).args(["rev-parse", "--verify", "--quiet", "refs/heads/main"]).output().unwrap().stdout.is_empty(),
        "no ref is fetched"
    );
    run(git(&fork).args(["fsck", "--strict", "--no-progress"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_mid_stream_changes_nothing() {
    let (d, bare, c) = setup().await;
    let feature = rev(&bare, "feature");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let h = header(&d, &bare, "feature", "main", "merge");
    tx.send(ResolveConflictsRequest { resolve_conflicts_request_payload: Some(Payload::Header(h)) }).await.unwrap();
    // The whole, valid resolution, but the stream is never closed: nothing may happen before its end.
    let json = br#"[{"old_path":"f.txt","new_path":"f.txt","content":"x\n"},{"old_path":"g.txt","new_path":"g.txt","content":"y\n"}]"#;
    tx.send(ResolveConflictsRequest { resolve_conflicts_request_payload: Some(Payload::FilesJson(json.to_vec())) })
        .await
        .unwrap();
    let mut client = c.clone();
    let call =
        tokio::spawn(async move { client.resolve_conflicts(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    call.abort();
    drop(tx);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rev(&bare, "feature"), feature);
    // The worker is free for the next call.
    let json = r#"[{"old_path":"f.txt","new_path":"f.txt","content":"x\n"},{"old_path":"g.txt","new_path":"g.txt","content":"y\n"}]"#;
    assert_eq!(resolve(&mut c.clone(), header(&d, &bare, "feature", "main", "merge"), json).await.unwrap(), "");
    assert_ne!(rev(&bare, "feature"), feature);
}

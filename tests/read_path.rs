//! The in-process read path (RefService, CommitService, BlobService): every answer checked against what
//! git itself reports on a generated repository with merges, renames, annotated and lightweight tags,
//! binary files, a submodule, unicode and non-UTF-8 paths and messages, a long body and >10k refs; and
//! the hot RPCs proven not to fork.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;
use rgitaly::proto::gitaly::blob_service_client::BlobServiceClient;
use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
use rgitaly::proto::gitaly::get_blobs_request::RevisionPath;
use rgitaly::proto::gitaly::ref_service_client::RefServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::Code;

/// Builds the test history in a work tree and returns it.
fn history(dir: &Path) -> PathBuf {
    let wt = dir.join("wt");
    run(git(dir).args(["init", "--quiet", "-b", "master"]).arg(&wt));
    let commit = |msg: &str, date: &str| {
        run(git(&wt).args(["add", "-A"]));
        run(git(&wt).env("GIT_AUTHOR_DATE", date).env("GIT_COMMITTER_DATE", date).args([
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            msg,
        ]));
    };
    std::fs::create_dir_all(wt.join("dir/sub")).unwrap();
    std::fs::create_dir_all(wt.join("deep/a/b/c")).unwrap();
    std::fs::write(wt.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(wt.join("dir/b.txt"), "beta\n").unwrap();
    std::fs::write(wt.join("dir/sub/c.txt"), "gamma\n").unwrap();
    std::fs::write(wt.join("deep/a/b/c/d.txt"), "deep\n").unwrap();
    std::fs::write(wt.join("ünïcödé.txt"), "unicode\n").unwrap();
    std::fs::write(wt.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt")), "not utf-8\n").unwrap();
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(wt.join("binary.bin"), &binary).unwrap();
    commit("initial\n\nwith a body", "1600000000 +0530");
    run(git(&wt).args(["mv", "a.txt", "renamed.txt"]));
    std::fs::write(wt.join("renamed.txt"), "alpha, renamed\n").unwrap();
    commit("rename a.txt", "1600000100 -0800");
    run(git(&wt).args(["checkout", "--quiet", "-b", "feature"]));
    std::fs::write(wt.join("feature.txt"), "feature\n").unwrap();
    commit("feature work", "1600000200 +0000");
    run(git(&wt).args(["checkout", "--quiet", "master"]));
    std::fs::write(wt.join("dir/b.txt"), "beta 2\n").unwrap();
    commit("change b", "1600000300 +0100");
    run(git(&wt).env("GIT_COMMITTER_DATE", "1600000400 +0100").args([
        "merge",
        "--quiet",
        "--no-ff",
        "-m",
        "Merge branch 'feature'",
        "feature",
    ]));
    // A submodule entry (gitlink) pointing at some commit.
    let some = stdout(git(&wt).args(["rev-parse", "HEAD~1"]));
    run(git(&wt).args(["update-index", "--add", "--cacheinfo", &format!("160000,{some},vendor/lib")]));
    let long_body = format!("long body\n\n{}\n", "x".repeat(12 * 1024));
    // Committed without `add -A`, which would drop the gitlink (there is no checkout of it).
    run(git(&wt).env("GIT_AUTHOR_DATE", "1600000500 +0000").args(["commit", "--quiet", "-m", &long_body]));
    // A message and an author that are not UTF-8: written as a raw object, since `git commit` would
    // re-encode them.
    let tree = stdout(git(&wt).args(["rev-parse", "HEAD^{tree}"]));
    let parent = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let mut raw = format!("tree {tree}\nparent {parent}\n").into_bytes();
    raw.extend_from_slice(b"author Jos\xe9 <jose@example.com> 1600000600 +0000\n");
    raw.extend_from_slice(b"committer C <c@example.com> 1600000600 +0000\n\ncaf\xe9 message\n");
    std::fs::write(dir.join("raw-commit"), &raw).unwrap();
    let id = stdout(git(&wt).args(["hash-object", "-t", "commit", "-w"]).arg(dir.join("raw-commit")));
    run(git(&wt).args(["update-ref", "refs/heads/master", &id]));
    run(git(&wt).args(["tag", "-a", "v1.0", "-m", "annotated", "HEAD~2"]));
    run(git(&wt).args(["tag", "v2.0-light"]));
    wt
}

struct Fixture {
    d: Daemon,
    bare: PathBuf,
    metrics_port: u16,
}

fn fixture() -> Fixture {
    let metrics_port = free_port();
    let d = Daemon::start_with(&format!("prometheus_listen_addr = \"127.0.0.1:{metrics_port}\"\n"));
    let wt = history(&d.work_dir("src"));
    let bare = d.seed_repo("r.git", &wt);
    run(git(&bare).args(["fetch", "--quiet"]).arg(&wt).arg("refs/heads/*:refs/heads/*"));
    Fixture { d, bare, metrics_port }
}

impl Fixture {
    fn git(&self, args: &[&str]) -> Vec<u8> {
        run(git(&self.bare).args(args)).stdout
    }

    fn git_text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.git(args)).trim().to_string()
    }

    fn repo(&self) -> Option<Repository> {
        Some(self.d.repo("r.git"))
    }

    fn spawned(&self) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let line = out.lines().find(|l| l.starts_with("rgitaly_git_processes_spawned_total ")).expect("spawn counter");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// What git says of a commit, field by field.
fn git_commit(f: &Fixture, id: &str) -> GitCommit {
    let raw = f.git(&["cat-file", "commit", id]);
    let split = raw.windows(2).position(|w| w == b"\n\n").unwrap_or(raw.len());
    let body = raw.get(split + 2..).unwrap_or_default().to_vec();
    let field = |fmt: &str| f.git(&["log", "-1", &format!("--format={fmt}"), id]);
    let line = |fmt: &str| {
        let mut v = field(fmt);
        v.pop();
        v
    };
    let author = |p: &str| CommitAuthor {
        name: line(&format!("%{p}n")),
        email: line(&format!("%{p}e")),
        date: Some(prost_types::Timestamp {
            seconds: String::from_utf8(line(&format!("%{p}t"))).unwrap().parse().unwrap(),
            nanos: 0,
        }),
        timezone: String::from_utf8(line(&format!("%{p}i"))).unwrap().rsplit(' ').next().unwrap().as_bytes().to_vec(),
    };
    let parents = String::from_utf8(line("%P")).unwrap();
    GitCommit {
        id: id.to_string(),
        subject: body.split(|b| *b == b'\n').next().unwrap().to_vec(),
        body_size: body.len() as i64,
        body: body[..body.len().min(10 * 1024)].to_vec(),
        author: Some(author("a")),
        committer: Some(author("c")),
        parent_ids: parents.split_whitespace().map(str::to_string).collect(),
        signature_type: 0,
        tree_id: String::from_utf8(line("%T")).unwrap(),
        trailers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_trees_and_blobs_match_git() {
    let f = fixture();
    let ch = f.d.channel().await;
    let mut commits = CommitServiceClient::new(ch.clone());
    let mut blobs = BlobServiceClient::new(ch.clone());

    // FindCommit: every commit, by id and by other revision forms.
    let all = f.git_text(&["rev-list", "--all"]);
    let ids: Vec<&str> = all.lines().collect();
    assert!(ids.len() >= 7);
    for id in &ids {
        let got = commits
            .find_commit(FindCommitRequest { repository: f.repo(), revision: id.as_bytes().to_vec(), trailers: false })
            .await
            .unwrap()
            .into_inner()
            .commit
            .unwrap();
        assert_eq!(got, git_commit(&f, id), "commit {id}");
    }
    for rev in ["master", "HEAD", "HEAD~2", "v1.0", "refs/tags/v1.0", "feature", "HEAD~2^2", "v2.0-light"] {
        let want = f.git_text(&["rev-parse", &format!("{rev}^{{commit}}")]);
        let got = commits
            .find_commit(FindCommitRequest { repository: f.repo(), revision: rev.into(), trailers: false })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.commit.map(|c| c.id), Some(want), "{rev}");
    }
    // Not found is an empty answer; a bad revision is InvalidArgument with upstream's text.
    for rev in ["nope", "0000000000000000000000000000000000000001", "HEAD~100"] {
        let got = commits
            .find_commit(FindCommitRequest { repository: f.repo(), revision: rev.into(), trailers: false })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.commit, None, "{rev}");
    }
    for (rev, msg) in [
        ("", "empty revision"),
        ("--all", "revision can't start with '-'"),
        ("a b", "revision can't contain whitespace"),
    ] {
        let e = commits
            .find_commit(FindCommitRequest { repository: f.repo(), revision: rev.into(), trailers: false })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
    // The long body is cut at 10 KiB with its real size kept.
    let long = commits
        .find_commit(FindCommitRequest { repository: f.repo(), revision: b"HEAD~1".to_vec(), trailers: false })
        .await
        .unwrap()
        .into_inner()
        .commit
        .unwrap();
    assert_eq!(long.body.len(), 10 * 1024);
    assert!(long.body_size > 12 * 1024);
    // Trailers come from git.
    let trailers = commits
        .find_commit(FindCommitRequest { repository: f.repo(), revision: b"HEAD".to_vec(), trailers: true })
        .await
        .unwrap()
        .into_inner()
        .commit
        .unwrap();
    assert_eq!(trailers.subject, b"caf\xe9 message");
    assert!(trailers.trailers.is_empty());

    // CommitIsAncestor against merge-base --is-ancestor, every pair.
    for a in &ids {
        for c in ids.iter().take(4) {
            let want = git(&f.bare).args(["merge-base", "--is-ancestor", a, c]).status().unwrap().success();
            let got = commits
                .commit_is_ancestor(CommitIsAncestorRequest {
                    repository: f.repo(),
                    ancestor_id: a.to_string(),
                    child_id: c.to_string(),
                })
                .await
                .unwrap()
                .into_inner()
                .value;
            assert_eq!(got, want, "{a} ancestor of {c}");
        }
    }
    let e = commits
        .commit_is_ancestor(CommitIsAncestorRequest {
            repository: f.repo(),
            ancestor_id: String::new(),
            child_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "Bad Request (empty ancestor sha)"));

    // ListCommitsByOid: existing ones in order, missing ones skipped.
    let mut wanted: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    wanted.insert(1, "1111111111111111111111111111111111111111".into());
    let mut s = commits
        .list_commits_by_oid(ListCommitsByOidRequest { repository: f.repo(), oid: wanted })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.extend(m.commits.into_iter().map(|c| c.id));
    }
    assert_eq!(got, ids);

    // GetTreeEntries, recursive: ls-tree -r -t, in git's order.
    let ls = f.git(&["ls-tree", "-r", "-t", "-z", "HEAD"]);
    let mut want = Vec::new();
    for rec in ls.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let tab = rec.iter().position(|b| *b == b'\t').unwrap();
        let meta = String::from_utf8(rec[..tab].to_vec()).unwrap();
        let mut parts = meta.split(' ');
        let mode = i32::from_str_radix(parts.next().unwrap(), 8).unwrap();
        let kind = parts.next().unwrap().to_string();
        let oid = parts.next().unwrap().to_string();
        want.push((rec[tab + 1..].to_vec(), mode, kind, oid));
    }
    let entries = tree_entries(&mut commits, &f, b".", true).await;
    let got: Vec<_> = entries
        .iter()
        .map(|e| {
            let kind = match e.r#type {
                0 => "blob",
                1 => "tree",
                3 => "commit",
                _ => "?",
            };
            (e.path.clone(), e.mode, kind.to_string(), e.oid.clone())
        })
        .collect();
    assert_eq!(got, want);
    let root = f.git_text(&["rev-parse", "HEAD^{tree}"]);
    assert!(entries.iter().all(|e| e.root_oid == root && e.commit_oid == "HEAD"));
    assert!(want.iter().any(|(p, ..)| p == b"latin1-\xe9t\xe9.txt"), "non-UTF-8 path missing from fixture");

    // Non-recursive, with flat paths: deep/a/b/c collapses.
    let top = tree_entries(&mut commits, &f, b"deep", false).await;
    assert_eq!(top.len(), 1);
    assert_eq!((top[0].path.as_slice(), top[0].flat_path.as_slice()), (&b"deep/a"[..], &b"deep/a/b/c"[..]));
    let dir = tree_entries(&mut commits, &f, b"dir/", false).await;
    let names: Vec<_> = dir.iter().map(|e| (e.path.clone(), e.flat_path.clone())).collect();
    assert_eq!(names, vec![(b"dir/b.txt".to_vec(), b"dir/b.txt".to_vec()), (b"dir/sub".to_vec(), b"dir/sub".to_vec())]);
    assert!(tree_entries(&mut commits, &f, b"nope", false).await.is_empty());
    assert!(tree_entries(&mut commits, &f, b"../x", false).await.is_empty());

    // TreeEntry for every entry, and GetBlob and GetBlobs for every blob, against cat-file.
    let mut by_path = BTreeMap::new();
    for (path, mode, kind, oid) in &want {
        let mut s = commits
            .tree_entry(TreeEntryRequest {
                repository: f.repo(),
                revision: b"HEAD".to_vec(),
                path: path.clone(),
                limit: 0,
                max_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        let mut data = first.data.to_vec();
        while let Some(m) = s.message().await.unwrap() {
            data.extend_from_slice(&m.data);
        }
        assert_eq!((&first.oid, first.mode), (oid, *mode), "{}", String::from_utf8_lossy(path));
        match kind.as_str() {
            "blob" => {
                let content = f.git(&["cat-file", "blob", oid]);
                assert_eq!(first.size as usize, content.len());
                assert_eq!(data, content);
                by_path.insert(path.clone(), (oid.clone(), content));
            }
            "tree" => {
                assert_eq!(first.size, f.git_text(&["cat-file", "-s", oid]).parse::<i64>().unwrap());
                assert!(data.is_empty());
            }
            _ => assert_eq!(first.r#type, tree_entry_response::ObjectType::Commit as i32),
        }
    }
    // Limits: limit cuts the data, max_size refuses.
    let mut s = commits
        .tree_entry(TreeEntryRequest {
            repository: f.repo(),
            revision: b"HEAD".to_vec(),
            path: b"binary.bin".to_vec(),
            limit: 1000,
            max_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let m = s.message().await.unwrap().unwrap();
    assert_eq!((m.size, m.data.len()), (300_000, 1000));
    let e = commits
        .tree_entry(TreeEntryRequest {
            repository: f.repo(),
            revision: b"HEAD".to_vec(),
            path: b"binary.bin".to_vec(),
            limit: 0,
            max_size: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), "TreeEntry: object size (300000) is bigger than the maximum allowed size (10)");
    // Missing path: one empty response.
    let mut s = commits
        .tree_entry(TreeEntryRequest {
            repository: f.repo(),
            revision: b"HEAD".to_vec(),
            path: b"missing".to_vec(),
            limit: 0,
            max_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap(), Some(TreeEntryResponse::default()));
    assert_eq!(s.message().await.unwrap(), None);

    for (oid, content) in by_path.values() {
        let mut s = blobs
            .get_blob(GetBlobRequest { repository: f.repo(), oid: oid.clone(), limit: -1 })
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        let mut data = first.data.to_vec();
        while let Some(m) = s.message().await.unwrap() {
            assert!(m.oid.is_empty() && m.size == 0, "metadata repeated after the first message");
            data.extend_from_slice(&m.data);
        }
        assert_eq!((first.oid.as_str(), first.size as usize, &data), (oid.as_str(), content.len(), content));
    }
    let mut s = blobs
        .get_blob(GetBlobRequest {
            repository: f.repo(),
            oid: "1111111111111111111111111111111111111111".into(),
            limit: -1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap(), Some(GetBlobResponse::default()));
    let tree_oid = f.git_text(&["rev-parse", "HEAD:dir"]);
    let mut s =
        blobs.get_blob(GetBlobRequest { repository: f.repo(), oid: tree_oid, limit: -1 }).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap(), Some(GetBlobResponse::default()), "a tree is not a blob");

    let rps = [
        ("HEAD", &b"binary.bin"[..]),
        ("HEAD", b"vendor/lib"),
        ("HEAD", b"dir"),
        ("HEAD~1", b"missing"),
        ("v1.0", b"renamed.txt"),
    ];
    let mut s = blobs
        .get_blobs(GetBlobsRequest {
            repository: f.repo(),
            revision_paths: rps
                .iter()
                .map(|(r, p)| RevisionPath { revision: r.to_string(), path: p.to_vec() })
                .collect(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.push(m);
    }
    assert_eq!(got.len(), 5);
    assert_eq!((got[0].size, got[0].data.len(), got[0].r#type), (300_000, 10, ObjectType::Blob as i32));
    assert!(got[1].is_submodule && got[1].r#type == ObjectType::Commit as i32);
    assert_eq!(got[2].r#type, ObjectType::Tree as i32);
    assert_eq!((got[3].oid.as_str(), got[3].path.as_slice()), ("", &b"missing"[..]));
    assert_eq!(got[4].data, &b"alpha, ren"[..]);
}

async fn tree_entries(
    c: &mut CommitServiceClient<rgitaly::client::AuthChannel>,
    f: &Fixture,
    path: &[u8],
    recursive: bool,
) -> Vec<TreeEntry> {
    let mut s = c
        .get_tree_entries(GetTreeEntriesRequest {
            repository: f.repo(),
            revision: b"HEAD".to_vec(),
            path: path.to_vec(),
            recursive,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.extend(m.entries);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_match_git_with_many_refs() {
    let f = fixture();
    // 12,000 more branches and tags, packed, plus a few loose ones.
    let head = f.git_text(&["rev-parse", "HEAD"]);
    let mut input = String::new();
    for i in 0..6000 {
        input.push_str(&format!("create refs/heads/bulk/b{i:05} {head}\ncreate refs/tags/bulk-t{i:05} {head}\n"));
    }
    let mut child = git(&f.bare).args(["update-ref", "--stdin"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    run(git(&f.bare).args(["pack-refs", "--all"]));
    run(git(&f.bare).args(["branch", "loose-after-pack", "HEAD~1"]));

    let ch = f.d.channel().await;
    let mut refs = RefServiceClient::new(ch);
    for (prefix, tags) in [("refs/heads/", false), ("refs/tags/", true)] {
        let want = f.git(&["for-each-ref", "--format=%(refname)", prefix]);
        let want: Vec<Vec<u8>> = want.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
        let mut got = Vec::new();
        let mut messages = 0;
        if tags {
            let mut s =
                refs.find_all_tag_names(FindAllTagNamesRequest { repository: f.repo() }).await.unwrap().into_inner();
            while let Some(m) = s.message().await.unwrap() {
                messages += 1;
                got.extend(m.names);
            }
        } else {
            let mut s = refs
                .find_all_branch_names(FindAllBranchNamesRequest { repository: f.repo() })
                .await
                .unwrap()
                .into_inner();
            while let Some(m) = s.message().await.unwrap() {
                messages += 1;
                got.extend(m.names);
            }
        }
        assert!(want.len() > 6000);
        assert_eq!(got, want, "{prefix}");
        assert!((1..=2).contains(&messages), "{messages} messages for {} names", got.len());
    }

    // FindBranch and RefExists.
    for name in ["master", "feature", "loose-after-pack", "bulk/b00042"] {
        let full = format!("refs/heads/{name}");
        let want = f.git_text(&["rev-parse", &full]);
        let b = refs
            .find_branch(FindBranchRequest { repository: f.repo(), name: name.as_bytes().to_vec() })
            .await
            .unwrap()
            .into_inner()
            .branch
            .unwrap();
        assert_eq!(b.name, full.strip_prefix("refs/heads/").unwrap().as_bytes());
        assert_eq!(b.target_commit.unwrap(), git_commit(&f, &want));
        let exists =
            refs.ref_exists(RefExistsRequest { repository: f.repo(), r#ref: full.into_bytes() }).await.unwrap();
        assert!(exists.into_inner().value);
    }
    // Missing, and a full ref name (a short name is expected: upstream looks up refs/heads/refs/heads/…).
    for name in [&b"nope"[..], b"refs/heads/master"] {
        let missing = refs.find_branch(FindBranchRequest { repository: f.repo(), name: name.to_vec() }).await.unwrap();
        assert_eq!(missing.into_inner().branch, None);
    }
    let e = refs.find_branch(FindBranchRequest { repository: f.repo(), name: Vec::new() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "Branch name cannot be empty"));
    for (r, want) in [(&b"refs/heads/nope"[..], false), (b"refs/tags/v1.0", true), (b"refs/heads/bulk", false)] {
        let got = refs.ref_exists(RefExistsRequest { repository: f.repo(), r#ref: r.to_vec() }).await.unwrap();
        assert_eq!(got.into_inner().value, want, "{}", String::from_utf8_lossy(r));
    }
    let e =
        refs.ref_exists(RefExistsRequest { repository: f.repo(), r#ref: b"heads/master".to_vec() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "invalid refname"));

    // FindDefaultBranchName: HEAD's branch; then master when HEAD points elsewhere; then the first branch.
    let default = |refs: &mut RefServiceClient<_>| {
        let mut refs = refs.clone();
        let repo = f.repo();
        async move {
            refs.find_default_branch_name(FindDefaultBranchNameRequest { repository: repo })
                .await
                .unwrap()
                .into_inner()
                .name
        }
    };
    assert_eq!(default(&mut refs).await, b"refs/heads/master");
    run(git(&f.bare).args(["symbolic-ref", "HEAD", "refs/heads/feature"]));
    assert_eq!(default(&mut refs).await, b"refs/heads/feature");
    run(git(&f.bare).args(["symbolic-ref", "HEAD", "refs/heads/gone"]));
    assert_eq!(default(&mut refs).await, b"refs/heads/master");
    run(git(&f.bare).args(["branch", "-m", "master", "zzz"]));
    assert_eq!(default(&mut refs).await, b"refs/heads/bulk/b00000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_repository_and_bad_input() {
    let d = Daemon::start();
    run(git(d.dir.path()).args(["init", "--quiet", "--bare"]).arg(d.repo_path("empty.git")));
    let ch = d.channel().await;
    let repo = Some(d.repo("empty.git"));
    let mut refs = RefServiceClient::new(ch.clone());
    let mut commits = CommitServiceClient::new(ch.clone());
    let name = refs.find_default_branch_name(FindDefaultBranchNameRequest { repository: repo.clone() }).await.unwrap();
    assert!(name.into_inner().name.is_empty());
    let mut s =
        refs.find_all_branch_names(FindAllBranchNamesRequest { repository: repo.clone() }).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap(), None);
    let c = commits
        .find_commit(FindCommitRequest { repository: repo.clone(), revision: b"HEAD".to_vec(), trailers: false })
        .await
        .unwrap();
    assert_eq!(c.into_inner().commit, None);
    assert!(tree_entries_of(&mut commits, repo.clone()).await.is_empty());
    // Unknown storage, traversal, missing repository: the locator's answers.
    for (r, code) in [
        (
            Some(Repository { storage_name: "nope".into(), relative_path: "x.git".into(), ..Default::default() }),
            Code::InvalidArgument,
        ),
        (Some(d.repo("../outside")), Code::InvalidArgument),
        (Some(d.repo("missing.git")), Code::NotFound),
        (None, Code::InvalidArgument),
    ] {
        let e = commits
            .find_commit(FindCommitRequest { repository: r.clone(), revision: b"HEAD".to_vec(), trailers: false })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{r:?}: {}", e.message());
        let e = refs.find_all_branch_names(FindAllBranchNamesRequest { repository: r.clone() }).await.unwrap_err();
        assert_eq!(e.code(), code, "{r:?}: {}", e.message());
    }
}

async fn tree_entries_of(
    c: &mut CommitServiceClient<rgitaly::client::AuthChannel>,
    repo: Option<Repository>,
) -> Vec<TreeEntry> {
    let mut s = c
        .get_tree_entries(GetTreeEntriesRequest {
            repository: repo,
            revision: b"HEAD".to_vec(),
            path: b".".to_vec(),
            recursive: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.extend(m.entries);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_rpcs_fork_nothing() {
    let f = fixture();
    let ch = f.d.channel().await;
    let mut refs = RefServiceClient::new(ch.clone());
    let mut commits = CommitServiceClient::new(ch.clone());
    let mut blobs = BlobServiceClient::new(ch.clone());
    let head = f.git_text(&["rev-parse", "HEAD"]);
    let blob = f.git_text(&["rev-parse", "HEAD:renamed.txt"]);
    let before = f.spawned();
    for _ in 0..20 {
        let r = f.repo();
        commits
            .find_commit(FindCommitRequest { repository: r.clone(), revision: b"master".to_vec(), trailers: false })
            .await
            .unwrap();
        commits
            .commit_is_ancestor(CommitIsAncestorRequest {
                repository: r.clone(),
                ancestor_id: "HEAD~3".into(),
                child_id: head.clone(),
            })
            .await
            .unwrap();
        commits
            .list_commits_by_oid(ListCommitsByOidRequest { repository: r.clone(), oid: vec![head.clone()] })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap();
        commits
            .tree_entry(TreeEntryRequest {
                repository: r.clone(),
                revision: b"HEAD".to_vec(),
                path: b"dir/b.txt".to_vec(),
                limit: 0,
                max_size: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap();
        tree_entries_of(&mut commits, r.clone()).await;
        blobs
            .get_blob(GetBlobRequest { repository: r.clone(), oid: blob.clone(), limit: -1 })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap();
        blobs
            .get_blobs(GetBlobsRequest {
                repository: r.clone(),
                revision_paths: vec![RevisionPath { revision: "HEAD".into(), path: b"a".to_vec() }],
                limit: -1,
            })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap();
        refs.find_branch(FindBranchRequest { repository: r.clone(), name: b"master".to_vec() }).await.unwrap();
        refs.ref_exists(RefExistsRequest { repository: r.clone(), r#ref: b"refs/heads/master".to_vec() })
            .await
            .unwrap();
        refs.find_default_branch_name(FindDefaultBranchNameRequest { repository: r.clone() }).await.unwrap();
        refs.find_all_branch_names(FindAllBranchNamesRequest { repository: r.clone() })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap();
    }
    assert_eq!(f.spawned(), before, "a hot read RPC started a git process");
    // The counter does move for a call that needs git (trailers come from `git show`).
    commits
        .find_commit(FindCommitRequest { repository: f.repo(), revision: b"master".to_vec(), trailers: true })
        .await
        .unwrap();
    assert_eq!(f.spawned(), before + 1);
}

/// Reads a whole server stream into a Vec of messages.
macro_rules! all {
    ($call:expr) => {{
        let mut s = $call.await.unwrap().into_inner();
        let mut v = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            v.push(m);
        }
        v
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rpcs_match_git() {
    let f = fixture();
    let ch = f.d.channel().await;
    let mut c = CommitServiceClient::new(ch.clone());
    let lines = |args: &[&str]| -> Vec<String> { f.git_text(args).lines().map(str::to_string).collect() };

    // CountCommits with its options, against rev-list --count.
    let count = |req: CountCommitsRequest| {
        let mut c = c.clone();
        async move { c.count_commits(req).await.unwrap().into_inner().count }
    };
    let base = || CountCommitsRequest { repository: f.repo(), revision: b"master".to_vec(), ..Default::default() };
    assert_eq!(count(base()).await.to_string(), f.git_text(&["rev-list", "--count", "master"]));
    assert_eq!(
        count(CountCommitsRequest { all: true, revision: Vec::new(), ..base() }).await.to_string(),
        f.git_text(&["rev-list", "--count", "--all"])
    );
    assert_eq!(
        count(CountCommitsRequest { path: b"dir".to_vec(), ..base() }).await.to_string(),
        f.git_text(&["rev-list", "--count", "master", "--", "dir"])
    );
    assert_eq!(count(CountCommitsRequest { max_count: 2, ..base() }).await, 2);
    assert_eq!(
        count(CountCommitsRequest { first_parent: true, ..base() }).await.to_string(),
        f.git_text(&["rev-list", "--count", "--first-parent", "master"])
    );
    assert_eq!(
        count(CountCommitsRequest {
            before: Some(prost_types::Timestamp { seconds: 1_600_000_250, nanos: 0 }),
            ..base()
        })
        .await
        .to_string(),
        f.git_text(&["rev-list", "--count", "--before=@1600000250", "master"])
    );
    assert_eq!(count(CountCommitsRequest { revision: b"nope".to_vec(), ..base() }).await, 0);
    let e = c.count_commits(CountCommitsRequest { revision: Vec::new(), ..base() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "CountCommits: empty Revision and false All"));

    // CountDivergingCommits.
    let want = f.git_text(&["rev-list", "--count", "--left-right", "master...feature"]);
    let got = c
        .count_diverging_commits(CountDivergingCommitsRequest {
            repository: f.repo(),
            from: b"master".to_vec(),
            to: b"feature".to_vec(),
            max_count: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(format!("{}\t{}", got.left_count, got.right_count), want);

    // LastCommitForPath for every file and directory, and the root.
    for p in ["renamed.txt", "dir", "dir/b.txt", "feature.txt", "deep/a/b/c/d.txt", "vendor/lib", "", "/"] {
        let want =
            f.git_text(&["log", "-1", "--format=%H", "master", "--", if p.is_empty() || p == "/" { "." } else { p }]);
        let got = c
            .last_commit_for_path(LastCommitForPathRequest {
                repository: f.repo(),
                revision: b"master".to_vec(),
                path: p.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.commit.map(|c| c.id).unwrap_or_default(), want, "{p}");
    }
    let none = c
        .last_commit_for_path(LastCommitForPathRequest {
            repository: f.repo(),
            revision: b"master".to_vec(),
            path: b"never-existed".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(none.into_inner().commit, None);

    // ListFiles: blobs only (the submodule is left out), default branch when no revision.
    let want: Vec<Vec<u8>> = f
        .git(&["ls-tree", "-r", "-z", "master"])
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty() && r.split(|b| *b == b' ').nth(1) == Some(b"blob"))
        .map(|r| r[r.iter().position(|b| *b == b'\t').unwrap() + 1..].to_vec())
        .collect();
    for rev in [&b"master"[..], b""] {
        let got: Vec<Vec<u8>> = all!(c.list_files(ListFilesRequest { repository: f.repo(), revision: rev.to_vec() }))
            .into_iter()
            .flat_map(|m| m.paths)
            .collect();
        assert_eq!(got, want);
    }
    let missing = all!(c.list_files(ListFilesRequest { repository: f.repo(), revision: b"nope".to_vec() }));
    assert_eq!(missing, vec![ListFilesResponse::default()]);

    // CommitsBetween, oldest first.
    let want = lines(&["log", "--reverse", "--format=%H", "HEAD~5..master"]);
    let got: Vec<String> = all!(c.commits_between(CommitsBetweenRequest {
        repository: f.repo(),
        from: b"HEAD~5".to_vec(),
        to: b"master".to_vec(),
        pagination_params: None,
    }))
    .into_iter()
    .flat_map(|m| m.commits.into_iter().map(|c| c.id))
    .collect();
    assert_eq!(got, want);

    // GetCommitMessages: whole messages, not cut at 10 KiB.
    let ids = lines(&["rev-list", "master"]);
    let msgs = all!(c.get_commit_messages(GetCommitMessagesRequest { repository: f.repo(), commit_ids: ids.clone() }));
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for m in msgs {
        if !m.commit_id.is_empty() {
            got.push((m.commit_id, Vec::new()));
        }
        got.last_mut().unwrap().1.extend(m.message);
    }
    let want: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| {
            let raw = f.git(&["cat-file", "commit", id]);
            let at = raw.windows(2).position(|w| w == b"\n\n").unwrap();
            (id.clone(), raw[at + 2..].to_vec())
        })
        .collect();
    assert_eq!(got, want);
    assert!(got.iter().any(|(_, m)| m.len() > 12 * 1024));

    // ListCommitsByRefName.
    let got: Vec<(Vec<u8>, String)> = all!(c.list_commits_by_ref_name(ListCommitsByRefNameRequest {
        repository: f.repo(),
        ref_names: vec![b"master".to_vec(), b"refs/heads/nope".to_vec(), b"refs/tags/v1.0".to_vec()],
    }))
    .into_iter()
    .flat_map(|m| m.commit_refs)
    .map(|r| (r.ref_name, r.commit.unwrap().id))
    .collect();
    assert_eq!(
        got,
        vec![
            (b"master".to_vec(), f.git_text(&["rev-parse", "master"])),
            (b"refs/tags/v1.0".to_vec(), f.git_text(&["rev-parse", "v1.0^{commit}"]))
        ]
    );

    // RawBlame is git's porcelain output, byte for byte; a missing path is an empty stream.
    let want = f.git(&["blame", "-p", "master", "--", "dir/b.txt"]);
    let got: Vec<u8> = all!(c.raw_blame(RawBlameRequest {
        repository: f.repo(),
        revision: b"master".to_vec(),
        path: b"dir/b.txt".to_vec()
    }))
    .into_iter()
    .flat_map(|m| m.data)
    .collect();
    assert_eq!(got, want);
    assert!(all!(c.raw_blame(RawBlameRequest {
        repository: f.repo(),
        revision: b"master".to_vec(),
        path: b"nope".to_vec()
    }))
    .is_empty());

    // CommitStats against numstat, for a root commit and a later one.
    let root = f.git_text(&["rev-list", "--max-parents=0", "master"]);
    for (rev, base) in [
        (root.as_str(), "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_string()),
        ("HEAD~3", f.git_text(&["rev-parse", "HEAD~3^"])),
    ] {
        let id = f.git_text(&["rev-parse", rev]);
        let (mut a, mut d) = (0, 0);
        for l in f.git_text(&["diff", "--numstat", &base, &id]).lines() {
            let p: Vec<&str> = l.split('\t').collect();
            if let (Ok(x), Ok(y)) = (p[0].parse::<i32>(), p[1].parse::<i32>()) {
                a += x;
                d += y;
            }
        }
        let got = c
            .commit_stats(CommitStatsRequest { repository: f.repo(), revision: rev.as_bytes().to_vec() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((got.oid, got.additions, got.deletions), (id, a, d), "{rev}");
    }
    let e = c.commit_stats(CommitStatsRequest { repository: f.repo(), revision: b"nope".to_vec() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Internal, "object not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ref_listings_match_git() {
    let f = fixture();
    let ch = f.d.channel().await;
    let mut refs = RefServiceClient::new(ch.clone());
    let lines = |args: &[&str]| -> Vec<String> { f.git_text(args).lines().map(str::to_string).collect() };
    // More shapes of refs: remote branches, a tag of a tree, a tag of a tag.
    let head = f.git_text(&["rev-parse", "master"]);
    run(git(&f.bare).args(["update-ref", "refs/remotes/origin/main", &head]));
    run(git(&f.bare).args(["update-ref", "refs/remotes/origin/old", "master~3"]));
    let tree = f.git_text(&["rev-parse", "master^{tree}"]);
    run(git(&f.bare).args(["tag", "tree-tag", &tree]));
    run(git(&f.bare).args(["tag", "-a", "-m", "tag of a tag", "nested", "v1.0"]));

    // FindLocalBranches, each sort, and pagination.
    for (sort, key) in [(0, "refname"), (1, "committerdate"), (2, "-committerdate")] {
        let want = lines(&["for-each-ref", &format!("--sort={key}"), "--format=%(refname)", "refs/heads"]);
        let got: Vec<String> = all!(refs.find_local_branches(FindLocalBranchesRequest {
            repository: f.repo(),
            sort_by: sort,
            pagination_params: None
        }))
        .into_iter()
        .flat_map(|m| m.branches)
        .map(|b| {
            let c = b.commit.unwrap();
            assert_eq!((b.commit_id.as_str(), b.commit_subject.as_slice()), (c.id.as_str(), c.subject.as_slice()));
            String::from_utf8(b.name).unwrap()
        })
        .collect();
        assert_eq!(got, want, "sort {key}");
    }
    let all_names = lines(&["for-each-ref", "--format=%(refname)", "refs/heads"]);
    let page: Vec<Vec<u8>> = all!(refs.find_local_branches(FindLocalBranchesRequest {
        repository: f.repo(),
        sort_by: 0,
        pagination_params: Some(PaginationParameter { page_token: all_names[0].clone(), limit: 1 }),
    }))
    .into_iter()
    .flat_map(|m| m.branches)
    .map(|b| b.name)
    .collect();
    assert_eq!(page, vec![all_names[1].clone().into_bytes()]);

    // FindAllBranches, with and without merged_only; FindAllRemoteBranches.
    let want = lines(&["for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes"]);
    let got: Vec<String> =
        all!(refs.find_all_branches(FindAllBranchesRequest { repository: f.repo(), ..Default::default() }))
            .into_iter()
            .flat_map(|m| m.branches)
            .map(|b| String::from_utf8(b.name).unwrap())
            .collect();
    assert_eq!(got, want);
    let want =
        lines(&["for-each-ref", "--format=%(refname)", "--merged=refs/heads/master", "refs/heads", "refs/remotes"]);
    let got: Vec<String> = all!(refs.find_all_branches(FindAllBranchesRequest {
        repository: f.repo(),
        merged_only: true,
        merged_branches: vec![]
    }))
    .into_iter()
    .flat_map(|m| m.branches)
    .map(|b| String::from_utf8(b.name).unwrap())
    .collect();
    assert_eq!(got, want);
    let got: Vec<(String, String)> = all!(refs
        .find_all_remote_branches(FindAllRemoteBranchesRequest { repository: f.repo(), remote_name: "origin".into() }))
    .into_iter()
    .flat_map(|m| m.branches)
    .map(|b| (String::from_utf8(b.name).unwrap(), b.target_commit.unwrap().id))
    .collect();
    assert_eq!(
        got,
        vec![
            ("refs/remotes/origin/main".into(), head.clone()),
            ("refs/remotes/origin/old".into(), f.git_text(&["rev-parse", "master~3"]))
        ]
    );

    // FindAllTags: annotated, lightweight, of a tree, of a tag.
    let tags: Vec<Tag> = all!(refs.find_all_tags(FindAllTagsRequest { repository: f.repo() }))
        .into_iter()
        .flat_map(|m| m.tags)
        .collect();
    let names: Vec<String> = tags.iter().map(|t| String::from_utf8(t.name.clone()).unwrap()).collect();
    assert_eq!(names, lines(&["for-each-ref", "--format=%(refname:lstrip=2)", "refs/tags/"]));
    let by = |n: &str| tags.iter().find(|t| t.name == n.as_bytes()).unwrap().clone();
    let v1 = by("v1.0");
    assert_eq!(v1.id, f.git_text(&["rev-parse", "v1.0"]));
    assert_eq!((v1.message.as_slice(), v1.message_size), (&b"annotated"[..], 9));
    assert_eq!(v1.tagger.as_ref().unwrap().email, b"test@example.com");
    assert_eq!(v1.target_commit.unwrap().id, f.git_text(&["rev-parse", "v1.0^{commit}"]));
    let light = by("v2.0-light");
    assert_eq!((light.id.as_str(), light.message.len()), (head.as_str(), 0));
    assert_eq!(light.target_commit.unwrap().id, head);
    let tt = by("tree-tag");
    assert_eq!((tt.id.as_str(), tt.target_commit), (tree.as_str(), None));
    let nested = by("nested");
    assert_eq!(nested.message, b"tag of a tag");
    assert_eq!(nested.target_commit.unwrap().id, f.git_text(&["rev-parse", "v1.0^{commit}"]));

    // FindTag.
    let t =
        refs.find_tag(FindTagRequest { repository: f.repo(), tag_name: b"v1.0".to_vec() }).await.unwrap().into_inner();
    assert_eq!(t.tag.unwrap().id, v1.id);
    let e = refs.find_tag(FindTagRequest { repository: f.repo(), tag_name: b"nope".to_vec() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Internal, "no tag found"));
    // `git tag -l v1` does not list v1/rc: only the whole name matches.
    run(git(&f.bare).args(["tag", "v1/rc", "master"]));
    let e = refs.find_tag(FindTagRequest { repository: f.repo(), tag_name: b"v1".to_vec() }).await.unwrap_err();
    assert_eq!(e.message(), "no tag found");
    run(git(&f.bare).args(["tag", "-d", "v1/rc"]));

    // GetTagMessages: the whole message, as git stores it.
    let msgs =
        all!(refs.get_tag_messages(GetTagMessagesRequest { repository: f.repo(), tag_ids: vec![v1.id.clone()] }));
    assert_eq!(msgs[0].tag_id, v1.id);
    let body: Vec<u8> = msgs.iter().flat_map(|m| m.message.clone()).collect();
    assert_eq!(body, b"annotated\n");

    // Refs containing a commit.
    let old = f.git_text(&["rev-parse", "master~4"]);
    let want: Vec<Vec<u8>> =
        lines(&["for-each-ref", "--format=%(refname:lstrip=2)", &format!("--contains={old}"), "refs/heads"])
            .into_iter()
            .map(String::into_bytes)
            .collect();
    let got: Vec<Vec<u8>> = all!(refs.list_branch_names_containing_commit(ListBranchNamesContainingCommitRequest {
        repository: f.repo(),
        commit_id: old.clone(),
        limit: 0
    }))
    .into_iter()
    .flat_map(|m| m.branch_names)
    .collect();
    assert_eq!(got, want);
    let want: Vec<Vec<u8>> =
        lines(&["for-each-ref", "--format=%(refname:lstrip=2)", &format!("--contains={old}"), "refs/tags"])
            .into_iter()
            .map(String::into_bytes)
            .collect();
    let got: Vec<Vec<u8>> = all!(refs.list_tag_names_containing_commit(ListTagNamesContainingCommitRequest {
        repository: f.repo(),
        commit_id: old.clone(),
        limit: 0
    }))
    .into_iter()
    .flat_map(|m| m.tag_names)
    .collect();
    assert_eq!(got, want);
    let e = refs
        .list_branch_names_containing_commit(ListBranchNamesContainingCommitRequest {
            repository: f.repo(),
            commit_id: "master".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "invalid object ID: \"master\""));
    let name = refs
        .find_ref_name(FindRefNameRequest {
            repository: f.repo(),
            commit_id: old.clone(),
            prefix: b"refs/heads/".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(
        name.into_inner().name,
        f.git_text(&["for-each-ref", "--count=1", "--format=%(refname)", &format!("--contains={old}"), "refs/heads/"])
            .into_bytes()
    );

    // ListNewCommits / ListNewBlobs: a commit no ref reaches yet, with one new blob.
    std::fs::write(f.d.dir.path().join("new-blob"), "brand new\n").unwrap();
    let blob = f.git_text(&["hash-object", "-w", f.d.dir.path().join("new-blob").to_str().unwrap()]);
    let mut index = format!("100644 blob {blob}\tnew.txt\n");
    index.push_str(&format!("100644 blob {}\tother.txt\n", f.git_text(&["rev-parse", "master:renamed.txt"])));
    let mut mk = git(&f.bare)
        .args(["mktree"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(mk.stdin.as_mut().unwrap(), index.as_bytes()).unwrap();
    let new_tree = String::from_utf8(mk.wait_with_output().unwrap().stdout).unwrap().trim().to_string();
    let new_commit = f.git_text(&["commit-tree", &new_tree, "-p", "master", "-m", "not on any ref"]);
    let got: Vec<String> =
        all!(refs.list_new_commits(ListNewCommitsRequest { repository: f.repo(), commit_id: new_commit.clone() }))
            .into_iter()
            .flat_map(|m| m.commits.into_iter().map(|c| c.id))
            .collect();
    assert_eq!(got, vec![new_commit.clone()]);
    let blobs: Vec<NewBlobObject> = all!(refs.list_new_blobs(ListNewBlobsRequest {
        repository: f.repo(),
        commit_id: new_commit.clone(),
        limit: 0
    }))
    .into_iter()
    .flat_map(|m| m.new_blob_objects)
    .collect();
    assert_eq!(blobs, vec![NewBlobObject { oid: blob, size: 10, path: b"new.txt".to_vec() }]);

    // DeleteRefs by list and by exception; PackRefs.
    let r = refs
        .delete_refs(DeleteRefsRequest {
            repository: f.repo(),
            refs: vec![b"refs/heads/feature".to_vec()],
            except_with_prefix: vec![],
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().git_error, "");
    assert!(!git(&f.bare).args(["show-ref", "--verify", "--quiet", "refs/heads/feature"]).status().unwrap().success());
    refs.delete_refs(DeleteRefsRequest {
        repository: f.repo(),
        refs: vec![],
        except_with_prefix: vec![b"refs/heads/".to_vec()],
    })
    .await
    .unwrap();
    assert_eq!(
        lines(&["for-each-ref", "--format=%(refname)"]),
        lines(&["for-each-ref", "--format=%(refname)", "refs/heads/"])
    );
    let e = refs
        .delete_refs(DeleteRefsRequest {
            repository: f.repo(),
            refs: vec![b"refs/heads/a\0delete refs/heads/master".to_vec()],
            except_with_prefix: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(git(&f.bare).args(["show-ref", "--verify", "--quiet", "refs/heads/master"]).status().unwrap().success());
    refs.pack_refs(PackRefsRequest { repository: f.repo(), all_refs: true }).await.unwrap();
    assert!(std::fs::read_to_string(f.bare.join("packed-refs")).unwrap().contains("refs/heads/master"));
    assert!(!f.bare.join("refs/heads/master").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_match_git() {
    use rgitaly::proto::gitaly::diff_service_client::DiffServiceClient;
    let f = fixture();
    let ch = f.d.channel().await;
    let mut d = DiffServiceClient::new(ch.clone());
    // One more commit on top: a 20 KiB text file (its patch is split across messages) and a mode change.
    let big: String = (0..800).map(|i| format!("line number {i:05}\n")).collect();
    std::fs::write(f.d.dir.path().join("big"), &big).unwrap();
    let big_blob = f.git_text(&["hash-object", "-w", f.d.dir.path().join("big").to_str().unwrap()]);
    // renamed.txt also moves to moved.txt, unchanged: a rename.
    let mut listing = f.git_text(&["ls-tree", "master"]).replace("\trenamed.txt", "\tmoved.txt");
    listing.push_str(&format!("\n100755 blob {big_blob}\tbig.txt\n"));
    let mut mk = git(&f.bare)
        .args(["mktree"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(mk.stdin.as_mut().unwrap(), listing.as_bytes()).unwrap();
    let tree = String::from_utf8(mk.wait_with_output().unwrap().stdout).unwrap().trim().to_string();
    let top = f.git_text(&["commit-tree", &tree, "-p", "master", "-m", "big"]);
    let root = f.git_text(&["rev-list", "--max-parents=0", "master"]);

    // RawDiff and RawPatch are git's text.
    let raw: Vec<u8> = all!(d.raw_diff(RawDiffRequest {
        repository: f.repo(),
        left_commit_id: root.clone(),
        right_commit_id: top.clone()
    }))
    .into_iter()
    .flat_map(|m| m.data)
    .collect();
    assert_eq!(raw, f.git(&["diff", "--full-index", &root, &top]));
    let patch: Vec<u8> = all!(d.raw_patch(RawPatchRequest {
        repository: f.repo(),
        left_commit_id: "HEAD~2".into(),
        right_commit_id: top.clone()
    }))
    .into_iter()
    .flat_map(|m| m.data)
    .collect();
    assert_eq!(patch, f.git(&["format-patch", "--stdout", "--signature", "GitLab", &format!("HEAD~2..{top}")]));
    let e = d
        .raw_diff(RawDiffRequest { repository: f.repo(), left_commit_id: String::new(), right_commit_id: top.clone() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "RawDiff: empty LeftCommitId"));

    // DiffStats against numstat.
    let stats: Vec<DiffStats> = all!(d.diff_stats(DiffStatsRequest {
        repository: f.repo(),
        left_commit_id: root.clone(),
        right_commit_id: top.clone()
    }))
    .into_iter()
    .flat_map(|m| m.stats)
    .collect();
    let numstat = f.git_text(&["-c", "core.quotePath=false", "diff", "--numstat", &root, &top]);
    assert_eq!(stats.len(), numstat.lines().count());
    for (s, line) in stats.iter().zip(numstat.lines()) {
        let p: Vec<&str> = line.splitn(3, '\t').collect();
        assert_eq!((s.additions, s.deletions), (p[0].parse().unwrap_or(0), p[1].parse().unwrap_or(0)), "{line}");
        if s.old_path.is_empty() {
            assert_eq!(String::from_utf8_lossy(&s.path), p[2]);
        } else {
            assert!(p[2].contains("=>"), "{line}");
        }
    }

    // CommitDelta against --raw.
    let deltas: Vec<CommitDelta> = all!(d.commit_delta(CommitDeltaRequest {
        repository: f.repo(),
        left_commit_id: root.clone(),
        right_commit_id: top.clone(),
        paths: vec![]
    }))
    .into_iter()
    .flat_map(|m| m.deltas)
    .collect();
    let raw_lines = f.git_text(&["diff", "--raw", "--abbrev=40", "--full-index", "--find-renames", &root, &top]);
    assert_eq!(deltas.len(), raw_lines.lines().count());
    for (delta, line) in deltas.iter().zip(raw_lines.lines()) {
        let meta: Vec<&str> = line[1..].split('\t').next().unwrap().split(' ').collect();
        assert_eq!((delta.from_id.as_str(), delta.to_id.as_str()), (meta[2], meta[3]), "{line}");
        assert_eq!(
            (delta.old_mode, delta.new_mode),
            (i32::from_str_radix(meta[0], 8).unwrap(), i32::from_str_radix(meta[1], 8).unwrap())
        );
    }
    let renames: Vec<CommitDelta> = all!(d.commit_delta(CommitDeltaRequest {
        repository: f.repo(),
        left_commit_id: "master".into(),
        right_commit_id: top.clone(),
        paths: vec![]
    }))
    .into_iter()
    .flat_map(|m| m.deltas)
    .collect();
    assert!(
        renames.iter().any(|x| x.from_path == b"renamed.txt" && x.to_path == b"moved.txt"),
        "rename not found: {renames:?}"
    );
    let from_empty: Vec<CommitDelta> = all!(d.commit_delta(CommitDeltaRequest {
        repository: f.repo(),
        left_commit_id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        right_commit_id: top.clone(),
        paths: vec![]
    }))
    .into_iter()
    .flat_map(|m| m.deltas)
    .collect();
    assert!(from_empty.iter().any(|x| x.to_path == "ünïcödé.txt".as_bytes()), "unicode path not unquoted");
    assert!(from_empty.iter().any(|x| x.to_path == b"latin1-\xe9t\xe9.txt"), "non-UTF-8 path not unquoted");

    // CommitDiff: each file's patch is git's, from its first @@ on; the big one arrives in 5 KiB pieces.
    let msgs = all!(d.commit_diff(CommitDiffRequest {
        repository: f.repo(),
        left_commit_id: root.clone(),
        right_commit_id: top.clone(),
        ..Default::default()
    }));
    let mut files: Vec<CommitDiffResponse> = Vec::new();
    let mut open = false;
    for m in msgs {
        assert!(m.raw_patch_data.len() <= 5 * 1024);
        if open {
            let last = files.last_mut().unwrap();
            last.raw_patch_data.extend(m.raw_patch_data);
            last.end_of_patch = m.end_of_patch;
        } else {
            files.push(m);
        }
        open = !files.last().unwrap().end_of_patch;
    }
    for file in &files {
        let (from, to) = (
            String::from_utf8_lossy(&file.from_path).into_owned(),
            String::from_utf8_lossy(&file.to_path).into_owned(),
        );
        let mut args = vec!["diff", "--full-index", "--find-renames=30%", &root, &top, "--"];
        args.push(&from);
        if to != from {
            args.push(&to);
        }
        let text = f.git(&args);
        let want = if file.binary {
            let at = text.windows(6).position(|w| w == b"Binary").unwrap();
            text[at..].to_vec()
        } else {
            match text.windows(3).position(|w| w == b"\n@@") {
                Some(at) => text[at + 1..].to_vec(),
                None => Vec::new(),
            }
        };
        if from.contains('\u{fffd}') {
            continue; // not a path a lossy string can name on the command line
        }
        assert_eq!(String::from_utf8_lossy(&file.raw_patch_data), String::from_utf8_lossy(&want), "{from} -> {to}");
    }
    let big_file = files.iter().find(|f| f.to_path == b"big.txt").unwrap();
    assert_eq!((big_file.new_mode, big_file.raw_patch_data.len() > 5 * 1024), (0o100755, true));
    let from_empty = all!(d.commit_diff(CommitDiffRequest {
        repository: f.repo(),
        left_commit_id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        right_commit_id: top.clone(),
        paths: vec![b"binary.bin".to_vec()],
        ..Default::default()
    }));
    assert_eq!(from_empty.len(), 1);
    assert!(from_empty[0].binary);
    assert_eq!(from_empty[0].raw_patch_data, b"Binary files /dev/null and b/binary.bin differ\n");

    // Limits: a file cap gives an overflow marker; safe limits collapse patches.
    let capped = all!(d.commit_diff(CommitDiffRequest {
        repository: f.repo(),
        left_commit_id: root.clone(),
        right_commit_id: top.clone(),
        enforce_limits: true,
        max_files: 2,
        max_lines: 100_000,
        max_bytes: 10_000_000,
        max_patch_bytes: 100_000,
        ..Default::default()
    }));
    let ends: Vec<&CommitDiffResponse> = capped.iter().filter(|m| m.end_of_patch).collect();
    assert_eq!(ends.len(), 3);
    assert!(ends[2].overflow_marker && ends[2].from_path.is_empty());
    let collapsed = all!(d.commit_diff(CommitDiffRequest {
        repository: f.repo(),
        left_commit_id: root.clone(),
        right_commit_id: top.clone(),
        collapse_diffs: true,
        safe_max_files: 1,
        safe_max_lines: 100_000,
        safe_max_bytes: 10_000_000,
        ..Default::default()
    }));
    assert!(collapsed.iter().filter(|m| m.end_of_patch).skip(1).any(|m| m.collapsed && m.raw_patch_data.is_empty()));
    let e = d
        .commit_diff(CommitDiffRequest {
            repository: f.repo(),
            left_commit_id: "nope".into(),
            right_commit_id: top.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_signature_rpcs_match_git() {
    let f = fixture();
    let ch = f.d.channel().await;
    let mut c = CommitServiceClient::new(ch.clone());
    let lines = |args: &[&str]| -> Vec<String> { f.git_text(args).lines().map(str::to_string).collect() };
    // A signed commit (the signature need not verify) with a trailer, on its own branch.
    let tree = f.git_text(&["rev-parse", "master^{tree}"]);
    let parent = f.git_text(&["rev-parse", "master"]);
    let signature = "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----";
    let indented = signature.replace('\n', "\n ");
    let header = format!("tree {tree}\nparent {parent}\nauthor S <s@example.com> 1600001000 +0000\ncommitter S <s@example.com> 1600001000 +0000\n");
    let message = "signed change\n\nBody.\n\nSigned-off-by: S <s@example.com>\nReviewed-by: R <r@example.com>\n";
    let raw = format!("{header}gpgsig {indented}\n\n{message}");
    std::fs::write(f.d.dir.path().join("signed"), &raw).unwrap();
    let signed = f.git_text(&["hash-object", "-t", "commit", "-w", f.d.dir.path().join("signed").to_str().unwrap()]);
    run(git(&f.bare).args(["update-ref", "refs/heads/signed", &signed]));

    // GetCommitSignatures: the signature, and the commit without it.
    let msgs = all!(c.get_commit_signatures(GetCommitSignaturesRequest {
        repository: f.repo(),
        commit_ids: vec![signed.clone(), parent.clone()]
    }));
    assert_eq!(msgs[0].commit_id, signed);
    assert_eq!(msgs[0].signature, signature.as_bytes());
    let text: Vec<u8> = msgs.iter().flat_map(|m| m.signed_text.clone()).collect();
    assert_eq!(String::from_utf8(text).unwrap(), format!("{header}\n{message}"));
    assert!(msgs.iter().all(|m| m.commit_id.is_empty() || m.commit_id == signed), "unsigned commit answered");
    let e = c
        .get_commit_signatures(GetCommitSignaturesRequest { repository: f.repo(), commit_ids: vec!["master".into()] })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "GetCommitSignatures: invalid object ID: \"master\""));

    // FilterShasWithSignatures: one answer per request.
    let reqs = vec![
        FilterShasWithSignaturesRequest {
            repository: f.repo(),
            shas: vec![signed.clone().into_bytes(), parent.clone().into_bytes()],
        },
        FilterShasWithSignaturesRequest { repository: None, shas: vec![parent.clone().into_bytes()] },
    ];
    let got = all!(c.filter_shas_with_signatures(futures::stream::iter(reqs)));
    assert_eq!(
        got,
        vec![
            FilterShasWithSignaturesResponse { shas: vec![signed.clone().into_bytes()] },
            FilterShasWithSignaturesResponse { shas: vec![] }
        ]
    );

    // FindCommits with its options, against git log.
    let find = |req: FindCommitsRequest| {
        let mut c = c.clone();
        async move { all!(c.find_commits(req)).into_iter().flat_map(|m| m.commits).collect::<Vec<GitCommit>>() }
    };
    let base =
        || FindCommitsRequest { repository: f.repo(), revision: b"master".to_vec(), limit: 100, ..Default::default() };
    let id_list = |v: Vec<GitCommit>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(id_list(find(base()).await), lines(&["log", "--format=%H", "--max-count=100", "master"]));
    assert_eq!(
        id_list(find(FindCommitsRequest { limit: 2, offset: 1, ..base() }).await),
        lines(&["log", "--format=%H", "--skip=1", "--max-count=2", "master"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { limit: 0, ..base() }).await),
        Vec::<String>::new(),
        "limit 0 lists nothing, as upstream"
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { paths: vec![b"dir/b.txt".to_vec()], ..base() }).await),
        lines(&["log", "--format=%H", "master", "--", "dir/b.txt"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { paths: vec![b"renamed.txt".to_vec()], follow: true, ..base() }).await),
        lines(&["log", "--format=%H", "--follow", "master", "--", "renamed.txt"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { skip_merges: true, ..base() }).await),
        lines(&["log", "--format=%H", "--no-merges", "master"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { first_parent: true, ..base() }).await),
        lines(&["log", "--format=%H", "--first-parent", "master"])
    );
    assert_eq!(
        id_list(
            find(FindCommitsRequest {
                after: Some(prost_types::Timestamp { seconds: 1_600_000_250, nanos: 0 }),
                ..base()
            })
            .await
        ),
        lines(&["log", "--format=%H", "--after=@1600000250", "master"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { author: b"Jos".to_vec(), ..base() }).await),
        lines(&["log", "--format=%H", "--author=Jos", "master"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { order: 1, ..base() }).await),
        lines(&["log", "--format=%H", "--topo-order", "master"])
    );
    assert_eq!(
        id_list(find(FindCommitsRequest { all: true, revision: vec![], ..base() }).await),
        lines(&["log", "--format=%H", "--max-count=100", "--all", "--reverse"])
    );
    let with_trailers =
        find(FindCommitsRequest { revision: b"signed".to_vec(), limit: 1, trailers: true, ..base() }).await;
    let t: Vec<(Vec<u8>, Vec<u8>)> =
        with_trailers[0].trailers.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    assert_eq!(
        t,
        vec![
            (b"Signed-off-by".to_vec(), b"S <s@example.com>".to_vec()),
            (b"Reviewed-by".to_vec(), b"R <r@example.com>".to_vec())
        ]
    );
    assert_eq!(with_trailers[0].signature_type, SignatureType::Pgp as i32);
    let e = c.find_commits(FindCommitsRequest { paths: vec![vec![]], ..base() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "path is empty string"));

    // FindAllCommits and CommitsByMessage.
    let all_commits: Vec<String> = all!(c.find_all_commits(FindAllCommitsRequest {
        repository: f.repo(),
        revision: vec![],
        max_count: 0,
        skip: 0,
        order: 2
    }))
    .into_iter()
    .flat_map(|m| m.commits.into_iter().map(|c| c.id))
    .collect();
    let branches = lines(&["for-each-ref", "--format=%(refname)", "refs/heads"]);
    let mut args = vec!["log", "--pretty=%H", "--date-order"];
    args.extend(branches.iter().map(String::as_str));
    assert_eq!(all_commits, lines(&args));
    let by_msg: Vec<String> = all!(c.commits_by_message(CommitsByMessageRequest {
        repository: f.repo(),
        revision: vec![],
        query: "CHANGE".into(),
        ..Default::default()
    }))
    .into_iter()
    .flat_map(|m| m.commits.into_iter().map(|c| c.id))
    .collect();
    assert_eq!(by_msg, lines(&["log", "--pretty=%H", "--grep=CHANGE", "--regexp-ignore-case", "master"]));
    assert!(!by_msg.is_empty());

    // ListLastCommitsForTree: trees first, then blobs, then the submodule, each with its last commit.
    let got = all!(c.list_last_commits_for_tree(ListLastCommitsForTreeRequest {
        repository: f.repo(),
        revision: "master".into(),
        path: b"".to_vec(),
        limit: 100,
        ..Default::default()
    }));
    assert!(got.iter().all(|m| m.commits.len() <= 10));
    let got: Vec<(Vec<u8>, String)> =
        got.into_iter().flat_map(|m| m.commits).map(|c| (c.path_bytes, c.commit.unwrap().id)).collect();
    let ls = f.git(&["ls-tree", "-z", "--full-name", "master", "."]);
    let mut want: Vec<(u8, Vec<u8>)> = ls
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let tab = r.iter().position(|b| *b == b'\t').unwrap();
            let group = match r.split(|b| *b == b' ').nth(1) {
                Some(b"tree") => 0,
                Some(b"blob") => 1,
                _ => 2,
            };
            (group, r[tab + 1..].to_vec())
        })
        .collect();
    want.sort_by_key(|(g, _)| *g);
    assert_eq!(
        got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        want.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>()
    );
    for (p, id) in &got {
        if let Ok(p) = std::str::from_utf8(p) {
            assert_eq!(id, &f.git_text(&["log", "-1", "--format=%H", "master", "--", p]), "{p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lfs_pointers_are_found() {
    let f = fixture();
    let ch = f.d.channel().await;
    let mut b = BlobServiceClient::new(ch.clone());
    let pointer =
        |n: u32| format!("version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {n}\n", "ab".repeat(32));
    let write = |name: &str, content: &str| {
        let file = f.d.dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        f.git_text(&["hash-object", "-w", file.to_str().unwrap()])
    };
    let committed = write("p1", &pointer(1234));
    let loose = write("p2", &pointer(99));
    let not_pointer = write("p3", "version https://git-lfs.github.com/spec/v1\nno oid here\n");
    let mut listing = f.git_text(&["ls-tree", "master"]);
    listing.push_str(&format!("\n100644 blob {committed}\tbig.psd\n"));
    let mut mk = git(&f.bare)
        .args(["mktree"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(mk.stdin.as_mut().unwrap(), listing.as_bytes()).unwrap();
    let tree = String::from_utf8(mk.wait_with_output().unwrap().stdout).unwrap().trim().to_string();
    let commit = f.git_text(&["commit-tree", &tree, "-p", "master", "-m", "lfs"]);
    run(git(&f.bare).args(["update-ref", "refs/heads/lfs", &commit]));

    let ids = |v: Vec<LfsPointer>| {
        let mut v: Vec<String> = v.into_iter().map(|p| p.oid).collect();
        v.sort();
        v
    };
    let got = all!(b.get_lfs_pointers(GetLfsPointersRequest {
        repository: f.repo(),
        blob_ids: vec![committed.clone(), not_pointer.clone()]
    }));
    let got: Vec<LfsPointer> = got.into_iter().flat_map(|m| m.lfs_pointers).collect();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].data.clone(), got[0].size), (pointer(1234).into_bytes(), pointer(1234).len() as i64));
    let e = b
        .get_lfs_pointers(GetLfsPointersRequest {
            repository: f.repo(),
            blob_ids: vec!["1111111111111111111111111111111111111111".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unknown);

    let listed = all!(b.list_lfs_pointers(ListLfsPointersRequest {
        repository: f.repo(),
        revisions: vec!["lfs".into()],
        limit: 0
    }));
    assert_eq!(ids(listed.into_iter().flat_map(|m| m.lfs_pointers).collect()), vec![committed.clone()]);
    let none = all!(b.list_lfs_pointers(ListLfsPointersRequest {
        repository: f.repo(),
        revisions: vec!["lfs".into(), "--not".into(), "--all".into()],
        limit: 0
    }));
    assert!(none.is_empty());
    let e = b
        .list_lfs_pointers(ListLfsPointersRequest {
            repository: f.repo(),
            revisions: vec!["--output=x".into()],
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "invalid revision: \"--output=x\""));

    let everything = all!(b.list_all_lfs_pointers(ListAllLfsPointersRequest { repository: f.repo(), limit: 0 }));
    let mut want = vec![committed, loose];
    want.sort();
    assert_eq!(ids(everything.into_iter().flat_map(|m| m.lfs_pointers).collect()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_languages_count_like_linguist() {
    let d = Daemon::start();
    let wt = d.work_dir("src").join("wt");
    run(git(wt.parent().unwrap()).args(["init", "--quiet", "-b", "master"]).arg(&wt));
    let files: &[(&str, &[u8])] = &[
        ("src/main.rs", b"fn main() {\n    println!(\"hello\");\n}\n"),
        ("src/lib.rs", b"pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"),
        ("tools/run.py", b"import sys\nprint(sys.argv)\n"),
        ("README.md", b"# prose is not counted\n"),
        ("node_modules/dep/index.js", b"module.exports = 1;\n"),
        ("data.json", b"{\"data\": true}\n"),
        ("blob.c", b"int x;\0\0binary\n"),
    ];
    for (p, content) in files {
        std::fs::create_dir_all(wt.join(p).parent().unwrap()).unwrap();
        std::fs::write(wt.join(p), content).unwrap();
    }
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "languages"]));
    d.seed_repo("l.git", &wt);
    let mut c = CommitServiceClient::new(d.channel().await);
    let got = c
        .commit_languages(CommitLanguagesRequest { repository: Some(d.repo("l.git")), revision: vec![] })
        .await
        .unwrap()
        .into_inner()
        .languages;
    let rust = (files[0].1.len() + files[1].1.len()) as u64;
    let python = files[2].1.len() as u64;
    let names: Vec<(&str, u64)> = got.iter().map(|l| (l.name.as_str(), l.bytes)).collect();
    assert_eq!(names, vec![("Rust", rust), ("Python", python)], "{got:?}");
    assert!((got[0].share - 100.0 * rust as f32 / (rust + python) as f32).abs() < 0.01);
    assert!((got.iter().map(|l| l.share).sum::<f32>() - 100.0).abs() < 0.01);
    assert!(got.iter().all(|l| l.color.starts_with('#') && l.color.len() == 7), "{got:?}");
    let e = c
        .commit_languages(CommitLanguagesRequest { repository: Some(d.repo("l.git")), revision: b"--all".to_vec() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "revision can't start with '-'"));
}

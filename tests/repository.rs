//! RepositoryService over gRPC against real repositories, each answer checked with `git`.

mod common;

use common::*;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::Code;

type Client = RepositoryServiceClient<rgitaly::client::AuthChannel>;

async fn setup() -> (Daemon, std::path::PathBuf, Client) {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    let c = RepositoryServiceClient::new(d.channel().await);
    (d, wt, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_exists_remove() {
    let (d, _, mut c) = setup().await;
    let repo = Some(d.repo("new/group/x.git"));
    let exists = |c: &mut Client, repo: Option<Repository>| {
        let mut c = c.clone();
        async move { c.repository_exists(RepositoryExistsRequest { repository: repo }).await.unwrap().into_inner().exists }
    };
    assert!(!exists(&mut c, repo.clone()).await);
    c.create_repository(CreateRepositoryRequest { repository: repo.clone() }).await.unwrap();
    assert!(exists(&mut c, repo.clone()).await);
    let path = d.repo_path("new/group/x.git");
    assert_eq!(stdout(git(&path).args(["rev-parse", "--is-bare-repository"])), "true");
    // Idempotent, and it keeps existing content.
    run(git(&path).args(["config", "custom.keep", "yes"]));
    c.create_repository(CreateRepositoryRequest { repository: repo.clone() }).await.unwrap();
    assert_eq!(stdout(git(&path).args(["config", "custom.keep"])), "yes");

    c.remove_repository(RemoveRepositoryRequest { repository: repo.clone() }).await.unwrap();
    assert!(!path.exists());
    assert!(!exists(&mut c, repo.clone()).await);
    // Removing what is gone is fine (upstream v13.12).
    c.remove_repository(RemoveRepositoryRequest { repository: repo }).await.unwrap();

    let e = c
        .create_repository(CreateRepositoryRequest {
            repository: Some(Repository {
                storage_name: "nope".into(),
                relative_path: "a.git".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_branches_merge_base() {
    let (d, wt, mut c) = setup().await;
    let repo = Some(d.repo("p.git"));
    let size = c.repository_size(RepositorySizeRequest { repository: repo.clone() }).await.unwrap().into_inner().size;
    let du = stdout(std::process::Command::new("du").arg("-sk").arg(d.repo_path("p.git")));
    let du: i64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert!((size - du).abs() <= 8, "size {size} KiB vs du {du} KiB");

    assert!(
        c.has_local_branches(HasLocalBranchesRequest { repository: repo.clone() }).await.unwrap().into_inner().value
    );
    c.create_repository(CreateRepositoryRequest { repository: Some(d.repo("empty.git")) }).await.unwrap();
    assert!(
        !c.has_local_branches(HasLocalBranchesRequest { repository: Some(d.repo("empty.git")) })
            .await
            .unwrap()
            .into_inner()
            .value
    );

    let expected = stdout(git(&wt).args(["merge-base", "main", "side"]));
    let base = c
        .find_merge_base(FindMergeBaseRequest {
            repository: repo.clone(),
            revisions: vec![b"main".to_vec(), b"side".to_vec()],
        })
        .await
        .unwrap()
        .into_inner()
        .base;
    assert_eq!(base, expected);
    let none = c
        .find_merge_base(FindMergeBaseRequest {
            repository: repo.clone(),
            revisions: vec![b"main".to_vec(), b"nonexistent".to_vec()],
        })
        .await
        .unwrap()
        .into_inner()
        .base;
    assert_eq!(none, "");
    let e = c
        .find_merge_base(FindMergeBaseRequest { repository: repo.clone(), revisions: vec![b"main".to_vec()] })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "FindMergeBase: at least 2 revisions are required"));
    let e = c
        .find_merge_base(FindMergeBaseRequest {
            repository: repo,
            revisions: vec![b"main".to_vec(), b"--output=/tmp/x".to_vec()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_ref_compare_and_swap_and_head() {
    let (d, wt, mut c) = setup().await;
    let repo = Some(d.repo("p.git"));
    let path = d.repo_path("p.git");
    let main = stdout(git(&wt).args(["rev-parse", "main"]));
    let side = stdout(git(&wt).args(["rev-parse", "side"]));
    let write = |r: &[u8], rev: &str, old: &str| WriteRefRequest {
        repository: repo.clone(),
        r#ref: r.to_vec(),
        revision: rev.as_bytes().to_vec(),
        old_revision: old.as_bytes().to_vec(),
        force: false,
    };
    c.write_ref(write(b"refs/heads/new", &main, "")).await.unwrap();
    assert_eq!(stdout(git(&path).args(["rev-parse", "refs/heads/new"])), main);
    // Stale expected old value: refused, ref unchanged.
    let e = c.write_ref(write(b"refs/heads/new", &side, &side)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(stdout(git(&path).args(["rev-parse", "refs/heads/new"])), main);
    c.write_ref(write(b"refs/heads/new", &side, &main)).await.unwrap();
    assert_eq!(stdout(git(&path).args(["rev-parse", "refs/heads/new"])), side);
    // HEAD is written symbolically.
    c.write_ref(write(b"HEAD", "refs/heads/side", "")).await.unwrap();
    assert_eq!(stdout(git(&path).args(["symbolic-ref", "HEAD"])), "refs/heads/side");

    for (req, msg) in [
        (write(b"new", &main, ""), "ref has to be a full reference"),
        (write(b"refs/heads/x", "--all", ""), "invalid revision: revision can't start with '-'"),
        (write(b"-refs/heads/x", &main, ""), "invalid ref: revision can't start with '-'"),
        (write(b"refs/heads/x", "", ""), "invalid revision: empty revision"),
        (write(b"refs/heads/x", &main, "a b"), "invalid OldRevision: revision can't contain whitespace"),
    ] {
        let e = c.write_ref(req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_matches_refs() {
    use sha1::Digest;
    let (d, wt, mut c) = setup().await;
    let path = d.repo_path("p.git");
    let got = c
        .calculate_checksum(CalculateChecksumRequest { repository: Some(d.repo("p.git")) })
        .await
        .unwrap()
        .into_inner()
        .checksum;
    let lines = stdout(git(&path).args(["show-ref", "--head"]));
    let mut sum = [0u8; 20];
    let counted = [
        "HEAD",
        "refs/heads/",
        "refs/tags/",
        "refs/keep-around/",
        "refs/merge-requests/",
        "refs/environments/",
        "refs/notes/",
    ];
    for l in lines.lines().filter(|l| counted.iter().any(|c| l.contains(c))) {
        for (s, b) in sum.iter_mut().zip(sha1::Sha1::digest(l.as_bytes()).iter()) {
            *s ^= b;
        }
    }
    // Upstream prints the XOR as a big integer: leading zero bytes are dropped, not leading zero digits.
    let first = sum.iter().position(|b| *b != 0).unwrap();
    assert_eq!(got, hex::encode(&sum[first..]));
    // A change to a branch changes the checksum; refs outside GitLab's namespaces do not.
    run(git(&path).args(["update-ref", "refs/custom/x", "HEAD"]));
    let again = c
        .calculate_checksum(CalculateChecksumRequest { repository: Some(d.repo("p.git")) })
        .await
        .unwrap()
        .into_inner()
        .checksum;
    assert_eq!(again, got);
    let new = commit_file(&wt, "c.txt", "c\n");
    run(git(&wt).arg("push").arg("--quiet").arg(&path).arg("main"));
    let changed = c
        .calculate_checksum(CalculateChecksumRequest { repository: Some(d.repo("p.git")) })
        .await
        .unwrap()
        .into_inner()
        .checksum;
    assert_ne!(changed, got, "{new}");

    c.create_repository(CreateRepositoryRequest { repository: Some(d.repo("empty.git")) }).await.unwrap();
    let empty = c
        .calculate_checksum(CalculateChecksumRequest { repository: Some(d.repo("empty.git")) })
        .await
        .unwrap()
        .into_inner()
        .checksum;
    assert_eq!(empty, "0000000000000000000000000000000000000000");
    let e =
        c.calculate_checksum(CalculateChecksumRequest { repository: Some(d.repo("missing.git")) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_and_housekeeping() {
    let (d, _, mut c) = setup().await;
    let repo = Some(d.repo("p.git"));
    let path = d.repo_path("p.git");
    let r = c.fsck(FsckRequest { repository: repo.clone() }).await.unwrap().into_inner();
    assert!(r.error.is_empty(), "{}", String::from_utf8_lossy(&r.error));

    // The seeded repository has only loose objects; housekeeping packs them.
    let loose = |p: &std::path::Path| {
        stdout(git(p).args(["count-objects", "-v"]))
            .lines()
            .find_map(|l| l.strip_prefix("count: ").map(|n| n.parse::<u32>().unwrap()))
            .unwrap()
    };
    assert!(loose(&path) > 0);
    c.repack_incremental(RepackIncrementalRequest { repository: repo.clone() }).await.unwrap();
    assert_eq!(loose(&path), 0);
    c.repack_full(RepackFullRequest { repository: repo.clone(), create_bitmap: true }).await.unwrap();
    let packs: Vec<_> = std::fs::read_dir(path.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(packs.iter().filter(|p| p.ends_with(".pack")).count(), 1, "{packs:?}");
    assert!(packs.iter().any(|p| p.ends_with(".bitmap")), "{packs:?}");
    c.garbage_collect(GarbageCollectRequest { repository: repo.clone(), create_bitmap: false, prune: true })
        .await
        .unwrap();
    assert!(path.join("objects/info/commit-graph").exists() || path.join("objects/info/commit-graphs").exists());
    run(git(&path).args(["fsck", "--no-progress"]));

    // Corruption is reported in the response, not as an RPC error.
    let head = stdout(git(&path).args(["rev-parse", "HEAD"]));
    let tree = stdout(git(&path).args(["rev-parse", "HEAD^{tree}"]));
    std::fs::write(path.join("refs/heads/broken"), format!("{tree}\n")).unwrap();
    std::fs::remove_dir_all(path.join("objects/pack")).unwrap();
    std::fs::create_dir(path.join("objects/pack")).unwrap();
    let r = c.fsck(FsckRequest { repository: repo }).await.unwrap().into_inner();
    assert!(!r.error.is_empty(), "fsck of a repository without objects found nothing ({head})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_round_trip() {
    let (d, wt, mut c) = setup().await;
    let data = collect_data!(c
        .create_bundle(CreateBundleRequest { repository: Some(d.repo("p.git")) })
        .await
        .unwrap()
        .into_inner());
    let work = d.work_dir("bundle");
    std::fs::write(work.join("b.bundle"), &data).unwrap();
    run(git(&work).args(["bundle", "verify", "b.bundle"]).env("GIT_DIR", d.repo_path("p.git")));

    // Extra refs outside branches and tags travel too.
    run(git(&d.repo_path("p.git")).args(["update-ref", "refs/merge-requests/1/head", "side"]));
    let data = collect_data!(c
        .create_bundle(CreateBundleRequest { repository: Some(d.repo("p.git")) })
        .await
        .unwrap()
        .into_inner());
    let mut reqs =
        vec![CreateRepositoryFromBundleRequest { repository: Some(d.repo("imported.git")), data: Vec::new() }];
    for chunk in data.chunks(100 * 1024) {
        reqs.push(CreateRepositoryFromBundleRequest { repository: None, data: chunk.to_vec() });
    }
    c.create_repository_from_bundle(futures::stream::iter(reqs)).await.unwrap();
    let imported = d.repo_path("imported.git");
    let show = |p: &std::path::Path| stdout(git(p).args(["for-each-ref", "--format=%(objectname) %(refname)"]));
    assert_eq!(show(&imported), show(&d.repo_path("p.git")));
    assert!(!stdout(git(&imported).args(["config", "--list"])).contains("remote.origin"));
    assert_eq!(stdout(git(&imported).args(["rev-parse", "main"])), stdout(git(&wt).args(["rev-parse", "main"])));
    assert_eq!(stdout(git(&imported).args(["symbolic-ref", "HEAD"])), "refs/heads/main");
    run(git(&imported).args(["fsck", "--strict"]));

    // A non-empty target is refused and left alone.
    let reqs = vec![CreateRepositoryFromBundleRequest { repository: Some(d.repo("imported.git")), data: data.clone() }];
    let e = c.create_repository_from_bundle(futures::stream::iter(reqs)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "CreateRepositoryFromBundle: target directory is non-empty")
    );
    // Garbage is refused and leaves nothing behind.
    let reqs = vec![CreateRepositoryFromBundleRequest {
        repository: Some(d.repo("garbage.git")),
        data: b"not a bundle".to_vec(),
    }];
    let e = c.create_repository_from_bundle(futures::stream::iter(reqs)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "CreateRepositoryFromBundle: not a v2 or v3 git bundle")
    );
    assert!(!d.repo_path("garbage.git").exists());
    // A bundle signature over garbage, or a header git would read differently, is refused before git
    // sees it; a real header over a broken pack gets as far as git, which refuses it.
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    for (bytes, code) in [
        (b"# v2 git bundle\ngitdir: ../p.git\n\nPACK".to_vec(), Code::InvalidArgument),
        (format!("# v2 git bundle\n{head} refs/heads/a\0refs/heads/main\n\nPACK").into_bytes(), Code::InvalidArgument),
        (format!("# v2 git bundle\n{head} refs/heads/main\n").into_bytes(), Code::InvalidArgument),
        (format!("# v2 git bundle\n{head} refs/heads/main\n\nPACK\0\0\0\x02junk").into_bytes(), Code::Internal),
    ] {
        let reqs = vec![CreateRepositoryFromBundleRequest { repository: Some(d.repo("garbage.git")), data: bytes }];
        let e = c.create_repository_from_bundle(futures::stream::iter(reqs)).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(!d.repo_path("garbage.git").exists());
    }
    let e = c.create_bundle(CreateBundleRequest { repository: None }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "CreateBundle: empty Repository"));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_archive_formats_and_paths() {
    use rgitaly::proto::gitaly::get_archive_request::Format;
    let (d, wt, mut c) = setup().await;
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let work = d.work_dir("archive");
    let req = |format: Format, path: &str, exclude: &[&str], elide: bool| GetArchiveRequest {
        repository: Some(d.repo("p.git")),
        commit_id: head.clone(),
        prefix: "proj".into(),
        format: format as i32,
        path: path.as_bytes().to_vec(),
        exclude: exclude.iter().map(|e| e.as_bytes().to_vec()).collect(),
        elide_path: elide,
        include_lfs_blobs: false,
    };
    let list = |data: &[u8], name: &str, flag: &str| {
        let f = work.join(name);
        std::fs::write(&f, data).unwrap();
        let mut files: Vec<String> =
            stdout(std::process::Command::new("tar").arg(flag).arg(&f)).lines().map(str::to_string).collect();
        files.sort();
        files
    };
    let tar = collect_data!(c.get_archive(req(Format::Tar, "", &[], false)).await.unwrap().into_inner());
    assert_eq!(
        list(&tar, "a.tar", "-tf"),
        ["proj/", "proj/dir/", "proj/dir/nested.txt", "proj/file1.txt", "proj/file2.txt", "proj/file3.txt"]
    );
    let tgz = collect_data!(c.get_archive(req(Format::TarGz, "dir", &[], false)).await.unwrap().into_inner());
    assert_eq!(list(&tgz, "a.tgz", "-tzf"), ["proj/", "proj/dir/", "proj/dir/nested.txt"]);
    let tbz = collect_data!(c.get_archive(req(Format::TarBz2, "", &["dir"], false)).await.unwrap().into_inner());
    assert_eq!(list(&tbz, "a.tbz", "-tjf"), ["proj/", "proj/file1.txt", "proj/file2.txt", "proj/file3.txt"]);
    let elided = collect_data!(c.get_archive(req(Format::Tar, "dir", &[], true)).await.unwrap().into_inner());
    assert_eq!(list(&elided, "e.tar", "-tf"), ["proj/", "proj/nested.txt"]);
    // Excludes under an elided path are relative to it.
    std::fs::write(wt.join("dir/other.txt"), "other\n").unwrap();
    run(git(&wt).args(["add", "dir/other.txt"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "other"]));
    run(git(&wt).arg("push").arg("--quiet").arg(d.repo_path("p.git")).arg("main"));
    let with_other =
        GetArchiveRequest { commit_id: "main".into(), ..req(Format::Tar, "dir", &["dir/nested.txt"], true) };
    let elided = collect_data!(c.get_archive(with_other).await.unwrap().into_inner());
    assert_eq!(list(&elided, "e2.tar", "-tf"), ["proj/", "proj/other.txt"]);
    let e = c.get_archive(req(Format::Tar, "dir", &["dir"], true)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let zip = collect_data!(c.get_archive(req(Format::Zip, "", &[], false)).await.unwrap().into_inner());
    assert!(zip.starts_with(b"PK"));
    // Zip stores entry names uncompressed, in local headers and the central directory.
    let names = String::from_utf8_lossy(&zip);
    for f in ["proj/file1.txt", "proj/dir/nested.txt"] {
        assert_eq!(names.matches(f).count(), 2, "{f} in zip");
    }

    for (r, code, msg) in [
        (req(Format::Tar, "../etc", &[], false), Code::InvalidArgument, "relative path escapes root directory"),
        (req(Format::Tar, "missing", &[], false), Code::FailedPrecondition, "path doesn't exist"),
        (req(Format::Tar, "", &["nope"], false), Code::FailedPrecondition, "exclude[0] doesn't exist"),
        (
            GetArchiveRequest { commit_id: "--output=/tmp/x".into(), ..req(Format::Tar, "", &[], false) },
            Code::InvalidArgument,
            "invalid commitId: revision can't start with '-'",
        ),
        (GetArchiveRequest { format: 42, ..req(Format::Tar, "", &[], false) }, Code::InvalidArgument, "invalid format"),
    ] {
        let e = c.get_archive(r).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    }
    d.assert_outside_untouched();
}

/// A "bundle" that is a `gitdir:` file naming another repository — of the host or of the storage — is
/// refused before git sees it: the new repository would otherwise be a clone of that repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_naming_another_repository_is_refused() {
    let (d, _wt, mut c) = setup().await;
    let host = d.outside.join("host.git");
    run(git(d.dir.path()).args(["clone", "--bare", "--quiet"]).arg(d.repo_path("p.git")).arg(&host));
    let before = snapshot(&d.outside);
    for (name, data) in [
        ("absolute gitdir", format!("gitdir: {}\n", host.display())),
        ("relative gitdir into the storage", "gitdir: ../../../p.git\n".to_string()),
        ("relative gitdir", "gitdir: p.git\n".to_string()),
    ] {
        let reqs =
            vec![CreateRepositoryFromBundleRequest { repository: Some(d.repo("stolen.git")), data: data.into_bytes() }];
        let e = c.create_repository_from_bundle(futures::stream::iter(reqs)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(!d.repo_path("stolen.git").exists(), "{name}: a repository was created");
    }
    assert_eq!(snapshot(&d.outside), before);
}

/// RemoveRepository removes repositories and nothing else: not a plain directory, not a file, not a
/// namespace holding other repositories. A repository that is already gone is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_repository_acts_only_on_repositories() {
    let (d, wt, mut c) = setup().await;
    std::fs::create_dir_all(d.storage.join("plain/sub")).unwrap();
    std::fs::write(d.storage.join("plain/sub/data"), "keep").unwrap();
    std::fs::write(d.storage.join("file.txt"), "keep").unwrap();
    d.seed_repo("ns/inner.git", &wt);
    let before = snapshot(&d.storage);
    for path in ["plain", "plain/sub", "file.txt", "ns", "ns/", "./ns"] {
        let e = c.remove_repository(RemoveRepositoryRequest { repository: Some(d.repo(path)) }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{path}: {e:?}");
    }
    assert!(d.repo_path("ns/inner.git/HEAD").exists() && d.storage.join("plain/sub/data").exists());
    assert!(d.storage.join("file.txt").exists());
    assert_eq!(
        snapshot(&d.storage).keys().filter(|k| !k.contains("+gitaly")).count(),
        before.keys().filter(|k| !k.contains("+gitaly")).count()
    );
    c.remove_repository(RemoveRepositoryRequest { repository: Some(d.repo("missing.git")) }).await.unwrap();
    c.remove_repository(RemoveRepositoryRequest { repository: Some(d.repo("ns/inner.git")) }).await.unwrap();
    assert!(!d.repo_path("ns/inner.git").exists());
    d.assert_outside_untouched();
}

/// The bundle header reader takes what `git bundle create` writes — v2 and v3, with prerequisites and a
/// filter — and reads the same refs as `git bundle list-heads`; and a prerequisite bundle, whose objects a
/// new repository lacks, is refused by git, not set up with dangling refs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_headers_read_as_git_reads_them() {
    let (d, wt, mut c) = setup().await;
    run(git(&wt).args(["tag", "-a", "-m", "tag\r\nbody", "v1"]));
    run(git(&wt).args(["commit", "--allow-empty", "-q", "-m", "subject with CR\r\n\r\nbody"]));
    run(git(&wt).args(["commit", "--allow-empty", "-q", "-m", "last"]));
    let work = d.work_dir("bundles");
    for (name, options, revs) in [
        ("v2", &[][..], &["--all"][..]),
        ("v3", &["--version=3"], &["--all"]),
        ("prerequisite", &[], &["main~1..main"]),
        ("v3-prerequisite", &["--version=3"], &["main~1..main", "v1"]),
    ] {
        let file = work.join(format!("{name}.bundle"));
        run(git(&wt).args(["bundle", "create", "-q"]).args(options).arg(&file).args(revs));
        let bytes = std::fs::read(&file).unwrap();
        let h = rgitaly::git::bundle::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(h.to_bytes(), bytes[..h.len], "{name}");
        let listed = stdout(git(&wt).args(["bundle", "list-heads"]).arg(&file));
        let ours: Vec<String> = h.refs.iter().map(|(oid, n)| format!("{oid} {}", String::from_utf8_lossy(n))).collect();
        assert_eq!(ours.join("\n"), listed, "{name}");
        assert_eq!(h.prerequisites.is_empty(), !name.contains("prerequisite"), "{name}");

        let target = format!("from-{name}.git");
        let reqs = vec![CreateRepositoryFromBundleRequest { repository: Some(d.repo(&target)), data: bytes }];
        let got = c.create_repository_from_bundle(futures::stream::iter(reqs)).await;
        if name.contains("prerequisite") {
            assert_eq!(got.unwrap_err().code(), Code::Internal, "{name}");
            assert!(!d.repo_path(&target).exists(), "{name}");
        } else {
            got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            run(git(&d.repo_path(&target)).args(["fsck", "--strict"]));
        }
    }
    d.assert_outside_untouched();
}

/// What `git format-patch` writes reads as a series with the paths git applies it to: a hunk whose
/// content lines look like headers, a rename with spaces, a quoted non-ASCII name, a mode change and a
/// binary file. The same bytes with one path turned hostile are refused.
#[test]
fn patch_series_read_as_format_patch_writes_them() {
    use rgitaly::git::patch;
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path().join("wt");
    run(git(dir.path()).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    let commit = |msg: &str| {
        run(git(&wt).args(["add", "-A"]));
        run(git(&wt).args(["commit", "-qm", msg]))
    };
    std::fs::create_dir(wt.join("dir with space")).unwrap();
    std::fs::write(wt.join("dir with space/a b.txt"), "one\ntwo\nthree\nfour\nfive\nsix\n").unwrap();
    std::fs::write(wt.join("lines"), "-- old signature\nkept\n").unwrap();
    commit("base");
    std::fs::write(wt.join("lines"), "++ new\nkept\n").unwrap();
    commit("header-like content");
    run(git(&wt).args(["mv", "dir with space/a b.txt", "dir with space/c d.txt"]));
    std::fs::write(wt.join("café.txt"), "é\n").unwrap();
    commit("rename and a quoted name");
    std::fs::write(wt.join("blob.bin"), (0..=255u8).cycle().take(3000).collect::<Vec<u8>>()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(wt.join("lines"), std::fs::Permissions::from_mode(0o755)).unwrap();
    commit("binary and mode");
    let series = run(git(&wt).args(["format-patch", "--stdout", "--binary", "-M", "main~3..main"])).stdout;

    let patches = patch::parse(&series).unwrap();
    assert_eq!(patches.len(), 3);
    assert_eq!(patches[0].subject, b"[PATCH 1/3] header-like content");
    assert_eq!(patches[0].paths, vec![b"lines".to_vec(); 4]);
    let renamed: Vec<&[u8]> = patches[1].paths.iter().map(Vec::as_slice).collect();
    for p in [&b"dir with space/a b.txt"[..], b"dir with space/c d.txt", "café.txt".as_bytes()] {
        assert!(renamed.contains(&p), "{:?} not in {renamed:?}", String::from_utf8_lossy(p));
    }
    assert!(patches[2].paths.contains(&b"blob.bin".to_vec()), "{:?}", patches[2]);
    assert!(patches[2].paths.contains(&b"lines".to_vec()), "{:?}", patches[2]);
    assert!(patches.iter().all(|p| p.author == b"Test <test@example.com>"));

    let text = String::from_utf8(series).unwrap();
    for hostile in [
        text.replace("b/lines", "b/../lines"),
        text.replace("rename to dir with space/c d.txt", "rename to .git/hooks/post-checkout"),
        text.replace("\"b/caf\\303\\251.txt\"", "\"b/caf\\n.txt\""),
    ] {
        assert_ne!(hostile, text);
        assert!(patch::parse(hostile.as_bytes()).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebase_and_squash_in_progress() {
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let worktrees = bare.join("gitlab-worktree");
    std::fs::create_dir_all(worktrees.join("rebase-7")).unwrap();
    std::fs::create_dir_all(worktrees.join("squash-8")).unwrap();
    let rebase = |id: &str| IsRebaseInProgressRequest { repository: Some(d.repo("p.git")), rebase_id: id.into() };
    let squash = |id: &str| IsSquashInProgressRequest { repository: Some(d.repo("p.git")), squash_id: id.into() };
    assert!(c.is_rebase_in_progress(rebase("7")).await.unwrap().into_inner().in_progress);
    assert!(!c.is_rebase_in_progress(rebase("8")).await.unwrap().into_inner().in_progress);
    assert!(c.is_squash_in_progress(squash("8")).await.unwrap().into_inner().in_progress);
    assert!(!c.is_squash_in_progress(squash("7")).await.unwrap().into_inner().in_progress);
    // A worktree untouched for over 15 minutes is no rebase in progress, and is removed.
    run(std::process::Command::new("touch").args(["-d", "20 minutes ago"]).arg(worktrees.join("rebase-7")));
    assert!(!c.is_rebase_in_progress(rebase("7")).await.unwrap().into_inner().in_progress);
    assert!(!worktrees.join("rebase-7").exists());
    for (id, msg) in
        [("", "IsRebaseInProgress: empty RebaseId"), ("../../x", "IsRebaseInProgress: RebaseId contains '/'")]
    {
        let e = c.is_rebase_in_progress(rebase(id)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
    let e = c.is_squash_in_progress(squash("a/b")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "IsSquashInProgress: SquashId contains '/'"));
    // `..` stays inside the worktree directory (the id is prefixed); nothing outside is touched.
    assert!(!c.is_rebase_in_progress(rebase("..")).await.unwrap().into_inner().in_progress);
    assert!(bare.join("objects").exists());
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_directory_size_of_a_quarantine() {
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let req = |dir: &str| GetObjectDirectorySizeRequest {
        repository: Some(Repository { git_object_directory: dir.into(), ..d.repo("p.git") }),
    };
    let size = c.get_object_directory_size(req("objects")).await.unwrap().into_inner().size;
    let du = stdout(std::process::Command::new("du").arg("-sk").arg(bare.join("objects")));
    assert_eq!(size.to_string(), du.split('\t').next().unwrap());
    assert!(size > 0);
    std::fs::create_dir_all(bare.join("objects/incoming-x")).unwrap();
    let noise: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(bare.join("objects/incoming-x/pack"), noise).unwrap();
    let size = c.get_object_directory_size(req("objects/incoming-x")).await.unwrap().into_inner().size;
    assert!(size >= 60, "{size}");
    // Out of the repository, by `..` or by a symlink: refused; missing: not found; none given: upstream's error.
    std::os::unix::fs::symlink("/etc", bare.join("objects/escape")).unwrap();
    for (dir, code, msg) in [
        ("", Code::InvalidArgument, "GetObjectDirectoryPath: empty directory".to_string()),
        ("../", Code::InvalidArgument, "GetObjectDirectoryPath: relative path escapes root directory".into()),
        (
            "objects/../../p.git",
            Code::InvalidArgument,
            "GetObjectDirectoryPath: relative path escapes root directory".into(),
        ),
        ("/etc", Code::InvalidArgument, "GetObjectDirectoryPath: relative path escapes root directory".into()),
        (
            "objects/escape",
            Code::InvalidArgument,
            "GetObjectDirectoryPath: relative path escapes root directory".into(),
        ),
        (
            "objects/nope",
            Code::NotFound,
            format!("GetObjectDirectoryPath: does not exist: {:?}", bare.join("objects/nope").display().to_string()),
        ),
    ] {
        let e = c.get_object_directory_size(req(dir)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg.as_str()), "{dir}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitattributes_applied_and_read_back() {
    let (d, wt, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let read = |mut c: Client| {
        let repo = Some(d.repo("p.git"));
        async move {
            let mut s =
                c.get_info_attributes(GetInfoAttributesRequest { repository: repo }).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await.unwrap() {
                out.extend_from_slice(&m.attributes);
            }
            out
        }
    };
    assert!(read(c.clone()).await.is_empty(), "no info/attributes yet");
    std::fs::write(wt.join(".gitattributes"), "*.png binary\n*.md diff=markdown\n").unwrap();
    run(git(&wt).args(["add", ".gitattributes"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "attributes"]));
    run(git(&wt).args(["push", "--quiet"]).arg(&bare).arg("main:with-attributes"));
    let apply =
        |rev: &str| ApplyGitattributesRequest { repository: Some(d.repo("p.git")), revision: rev.as_bytes().to_vec() };
    c.apply_gitattributes(apply("with-attributes")).await.unwrap();
    assert_eq!(std::fs::read_to_string(bare.join("info/attributes")).unwrap(), "*.png binary\n*.md diff=markdown\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(bare.join("info/attributes")).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(read(c.clone()).await, b"*.png binary\n*.md diff=markdown\n");
    // A revision without .gitattributes removes the file.
    c.apply_gitattributes(apply("main")).await.unwrap();
    assert!(!bare.join("info/attributes").exists());
    for (rev, msg) in [
        ("nope", "Revision doesn't exist"),
        ("-x", "ApplyGitAttributes: revision: revision can't start with '-'"),
        ("main:.gitattributes", "ApplyGitAttributes: revision: revision can't contain ':'"),
        ("", "ApplyGitAttributes: revision: empty revision"),
    ] {
        let e = c.apply_gitattributes(apply(rev)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
    // No temporary files left beside it.
    let left: Vec<_> = std::fs::read_dir(bare.join("info")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| n == "exclude"), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_commit_graph() {
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    c.write_commit_graph(WriteCommitGraphRequest { repository: Some(d.repo("p.git")) }).await.unwrap();
    assert!(bare.join("objects/info/commit-graph").exists() || bare.join("objects/info/commit-graphs").exists());
    run(git(&bare).args(["commit-graph", "verify"]));
    let e =
        c.write_commit_graph(WriteCommitGraphRequest { repository: Some(d.repo("missing.git")) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_delete_config() {
    use rgitaly::proto::gitaly::set_config_request::{entry::Value, Entry};
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let get = |key: &str| {
        let out = git(&bare).args(["config", "--get", key]).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let entry = |key: &str, value: Value| Entry { key: key.into(), value: Some(value) };
    let set = |entries: Vec<Entry>| SetConfigRequest { repository: Some(d.repo("p.git")), entries };
    c.set_config(set(vec![
        entry("gitlab.fullpath", Value::ValueStr("group/project".into())),
        entry("gitlab.count", Value::ValueInt32(-3)),
        entry("gitlab.enabled", Value::ValueBool(true)),
    ]))
    .await
    .unwrap();
    assert_eq!(get("gitlab.fullpath").as_deref(), Some("group/project"));
    assert_eq!(get("gitlab.count").as_deref(), Some("-3"));
    assert_eq!(get("gitlab.enabled").as_deref(), Some("true"));
    // Replaced, not added; the rest of the config kept.
    c.set_config(set(vec![entry("gitlab.fullpath", Value::ValueStr("group/renamed".into()))])).await.unwrap();
    assert_eq!(stdout(git(&bare).args(["config", "--get-all", "gitlab.fullpath"])), "group/renamed");
    assert_eq!(get("core.bare").as_deref(), Some("true"));
    assert!(!bare.join("config.lock").exists());

    // Keys that make git run something or read elsewhere are refused, and nothing is written.
    let before = std::fs::read(bare.join("config")).unwrap();
    for key in [
        "core.hooksPath",
        "core.fsmonitor",
        "include.path",
        "filter.x.clean",
        "diff.x.textconv",
        "-x.y",
        "gitlab",
        "gitlab.\"x",
    ] {
        let e = c.set_config(set(vec![entry(key, Value::ValueStr("/tmp/evil".into()))])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{key}");
    }
    let e = c.set_config(set(vec![entry("gitlab.x", Value::ValueStr("a\nb".into()))])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c.set_config(set(vec![Entry { key: "gitlab.x".into(), value: None }])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(std::fs::read(bare.join("config")).unwrap(), before);

    // Delete: present and absent keys alike; the repository's core settings are not for deleting.
    let delete = |keys: &[&str]| DeleteConfigRequest {
        repository: Some(d.repo("p.git")),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    };
    c.delete_config(delete(&["gitlab.fullpath", "gitlab.absent", "gitlab.count"])).await.unwrap();
    assert_eq!((get("gitlab.fullpath"), get("gitlab.count")), (None, None));
    assert_eq!(get("gitlab.enabled").as_deref(), Some("true"));
    for key in ["core.bare", "extensions.objectFormat", "include.path", "--global"] {
        let e = c.delete_config(delete(&[key])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{key}");
    }
    assert_eq!(get("core.bare").as_deref(), Some("true"));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_repository() {
    let (d, _, mut c) = setup().await;
    let head = stdout(git(&d.repo_path("p.git")).args(["rev-parse", "main"]));
    let rename =
        |from: &str, to: &str| RenameRepositoryRequest { repository: Some(d.repo(from)), relative_path: to.into() };
    c.rename_repository(rename("p.git", "group/sub/q.git")).await.unwrap();
    assert!(!d.repo_path("p.git").exists());
    assert_eq!(stdout(git(&d.repo_path("group/sub/q.git")).args(["rev-parse", "main"])), head);
    // Reads through the daemon see it at its new path only.
    let exists = |rel: &str| RepositoryExistsRequest { repository: Some(d.repo(rel)) };
    assert!(c.repository_exists(exists("group/sub/q.git")).await.unwrap().into_inner().exists);
    assert!(!c.repository_exists(exists("p.git")).await.unwrap().into_inner().exists);

    run(git(&d.work_dir("src")).args(["init", "--quiet", "--bare"]).arg(d.repo_path("taken.git")));
    std::fs::create_dir_all(d.repo_path("empty-dir")).unwrap();
    for (from, to, code, msg) in [
        ("group/sub/q.git", "taken.git", Code::FailedPrecondition, "destination already exists"),
        ("group/sub/q.git", "empty-dir", Code::FailedPrecondition, "destination already exists"),
        ("group/sub/q.git", "", Code::InvalidArgument, "destination relative path is empty"),
        (
            "group/sub/q.git",
            "../outside.git",
            Code::InvalidArgument,
            "GetRepoPath: relative path escapes root directory",
        ),
        ("group/sub/q.git", "group/sub/q.git/inner.git", Code::InvalidArgument, "destination is inside the repository"),
        ("missing.git", "x.git", Code::InvalidArgument, ""),
    ] {
        let e = c.rename_repository(rename(from, to)).await.unwrap_err();
        assert_eq!(e.code(), code, "{from} → {to}: {e:?}");
        if !msg.is_empty() {
            assert_eq!(e.message(), msg, "{from} → {to}");
        }
    }
    let e = c.rename_repository(rename("group/sub/q.git", "group/sub/q.git/new/inner.git")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(d.repo_path("group/sub/q.git/HEAD").exists());
    assert!(d.repo_path("empty-dir").is_dir() && d.repo_path("taken.git/HEAD").exists());
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_files_by_name() {
    let (d, _, mut c) = setup().await;
    let search = |query: &str, rev: &str, filter: &str| SearchFilesByNameRequest {
        repository: Some(d.repo("p.git")),
        query: query.into(),
        r#ref: rev.as_bytes().to_vec(),
        filter: filter.into(),
    };
    let collect = |mut c: Client, req: SearchFilesByNameRequest| async move {
        let mut s = c.search_files_by_name(req).await?.into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await? {
            assert!(m.files.len() <= 20);
            out.extend(m.files.into_iter().map(|f| String::from_utf8(f).unwrap()));
        }
        Ok::<_, tonic::Status>(out)
    };
    let all = collect(c.clone(), search(".", "main", "")).await.unwrap();
    assert_eq!(all, ["dir/nested.txt", "file1.txt", "file2.txt", "file3.txt"]);
    assert_eq!(collect(c.clone(), search("dir", "main", "")).await.unwrap(), ["dir/nested.txt"]);
    assert_eq!(collect(c.clone(), search(".", "main", r"file[12]\.txt$")).await.unwrap(), ["file1.txt", "file2.txt"]);
    assert_eq!(collect(c.clone(), search(".", "side", "")).await.unwrap().len(), 3, "side has one file less");
    assert!(collect(c.clone(), search(".", "no-such-ref", "")).await.unwrap().is_empty());
    for (req, msg) in [
        (search("", "main", ""), "no query given"),
        (search(".", "", ""), "no ref given"),
        (search(".", "--output=/tmp/x", ""), "invalid ref argument"),
        (search(".", "main", "("), ""),
        (search(".", "main", &"a".repeat(1001)), "SearchFilesByName: filter exceeds maximum length"),
    ] {
        let e = collect(c.clone(), req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        if !msg.is_empty() {
            assert_eq!(e.message(), msg);
        }
    }
    // Many files: 20 per message.
    let wt = d.work_dir("many");
    run(git(&wt).args(["clone", "--quiet"]).arg(d.repo_path("p.git")).arg("."));
    for i in 0..45 {
        std::fs::write(wt.join(format!("many-{i:02}.txt")), "x\n").unwrap();
    }
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "many"]));
    run(git(&wt).args(["push", "--quiet", "origin", "HEAD:refs/heads/many"]));
    let many = collect(c.clone(), search(".", "many", "^many-")).await.unwrap();
    assert_eq!(many.len(), 45);
    let _ = &mut c;
}

/// One raw ustar member (any name or type, as a hostile client could send), and the archive's end.
fn tar_member(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000755\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_hooks_backed_up_and_restored() {
    use std::os::unix::fs::PermissionsExt;
    let (d, _, mut c) = setup().await;
    let hooks = d.repo_path("p.git").join("custom_hooks");
    std::fs::create_dir_all(hooks.join("pre-receive.d")).unwrap();
    std::fs::write(hooks.join("pre-receive"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(hooks.join("pre-receive"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(hooks.join("pre-receive.d/check"), "#!/bin/sh\necho hi\n").unwrap();
    let backup = |mut c: Client, rel: &str| {
        let repo = Some(d.repo(rel));
        async move {
            let mut s =
                c.backup_custom_hooks(BackupCustomHooksRequest { repository: repo }).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await.unwrap() {
                out.extend_from_slice(&m.data);
            }
            out
        }
    };
    let archive = backup(c.clone(), "p.git").await;
    let list = d.work_dir("list");
    std::fs::write(list.join("hooks.tar"), &archive).unwrap();
    let members = stdout(std::process::Command::new("tar").arg("-tf").arg(list.join("hooks.tar")));
    let mut members: Vec<&str> = members.lines().map(|m| m.trim_end_matches('/')).collect();
    members.sort();
    assert_eq!(
        members,
        ["custom_hooks", "custom_hooks/pre-receive", "custom_hooks/pre-receive.d", "custom_hooks/pre-receive.d/check"]
    );

    // Restored into another repository, split over messages: the same files and modes.
    run(git(&d.work_dir("src")).args(["init", "--quiet", "--bare"]).arg(d.repo_path("q.git")));
    let mut msgs = vec![RestoreCustomHooksRequest { repository: Some(d.repo("q.git")), data: vec![] }];
    msgs.extend(archive.chunks(700).map(|c| RestoreCustomHooksRequest { repository: None, data: c.to_vec() }));
    c.restore_custom_hooks(tokio_stream::iter(msgs)).await.unwrap();
    let restored = d.repo_path("q.git").join("custom_hooks");
    assert_eq!(std::fs::read(restored.join("pre-receive")).unwrap(), b"#!/bin/sh\nexit 0\n");
    assert_eq!(std::fs::metadata(restored.join("pre-receive")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read(restored.join("pre-receive.d/check")).unwrap(), b"#!/bin/sh\necho hi\n");
    // No hooks: nothing at all.
    run(git(&d.work_dir("src")).args(["init", "--quiet", "--bare"]).arg(d.repo_path("r.git")));
    assert!(backup(c.clone(), "r.git").await.is_empty());

    // Hostile archives: links, climbing or absolute members, setuid; nothing is written anywhere.
    let end = vec![0u8; 1024];
    let absolute = format!("/tmp/rgitaly-absolute-{}", std::process::id());
    for (what, archive) in [
        ("climbs", [tar_member("custom_hooks/../../escaped", b'0', "", b"x"), end.clone()].concat()),
        ("absolute", [tar_member(&absolute, b'0', "", b"x"), end.clone()].concat()),
        (
            "symlink",
            [
                tar_member("custom_hooks/link", b'2', "/etc", b""),
                tar_member("custom_hooks/link/passwd", b'0', "", b"x"),
                end.clone(),
            ]
            .concat(),
        ),
        ("hardlink", [tar_member("custom_hooks/hard", b'1', "/etc/passwd", b""), end.clone()].concat()),
        ("fifo", [tar_member("custom_hooks/fifo", b'6', "", b""), end.clone()].concat()),
    ] {
        let msgs = vec![RestoreCustomHooksRequest { repository: Some(d.repo("r.git")), data: archive }];
        let e = c.restore_custom_hooks(tokio_stream::iter(msgs)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(!d.repo_path("r.git").join("custom_hooks").exists(), "{what}");
    }
    assert!(!std::path::Path::new(&absolute).exists());
    // World-writable modes in an archive are not kept.
    let archive = [tar_member("custom_hooks/open", b'0', "", b"#!/bin/sh\n"), end.clone()].concat();
    let mut archive = archive;
    archive[100..108].copy_from_slice(b"0000777\0");
    archive[148..156].copy_from_slice(b"        ");
    let sum: u32 = archive[..512].iter().map(|b| *b as u32).sum();
    archive[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let msgs = vec![RestoreCustomHooksRequest { repository: Some(d.repo("r.git")), data: archive }];
    c.restore_custom_hooks(tokio_stream::iter(msgs)).await.unwrap();
    let mode = std::fs::metadata(d.repo_path("r.git").join("custom_hooks/open")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    // A custom_hooks that is a link is neither archived through nor written through.
    std::fs::remove_dir_all(d.repo_path("r.git").join("custom_hooks")).unwrap();
    std::os::unix::fs::symlink(d.repo_path("r.git").join("objects"), d.repo_path("r.git").join("custom_hooks"))
        .unwrap();
    let e = c.backup_custom_hooks(BackupCustomHooksRequest { repository: Some(d.repo("r.git")) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let archive = [tar_member("custom_hooks/x", b'0', "", b"x"), end.clone()].concat();
    let msgs = vec![RestoreCustomHooksRequest { repository: Some(d.repo("r.git")), data: archive }];
    let e = c.restore_custom_hooks(tokio_stream::iter(msgs)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(!d.repo_path("r.git").join("objects/x").exists());
    let e = c
        .restore_custom_hooks(tokio_stream::iter(vec![RestoreCustomHooksRequest { repository: None, data: vec![] }]))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "RestoreCustomHooks: empty Repository"));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_what_crashed_writers_left() {
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let age = |path: &std::path::Path, when: &str| {
        run(std::process::Command::new("touch").args(["-h", "-d", when]).arg(path));
    };
    let make = |rel: &str, content: &[u8], when: &str| {
        let p = bare.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        age(&p, when);
        p
    };
    // A worktree a killed worker left (as UserApplyPatch's), seven hours old, and a fresh one; one still
    // locked by its dead creator, and a directory git never registered.
    run(git(&bare).args(["worktree", "add", "--quiet", "--detach", "gitlab-worktree/am-old", "main"]));
    run(git(&bare).args(["worktree", "add", "--quiet", "--detach", "gitlab-worktree/am-locked", "main"]));
    run(git(&bare).args(["worktree", "lock", "--reason", "initializing", "gitlab-worktree/am-locked"]));
    age(&bare.join("gitlab-worktree/am-locked"), "7 hours ago");
    std::fs::create_dir_all(bare.join("gitlab-worktree/am-stray/sub")).unwrap();
    age(&bare.join("gitlab-worktree/am-stray"), "7 hours ago");
    run(git(&bare).args(["worktree", "add", "--quiet", "--detach", "gitlab-worktree/am-new", "main"]));
    age(&bare.join("gitlab-worktree/am-old"), "7 hours ago");
    let stale = [
        make("objects/ab/tmp_obj_x", b"x", "8 days ago"),
        make("config.lock", b"", "20 minutes ago"),
        make("refs/heads/broken", b"", "2 days ago"),
        make("refs/heads/main.lock", b"", "2 hours ago"),
        make("packed-refs.lock", b"", "2 hours ago"),
        make("packed-refs.new", b"", "20 minutes ago"),
    ];
    let kept = [
        make("objects/ab/tmp_obj_y", b"x", "1 day ago"),
        make("HEAD.lock", b"", "1 minute ago"),
        make("refs/heads/new-broken", b"", "1 hour ago"),
        make("refs/heads/side.lock", b"", "10 minutes ago"),
    ];
    std::fs::create_dir_all(bare.join("refs/heads/empty/deeper")).unwrap();
    age(&bare.join("refs/heads/empty/deeper"), "2 days ago");
    age(&bare.join("refs/heads/empty"), "2 days ago");
    std::fs::create_dir_all(bare.join("refs/heads/fresh-empty")).unwrap();

    c.cleanup(CleanupRequest { repository: Some(d.repo("p.git")) }).await.unwrap();
    for p in &stale {
        assert!(!p.exists(), "{} should be gone", p.display());
    }
    for p in &kept {
        assert!(p.exists(), "{} should be kept", p.display());
    }
    assert!(!bare.join("gitlab-worktree/am-old").exists());
    assert!(!bare.join("gitlab-worktree/am-locked").exists());
    assert!(!bare.join("gitlab-worktree/am-stray").exists());
    assert!(bare.join("gitlab-worktree/am-new").exists());
    let worktrees = stdout(git(&bare).args(["worktree", "list", "--porcelain"]));
    assert!(!worktrees.contains("am-old") && worktrees.contains("am-new"), "{worktrees}");
    assert!(!bare.join("refs/heads/empty").exists());
    assert!(bare.join("refs/heads/fresh-empty").exists() && bare.join("refs/tags").exists());
    // The fresh empty ref is a writer's, kept on purpose; without it the repository is whole.
    std::fs::remove_file(bare.join("refs/heads/new-broken")).unwrap();
    run(git(&bare).args(["fsck", "--no-progress"]));
    let e = c.cleanup(CleanupRequest { repository: Some(d.repo("missing.git")) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_stands_alone() {
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    // A fork borrowing p.git's objects through alternates, with one commit of its own.
    let fork = d.repo_path("fork.git");
    run(git(&d.work_dir("src")).args(["clone", "--quiet", "--bare", "--shared"]).arg(&bare).arg(&fork));
    let wt = d.work_dir("fork-wt");
    run(git(&wt).args(["clone", "--quiet"]).arg(&fork).arg("."));
    commit_file(&wt, "fork.txt", "only in the fork\n");
    run(git(&wt).args(["push", "--quiet", "origin", "HEAD:main"]));
    // Planted links must not pull other files in.
    std::os::unix::fs::symlink("/etc/passwd", fork.join("refs/heads/planted")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", fork.join("shallow")).unwrap();
    std::fs::write(fork.join("config.bak"), "secret\n").unwrap();

    let mut s = c.get_snapshot(GetSnapshotRequest { repository: Some(d.repo("fork.git")) }).await.unwrap().into_inner();
    let mut archive = Vec::new();
    let mut messages = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert!(m.data.len() <= 128 * 1024);
        archive.extend_from_slice(&m.data);
        messages += 1;
    }
    assert!(messages >= 1);
    let out = d.work_dir("snapshot");
    std::fs::write(out.join("s.tar"), &archive).unwrap();
    let listing = stdout(std::process::Command::new("tar").arg("-tf").arg(out.join("s.tar")));
    assert!(listing.lines().any(|l| l == "HEAD"));
    for absent in ["config", "config.bak", "refs/heads/planted", "shallow", "objects/info/alternates", "hooks"] {
        assert!(!listing.lines().any(|l| l.trim_end_matches('/') == absent), "{absent} in {listing}");
    }
    // Extracted (with a config of its own), it is a whole repository: no alternates needed.
    let restored = out.join("restored.git");
    std::fs::create_dir_all(&restored).unwrap();
    run(std::process::Command::new("tar").arg("-xf").arg(out.join("s.tar")).arg("-C").arg(&restored));
    std::fs::write(restored.join("config"), "[core]\n\trepositoryformatversion = 0\n\tbare = true\n").unwrap();
    run(git(&restored).args(["fsck", "--strict", "--no-progress"]));
    assert_eq!(stdout(git(&restored).args(["rev-parse", "main"])), stdout(git(&fork).args(["rev-parse", "main"])));
    assert_eq!(stdout(git(&restored).args(["show", "main:fork.txt"])), "only in the fork");
    let e = c.get_snapshot(GetSnapshotRequest { repository: Some(d.repo("missing.git")) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn midx_repack_keeps_a_valid_multi_pack_index() {
    let (d, wt, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    // Several packs: the seed's, and three pushes of their own.
    for i in 0..3 {
        commit_file(&wt, &format!("pack-{i}.txt"), &"data\n".repeat(1000 * (i + 1)));
        run(git(&wt).args(["push", "--quiet"]).arg(&bare).arg("HEAD:refs/heads/main"));
        run(git(&bare).args(["repack", "-q"]));
    }
    let packs = || {
        std::fs::read_dir(bare.join("objects/pack"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .count()
    };
    assert!(packs() > 2, "{}", packs());
    let req = || MidxRepackRequest { repository: Some(d.repo("p.git")) };
    c.midx_repack(req()).await.unwrap();
    assert!(bare.join("objects/pack/multi-pack-index").exists());
    assert_eq!(stdout(git(&bare).args(["config", "core.multiPackIndex"])), "true");
    run(git(&bare).args(["multi-pack-index", "verify"]));
    // A corrupt index is rewritten, not left behind.
    std::fs::write(bare.join("objects/pack/multi-pack-index"), b"garbage").unwrap();
    c.midx_repack(req()).await.unwrap();
    run(git(&bare).args(["multi-pack-index", "verify"]));
    run(git(&bare).args(["fsck", "--no-progress"]));
    let e = c.midx_repack(MidxRepackRequest { repository: Some(d.repo("missing.git")) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn raw_changes_between_revisions() {
    use rgitaly::proto::gitaly::get_raw_changes_response::raw_change::Operation;
    let (d, wt, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let before = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    std::fs::write(wt.join("added.txt"), "new file\n").unwrap();
    std::fs::write(wt.join("file1.txt"), "changed\n").unwrap();
    std::fs::remove_file(wt.join("file2.txt")).unwrap();
    std::fs::rename(wt.join("dir/nested.txt"), wt.join("dir/moved.txt")).unwrap();
    std::fs::write(
        wt.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.txt")),
        "latin-1 name\n",
    )
    .unwrap();
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["update-index", "--add", "--cacheinfo", &format!("160000,{before},sub")]));
    run(git(&wt).args(["commit", "--quiet", "-m", "changes"]));
    run(git(&wt).args(["push", "--quiet", "--force"]).arg(&bare).arg("HEAD:refs/heads/main"));
    let after = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let raw = |from: &str, to: &str| GetRawChangesRequest {
        repository: Some(d.repo("p.git")),
        from_revision: from.into(),
        to_revision: to.into(),
    };
    let mut s = c.get_raw_changes(raw(&before, &after)).await.unwrap().into_inner();
    let mut changes = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        changes.extend(m.raw_changes);
    }
    let find = |path: &[u8]| {
        changes
            .iter()
            .find(|c| c.new_path_bytes == path || (c.new_path_bytes.is_empty() && c.old_path_bytes == path))
            .unwrap_or_else(|| panic!("{:?} in {changes:?}", String::from_utf8_lossy(path)))
    };
    let size = |rev: &str| stdout(git(&bare).args(["cat-file", "-s", rev])).parse::<i64>().unwrap();
    let added = find(b"added.txt");
    assert_eq!(
        (added.operation, added.old_path_bytes.is_empty(), added.new_mode),
        (Operation::Added as i32, true, 0o100644)
    );
    assert_eq!(
        (added.blob_id.clone(), added.size),
        (stdout(git(&bare).args(["rev-parse", &format!("{after}:added.txt")])), size(&format!("{after}:added.txt")))
    );
    assert_eq!(find(b"file1.txt").operation, Operation::Modified as i32);
    let deleted = find(b"file2.txt");
    assert_eq!((deleted.operation, deleted.new_path.as_str(), deleted.new_mode), (Operation::Deleted as i32, "", 0));
    assert_eq!(
        deleted.blob_id,
        stdout(git(&bare).args(["rev-parse", &format!("{before}:file2.txt")])),
        "a deletion names the old blob"
    );
    let moved = find(b"dir/moved.txt");
    assert_eq!(
        (moved.operation, moved.old_path.as_str(), moved.raw_operation.as_str()),
        (Operation::Renamed as i32, "dir/nested.txt", "R100")
    );
    let latin = find(b"caf\xe9.txt");
    assert_eq!(latin.new_path, "ENCODING ERROR gitaly#1470");
    let sub = find(b"sub");
    assert_eq!((sub.new_mode, sub.blob_id.as_str(), sub.size), (0o160000, "", 0), "a submodule has no blob");
    assert_eq!(changes.len(), 6);

    // From nothing: everything added. To nothing: no changes.
    let zero = "0000000000000000000000000000000000000000";
    let mut s = c.get_raw_changes(raw(zero, &before)).await.unwrap().into_inner();
    let mut all = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        all.extend(m.raw_changes);
    }
    assert!(all.iter().all(|c| c.operation == Operation::Added as i32) && all.len() == 4, "{all:?}");
    let mut s = c.get_raw_changes(raw(&before, zero)).await.unwrap().into_inner();
    assert!(s.message().await.unwrap().is_none());
    for (from, to, msg) in [
        ("nope", after.as_str(), "invalid 'from' revision: \"nope\""),
        (before.as_str(), "--all", "invalid 'to' revision: \"--all\""),
        ("", after.as_str(), "invalid 'from' revision: \"\""),
    ] {
        let e = c.get_raw_changes(raw(from, to)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_repository_does_what_the_state_calls_for() {
    let (d, _, mut c) = setup().await;
    let bare = d.repo_path("p.git");
    let pack_files = |repo: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(repo.join("objects/pack"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let optimize = |rel: &str| OptimizeRepositoryRequest { repository: Some(d.repo(rel)) };
    std::fs::write(bare.join("config.lock"), "").unwrap();
    run(std::process::Command::new("touch").args(["-d", "1 hour ago"]).arg(bare.join("config.lock")));
    c.optimize_repository(optimize("p.git")).await.unwrap();
    let packs = pack_files(&bare);
    assert!(packs.iter().any(|p| p.ends_with(".bitmap")), "{packs:?}");
    assert!(bare.join("objects/info/commit-graph").exists() || bare.join("objects/info/commit-graphs").exists());
    assert!(!bare.join("config.lock").exists(), "housekeeping ran");
    // Nothing to do: nothing is rewritten.
    c.optimize_repository(optimize("p.git")).await.unwrap();
    assert_eq!(pack_files(&bare), packs);
    // A repository borrowing objects gets no bitmap.
    let fork = d.repo_path("fork.git");
    run(git(&d.work_dir("src")).args(["clone", "--quiet", "--bare", "--shared"]).arg(&bare).arg(&fork));
    c.optimize_repository(optimize("fork.git")).await.unwrap();
    assert!(!pack_files(&fork).iter().any(|p| p.ends_with(".bitmap")));
    run(git(&fork).args(["fsck", "--no-progress"]));
    let e = c.optimize_repository(optimize("missing.git")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// Serves `body` with `status` to every GET on a thread of its own; records each request's head.
fn serve_once(status: &'static str, body: Vec<u8>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/snapshot.tar", listener.local_addr().unwrap().port());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            record.lock().unwrap().push(head);
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLocation: http://127.0.0.1:1/elsewhere\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_from_a_downloaded_snapshot() {
    let (d, _, mut c) = setup().await;
    let tar = collect_data!(c
        .get_snapshot(GetSnapshotRequest { repository: Some(d.repo("p.git")) })
        .await
        .unwrap()
        .into_inner());
    let (url, seen) = serve_once("200 OK", tar);
    let req = |path: &str, url: &str| CreateRepositoryFromSnapshotRequest {
        repository: Some(d.repo(path)),
        http_url: url.into(),
        http_auth: "Bearer snap".into(),
    };
    c.create_repository_from_snapshot(req("copy.git", &url)).await.unwrap();
    let refs = |p: &str| stdout(git(&d.repo_path(p)).args(["for-each-ref", "--format=%(objectname) %(refname)"]));
    assert_eq!(refs("copy.git"), refs("p.git"));
    run(git(&d.repo_path("copy.git")).args(["fsck", "--no-progress"]));
    assert!(seen.lock().unwrap()[0].to_ascii_lowercase().contains("authorization: bearer snap"));
    let e = c.create_repository_from_snapshot(req("copy.git", &url)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "destination directory exists"));

    // Redirects are not followed, errors and garbage leave nothing behind; a tar member leaving the
    // repository is refused.
    let (redirect, _) = serve_once("302 Found", Vec::new());
    let e = c.create_repository_from_snapshot(req("r.git", &redirect)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Internal, "HTTP server: 302 Found"));
    let (garbage, _) = serve_once("200 OK", vec![7u8; 5000]);
    assert_eq!(c.create_repository_from_snapshot(req("g.git", &garbage)).await.unwrap_err().code(), Code::Internal);
    let evil = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_link_name("/tmp").unwrap();
        h.set_size(0);
        b.append_data(&mut h, "refs/link", std::io::empty()).unwrap();
        b.into_inner().unwrap()
    };
    let (evil, _) = serve_once("200 OK", evil);
    assert_eq!(c.create_repository_from_snapshot(req("e.git", &evil)).await.unwrap_err().code(), Code::Internal);
    // A member climbing out with `../` (written by hand: the tar crate refuses to build one).
    let climbing = {
        let mut h = tar::Header::new_old();
        let name = b"../../../../outside/planted";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(5);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut b = h.as_bytes().to_vec();
        b.extend_from_slice(b"evil\n");
        b.resize(512 * 2, 0);
        b.extend_from_slice(&[0u8; 1024]);
        b
    };
    let (climbing, _) = serve_once("200 OK", climbing);
    assert_eq!(c.create_repository_from_snapshot(req("e.git", &climbing)).await.unwrap_err().code(), Code::Internal);
    // Files a snapshot never holds (alternates to borrow another repository, a config that runs programs).
    for member in ["objects/info/alternates", "config", "hooks/pre-receive", "info/attributes"] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        b.append_data(&mut h, member, &b"evil"[..]).unwrap();
        let (url, _) = serve_once("200 OK", b.into_inner().unwrap());
        let e = c.create_repository_from_snapshot(req("e.git", &url)).await.unwrap_err();
        assert!(e.message().contains("not part of a snapshot"), "{member}: {e:?}");
    }
    for url in ["file:///etc/passwd", "ftp://h/x", "not a url"] {
        assert_eq!(
            c.create_repository_from_snapshot(req("u.git", url)).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    for p in ["r.git", "g.git", "e.git", "u.git"] {
        assert!(!d.repo_path(p).exists(), "{p}");
    }
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_and_file_contents_are_found() {
    let (d, wt, mut c) = setup().await;
    let find = |c: &mut Client| {
        let mut c = c.clone();
        let repo = d.repo("p.git");
        async move {
            c.find_license(FindLicenseRequest { repository: Some(repo) }).await.unwrap().into_inner().license_short_name
        }
    };
    assert_eq!(find(&mut c).await, "");
    let push = |wt: &std::path::Path| {
        run(git(wt).args(["push", "--quiet", "--force"]).arg(d.repo_path("p.git")).arg("HEAD:main"))
    };
    let apache = spdx::text::LICENSE_TEXTS.iter().find(|(id, _)| *id == "Apache-2.0").unwrap().1;
    commit_file(&wt, "LICENSE", apache);
    push(&wt);
    assert_eq!(find(&mut c).await, "apache-2.0");
    std::fs::remove_file(wt.join("LICENSE")).unwrap();
    run(git(&wt).args(["rm", "--quiet", "--cached", "LICENSE"]));
    commit_file(&wt, "COPYING.md", "You may do nothing with this.\n");
    push(&wt);
    assert_eq!(find(&mut c).await, "other");

    // SearchFilesByContent: blocks with two lines of context, case-insensitive, ended by end_of_match.
    let text: String =
        (1..=10).map(|i| format!("line {i}\n")).collect::<String>() + "Needle here\n" + "after 1\nafter 2\nafter 3\n";
    commit_file(&wt, "hay.txt", &text);
    push(&wt);
    let search = |query: &str, r#ref: &str| SearchFilesByContentRequest {
        repository: Some(d.repo("p.git")),
        query: query.into(),
        r#ref: r#ref.as_bytes().to_vec(),
        chunked_response: true,
    };
    let mut s = c.search_files_by_content(search("needle", "main")).await.unwrap().into_inner();
    let (mut data, mut ends) = (Vec::new(), 0);
    while let Some(m) = s.message().await.unwrap() {
        data.extend_from_slice(&m.match_data);
        ends += m.end_of_match as usize;
    }
    assert_eq!(ends, 1);
    let data = String::from_utf8(data).unwrap();
    assert_eq!(data, "main:hay.txt\u{0}9\u{0}line 9\nmain:hay.txt\u{0}10\u{0}line 10\nmain:hay.txt\u{0}11\u{0}Needle here\nmain:hay.txt\u{0}12\u{0}after 1\nmain:hay.txt\u{0}13\u{0}after 2\n");
    // A query that looks like an option is a pattern; a ref that does is refused.
    let mut s = c.search_files_by_content(search("--no-index", "main")).await.unwrap().into_inner();
    assert!(s.message().await.unwrap().is_none());
    assert_eq!(c.search_files_by_content(search("x", "--all")).await.unwrap_err().code(), Code::InvalidArgument);
    // An unknown revision is an error, not an empty answer.
    let mut s = c.search_files_by_content(search("needle", "no-such-branch")).await.unwrap().into_inner();
    let e = loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("an unknown revision answered as if nothing matched"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert_eq!(c.search_files_by_content(search("", "main")).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bfg_object_map_removes_internal_refs_to_old_commits() {
    use rgitaly::proto::gitaly::cleanup_service_client::CleanupServiceClient;
    let (d, _, _) = setup().await;
    let repo = d.repo_path("p.git");
    let old = stdout(git(&repo).args(["rev-parse", "main~1"]));
    let kept = stdout(git(&repo).args(["rev-parse", "main"]));
    let blob = stdout(git(&repo).args(["rev-parse", "main:file1.txt"]));
    for r in ["refs/keep-around/a", "refs/merge-requests/1/head", "refs/heads/stays"] {
        run(git(&repo).args(["update-ref", r, &old]));
    }
    run(git(&repo).args(["update-ref", "refs/pipelines/2", &kept]));
    let mut c = CleanupServiceClient::new(d.channel().await);
    let map = format!(
        "old                                      new\n{old} {kept}\n{blob} {blob}\n{} {blob}\n",
        "b".repeat(40)
    );
    // Split anywhere, even inside an id.
    let (a, b) = map.split_at(50);
    let reqs = vec![
        ApplyBfgObjectMapStreamRequest { repository: Some(d.repo("p.git")), object_map: a.as_bytes().to_vec() },
        ApplyBfgObjectMapStreamRequest { repository: None, object_map: b.as_bytes().to_vec() },
    ];
    let mut s = c.apply_bfg_object_map_stream(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let mut entries = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        entries.extend(m.entries);
    }
    let got: Vec<(i32, String, String)> = entries.into_iter().map(|e| (e.r#type, e.old_oid, e.new_oid)).collect();
    assert_eq!(
        got,
        vec![
            (ObjectType::Commit as i32, old.clone(), kept.clone()),
            (ObjectType::Blob as i32, "b".repeat(40), blob.clone())
        ]
    );
    let left = stdout(git(&repo).args(["for-each-ref", "--format=%(refname)"]));
    assert!(!left.contains("keep-around") && !left.contains("merge-requests"), "{left}");
    assert!(left.contains("refs/heads/stays") && left.contains("refs/pipelines/2"), "{left}");

    // An invalid map deletes nothing.
    run(git(&repo).args(["update-ref", "refs/keep-around/b", &old]));
    let bad = vec![ApplyBfgObjectMapStreamRequest {
        repository: Some(d.repo("p.git")),
        object_map: format!("{old} {kept}\nnot a line\n").into_bytes(),
    }];
    let mut s = c.apply_bfg_object_map_stream(tokio_stream::iter(bad)).await.unwrap().into_inner();
    let mut err = None;
    loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        err.map(|e| (e.code(), e.message().to_string())),
        Some((Code::InvalidArgument, "object map invalid at line 1".to_string()))
    );
    assert!(stdout(git(&repo).args(["for-each-ref", "refs/keep-around/b"])).contains(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_maintenance_optimizes_the_configured_storages_only() {
    let other = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_env(
        &format!(
            "[daily_maintenance]\nstart_hour = 3\nstart_minute = 0\nduration = \"60s\"\nstorages = [\"default\"]\n[[storage]]\nname = \"other\"\npath = {:?}\n",
            other.path()
        ),
        &[("RGITALY_DAILY_MAINTENANCE_START_IN", "2")],
    );
    let wt = sample_worktree(&d.work_dir("src"));
    let paths: Vec<_> = ["a.git", "group/b.git", "group/sub/c.git"].iter().map(|p| d.seed_repo(p, &wt)).collect();
    let untouched = other.path().join("x.git");
    run(git(other.path()).args(["clone", "--bare", "--quiet"]).arg(&wt).arg(&untouched));
    let bitmap = |p: &std::path::Path| {
        std::fs::read_dir(p.join("objects/pack"))
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".bitmap")))
            .unwrap_or(false)
    };
    assert!(paths.iter().all(|p| !bitmap(p)));
    let all_done = eventually(30, || {
        let paths = paths.clone();
        async move { paths.iter().all(|p| bitmap(p) && p.join("objects/info/commit-graph").exists()) }
    })
    .await;
    assert!(all_done, "every repository of the storage optimized");
    for p in &paths {
        run(git(p).args(["fsck", "--no-progress"]));
    }
    assert!(!bitmap(&untouched), "a storage not listed is left alone");
}

#[test]
fn daily_maintenance_config_is_checked_like_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    for (section, error) in [
        (
            "storages = [\"nope\"]",
            "daily_maintenance.storages: daily maintenance specified storage \"nope\" does not exist in configuration",
        ),
        ("start_hour = 24", "daily_maintenance.start_hour: daily maintenance specified hour '24' outside range (0-23)"),
        (
            "start_minute = 60",
            "daily_maintenance.start_minute: daily maintenance specified minute '60' outside range (0-59)",
        ),
        (
            "duration = \"25h\"",
            "daily_maintenance.duration: daily maintenance specified duration must be less than 24 hours",
        ),
    ] {
        std::fs::write(
            &config,
            format!("socket_path = \"/tmp/x.sock\"\n[[storage]]\nname = \"default\"\npath = {:?}\n[daily_maintenance]\n{section}\n", dir.path()),
        )
        .unwrap();
        let e = rgitaly::config::Config::load(&config).unwrap_err();
        assert_eq!(e.message, error);
    }
}

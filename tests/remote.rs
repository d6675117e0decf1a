//! Repositories across servers and remotes: CreateFork, FetchSourceBranch, ReplicateRepository and
//! FetchInternalRemote against a second rgitaly with its own storage and token (over its Unix socket, TCP
//! and TLS, addressed by the `gitaly-servers` metadata as GitLab sends it); FetchRemote,
//! CreateRepositoryFromURL, the RemoteService RPCs and UpdateRemoteMirror against `git daemon` and an HTTP
//! stand-in; and every URL that would reach the host's files refused, credentials never shown.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::gitlab::FakeGitlab;
use common::*;
use rgitaly::gitaly_servers::{self, ServerInfo};
use rgitaly::proto::gitaly::remote_service_client::RemoteServiceClient;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::Code;

const OTHER: &str = "other";
const TOKEN: &str = "the other server's token";

/// A second server: its own storage `other` (beside its `default`) and its own token.
struct Other {
    daemon: Daemon,
    storage: PathBuf,
    tcp: u16,
    tls: u16,
    ca: PathBuf,
}

fn other_server() -> Other {
    let certs = tempfile::tempdir().unwrap().keep();
    let (ca, cert, key) = certificates(&certs);
    let storage = certs.join("other-storage");
    std::fs::create_dir_all(&storage).unwrap();
    let (tcp, tls) = (free_port(), free_port());
    let daemon = Daemon::start_with(&format!(
        "listen_addr = \"127.0.0.1:{tcp}\"\ntls_listen_addr = \"127.0.0.1:{tls}\"\n[auth]\ntoken = {TOKEN:?}\n[tls]\ncertificate_path = {cert:?}\nkey_path = {key:?}\n[[storage]]\nname = \"{OTHER}\"\npath = {storage:?}\n"
    ));
    let wait = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err() && wait.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Other { daemon, storage, tcp, tls, ca }
}

impl Other {
    fn repo(&self, relative: &str) -> Repository {
        Repository { storage_name: OTHER.into(), relative_path: relative.into(), ..Default::default() }
    }

    fn seed(&self, relative: &str, source: &Path) -> PathBuf {
        let path = self.storage.join(relative);
        run(git(&self.storage).args(["clone", "--bare", "--quiet"]).arg(source).arg(&path));
        path
    }

    /// The metadata GitLab sends naming this server at `address`, with `token`.
    fn servers(&self, address: &str, token: &str) -> String {
        gitaly_servers::encode(OTHER, &ServerInfo { address: address.into(), token: token.into() })
    }
}

fn with_servers<T>(msg: T, servers: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("gitaly-servers", servers.parse().unwrap());
    r
}

fn refs(repo: &Path) -> String {
    stdout(git(repo).args(["for-each-ref", "--format=%(objectname) %(refname)"]))
}

fn head(repo: &Path) -> String {
    stdout(git(repo).args(["symbolic-ref", "HEAD"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_branches_and_replicas_come_from_the_other_server_on_every_transport() {
    let other = other_server();
    let wt = sample_worktree(&other.daemon.work_dir("src"));
    let source = other.seed("group/src.git", &wt);
    run(git(&source).args(["symbolic-ref", "HEAD", "refs/heads/side"]));
    std::fs::create_dir_all(source.join("info")).unwrap();
    std::fs::write(source.join("info/attributes"), "*.bin binary\n").unwrap();

    // The daemon under test trusts the other server's certificate authority (for rgitaly-ssh, too).
    let d = Daemon::start_with_env("", &[("SSL_CERT_FILE", other.ca.to_str().unwrap())]);
    let mut repo = RepositoryServiceClient::new(d.channel().await);
    let addresses =
        [other.daemon.address(), format!("tcp://127.0.0.1:{}", other.tcp), format!("tls://localhost:{}", other.tls)];
    for (i, address) in addresses.iter().enumerate() {
        let servers = other.servers(address, TOKEN);
        let fork = d.repo(&format!("forks/{i}.git"));
        let req =
            CreateForkRequest { repository: Some(fork.clone()), source_repository: Some(other.repo("group/src.git")) };
        repo.create_fork(with_servers(req, &servers)).await.unwrap_or_else(|e| panic!("fork over {address}: {e:?}"));
        let fork_path = d.repo_path(&format!("forks/{i}.git"));
        assert_eq!(refs(&fork_path), refs(&source), "fork over {address}");
        assert_eq!(head(&fork_path), "refs/heads/side");
        let config = std::fs::read_to_string(fork_path.join("config")).unwrap();
        assert!(!config.contains("origin") && !config.contains("internal.git"), "{config}");
    }
    let servers = other.servers(&other.daemon.address(), TOKEN);

    // A fork onto a path that is taken is refused; nothing is written there.
    let taken = d.repo_path("forks/taken.git");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("keep"), "keep").unwrap();
    let req = CreateForkRequest {
        repository: Some(d.repo("forks/taken.git")),
        source_repository: Some(other.repo("group/src.git")),
    };
    let e = repo.create_fork(with_servers(req, &servers)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "CreateFork: destination directory is not empty"));
    assert_eq!(std::fs::read_to_string(taken.join("keep")).unwrap(), "keep");

    // Without metadata naming the source's storage, or with the wrong token, no fork.
    let req = CreateForkRequest {
        repository: Some(d.repo("forks/x.git")),
        source_repository: Some(other.repo("group/src.git")),
    };
    let e = repo.create_fork(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    let e = repo
        .create_fork(with_servers(
            req.clone(),
            &gitaly_servers::encode("elsewhere", &ServerInfo { address: "unix:/x".into(), token: String::new() }),
        ))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "commandEnv: no storage info for other"));
    let e = repo.create_fork(with_servers(req, &other.servers(&other.daemon.address(), "wrong"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(!e.message().contains("wrong") && !e.message().contains(TOKEN), "{e:?}");
    assert!(!d.repo_path("forks/x.git").exists());

    // FetchSourceBranch: a branch only the other server has, fetched by id into a merge request ref.
    let feature = {
        let wt2 = other.daemon.work_dir("feature");
        run(git(&wt2).args(["clone", "--quiet"]).arg(&source).arg("c"));
        let c = wt2.join("c");
        run(git(&c).args(["checkout", "--quiet", "-b", "feature"]));
        let oid = commit_file(&c, "feature.txt", "new\n");
        run(git(&c).args(["push", "--quiet", "origin", "feature"]));
        oid
    };
    let target = d.repo_path("forks/0.git");
    let fetch = |branch: &str, target_ref: &str| FetchSourceBranchRequest {
        repository: Some(d.repo("forks/0.git")),
        source_repository: Some(other.repo("group/src.git")),
        source_branch: branch.into(),
        target_ref: target_ref.into(),
    };
    let r =
        repo.fetch_source_branch(with_servers(fetch("feature", "refs/merge-requests/1/head"), &servers)).await.unwrap();
    assert!(r.into_inner().result);
    assert_eq!(stdout(git(&target).args(["rev-parse", "refs/merge-requests/1/head"])), feature);
    assert!(stdout(git(&target).args(["branch", "--list", "feature"])).is_empty(), "only the target ref is written");
    let r =
        repo.fetch_source_branch(with_servers(fetch("nope", "refs/merge-requests/2/head"), &servers)).await.unwrap();
    assert!(!r.into_inner().result);
    for (branch, target_ref) in [("-x", "refs/mr/x"), ("feature", "--all"), ("a b", "refs/mr/x"), ("feature", "HEAD")] {
        let e = repo.fetch_source_branch(with_servers(fetch(branch, target_ref), &servers)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{branch} {target_ref}");
    }

    // FetchInternalRemote: every ref mirrored, pruned, and the default branch taken over.
    run(git(&source).args(["branch", "-D", "feature"]));
    let mut remote = RemoteServiceClient::new(d.channel().await);
    let req = FetchInternalRemoteRequest {
        repository: Some(d.repo("forks/1.git")),
        remote_repository: Some(other.repo("group/src.git")),
    };
    run(git(&d.repo_path("forks/1.git")).args(["symbolic-ref", "HEAD", "refs/heads/main"]));
    run(git(&d.repo_path("forks/1.git")).args(["branch", "stale", "main"]));
    assert!(remote.fetch_internal_remote(with_servers(req, &servers)).await.unwrap().into_inner().result);
    assert_eq!(refs(&d.repo_path("forks/1.git")), refs(&source));
    assert_eq!(head(&d.repo_path("forks/1.git")), "refs/heads/side");

    // ReplicateRepository: a new replica from the snapshot, then kept up to date by fetching.
    let replicate = ReplicateRepositoryRequest {
        repository: Some(d.repo("group/src.git")),
        source: Some(other.repo("group/src.git")),
    };
    repo.replicate_repository(with_servers(replicate.clone(), &servers)).await.unwrap();
    let replica = d.repo_path("group/src.git");
    assert_eq!(refs(&replica), refs(&source));
    assert_eq!(head(&replica), "refs/heads/side");
    assert_eq!(std::fs::read_to_string(replica.join("info/attributes")).unwrap(), "*.bin binary\n");
    run(git(&replica).args(["fsck", "--no-progress"]));
    run(git(&source).args(["tag", "v2", "main"]));
    repo.replicate_repository(with_servers(replicate.clone(), &servers)).await.unwrap();
    assert_eq!(refs(&replica), refs(&source));
    // A broken replica (a repository's config and objects, no HEAD) is replaced, once the new one is whole.
    std::fs::remove_dir_all(&replica).unwrap();
    std::fs::create_dir_all(replica.join("objects")).unwrap();
    std::fs::write(replica.join("config"), "junk").unwrap();
    repo.replicate_repository(with_servers(replicate.clone(), &servers)).await.unwrap();
    assert_eq!(refs(&replica), refs(&source));
    assert_ne!(std::fs::read_to_string(replica.join("config")).unwrap(), "junk");
    // A namespace holding repositories is never taken for a broken replica.
    let group_repo = d.repo_path("ns/inner.git");
    run(git(&d.storage).args(["init", "--bare", "--quiet"]).arg(&group_repo));
    run(git(&other.storage).args(["init", "--bare", "--quiet", "ns"]));
    let namespace = ReplicateRepositoryRequest { repository: Some(d.repo("ns")), source: Some(other.repo("ns")) };
    let e = repo.replicate_repository(with_servers(namespace, &servers)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(group_repo.join("HEAD").exists(), "the namespace's repository is still there");
    let missing =
        ReplicateRepositoryRequest { repository: Some(d.repo("nope.git")), source: Some(other.repo("nope.git")) };
    let e = repo.replicate_repository(with_servers(missing, &servers)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(!d.repo_path("nope.git").exists());
    let same = ReplicateRepositoryRequest { repository: Some(d.repo("a.git")), source: Some(d.repo("a.git")) };
    let e = repo.replicate_repository(same).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "repository and source have the same storage"));
    d.assert_outside_untouched();
}

/// `git daemon` serving a directory over git:// on a free port, receive-pack enabled; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && wait.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        GitDaemon { child, port }
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_fetch_clone_and_mirror_over_the_network() {
    let d = Daemon::start();
    let served = d.work_dir("served");
    let wt = sample_worktree(&d.work_dir("src"));
    run(git(&served).args(["clone", "--bare", "--quiet"]).arg(&wt).arg("up.git"));
    run(git(&served).args(["init", "--bare", "--quiet", "mirror.git"]));
    let upstream = served.join("up.git");
    let gd = GitDaemon::start(&served);
    let mut repo = RepositoryServiceClient::new(d.channel().await);
    let mut remote = RemoteServiceClient::new(d.channel().await);

    // CreateRepositoryFromURL, then FetchRemote with the URL in the call, tags reported.
    let req = CreateRepositoryFromUrlRequest { repository: Some(d.repo("imported.git")), url: gd.url("up.git") };
    repo.create_repository_from_url(req.clone()).await.unwrap();
    let imported = d.repo_path("imported.git");
    assert_eq!(refs(&imported), refs(&upstream));
    assert!(!std::fs::read_to_string(imported.join("config")).unwrap().contains("origin"));
    let e = repo.create_repository_from_url(req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "CreateRepositoryFromURL: dest dir exists"));

    let params = |url: String| Remote { url, ..Default::default() };
    let fetch = |url: String| FetchRemoteRequest {
        repository: Some(d.repo("imported.git")),
        remote_params: Some(params(url)),
        check_tags_changed: true,
        ..Default::default()
    };
    let r = repo.fetch_remote(fetch(gd.url("up.git"))).await.unwrap().into_inner();
    assert!(!r.tags_changed, "nothing new");
    run(git(&wt).args(["tag", "v2"]));
    let new = commit_file(&wt, "more.txt", "more\n");
    run(git(&wt).args(["push", "--quiet", "--tags"]).arg(&upstream).arg("main"));
    let r = repo.fetch_remote(fetch(gd.url("up.git"))).await.unwrap().into_inner();
    assert!(r.tags_changed);
    assert_eq!(stdout(git(&imported).args(["rev-parse", "main"])), new);
    run(git(&upstream).args(["branch", "-D", "side"]));
    repo.fetch_remote(fetch(gd.url("up.git"))).await.unwrap();
    assert_eq!(refs(&imported), refs(&upstream), "pruned");

    // Named remotes: added, used, asked about, removed.
    let add = AddRemoteRequest {
        repository: Some(d.repo("imported.git")),
        name: "mirror".into(),
        url: gd.url("mirror.git"),
        mirror_refmaps: vec![],
    };
    remote.add_remote(add).await.unwrap();
    let root = FindRemoteRootRefRequest {
        repository: Some(d.repo("imported.git")),
        remote_url: gd.url("up.git"),
        ..Default::default()
    };
    assert_eq!(remote.find_remote_root_ref(root).await.unwrap().into_inner().r#ref, "main");
    let exists = |url: String| FindRemoteRepositoryRequest { remote: url, storage_name: STORAGE.into() };
    assert!(remote.find_remote_repository(exists(gd.url("up.git"))).await.unwrap().into_inner().exists);
    assert!(!remote.find_remote_repository(exists(gd.url("nope.git"))).await.unwrap().into_inner().exists);

    // UpdateRemoteMirror: branches matching, every tag; a diverged branch kept and reported.
    let mirror = served.join("mirror.git");
    let mirror_req = |keep: bool, only: Vec<Vec<u8>>| UpdateRemoteMirrorRequest {
        repository: Some(d.repo("imported.git")),
        ref_name: "mirror".into(),
        only_branches_matching: only,
        keep_divergent_refs: keep,
        ..Default::default()
    };
    let r =
        remote.update_remote_mirror(tokio_stream::iter(vec![mirror_req(false, vec![b"ma*".to_vec()])])).await.unwrap();
    assert!(r.into_inner().divergent_refs.is_empty());
    assert_eq!(stdout(git(&mirror).args(["for-each-ref", "--format=%(refname)", "refs/heads"])), "refs/heads/main");
    assert_eq!(stdout(git(&mirror).args(["tag"])), "v1.0\nv2");
    let diverged = stdout(git(&mirror).args(["commit-tree", "-m", "theirs", "main^{tree}"]));
    run(git(&mirror).args(["update-ref", "refs/heads/main", &diverged]));
    let r = remote.update_remote_mirror(tokio_stream::iter(vec![mirror_req(true, vec![])])).await.unwrap();
    assert_eq!(r.into_inner().divergent_refs, vec![b"refs/heads/main".to_vec()]);
    assert_eq!(stdout(git(&mirror).args(["rev-parse", "main"])), diverged, "kept");
    remote.update_remote_mirror(tokio_stream::iter(vec![mirror_req(false, vec![])])).await.unwrap();
    assert_eq!(stdout(git(&mirror).args(["rev-parse", "main"])), new, "overwritten");

    let rm = |name: &str| RemoveRemoteRequest { repository: Some(d.repo("imported.git")), name: name.into() };
    assert!(remote.remove_remote(rm("mirror")).await.unwrap().into_inner().result);
    assert!(!remote.remove_remote(rm("mirror")).await.unwrap().into_inner().result);
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_that_reach_the_host_are_refused_and_credentials_never_shown() {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    // A repository of the host, outside the storage, that no URL may reach.
    let host = d.work_dir("host");
    let host_repo = host.join("host.git");
    run(git(&host).args(["clone", "--bare", "--quiet"]).arg(&wt).arg(&host_repo));
    let before = snapshot(&host);
    let mut repo = RepositoryServiceClient::new(d.channel().await);
    let mut remote = RemoteServiceClient::new(d.channel().await);
    let hostile = [
        format!("file://{}", host_repo.display()),
        host_repo.display().to_string(),
        "../work-host/host.git".to_string(),
        format!("ext::sh -c cat% {}", host_repo.join("config").display()),
        "fd::0".to_string(),
        "-u/bin/true".to_string(),
        "https://example.com/x\nfoo".to_string(),
    ];
    for url in &hostile {
        let req = CreateRepositoryFromUrlRequest { repository: Some(d.repo("new.git")), url: url.clone() };
        let e = repo.create_repository_from_url(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{url}: {e:?}");
        assert!(!d.repo_path("new.git").exists());
        let req = FetchRemoteRequest {
            repository: Some(d.repo("p.git")),
            remote_params: Some(Remote { url: url.clone(), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(repo.fetch_remote(req).await.unwrap_err().code(), Code::InvalidArgument, "{url}");
        let add = AddRemoteRequest {
            repository: Some(d.repo("p.git")),
            name: "r".into(),
            url: url.clone(),
            mirror_refmaps: vec![],
        };
        assert_eq!(remote.add_remote(add).await.unwrap_err().code(), Code::InvalidArgument, "{url}");
        let find = FindRemoteRepositoryRequest { remote: url.clone(), storage_name: STORAGE.into() };
        assert_eq!(remote.find_remote_repository(find).await.unwrap_err().code(), Code::InvalidArgument, "{url}");
    }
    // A remote planted in the repository's config by other means is still held to the network
    // transports: git's own policy refuses it.
    run(git(&d.repo_path("p.git"))
        .args(["config", "remote.planted.url"])
        .arg(format!("file://{}", host_repo.display())));
    run(git(&d.repo_path("p.git")).args(["config", "remote.planted.fetch", "+refs/heads/*:refs/planted/*"]));
    let req = FetchRemoteRequest { repository: Some(d.repo("p.git")), remote: "planted".into(), ..Default::default() };
    let e = repo.fetch_remote(req).await.unwrap_err();
    assert!(e.message().contains("transport 'file' not allowed"), "{e:?}");
    assert!(stdout(git(&d.repo_path("p.git")).args(["for-each-ref", "refs/planted"])).is_empty());
    assert_eq!(snapshot(&host), before);

    // Target paths that leave the storage or name the server's own files: refused, nothing written.
    std::os::unix::fs::symlink(&host, d.repo_path("link")).unwrap();
    let gd = GitDaemon::start(&host);
    let servers = gitaly_servers::encode(STORAGE, &ServerInfo { address: d.address(), token: String::new() });
    for target in ["../escape.git", "/tmp/abs.git", "a\0b.git", "+gitaly/tmp/x.git", "link/x.git", "", "."] {
        let t = Repository { storage_name: STORAGE.into(), relative_path: target.into(), ..Default::default() };
        let from_url = CreateRepositoryFromUrlRequest { repository: Some(t.clone()), url: gd.url("host.git") };
        let e = repo.create_repository_from_url(from_url).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "from url {target:?}: {e:?}");
        let fork = CreateForkRequest { repository: Some(t.clone()), source_repository: Some(d.repo("p.git")) };
        let e = repo.create_fork(with_servers(fork, &servers)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "fork {target:?}: {e:?}");
        let snap = CreateRepositoryFromSnapshotRequest {
            repository: Some(t.clone()),
            http_url: "http://127.0.0.1:1/x".into(),
            http_auth: String::new(),
        };
        let e = repo.create_repository_from_snapshot(snap).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "snapshot {target:?}: {e:?}");
        let replica = ReplicateRepositoryRequest {
            repository: Some(t.clone()),
            source: Some(Repository { storage_name: "elsewhere".into(), ..t.clone() }),
        };
        let e = repo.replicate_repository(with_servers(replica, &servers)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "replica {target:?}: {e:?}");
        let fetch = FetchSourceBranchRequest {
            repository: Some(t),
            source_repository: Some(d.repo("p.git")),
            source_branch: b"main".to_vec(),
            target_ref: b"refs/x".to_vec(),
        };
        assert_ne!(
            repo.fetch_source_branch(with_servers(fetch, &servers)).await.map(|r| r.into_inner().result).ok(),
            Some(true),
            "{target:?}"
        );
    }
    assert_eq!(snapshot(&host), before);
    drop(gd);

    // Credentials in a URL go as a header, never in an error.
    let gitlab = FakeGitlab::tcp(|_, _| (401, serde_json::json!({}), std::time::Duration::ZERO));
    let port = gitlab.url.rsplit(':').next().unwrap().to_string();
    let url = format!("http://jane:s3cret-pw@127.0.0.1:{port}/group/p.git");
    let req = CreateRepositoryFromUrlRequest { repository: Some(d.repo("new.git")), url };
    let e = repo.create_repository_from_url(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(!e.message().contains("s3cret"), "{e:?}");
    let calls = gitlab.calls();
    assert!(!calls.is_empty());
    use base64::Engine;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("jane:s3cret-pw"));
    assert!(calls.iter().all(|c| c.authorization == basic && c.path == "/group/p.git/info/refs"), "{calls:?}");
    assert!(!d.repo_path("new.git").exists());
    // FetchRemote sends GitLab's authorization header for the URL.
    let req = FetchRemoteRequest {
        repository: Some(d.repo("p.git")),
        remote_params: Some(Remote {
            url: format!("http://127.0.0.1:{port}/other.git"),
            http_authorization_header: "Bearer t0ken".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = repo.fetch_remote(req).await.unwrap_err();
    assert!(!e.message().contains("t0ken"), "{e:?}");
    assert!(gitlab.calls().iter().any(|c| c.path == "/other.git/info/refs" && c.authorization == "Bearer t0ken"));
    d.assert_outside_untouched();
}

fn pool(relative: &str) -> ObjectPool {
    ObjectPool {
        repository: Some(Repository {
            storage_name: STORAGE.into(),
            relative_path: relative.into(),
            ..Default::default()
        }),
    }
}

fn fsck(repo: &Path) {
    run(git(repo).args(["fsck", "--connectivity-only", "--no-progress"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_pools_are_created_shared_fetched_and_given_back() {
    use rgitaly::proto::gitaly::object_pool_service_client::ObjectPoolServiceClient;
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    let origin = d.seed_repo("group/origin.git", &wt);
    let mut pools = ObjectPoolServiceClient::new(d.channel().await);
    let mut repo = RepositoryServiceClient::new(d.channel().await);
    let hash = format!("abcd{}", "e".repeat(60));
    let rel = format!("@pools/ab/cd/{hash}.git");
    let pool_path = d.repo_path(&rel);

    // Only pool paths; a pool is never created over another.
    for bad in ["group/origin.git", "@pools/ab/cd/../../../outside", &format!("@pools/ab/ce/{hash}.git"), ""] {
        let req = CreateObjectPoolRequest { object_pool: Some(pool(bad)), origin: Some(d.repo("group/origin.git")) };
        assert_eq!(pools.create_object_pool(req).await.unwrap_err().code(), Code::InvalidArgument, "{bad}");
        let req = DeleteObjectPoolRequest { object_pool: Some(pool(bad)) };
        assert_eq!(pools.delete_object_pool(req).await.unwrap_err().code(), Code::InvalidArgument, "{bad}");
    }
    assert!(origin.exists());
    let create = CreateObjectPoolRequest { object_pool: Some(pool(&rel)), origin: Some(d.repo("group/origin.git")) };
    pools.create_object_pool(create.clone()).await.unwrap();
    assert_eq!(refs(&pool_path), refs(&origin));
    assert!(!pool_path.join("hooks").exists());
    let e = pools.create_object_pool(create).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, format!("pool already exists at: {rel}").as_str()));

    // Linking: a relative alternates entry; GetObjectPool finds the pool back.
    let link = LinkRepositoryToObjectPoolRequest {
        object_pool: Some(pool(&rel)),
        repository: Some(d.repo("group/origin.git")),
    };
    pools.link_repository_to_object_pool(link.clone()).await.unwrap();
    pools.link_repository_to_object_pool(link).await.unwrap();
    let alternates = std::fs::read_to_string(origin.join("objects/info/alternates")).unwrap();
    assert_eq!(alternates, format!("../../../@pools/ab/cd/{hash}.git/objects"));
    fsck(&origin);
    let got =
        pools.get_object_pool(GetObjectPoolRequest { repository: Some(d.repo("group/origin.git")) }).await.unwrap();
    assert_eq!(got.into_inner().object_pool.unwrap().repository.unwrap().relative_path, rel);

    // Fetching into the pool: new objects under refs/remotes/origin, dangling ones kept by refs/dangling.
    let side = stdout(git(&origin).args(["rev-parse", "side"]));
    let dropped = {
        run(git(&wt).args(["checkout", "--quiet", "-b", "doomed"]));
        let oid = commit_file(&wt, "doomed.txt", "doomed\n");
        run(git(&wt).args(["checkout", "--quiet", "main"]));
        run(git(&wt).args(["push", "--quiet"]).arg(&origin).arg("doomed"));
        oid
    };
    let fetch = FetchIntoObjectPoolRequest {
        origin: Some(d.repo("group/origin.git")),
        object_pool: Some(pool(&rel)),
        repack: false,
    };
    pools.fetch_into_object_pool(fetch.clone()).await.unwrap();
    assert_eq!(stdout(git(&pool_path).args(["rev-parse", "refs/remotes/origin/heads/doomed"])), dropped);
    assert_eq!(stdout(git(&pool_path).args(["rev-parse", "refs/remotes/origin/heads/side"])), side);
    // An object only the pool has (a member may have borrowed it) survives as a dangling ref.
    let orphan = {
        let mut c = git(&pool_path);
        c.args(["hash-object", "-w", "--stdin"]).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"orphan\n").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
    };
    pools.fetch_into_object_pool(fetch).await.unwrap();
    assert!(std::fs::read_dir(pool_path.join("objects/pack"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".bitmap")));
    let dangling = stdout(git(&pool_path).args(["for-each-ref", "--format=%(refname)", "refs/dangling/"]));
    assert_eq!(dangling, format!("refs/dangling/{orphan}"));

    // A new member cloned from the pool, its refs from the origin through its server.
    let servers = gitaly_servers::encode(STORAGE, &ServerInfo { address: d.address(), token: String::new() });
    let internal = CloneFromPoolInternalRequest {
        repository: Some(d.repo("group/member.git")),
        pool: Some(pool(&rel)),
        source_repository: Some(d.repo("group/origin.git")),
    };
    repo.clone_from_pool_internal(with_servers(internal.clone(), &servers)).await.unwrap();
    let member = d.repo_path("group/member.git");
    assert_eq!(refs(&member), refs(&origin));
    // The member's objects are the pool's: it holds (almost) none of its own.
    let count = |r: &Path| {
        let text = stdout(git(r).args(["count-objects", "-v"]));
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().parse::<u64>().unwrap();
        get("count:") + get("in-pack:")
    };
    assert!(count(&member) * 10 < count(&origin), "member {} objects, origin {}", count(&member), count(&origin));
    assert_eq!(std::fs::read_to_string(member.join("objects/info/alternates")).unwrap(), alternates);
    fsck(&member);
    let e = repo.clone_from_pool_internal(with_servers(internal, &servers)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Internal, "target reopsitory already exists"));

    // A source that keeps no objects of its own (after its link and a repack with -l): the member's refs
    // are the source's (a symbolic ref as its object, tags peeled as git peels them), HEAD its default
    // branch, no sample hooks; then a source with an object the pool lacks: that object is fetched.
    run(git(&origin).args(["repack", "-a", "-d", "-l", "-q"]));
    run(git(&origin).args(["symbolic-ref", "refs/heads/alias", "refs/heads/side"]));
    run(git(&origin).args(["symbolic-ref", "HEAD", "refs/heads/side"]));
    let at = |name: &str| {
        let req = CloneFromPoolInternalRequest {
            repository: Some(d.repo(name)),
            pool: Some(pool(&rel)),
            source_repository: Some(d.repo("group/origin.git")),
        };
        let mut repo = repo.clone();
        let servers = servers.clone();
        async move { repo.clone_from_pool_internal(with_servers(req, &servers)).await.unwrap() }
    };
    at("group/borrowed.git").await;
    let borrowed = d.repo_path("group/borrowed.git");
    assert_eq!(refs(&borrowed), refs(&origin));
    let peeled = |r: &Path| stdout(git(r).args(["for-each-ref", "--format=%(*objectname)", "refs/tags/v1.0"]));
    assert_eq!(peeled(&borrowed), peeled(&origin));
    assert_eq!(head(&borrowed), "refs/heads/side");
    assert_eq!(count(&borrowed), 0);
    assert!(!borrowed.join("hooks").exists());
    assert_eq!(std::fs::read_to_string(borrowed.join("objects/info/alternates")).unwrap(), alternates);
    fsck(&borrowed);
    run(git(&origin).args(["symbolic-ref", "HEAD", "refs/heads/main"]));
    run(git(&origin).args(["update-ref", "-d", "--no-deref", "refs/heads/alias"]));
    run(git(&wt).args(["checkout", "--quiet", "-b", "fresh"]));
    let fresh = commit_file(&wt, "fresh.txt", "not in the pool\n");
    run(git(&wt).args(["checkout", "--quiet", "main"]));
    run(git(&wt).args(["push", "--quiet"]).arg(&origin).arg("fresh"));
    at("group/fetched.git").await;
    let fetched = d.repo_path("group/fetched.git");
    assert_eq!(refs(&fetched), refs(&origin));
    assert_eq!(stdout(git(&fetched).args(["rev-parse", "fresh"])), fresh);
    assert_eq!(head(&fetched), "refs/heads/main");
    fsck(&fetched);
    run(git(&origin).args(["update-ref", "-d", "refs/heads/fresh"]));

    // CloneFromPool: the member's refs from a URL.
    let gd = GitDaemon::start(&d.storage);
    let from_url = CloneFromPoolRequest {
        repository: Some(d.repo("group/member2.git")),
        pool: Some(pool(&rel)),
        remote: Some(Remote { url: gd.url("group/origin.git"), ..Default::default() }),
    };
    repo.clone_from_pool(from_url).await.unwrap();
    let member2 = d.repo_path("group/member2.git");
    assert_eq!(refs(&member2), refs(&origin));
    fsck(&member2);
    let bad = CloneFromPoolRequest {
        repository: Some(d.repo("group/member3.git")),
        pool: Some(pool(&rel)),
        remote: Some(Remote { url: format!("file://{}", origin.display()), ..Default::default() }),
    };
    assert_eq!(repo.clone_from_pool(bad).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(!d.repo_path("group/member3.git").exists());

    // Taking the objects back: disconnect (hard links) and reduplicate (repack), then the pool can go.
    pools
        .disconnect_git_alternates(DisconnectGitAlternatesRequest { repository: Some(d.repo("group/member.git")) })
        .await
        .unwrap();
    assert!(!member.join("objects/info/alternates").exists());
    pools
        .reduplicate_repository(ReduplicateRepositoryRequest { repository: Some(d.repo("group/member2.git")) })
        .await
        .unwrap();
    std::fs::remove_file(member2.join("objects/info/alternates")).unwrap();
    pools
        .disconnect_git_alternates(DisconnectGitAlternatesRequest { repository: Some(d.repo("group/origin.git")) })
        .await
        .unwrap();
    let unlink = UnlinkRepositoryFromObjectPoolRequest {
        repository: Some(d.repo("group/origin.git")),
        object_pool: Some(pool(&rel)),
    };
    pools.unlink_repository_from_object_pool(unlink.clone()).await.unwrap();
    pools.delete_object_pool(DeleteObjectPoolRequest { object_pool: Some(pool(&rel)) }).await.unwrap();
    assert!(!pool_path.exists());
    pools.delete_object_pool(DeleteObjectPoolRequest { object_pool: Some(pool(&rel)) }).await.unwrap();
    assert_eq!(pools.unlink_repository_from_object_pool(unlink).await.unwrap_err().code(), Code::NotFound);
    for r in [&member, &member2, &origin] {
        fsck(r);
        assert_eq!(refs(r), refs(&origin));
    }

    // An alternates file pointing outside the storage: nothing is linked from there.
    let outside_repo = d.work_dir("elsewhere").join("x.git");
    run(git(&d.work_dir("elsewhere")).args(["clone", "--bare", "--quiet"]).arg(&wt).arg(&outside_repo));
    std::fs::write(member.join("objects/info/alternates"), format!("{}/objects", outside_repo.display())).unwrap();
    let before = snapshot(&member.join("objects"));
    let e = pools
        .disconnect_git_alternates(DisconnectGitAlternatesRequest { repository: Some(d.repo("group/member.git")) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(snapshot(&member.join("objects")), before);
    let got =
        pools.get_object_pool(GetObjectPoolRequest { repository: Some(d.repo("group/member.git")) }).await.unwrap();
    assert!(got.into_inner().object_pool.is_none());
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mirror_to_a_second_daemon_through_rgitaly_ssh() {
    let other = other_server();
    run(git(&other.storage).args(["init", "--bare", "--quiet", "mirror.git"]));
    let mirror = other.storage.join("mirror.git");
    // The operator's ssh for git is rgitaly-ssh, aimed at the second daemon with its token.
    let scripts = tempfile::tempdir().unwrap();
    let wrapper = scripts.path().join("ssh-to-other");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nGITALY_ADDRESS='{}' GITALY_TOKEN=\"{TOKEN}\" exec '{}' \"$@\"\n",
            other.daemon.address(),
            env!("CARGO_BIN_EXE_rgitaly-ssh")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let d = Daemon::start_with(&format!("[[git.config]]\nkey = \"core.sshCommand\"\nvalue = {:?}\n", wrapper));
    let wt = sample_worktree(&d.work_dir("src"));
    let source = d.seed_repo("p.git", &wt);
    let mut remote = RemoteServiceClient::new(d.channel().await);
    let add = AddRemoteRequest {
        repository: Some(d.repo("p.git")),
        name: "downstream".into(),
        url: format!("ssh://rgitaly/{OTHER}/mirror.git"),
        mirror_refmaps: vec![],
    };
    remote.add_remote(add).await.unwrap();
    let req = |keep: bool, only: &[&str]| UpdateRemoteMirrorRequest {
        repository: Some(d.repo("p.git")),
        ref_name: "downstream".into(),
        only_branches_matching: only.iter().map(|s| s.as_bytes().to_vec()).collect(),
        keep_divergent_refs: keep,
        ..Default::default()
    };
    let r = remote.update_remote_mirror(tokio_stream::iter(vec![req(false, &["main"])])).await.unwrap();
    assert!(r.into_inner().divergent_refs.is_empty());
    assert_eq!(
        stdout(git(&mirror).args(["for-each-ref", "--format=%(objectname) %(refname)"])),
        stdout(git(&source).args([
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads/main",
            "refs/tags"
        ])),
        "only the requested branch, and every tag"
    );
    // The mirror moves on its own: kept and reported, then overwritten when asked.
    let theirs = stdout(git(&mirror).args(["commit-tree", "-m", "theirs", "main^{tree}"]));
    run(git(&mirror).args(["update-ref", "refs/heads/main", &theirs]));
    let r = remote.update_remote_mirror(tokio_stream::iter(vec![req(true, &[])])).await.unwrap();
    assert_eq!(r.into_inner().divergent_refs, vec![b"refs/heads/main".to_vec()]);
    assert_eq!(stdout(git(&mirror).args(["rev-parse", "main"])), theirs);
    assert!(stdout(git(&mirror).args(["branch", "--list", "side"])).contains("side"), "other branches pushed");
    remote.update_remote_mirror(tokio_stream::iter(vec![req(false, &[])])).await.unwrap();
    assert_eq!(stdout(git(&mirror).args(["rev-parse", "main"])), stdout(git(&source).args(["rev-parse", "main"])));
    run(git(&mirror).args(["fsck", "--no-progress"]));
}

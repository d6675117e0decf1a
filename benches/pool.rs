//! Worker-pool benchmark (run: `cargo build --release --workspace && cargo bench --bench pool`).
//!
//! On a generated repository, in one run:
//! - forwarding overhead: UserCreateBranch through the daemon (with the hook chain, no GitLab) vs straight
//!   to a worker socket with no hooks (latency p50/p99 sequentially, throughput at concurrency 8);
//! - recovery: time from `kill -9` of an active worker to the next successful call, and to a healthy
//!   replacement;
//! - worker idle RSS;
//! - UserMergeBranch vs the bare `git merge-tree` + `git commit-tree` + `git update-ref` sequence;
//! - UserCherryPick and UserRevert vs the bare `git merge-tree --merge-base` + `git commit-tree` +
//!   `git update-ref` sequence; UserSquash vs `git diff` + `read-tree` + `apply --cached` + `write-tree` +
//!   `commit-tree`; UserRebaseConfirmable (one commit, applied) vs `git merge-tree --merge-base` +
//!   `commit-tree` + `update-ref`;
//! - on a 1,000-page wiki: WikiWritePage + WikiFindPage round trips at concurrency 8, and WikiGetAllPages.
//!
//! Loopback Unix sockets only; bounded counts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{git, out, percentile};
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::{worker, ListWorkersRequest};
use tonic::metadata::MetadataValue;

const CALLS: usize = 300;
const MERGES: usize = 40;

fn user() -> Option<User> {
    Some(User {
        gl_id: "user-1".into(),
        name: b"Bench".to_vec(),
        email: b"bench@example.com".to_vec(),
        gl_username: "b".into(),
    })
}

struct Target {
    channel: AuthChannel,
    /// Metadata a direct call needs (the daemon adds it when proxying).
    direct: Option<(PathBuf, PathBuf)>,
}

async fn create_branch(t: &Target, name: String) {
    let mut req = tonic::Request::new(UserCreateBranchRequest {
        repository: Some(Repository {
            storage_name: "default".into(),
            relative_path: "bench.git".into(),
            ..Default::default()
        }),
        branch_name: name.into_bytes(),
        user: user(),
        start_point: b"main".to_vec(),
    });
    if let Some((repo, storage)) = &t.direct {
        let bin = |p: &Path| MetadataValue::from_bytes(p.as_os_str().as_encoded_bytes());
        req.metadata_mut().insert_bin(rgitaly::pool::proxy::REPO_PATH, bin(repo));
        req.metadata_mut().insert_bin(rgitaly::pool::proxy::STORAGE_PATH, bin(storage));
        // A payload asking for no receive hooks: the worker alone, without the hook chain's calls.
        let payload = rgitaly::hook::Payload {
            requested_hooks: rgitaly::hook::payload::hooks::REFERENCE_TRANSACTION,
            repository: rgitaly::hook::payload::repository_json(&Repository::default()),
            ..Default::default()
        }
        .encode(b"unsigned");
        req.metadata_mut().insert(rgitaly::pool::proxy::HOOKS_PAYLOAD, payload.parse().unwrap());
    }
    OperationServiceClient::new(t.channel.clone()).user_create_branch(req).await.expect("UserCreateBranch");
}

async fn measure(label: &str, t: &Target, prefix: &str) -> (Duration, f64) {
    let mut lat = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let s = Instant::now();
        create_branch(t, format!("{prefix}-seq-{i}")).await;
        lat.push(s.elapsed());
    }
    lat.sort();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let t = Target { channel: t.channel.clone(), direct: t.direct.clone() };
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..CALLS / 8 {
                create_branch(&t, format!("{prefix}-par-{w}-{i}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rps = (CALLS / 8 * 8) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{label:<28} p50 {:>7.2} ms  p99 {:>7.2} ms  throughput(c=8) {:>7.1} calls/s",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        rps
    );
    (percentile(&lat, 0.5), rps)
}

/// Marks `dir` as a top of a directory hierarchy (`chattr +T`): on ext4 its subdirectories are then placed in
/// block groups of their own rather than beside it. Without a journal, ext4 skips every inode freed in the
/// last minutes when it allocates one in a group: with the trees of the setup and of earlier runs deleted
/// beside the bench's repositories, each new file scanned thousands (up to 38 % of the CPU in the wiki
/// writes, and the figure fell run after run: 600, 475, 370, 269, 240 round trips/s).
fn spread(dir: &Path) {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x80086601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x40086602;
    const FS_TOPDIR_FL: libc::c_int = 0x00020000;
    let f = std::fs::File::open(dir).unwrap();
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls read or write one int through the pointer; a filesystem without them refuses.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) == 0 {
            flags |= FS_TOPDIR_FL;
            libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS, &flags);
        }
    }
}

fn rss(pid: i32) -> u64 {
    rgitaly::pool::read_rss(pid).unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_rgitaly")).parent().unwrap().to_path_buf();
    if !bin_dir.join("rgitaly-worker").exists() {
        eprintln!("build the worker first: cargo build --release --workspace");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    // The trees the bench writes to, each in block groups of its own (see `spread`), named anew each run:
    // ext4 picks a top directory's group from a hash of its name, so a fixed name would land where the
    // last run's tree was just deleted.
    spread(dir.path());
    let run = dir.path().file_name().unwrap().to_string_lossy().into_owned();
    let spread_dir = |name: &str| dir.path().join(format!("{name}{run}"));
    let storage = spread_dir("storage");
    std::fs::create_dir_all(&storage).unwrap();
    // A repository with some history: 200 commits, and branches to merge.
    let wt = spread_dir("wt");
    out(git(dir.path()).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    for i in 0..200 {
        std::fs::write(wt.join(format!("f{}.txt", i % 20)), format!("line {i}\n")).unwrap();
        out(git(&wt).args(["add", "-A"]));
        out(git(&wt).args(["commit", "--quiet", "-m", &format!("c{i}")]));
    }
    for m in 0..MERGES * 2 {
        out(git(&wt).args(["checkout", "--quiet", "-b", &format!("topic-{m}"), "main~50"]));
        std::fs::write(wt.join(format!("topic-{m}.txt")), "t\n").unwrap();
        out(git(&wt).args(["add", "-A"]));
        out(git(&wt).args(["commit", "--quiet", "-m", "topic"]));
    }
    let bare = storage.join("bench.git");
    out(git(dir.path()).args(["clone", "--quiet", "--bare", "--mirror"]).arg(&wt).arg(&bare));

    let socket = dir.path().join("rgitaly.socket");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "socket_path = {socket:?}\ninternal_socket_dir = {:?}\n[[storage]]\nname = \"default\"\npath = {storage:?}\n[logging]\nlevel = \"error\"\n[workers]\nnum_workers = 3\nhealth_check_interval = \"1s\"\n",
            dir.path().join("internal")
        ),
    )
    .unwrap();
    let daemon = Daemon(
        Command::new(bin_dir.join("rgitaly"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let channel = rgitaly::client::connect(&format!("unix:{}", socket.display()), None).await.unwrap();
    let mut admin = AdminServiceClient::new(channel.clone());
    let list = |mut a: AdminServiceClient<AuthChannel>| async move {
        a.list_workers(ListWorkersRequest {}).await.unwrap().into_inner().workers
    };

    // Idle RSS after start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ws = list(admin.clone()).await;
    let idle: Vec<u64> = ws.iter().map(|w| rss(w.pid)).collect();
    println!(
        "worker idle RSS: {} MiB each (max {:.2} MiB)",
        idle.iter().map(|r| format!("{:.2}", *r as f64 / 1048576.0)).collect::<Vec<_>>().join(", "),
        *idle.iter().max().unwrap() as f64 / 1048576.0
    );

    // `POOL_BENCH_ONLY_WIKI=1`: the wiki measurements alone, to iterate on them.
    if std::env::var_os("POOL_BENCH_ONLY_WIKI").is_some() {
        wiki(&spread_dir("wiki-src"), &storage, &channel).await;
        return;
    }

    // Forwarding overhead.
    let active = ws.iter().find(|w| w.role == worker::Role::Active as i32).unwrap();
    let direct_channel = rgitaly::client::connect(&format!("unix:{}", active.socket_path), None).await.unwrap();
    let canonical = std::fs::canonicalize(&bare).unwrap();
    let direct =
        Target { channel: direct_channel, direct: Some((canonical, std::fs::canonicalize(&storage).unwrap())) };
    let via = Target { channel: channel.clone(), direct: None };
    // Warm up both paths.
    create_branch(&via, "warm-1".into()).await;
    create_branch(&direct, "warm-2".into()).await;
    let (d50, drps) = measure("UserCreateBranch direct", &direct, "d").await;
    let (p50, prps) = measure("UserCreateBranch via daemon", &via, "p").await;
    // Through the daemon a write also runs the hook chain (pre-receive, update and post-receive calls back
    // to the daemon; no GitLab configured here); straight to the worker it does not.
    println!(
        "forwarding and hook chain: p50 +{:.2} ms ({:.1}%), throughput {:.1}%",
        (p50.as_secs_f64() - d50.as_secs_f64()) * 1e3,
        (p50.as_secs_f64() / d50.as_secs_f64() - 1.0) * 100.0,
        (prps / drps - 1.0) * 100.0
    );

    // Recovery after kill -9 of an active worker.
    let mut next_call = Vec::new();
    let mut replacement = Vec::new();
    for round in 0..5 {
        let ws = list(admin.clone()).await;
        let victim = ws.iter().find(|w| w.role == worker::Role::Active as i32).unwrap().clone();
        let killed = Instant::now();
        unsafe { libc::kill(victim.pid, libc::SIGKILL) };
        create_branch(&via, format!("recover-{round}")).await;
        next_call.push(killed.elapsed());
        loop {
            let ws = list(admin.clone()).await;
            let w = ws.iter().find(|w| w.name == victim.name).unwrap();
            if w.pid > 0 && w.pid != victim.pid && w.role != worker::Role::Starting as i32 {
                replacement.push(killed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    next_call.sort();
    replacement.sort();
    println!(
        "recovery after kill -9 (5 rounds): next successful call median {:.1} ms max {:.1} ms; ready replacement median {:.1} ms max {:.1} ms",
        percentile(&next_call, 0.5).as_secs_f64() * 1e3,
        next_call.last().unwrap().as_secs_f64() * 1e3,
        percentile(&replacement, 0.5).as_secs_f64() * 1e3,
        replacement.last().unwrap().as_secs_f64() * 1e3
    );

    // UserMergeBranch vs the bare git sequence, on the same repository.
    let mut rpc = Vec::new();
    for m in 0..MERGES {
        let topic = out(git(&bare).args(["rev-parse", &format!("topic-{m}")]));
        let s = Instant::now();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(UserMergeBranchRequest {
            repository: Some(Repository {
                storage_name: "default".into(),
                relative_path: "bench.git".into(),
                ..Default::default()
            }),
            user: user(),
            commit_id: topic,
            branch: b"main".to_vec(),
            message: b"merge".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut stream = OperationServiceClient::new(channel.clone())
            .user_merge_branch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
        tx.send(UserMergeBranchRequest { apply: true, ..Default::default() }).await.unwrap();
        let done = stream.message().await.unwrap().unwrap();
        assert!(done.branch_update.is_some());
        rpc.push(s.elapsed());
    }
    let mut bare_seq = Vec::new();
    for m in MERGES..MERGES * 2 {
        let s = Instant::now();
        let head = out(git(&bare).args(["rev-parse", "refs/heads/main"]));
        let topic = out(git(&bare).args(["rev-parse", &format!("topic-{m}")]));
        let tree = out(git(&bare).args(["merge-tree", "--write-tree", &head, &topic]));
        let commit = out(git(&bare).args([
            "commit-tree",
            tree.lines().next().unwrap(),
            "-p",
            &head,
            "-p",
            &topic,
            "-m",
            "merge",
        ]));
        out(git(&bare).args(["update-ref", "refs/heads/main", &commit, &head]));
        bare_seq.push(s.elapsed());
    }
    rpc.sort();
    bare_seq.sort();
    let (r50, b50) = (percentile(&rpc, 0.5), percentile(&bare_seq, 0.5));
    println!(
        "UserMergeBranch p50 {:.2} ms vs git merge-tree+commit-tree+update-ref p50 {:.2} ms: ratio {:.2}",
        r50.as_secs_f64() * 1e3,
        b50.as_secs_f64() * 1e3,
        r50.as_secs_f64() / b50.as_secs_f64()
    );

    // UserCherryPick, UserRevert, UserSquash and UserRebaseConfirmable against their bare git sequences,
    // each call followed by its git counterpart so that both see the same machine (a sequential block of
    // each drifted by 30 %). The commit to pick is resolved outside both timings: the RPC is given its id.
    let bench_repo =
        || Some(Repository { storage_name: "default".into(), relative_path: "bench.git".into(), ..Default::default() });
    let topic = |m: usize| out(git(&bare).args(["rev-parse", &format!("topic-{m}")]));
    // The plain-git pick (base = C^, theirs = C) or revert (base = C, theirs = C^) onto picks-git.
    let git_pick = |base: &str, theirs: &str, message: &str| {
        let head = out(git(&bare).args(["rev-parse", "refs/heads/picks-git"]));
        let base = format!("--merge-base={base}");
        let tree = out(git(&bare).args(["merge-tree", "--write-tree", &base, &head, theirs]));
        let commit = out(git(&bare).args(["commit-tree", tree.lines().next().unwrap(), "-p", &head, "-m", message]));
        out(git(&bare).args(["update-ref", "refs/heads/picks-git", &commit, &head]));
    };
    // Picks: one topic commit each onto a branch that starts where the topics started.
    out(git(&bare).args(["update-ref", "refs/heads/picks", "topic-0^"]));
    out(git(&bare).args(["update-ref", "refs/heads/picks-git", "topic-0^"]));
    let (mut rpc, mut bare_seq) = (Vec::new(), Vec::new());
    for m in 0..MERGES {
        let topic = topic(m);
        let s = Instant::now();
        let r = OperationServiceClient::new(channel.clone())
            .user_cherry_pick(UserCherryPickRequest {
                repository: bench_repo(),
                user: user(),
                commit: Some(GitCommit { id: topic.clone(), ..Default::default() }),
                branch_name: b"picks".to_vec(),
                message: b"picked".to_vec(),
                ..Default::default()
            })
            .await
            .expect("UserCherryPick")
            .into_inner();
        assert!(r.branch_update.is_some(), "{r:?}");
        rpc.push(s.elapsed());

        let s = Instant::now();
        git_pick(&format!("{topic}^"), &topic, "picked");
        bare_seq.push(s.elapsed());
    }
    report("UserCherryPick", "git merge-tree --merge-base+commit-tree+update-ref", rpc, bare_seq);

    // Reverts: each takes one picked topic's change back out of its branch.
    let (mut rpc, mut bare_seq) = (Vec::new(), Vec::new());
    for m in 0..MERGES {
        let topic = topic(m);
        let s = Instant::now();
        let r = OperationServiceClient::new(channel.clone())
            .user_revert(UserRevertRequest {
                repository: bench_repo(),
                user: user(),
                commit: Some(GitCommit { id: topic.clone(), ..Default::default() }),
                branch_name: b"picks".to_vec(),
                message: b"reverted".to_vec(),
                ..Default::default()
            })
            .await
            .expect("UserRevert")
            .into_inner();
        assert!(r.branch_update.is_some(), "{r:?}");
        rpc.push(s.elapsed());

        let s = Instant::now();
        git_pick(&topic, &format!("{topic}^"), "reverted");
        bare_seq.push(s.elapsed());
    }
    report("UserRevert", "git merge-tree --merge-base+commit-tree+update-ref", rpc, bare_seq);

    // Squashes (no ref moves): the 50 commits from main~50 to main as one.
    let (start, end) = (out(git(&bare).args(["rev-parse", "main~50"])), out(git(&bare).args(["rev-parse", "main"])));
    let index = dir.path().join("squash-index");
    let (mut rpc, mut bare_seq) = (Vec::new(), Vec::new());
    for i in 0..MERGES {
        let s = Instant::now();
        let r = OperationServiceClient::new(channel.clone())
            .user_squash(UserSquashRequest {
                repository: bench_repo(),
                user: user(),
                squash_id: format!("bench-{i}"),
                start_sha: start.clone(),
                end_sha: end.clone(),
                author: user(),
                commit_message: format!("squashed {i}").into_bytes(),
                ..Default::default()
            })
            .await
            .expect("UserSquash")
            .into_inner();
        assert!(!r.squash_sha.is_empty(), "{r:?}");
        rpc.push(s.elapsed());

        let s = Instant::now();
        let diff = git(&bare).args(["diff", "--binary", &format!("{start}...{end}")]).output().unwrap().stdout;
        out(git(&bare).env("GIT_INDEX_FILE", &index).args(["read-tree", &start]));
        let mut apply = git(&bare)
            .env("GIT_INDEX_FILE", &index)
            .args(["apply", "--cached", "--3way"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut apply.stdin.take().unwrap(), &diff).unwrap();
        assert!(apply.wait().unwrap().success());
        let tree = out(git(&bare).env("GIT_INDEX_FILE", &index).args(["write-tree"]));
        out(git(&bare).args(["commit-tree", &tree, "-p", &start, "-m", &format!("squashed {i}")]));
        bare_seq.push(s.elapsed());
    }
    report("UserSquash", "git diff+read-tree+apply --cached+write-tree+commit-tree", rpc, bare_seq);

    // Rebases (the two-phase exchange, applied): each topic's branch onto a commit it does not have.
    out(git(&bare).args(["update-ref", "refs/heads/rebase-onto", "main~40"]));
    let (mut rpc, mut bare_seq) = (Vec::new(), Vec::new());
    for m in 0..MERGES {
        use rgitaly::proto::gitaly::user_rebase_confirmable_request::{
            Header, UserRebaseConfirmableRequestPayload as P,
        };
        use rgitaly::proto::gitaly::user_rebase_confirmable_response::UserRebaseConfirmableResponsePayload as R;
        let topic = topic(m);
        out(git(&bare).args(["update-ref", &format!("refs/heads/rb-{m}"), &topic]));
        out(git(&bare).args(["update-ref", &format!("refs/heads/rbg-{m}"), &topic]));
        let s = Instant::now();
        let header = Header {
            repository: bench_repo(),
            user: user(),
            rebase_id: format!("bench-{m}"),
            branch: format!("rb-{m}").into_bytes(),
            branch_sha: topic.clone(),
            remote_repository: bench_repo(),
            remote_branch: b"rebase-onto".to_vec(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let first = UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Header(header)) };
        tx.send(first).await.unwrap();
        let mut stream = OperationServiceClient::new(channel.clone())
            .user_rebase_confirmable(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("UserRebaseConfirmable")
            .into_inner();
        let rebased = stream.message().await.unwrap().unwrap();
        assert!(matches!(rebased.user_rebase_confirmable_response_payload, Some(R::RebaseSha(_))), "{rebased:?}");
        tx.send(UserRebaseConfirmableRequest { user_rebase_confirmable_request_payload: Some(P::Apply(true)) })
            .await
            .unwrap();
        let applied = stream.message().await.unwrap().unwrap();
        assert!(
            matches!(applied.user_rebase_confirmable_response_payload, Some(R::RebaseApplied(true))),
            "{applied:?}"
        );
        rpc.push(s.elapsed());

        let s = Instant::now();
        let onto = out(git(&bare).args(["rev-parse", "refs/heads/rebase-onto"]));
        let old = out(git(&bare).args(["rev-parse", &format!("refs/heads/rbg-{m}")]));
        let base = format!("--merge-base={old}^");
        let tree = out(git(&bare).args(["merge-tree", "--write-tree", &base, &onto, &old]));
        let commit = out(git(&bare).args(["commit-tree", tree.lines().next().unwrap(), "-p", &onto, "-m", "topic"]));
        out(git(&bare).args(["update-ref", &format!("refs/heads/rbg-{m}"), &commit, &old]));
        bare_seq.push(s.elapsed());
    }
    report("UserRebaseConfirmable", "git merge-tree --merge-base+commit-tree+update-ref", rpc, bare_seq);
    wiki(&spread_dir("wiki-src"), &storage, &channel).await;
    let _ = admin.list_workers(ListWorkersRequest {}).await;
    drop(daemon);
}

/// Prints an RPC's p50 against the plain-git sequence's.
fn report(rpc_name: &str, git_name: &str, mut rpc: Vec<Duration>, mut bare_seq: Vec<Duration>) {
    rpc.sort();
    bare_seq.sort();
    let (r50, b50) = (percentile(&rpc, 0.5), percentile(&bare_seq, 0.5));
    println!(
        "{rpc_name} p50 {:.2} ms vs {git_name} p50 {:.2} ms: ratio {:.2}",
        r50.as_secs_f64() * 1e3,
        b50.as_secs_f64() * 1e3,
        r50.as_secs_f64() / b50.as_secs_f64()
    );
}

const WIKI_PAGES: usize = 1000;
const WIKI_PAIRS: usize = 400;
const WIKI_CONCURRENCY: usize = 8;

fn wiki_repo() -> Option<Repository> {
    Some(Repository { storage_name: "default".into(), relative_path: "bench.wiki.git".into(), ..Default::default() })
}

/// Wiki throughput on a 1,000-page wiki laid out as gollum does (built with plain git).
async fn wiki(src: &Path, storage: &Path, channel: &AuthChannel) {
    use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
    out(git(storage).args(["init", "--quiet", "-b", "master"]).arg(src));
    for i in 0..WIKI_PAGES {
        let dir = src.join(format!("section-{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("Page-{i}.md")), format!("# Page {i}\n\n{}\n", "text ".repeat(100))).unwrap();
    }
    out(git(src).args(["add", "-A"]));
    out(git(src).args(["commit", "--quiet", "-m", "pages"]));
    out(git(storage).args(["clone", "--quiet", "--bare"]).arg(src).arg(storage.join("bench.wiki.git")));

    get_all_pages(channel, WIKI_PAGES).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WIKI_CONCURRENCY {
        let mut c = WikiServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for i in 0..WIKI_PAIRS / WIKI_CONCURRENCY {
                let title = format!("New Page {w}-{i}");
                let s = Instant::now();
                let write = WikiWritePageRequest {
                    repository: wiki_repo(),
                    name: title.clone().into_bytes(),
                    format: "markdown".into(),
                    commit_details: Some(WikiCommitDetails {
                        name: b"Bench".to_vec(),
                        email: b"bench@example.com".to_vec(),
                        message: b"bench".to_vec(),
                        user_id: 1,
                        user_name: b"bench".to_vec(),
                    }),
                    content: b"# new page\n".to_vec(),
                };
                let r = c.wiki_write_page(tokio_stream::iter(vec![write])).await.expect("WikiWritePage").into_inner();
                assert!(r.duplicate_error.is_empty());
                let find =
                    WikiFindPageRequest { repository: wiki_repo(), title: title.into_bytes(), ..Default::default() };
                let mut stream = c.wiki_find_page(find).await.expect("WikiFindPage").into_inner();
                assert!(stream.message().await.unwrap().unwrap().page.is_some());
                while stream.message().await.unwrap().is_some() {}
                times.push(s.elapsed());
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    times.sort();
    println!(
        "WikiWritePage+WikiFindPage at c{WIKI_CONCURRENCY} on {WIKI_PAGES} pages: {:.0} round trips/s, p50 {:.1} ms p99 {:.1} ms",
        times.len() as f64 / elapsed.as_secs_f64(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3
    );

    get_all_pages(channel, WIKI_PAGES + WIKI_PAIRS).await;
}

/// The daemon under test; stopped (and its workers with it) however the benchmark ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// WikiGetAllPages of the whole wiki (`pages` of them), 20 times.
async fn get_all_pages(channel: &AuthChannel, pages: usize) {
    use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
    let mut c = WikiServiceClient::new(channel.clone());
    let mut all = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let req = WikiGetAllPagesRequest { repository: wiki_repo(), ..Default::default() };
        let mut stream = c.wiki_get_all_pages(req).await.expect("WikiGetAllPages").into_inner();
        let mut seen = 0;
        while let Some(m) = stream.message().await.unwrap() {
            seen += m.end_of_page as usize;
        }
        assert_eq!(seen, pages);
        all.push(s.elapsed());
    }
    all.sort();
    println!(
        "WikiGetAllPages of {pages} pages: p50 {:.1} ms max {:.1} ms",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3
    );
}

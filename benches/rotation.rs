//! Rotation under load (run: `cargo build --release --workspace && cargo bench --bench rotation`; the
//! duration is `RGITALY_ROTATION_SECS`, 600 by default).
//!
//! A mixed load of wiki writes and reads (WikiWritePage, WikiFindPage) and merges (UserMergeToRef), four
//! callers at a time, against a pool whose `max_rss` is set low (the idle RSS plus a little), so that
//! workers are rotated for memory again and again while calls are in flight. Reports calls per kind, failed
//! calls (any error), the rotations and crashes the admin RPC shows per worker, and the most calls in
//! flight seen on one worker. The promise under test: a planned rotation fails no call.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{git, out};
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::ListWorkersRequest;

fn repo(relative: &str) -> Option<Repository> {
    Some(Repository { storage_name: "default".into(), relative_path: relative.into(), ..Default::default() })
}

fn user() -> Option<User> {
    Some(User {
        gl_id: "user-1".into(),
        name: b"Bench".to_vec(),
        email: b"bench@example.com".to_vec(),
        gl_username: "bench".into(),
    })
}

#[derive(Default)]
struct Tally {
    wiki_writes: AtomicUsize,
    wiki_finds: AtomicUsize,
    merges: AtomicUsize,
    failed: AtomicUsize,
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("RGITALY_ROTATION_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_rgitaly")).parent().unwrap().to_path_buf();
    if !bin_dir.join("rgitaly-worker").exists() {
        eprintln!("build the worker first: cargo build --release --workspace");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    // A project with topics to merge, and an empty wiki.
    let wt = dir.path().join("wt");
    out(git(dir.path()).args(["init", "--quiet", "-b", "main"]).arg(&wt));
    for i in 0..100 {
        std::fs::write(wt.join(format!("f{}.txt", i % 10)), format!("line {i}\n")).unwrap();
        out(git(&wt).args(["add", "-A"]));
        out(git(&wt).args(["commit", "--quiet", "-m", &format!("c{i}")]));
    }
    let mut topics = Vec::new();
    for t in 0..20 {
        out(git(&wt).args(["checkout", "--quiet", "-b", &format!("topic-{t}"), "main~30"]));
        std::fs::write(wt.join(format!("topic-{t}.txt")), "t\n").unwrap();
        out(git(&wt).args(["add", "-A"]));
        out(git(&wt).args(["commit", "--quiet", "-m", "topic"]));
        topics.push(out(git(&wt).args(["rev-parse", "HEAD"])));
    }
    out(git(dir.path()).args(["clone", "--quiet", "--bare", "--mirror"]).arg(&wt).arg(storage.join("p.git")));
    out(git(dir.path()).args(["init", "--quiet", "--bare", "-b", "master"]).arg(storage.join("w.wiki.git")));

    let socket = dir.path().join("rgitaly.socket");
    let config = dir.path().join("config.toml");
    // Workers idle at about 9 MiB: 12 MiB is crossed by a busy worker, so rotations keep coming.
    std::fs::write(
        &config,
        format!(
            "socket_path = {socket:?}\ninternal_socket_dir = {:?}\n[[storage]]\nname = \"default\"\npath = {storage:?}\n[logging]\nlevel = \"error\"\n[workers]\nnum_workers = 3\nmax_rss = {}\nrestart_delay = \"5s\"\nmemory_check_interval = \"1s\"\nhealth_check_interval = \"2s\"\ngraceful_restart_timeout = \"60s\"\n",
            dir.path().join("internal"),
            12 * 1024 * 1024
        ),
    )
    .unwrap();
    let mut daemon = Command::new(bin_dir.join("rgitaly"))
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let channel = rgitaly::client::connect(&format!("unix:{}", socket.display()), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut callers = Vec::new();
    for c in 0..2 {
        let (ch, tally) = (channel.clone(), tally.clone());
        callers.push(tokio::spawn(wiki_caller(c, ch, tally, deadline)));
    }
    for c in 0..2 {
        let (ch, tally, topics) = (channel.clone(), tally.clone(), topics.clone());
        callers.push(tokio::spawn(merge_caller(c, ch, tally, topics, deadline)));
    }
    // Watch the pool: the most calls in flight on one worker, and the table now and then.
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (ch, max_in_flight) = (channel.clone(), max_in_flight.clone());
        tokio::spawn(async move {
            let mut admin = AdminServiceClient::new(ch);
            let mut tick = 0u64;
            while Instant::now() < deadline {
                if let Ok(r) = admin.list_workers(ListWorkersRequest {}).await {
                    let ws = r.into_inner().workers;
                    for w in &ws {
                        max_in_flight.fetch_max(w.in_flight, Ordering::Relaxed);
                    }
                    if tick.is_multiple_of(60) {
                        let line: Vec<String> = ws
                            .iter()
                            .map(|w| {
                                format!(
                                    "{} rss {:.1} MiB in_flight {} rotations {}",
                                    w.name,
                                    w.rss_bytes as f64 / 1048576.0,
                                    w.in_flight,
                                    w.rotations
                                )
                            })
                            .collect();
                        println!("t={tick:>4}s  {}", line.join(" | "));
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    for c in callers {
        c.await.unwrap();
    }
    watcher.await.unwrap();
    let ws = AdminServiceClient::new(channel.clone())
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let rotations: u64 = ws.iter().map(|w| w.rotations).sum();
    let crashes: u64 = ws.iter().map(|w| w.crashes).sum();
    let reasons: Vec<String> = ws.iter().map(|w| format!("{}: {}", w.name, w.last_rotation_reason)).collect();
    println!(
        "{secs} s of mixed load, max_rss 12 MiB: {} WikiWritePage, {} WikiFindPage, {} UserMergeToRef; {} failed calls; {rotations} rotations, {crashes} crashes ({}); at most {} calls in flight on one worker",
        tally.wiki_writes.load(Ordering::Relaxed),
        tally.wiki_finds.load(Ordering::Relaxed),
        tally.merges.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        reasons.join(", "),
        max_in_flight.load(Ordering::Relaxed)
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

async fn wiki_caller(c: usize, ch: AuthChannel, tally: Arc<Tally>, deadline: Instant) {
    let mut wiki = WikiServiceClient::new(ch);
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let title = format!("Page {c}-{i}");
        let write = WikiWritePageRequest {
            repository: repo("w.wiki.git"),
            name: title.clone().into_bytes(),
            format: "markdown".into(),
            commit_details: Some(WikiCommitDetails {
                name: b"Bench".to_vec(),
                email: b"bench@example.com".to_vec(),
                message: b"bench".to_vec(),
                user_id: 1,
                user_name: b"bench".to_vec(),
            }),
            content: format!("# {title}\n{}\n", "text ".repeat(200)).into_bytes(),
        };
        match wiki.wiki_write_page(tokio_stream::iter(vec![write])).await {
            Ok(r) if r.get_ref().duplicate_error.is_empty() => {
                tally.wiki_writes.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                eprintln!("WikiWritePage failed: {other:?}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let find =
            WikiFindPageRequest { repository: repo("w.wiki.git"), title: title.into_bytes(), ..Default::default() };
        let found = async {
            let mut s = wiki.wiki_find_page(find).await?.into_inner();
            let first = s.message().await?;
            while s.message().await?.is_some() {}
            Ok::<_, tonic::Status>(first.and_then(|m| m.page).is_some())
        };
        match found.await {
            Ok(true) => {
                tally.wiki_finds.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                eprintln!("WikiFindPage failed: {other:?}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn merge_caller(c: usize, ch: AuthChannel, tally: Arc<Tally>, topics: Vec<String>, deadline: Instant) {
    let mut ops = OperationServiceClient::new(ch);
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let req = UserMergeToRefRequest {
            repository: repo("p.git"),
            user: user(),
            source_sha: topics[i % topics.len()].clone(),
            branch: b"main".to_vec(),
            target_ref: format!("refs/merge-requests/{c}/merge").into_bytes(),
            message: b"merge".to_vec(),
            ..Default::default()
        };
        match ops.user_merge_to_ref(req).await {
            Ok(r) if !r.get_ref().commit_id.is_empty() => {
                tally.merges.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                eprintln!("UserMergeToRef failed: {other:?}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

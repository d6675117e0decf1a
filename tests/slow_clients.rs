//! Blob data is bounded by the answer, and slow or vanishing readers hold nothing: a limit reads only what
//! is sent, a client that stops reading parks its call without a thread or the blob, and one that goes
//! away takes its git process with it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::blob_service_client::BlobServiceClient;
use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
use rgitaly::proto::gitaly::get_blobs_request::RevisionPath;
use rgitaly::proto::gitaly::*;

/// Bytes that do not compress (so git cannot shrink them and the test sees real sizes).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const BIG: usize = 3 * 1024 * 1024 + 17;

/// A repository with a small file, a large one and a large one of zeros; packed when `packed`.
fn seed(d: &Daemon, name: &str, packed: bool) -> (Vec<u8>, Vec<u8>, String) {
    let wt = d.work_dir(&format!("src-{name}"));
    run(git(&wt).args(["init", "--quiet", "-b", "master"]));
    let big = noise(BIG, 7);
    let small = noise(100 * 1024, 9);
    std::fs::write(wt.join("big.bin"), &big).unwrap();
    std::fs::write(wt.join("small.bin"), &small).unwrap();
    std::fs::write(wt.join("zeros.bin"), vec![0u8; 20 << 20]).unwrap();
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "blobs"]));
    let path = d.repo_path(name);
    if packed {
        d.seed_repo(name, &wt);
        run(git(&path).args(["repack", "-adq"]));
    } else {
        // A push of a few objects is unpacked loose (below transfer.unpackLimit).
        run(git(d.work_dir("x").as_path()).args(["init", "--quiet", "--bare"]).arg(&path));
        run(git(&wt).args(["push", "--quiet"]).arg(&path).arg("master"));
    }
    let oid = stdout(git(&wt).args(["rev-parse", "HEAD:big.bin"])).trim().to_string();
    (big, small, oid)
}

async fn get_blob(ch: &AuthChannel, repo: Repository, oid: &str, limit: i64) -> (i64, Vec<u8>, usize) {
    let mut s = BlobServiceClient::new(ch.clone())
        .get_blob(GetBlobRequest { repository: Some(repo), oid: oid.into(), limit })
        .await
        .unwrap()
        .into_inner();
    let (mut size, mut data, mut messages) = (-1, Vec::new(), 0);
    while let Some(m) = s.message().await.unwrap() {
        if messages == 0 {
            size = m.size;
        }
        messages += 1;
        data.extend_from_slice(&m.data);
    }
    (size, data, messages)
}

fn loose(path: &Path) -> usize {
    std::fs::read_dir(path.join("objects"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().len() == 2)
        .map(|e| std::fs::read_dir(e.path()).unwrap().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_are_streamed_up_to_the_limit() {
    let d = Daemon::start();
    let ch = d.channel().await;
    for (name, packed) in [("loose.git", false), ("packed.git", true)] {
        let (big, small, oid) = seed(&d, name, packed);
        assert_eq!(loose(&d.repo_path(name)) == 0, packed, "{name}: objects not laid out as intended");
        for limit in [-1, 0, 1, 128 * 1024, 128 * 1024 + 1, BIG as i64 - 1, BIG as i64, BIG as i64 + 5] {
            let (size, data, messages) = get_blob(&ch, d.repo(name), &oid, limit).await;
            let want = if limit < 0 { BIG } else { (limit as usize).min(BIG) };
            assert_eq!(size, BIG as i64, "{name} limit {limit}");
            assert_eq!(data.len(), want, "{name} limit {limit}");
            assert!(data == big[..want], "{name} limit {limit}: wrong bytes");
            assert_eq!(messages, want.div_ceil(128 * 1024).max(1), "{name} limit {limit}");
        }

        // TreeEntry and GetBlobs take the same path, in request order.
        let mut s = CommitServiceClient::new(ch.clone())
            .tree_entry(TreeEntryRequest {
                repository: Some(d.repo(name)),
                revision: b"master".to_vec(),
                path: b"big.bin".to_vec(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut data = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            data.extend_from_slice(&m.data);
        }
        assert!(data == big[..1000], "{name}: TreeEntry");

        let rp = |p: &str| RevisionPath { revision: "master".into(), path: p.as_bytes().to_vec() };
        let mut s = BlobServiceClient::new(ch.clone())
            .get_blobs(GetBlobsRequest {
                repository: Some(d.repo(name)),
                revision_paths: vec![rp("big.bin"), rp("small.bin"), rp("nope"), rp("zeros.bin"), rp("big.bin")],
                limit: -1,
            })
            .await
            .unwrap()
            .into_inner();
        let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            if !m.path.is_empty() {
                got.push((m.path.clone(), Vec::new()));
            }
            got.last_mut().unwrap().1.extend_from_slice(&m.data);
        }
        let names: Vec<&[u8]> = got.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(names, [&b"big.bin"[..], b"small.bin", b"nope", b"zeros.bin", b"big.bin"], "{name}");
        assert!(got[0].1 == big && got[4].1 == big, "{name}: big");
        assert!(got[1].1 == small, "{name}: small");
        assert!(got[2].1.is_empty(), "{name}: missing");
        assert!(got[3].1.len() == 20 << 20 && got[3].1.iter().all(|b| *b == 0), "{name}: zeros");
    }
}

/// GetBlob(limit=1) of a 200 MB blob (all zeros: cheap on disk, not in memory) costs the daemon next to
/// nothing, four at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_reads_only_what_is_sent() {
    let d = Daemon::start();
    let wt = d.work_dir("src");
    run(git(&wt).args(["init", "--quiet", "-b", "master"]));
    let f = std::fs::File::create(wt.join("huge.bin")).unwrap();
    f.set_len(200_000_000).unwrap();
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "huge"]));
    d.seed_repo("h.git", &wt);
    let oid = stdout(git(&wt).args(["rev-parse", "HEAD:huge.bin"])).trim().to_string();
    let ch = d.channel().await;
    let (_, before) = threads_and_rss(d.pid());
    let calls = (0..4).map(|_| get_blob(&ch, d.repo("h.git"), &oid, 1));
    for (size, data, _) in futures::future::join_all(calls).await {
        assert_eq!((size, data), (200_000_000, vec![0u8]));
    }
    let (_, after) = threads_and_rss(d.pid());
    eprintln!("GetBlob(limit=1) x4 of 200 MB: daemon RSS {} -> {} MiB", before >> 20, after >> 20);
    assert!(after < before + (32 << 20), "RSS grew from {before} to {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_cancelled_readers_hold_nothing() {
    let port = free_port();
    let d = Daemon::start_with(&format!("prometheus_listen_addr = \"127.0.0.1:{port}\"\n"));
    seed(&d, "p.git", true);
    // 20 MiB: more than the pipe, the socket buffers and the client's window hold.
    let oid = stdout(git(&d.repo_path("p.git")).args(["rev-parse", "master:zeros.bin"])).trim().to_string();
    let ch = d.channel().await;
    // Warm up: the runtime's threads exist, the repository is open.
    get_blob(&ch, d.repo("p.git"), &oid, -1).await;
    let (threads_idle, rss_idle) = threads_and_rss(d.pid());

    // 100 clients (or RGITALY_TEST_STALLED, for measuring), each on its own connection, read the first
    // message and then stop reading.
    let stalled_calls: usize = std::env::var("RGITALY_TEST_STALLED").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut stalled = Vec::new();
    for _ in 0..stalled_calls {
        let ch = d.channel().await;
        let mut s = BlobServiceClient::new(ch.clone())
            .get_blob(GetBlobRequest { repository: Some(d.repo("p.git")), oid: oid.clone(), limit: -1 })
            .await
            .unwrap()
            .into_inner();
        assert!(s.message().await.unwrap().is_some());
        stalled.push((ch, s));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (threads, rss) = threads_and_rss(d.pid());
    eprintln!(
        "{stalled_calls} stalled GetBlob streams: threads {threads_idle} -> {threads}, RSS {} -> {} MiB",
        rss_idle >> 20,
        rss >> 20
    );
    assert!(threads <= threads_idle + 4, "threads grew from {threads_idle} to {threads}");
    assert!(rss < rss_idle + (stalled_calls as u64) * (1 << 20), "RSS grew from {rss_idle} to {rss}");

    // Everyone else is served meanwhile.
    find_commit_meanwhile(&ch, d.repo("p.git")).await;
    let (size, data, _) = get_blob(&ch, d.repo("p.git"), &oid, -1).await;
    assert_eq!((size, data.len()), (20 << 20, 20 << 20));

    // Gone clients take their git processes with them.
    let running = || metric_value(&http_get(port, "/metrics"), "gitaly_commands_running");
    assert!(running() >= stalled_calls as f64, "git processes of stalled calls: {}", running());
    drop(stalled);
    assert!(eventually(10, || async { running() == 0.0 }).await, "still running: {}", running());
    let settled = eventually(10, || async { threads_and_rss(d.pid()).0 <= threads_idle + 4 }).await;
    assert!(settled, "threads {} after the clients left (idle {threads_idle})", threads_and_rss(d.pid()).0);
}

/// Listing RPCs too: a client that stops reading a long FindAllBranches parks its call without holding a
/// thread, and everyone else is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_listings_hold_no_thread() {
    use rgitaly::proto::gitaly::ref_service_client::RefServiceClient;
    let d = Daemon::start();
    // 20,000 branches at one commit with a long message: the answer (each branch carries the commit) is
    // ~14 MiB, more than the client's window and the buffers on the way hold; the daemon holds only the
    // list of names.
    let path = d.repo_path("wide.git");
    run(git(d.dir.path()).args(["init", "--quiet", "--bare"]).arg(&path));
    let tree = stdout(git(&path).args(["hash-object", "-t", "tree", "-w", "/dev/null"]));
    let message = format!("wide\n\n{}", "a line of the body that makes each branch's commit larger\n".repeat(10));
    let commit = stdout(git(&path).args(["commit-tree", "-m", &message, &tree]));
    let refs: String = (0..20_000).map(|i| format!("{commit} refs/heads/branch-{i:06}\n")).collect();
    std::fs::write(path.join("packed-refs"), format!("# pack-refs with: peeled fully-peeled sorted \n{refs}")).unwrap();
    run(git(&path).args(["update-ref", "refs/heads/master", &commit]));

    let ch = d.channel().await;
    let branches = |ch: AuthChannel| {
        let req = FindAllBranchesRequest { repository: Some(d.repo("wide.git")), ..Default::default() };
        async move { RefServiceClient::new(ch).find_all_branches(req).await.unwrap().into_inner() }
    };
    // Warm up, and check the answer is whole when read.
    let (mut n, mut bytes) = (0, 0);
    let mut s = branches(ch.clone()).await;
    while let Some(m) = s.message().await.unwrap() {
        n += m.branches.len();
        bytes += prost::Message::encoded_len(&m);
    }
    assert_eq!(n, 20_001);
    assert!(bytes > 12 << 20, "the answer is only {bytes} bytes");
    let (threads_idle, rss_idle) = threads_and_rss(d.pid());

    let mut stalled = Vec::new();
    for _ in 0..30 {
        let ch = d.channel().await;
        let mut s = branches(ch.clone()).await;
        assert!(s.message().await.unwrap().is_some());
        stalled.push((ch, s));
    }
    // The producers started together may have grown tokio's blocking pool for a moment; those threads
    // go after their 10 s keep-alive. A thread held by a stalled call would stay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (threads, rss) = threads_and_rss(d.pid());
    let held = eventually(20, || async { threads_and_rss(d.pid()).0 <= threads_idle + 2 }).await;
    eprintln!(
        "30 stalled FindAllBranches: threads {threads_idle} -> {threads} -> {}, RSS {} -> {} MiB",
        threads_and_rss(d.pid()).0,
        rss_idle >> 20,
        rss >> 20
    );
    assert!(held, "threads grew from {threads_idle} to {} and stay", threads_and_rss(d.pid()).0);

    find_commit_meanwhile(&ch, d.repo("wide.git")).await;
    drop(stalled);
    let settled = eventually(10, || async { threads_and_rss(d.pid()).0 <= threads_idle + 4 }).await;
    assert!(settled, "threads {} after the clients left (idle {threads_idle})", threads_and_rss(d.pid()).0);
}

/// FindCommit(`master~0`) answers while other clients stall; how long it took is shown.
async fn find_commit_meanwhile(ch: &AuthChannel, repository: Repository) {
    let started = std::time::Instant::now();
    let found = CommitServiceClient::new(ch.clone())
        .find_commit(FindCommitRequest {
            repository: Some(repository),
            revision: b"master~0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.commit.is_some());
    eprintln!("FindCommit(master~0) meanwhile: {:?}", started.elapsed());
}

//! Object reads run on a fixed pool of threads and within one cache budget: a burst of concurrent reads
//! grows neither the thread count nor the caches past what is configured, and once it is over the handles
//! and repositories it opened are closed again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rgitaly::proto::gitaly::blob_service_client::BlobServiceClient;
use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
use rgitaly::proto::gitaly::*;

const BUDGET: u64 = 16 << 20;

fn start() -> (Daemon, u16) {
    let port = free_port();
    let d = Daemon::start_with(&format!(
        "prometheus_listen_addr = \"127.0.0.1:{port}\"\n[read_cache]\nthreads = 2\nmax_bytes = {BUDGET}\nhandle_bytes = 6291456\nidle_timeout = \"1s\"\n"
    ));
    (d, port)
}

/// A repository with 40 small files over a few commits; their ids and contents.
fn seed(d: &Daemon) -> Vec<(String, Vec<u8>)> {
    let wt = d.work_dir("src");
    run(git(&wt).args(["init", "--quiet", "-b", "master"]));
    for batch in 0..4 {
        for i in 0..10 {
            let n = batch * 10 + i;
            std::fs::write(wt.join(format!("f{n}.txt")), format!("file {n}\n").repeat(50 + n)).unwrap();
        }
        run(git(&wt).args(["add", "-A"]));
        run(git(&wt).args(["commit", "--quiet", "-m", &format!("batch {batch}")]));
    }
    d.seed_repo("budget.git", &wt);
    run(git(&d.repo_path("budget.git")).args(["repack", "-adq"]));
    (0..40)
        .map(|n| {
            let oid = stdout(git(&wt).args(["rev-parse", &format!("HEAD:f{n}.txt")])).trim().to_string();
            (oid, format!("file {n}\n").repeat(50 + n).into_bytes())
        })
        .collect()
}

fn gauges(port: u16) -> (f64, f64, f64, f64) {
    let body = http_get(port, "/metrics");
    let cache = metric_value(&body, "rgitaly_read_cache_bytes{cache=\"object\"}")
        + metric_value(&body, "rgitaly_read_cache_bytes{cache=\"delta\"}");
    (
        metric_value(&body, "rgitaly_read_handles{state=\"in_use\"}"),
        metric_value(&body, "rgitaly_read_handles{state=\"idle\"}"),
        metric_value(&body, "rgitaly_read_repositories_open"),
        cache,
    )
}

/// 64 callers at once, each on its own connection, 15 GetBlob and 5 TreeEntry calls each: every answer is
/// right, the daemon never has more threads than at idle, the caches never hold more than the budget, and
/// a second after the burst no handle or repository is open and the thread count is still the idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reads_leaves_threads_and_handles_as_they_were() {
    let (d, port) = start();
    let blobs = Arc::new(seed(&d));
    let (idle_threads, _) = threads_and_rss(d.pid());
    let body = http_get(port, "/metrics");
    assert_eq!(metric_value(&body, "rgitaly_read_threads"), 2.0);
    assert_eq!(metric_value(&body, "rgitaly_read_cache_budget_bytes"), BUDGET as f64);
    assert_eq!(gauges(port), (0.0, 0.0, 0.0, 0.0));

    // Peaks while the burst runs, sampled from /proc and /metrics.
    let (stop, peak_threads, peak_cache) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, peak_threads, peak_cache, pid) = (stop.clone(), peak_threads.clone(), peak_cache.clone(), d.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_threads.fetch_max(threads_and_rss(pid).0, Ordering::Relaxed);
                peak_cache.fetch_max(gauges(port).3 as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut callers = Vec::new();
    for t in 0..64usize {
        let ch = d.channel().await;
        let (blobs, repo) = (blobs.clone(), d.repo("budget.git"));
        callers.push(tokio::spawn(async move {
            for i in 0..20usize {
                let (oid, data) = &blobs[(t * 7 + i) % blobs.len()];
                let mut got = Vec::new();
                if i % 4 == 3 {
                    let n = (t * 7 + i) % blobs.len();
                    let mut s = CommitServiceClient::new(ch.clone())
                        .tree_entry(TreeEntryRequest {
                            repository: Some(repo.clone()),
                            revision: b"master".to_vec(),
                            path: format!("f{n}.txt").into_bytes(),
                            limit: 0,
                            max_size: 0,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    while let Some(m) = s.message().await.unwrap() {
                        got.extend_from_slice(&m.data);
                    }
                } else {
                    let mut s = BlobServiceClient::new(ch.clone())
                        .get_blob(GetBlobRequest { repository: Some(repo.clone()), oid: oid.clone(), limit: -1 })
                        .await
                        .unwrap()
                        .into_inner();
                    while let Some(m) = s.message().await.unwrap() {
                        got.extend_from_slice(&m.data);
                    }
                }
                assert_eq!(&got, data, "caller {t}, call {i}");
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let peak_threads = peak_threads.load(Ordering::Relaxed);
    assert!(peak_threads <= idle_threads, "threads grew from {idle_threads} to {peak_threads} under the burst");
    let peak_cache = peak_cache.load(Ordering::Relaxed);
    assert!(peak_cache > 0, "the burst used no cache");
    assert!(peak_cache <= BUDGET, "caches held {peak_cache} bytes, over the budget of {BUDGET}");
    // Idle handles and the repository are closed one idle timeout (1s) after their last use.
    assert!(
        eventually(10, || async { gauges(port) == (0.0, 0.0, 0.0, 0.0) }).await,
        "handles, repositories and caches still open after the burst: {:?}",
        gauges(port)
    );
    assert_eq!(threads_and_rss(d.pid()).0, idle_threads);
}

/// Reads spread over more repositories than the budget has handles for still answer right, and the
/// budget holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_repositories_share_the_budget() {
    let (d, port) = start();
    let blobs = seed(&d);
    for i in 0..8 {
        let src = d.repo_path("budget.git");
        run(git(&d.work_dir("copies"))
            .args(["clone", "--quiet", "--bare", "--no-local"])
            .arg(&src)
            .arg(d.repo_path(&format!("copy{i}.git"))));
    }
    let ch = d.channel().await;
    let mut calls = Vec::new();
    for i in 0..8 {
        for (oid, data) in blobs.iter().take(10) {
            let (ch, repo, oid, data) = (ch.clone(), d.repo(&format!("copy{i}.git")), oid.clone(), data.clone());
            calls.push(tokio::spawn(async move {
                let mut s = BlobServiceClient::new(ch)
                    .get_blob(GetBlobRequest { repository: Some(repo), oid, limit: -1 })
                    .await
                    .unwrap()
                    .into_inner();
                let mut got = Vec::new();
                while let Some(m) = s.message().await.unwrap() {
                    got.extend_from_slice(&m.data);
                }
                assert_eq!(got, data);
            }));
        }
    }
    for c in calls {
        c.await.unwrap();
    }
    let (_, idle, repositories, cache) = gauges(port);
    assert!(cache <= BUDGET as f64, "caches hold {cache} bytes, over the budget");
    // 6 MiB handles in a 16 MiB budget: at most two keep their caches idle.
    assert!(idle <= 2.0, "{idle} idle handles");
    assert!(repositories >= 1.0);
    assert!(eventually(10, || async { gauges(port) == (0.0, 0.0, 0.0, 0.0) }).await, "{:?}", gauges(port));
}

//! Memory and thread benchmark (run: `cargo build --release --workspace && cargo bench --bench memory`).
//!
//! On the read bench's repository (50,000 commits, 10,000 branches, written with bitmaps as a served
//! repository has them) plus one commit of four 10 MiB blobs, over the daemon's Unix socket: a mix of
//! FindCommit, TreeEntry, GetTreeEntries, GetBlob (small), GetBlobs (small, 10 a call), GetBlob (10 MiB),
//! ListCommitsByOid and CommitDiff, all running at once, each at concurrency 1, then 16, then 64; the last
//! round also runs 50 full clones of `main` (SSHUploadPack, the pack read and discarded) at the same time.
//! Reported: calls/s and p99 per RPC and round, the daemon's peak RSS and threads per round (sampled every
//! 20 ms from /proc), and after the load how RSS, threads and the read gauges come back over 30 s.
//!
//! `RGITALY_BENCH_BINARY=path` measures another daemon binary (e.g. an older build) with the same load;
//! `MEMORY_BENCH_CONFIG` appends to the daemon's config. Loopback only; every phase is bounded by a call count.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::blob_service_client::BlobServiceClient;
use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
use rgitaly::proto::gitaly::diff_service_client::DiffServiceClient;
use rgitaly::proto::gitaly::ssh_service_client::SshServiceClient;
use rgitaly::proto::gitaly::*;

const MIB: f64 = 1024.0 * 1024.0;
const BIG: usize = 10 << 20;

/// Peak RSS, anonymous and file-backed RSS (each its own peak) and threads of a process, sampled from
/// /proc until stopped.
struct Sampler {
    rss: Arc<[AtomicU64; 4]>,
    stop: Arc<AtomicBool>,
}

/// RSS, anonymous RSS (heap and stacks), file-backed RSS (mapped packs and indexes) and threads.
fn status(pid: u32) -> [u64; 4] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    [field("VmRSS:") * 1024, field("RssAnon:") * 1024, field("RssFile:") * 1024, field("Threads:")]
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let rss: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rss.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (peak, now) in r.iter().zip(status(pid)) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler { rss, stop }
    }

    /// Peaks of RSS, anonymous RSS, file-backed RSS and threads.
    fn finish(self) -> [u64; 4] {
        self.stop.store(true, Ordering::Relaxed);
        std::array::from_fn(|i| self.rss[i].load(Ordering::Relaxed))
    }
}

/// The inputs the calls pick from.
struct Inputs {
    commits: Vec<String>,
    big: Vec<String>,
    tip: String,
}

type Call = Arc<dyn Fn(AuthChannel, usize) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

fn calls(inputs: Arc<Inputs>) -> Vec<(&'static str, Call, usize)> {
    let i1 = inputs.clone();
    let find_commit: Call = Arc::new(move |ch, i| {
        let rev = i1.commits[(i * 7919) % i1.commits.len()].clone().into_bytes();
        Box::pin(async move {
            let c = CommitServiceClient::new(ch)
                .find_commit(FindCommitRequest { repository: r(), revision: rev, trailers: false })
                .await
                .unwrap();
            assert!(c.into_inner().commit.is_some());
        })
    });
    let tree_entry: Call = Arc::new(|ch, i| Box::pin(common::tree_entry(ch, i)));
    let tree_entries: Call = Arc::new(|ch, i| {
        Box::pin(async move {
            let s = CommitServiceClient::new(ch)
                .get_tree_entries(GetTreeEntriesRequest {
                    repository: r(),
                    revision: b"main".to_vec(),
                    path: format!("dir{}", i % 50).into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let n = drain(s, |m| m.entries.len()).await;
            assert_eq!(n, 2);
        })
    });
    let get_blob: Call = Arc::new(|ch, i| {
        Box::pin(async move {
            let s = BlobServiceClient::new(ch)
                .get_blob(GetBlobRequest { repository: r(), oid: small_blob(i), limit: -1 })
                .await
                .unwrap()
                .into_inner();
            let n = drain(s, |m| m.data.len()).await;
            assert!(n > 500);
        })
    });
    let get_blobs: Call = Arc::new(|ch, i| {
        Box::pin(async move {
            let revision_paths = (0..10)
                .map(|k| get_blobs_request::RevisionPath {
                    revision: "main".into(),
                    path: format!("dir{}/file{}.txt", (i + k) % 50, (i + k) % 50).into_bytes(),
                })
                .collect();
            let s = BlobServiceClient::new(ch)
                .get_blobs(GetBlobsRequest { repository: r(), revision_paths, limit: -1 })
                .await
                .unwrap()
                .into_inner();
            let n = drain(s, |m| m.data.len()).await;
            assert!(n > 5000);
        })
    });
    let i2 = inputs.clone();
    let big_blob: Call = Arc::new(move |ch, i| {
        let oid = i2.big[i % i2.big.len()].clone();
        Box::pin(async move {
            let s = BlobServiceClient::new(ch)
                .max_decoding_message_size(8 << 20)
                .get_blob(GetBlobRequest { repository: r(), oid, limit: -1 })
                .await
                .unwrap()
                .into_inner();
            let n = drain(s, |m| m.data.len()).await;
            assert_eq!(n, BIG);
        })
    });
    let i3 = inputs.clone();
    let list_commits: Call =
        Arc::new(move |ch, i| Box::pin(common::list_commits_by_oid(ch, ten_commits(&i3.commits, i))));
    let i4 = inputs.clone();
    let commit_diff: Call = Arc::new(move |ch, i| {
        // `commits` is newest first: the next one is the parent.
        let k = (i * 7919) % (i4.commits.len() - 1);
        let (right, left) = (i4.commits[k].clone(), i4.commits[k + 1].clone());
        Box::pin(async move {
            let s = DiffServiceClient::new(ch)
                .commit_diff(CommitDiffRequest {
                    repository: r(),
                    left_commit_id: left,
                    right_commit_id: right,
                    enforce_limits: true,
                    max_files: 100,
                    max_lines: 1000,
                    max_bytes: 100_000,
                    max_patch_bytes: 100_000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let n = drain(s, |_| 1).await;
            assert!(n >= 1);
        })
    });
    // Name, call, and calls per unit of concurrency (so each round takes a few seconds).
    vec![
        ("FindCommit", find_commit, 150),
        ("TreeEntry", tree_entry, 120),
        ("GetTreeEntries", tree_entries, 100),
        ("GetBlob (small)", get_blob, 120),
        ("GetBlobs (10 small)", get_blobs, 40),
        ("GetBlob (10 MiB)", big_blob, 2),
        ("ListCommitsByOid (10)", list_commits, 60),
        ("CommitDiff", commit_diff, 40),
    ]
}

static SMALL_BLOBS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn small_blob(i: usize) -> String {
    let b = SMALL_BLOBS.get().unwrap();
    b[i % b.len()].clone()
}

/// One full clone of `tip` over SSHUploadPack (protocol v0, side-band-64k): the advertisement, one want,
/// `done`, then the whole pack, read and dropped. Returns the bytes received.
async fn clone(ch: AuthChannel, tip: String) -> u64 {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(SshUploadPackRequest { repository: r(), ..Default::default() }).await.unwrap();
    let mut s = SshServiceClient::new(ch)
        .max_decoding_message_size(8 << 20)
        .ssh_upload_pack(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut advertisement = Vec::new();
    'adv: loop {
        let m = s.message().await.unwrap().expect("advertisement");
        advertisement.extend_from_slice(&m.stdout);
        let mut pos = 0;
        while pos + 4 <= advertisement.len() {
            let n = usize::from_str_radix(std::str::from_utf8(&advertisement[pos..pos + 4]).unwrap(), 16).unwrap();
            if n == 0 {
                break 'adv;
            }
            pos += n;
        }
    }
    let want = format!("want {tip} multi_ack_detailed side-band-64k ofs-delta agent=bench\n");
    let stdin = format!("{:04x}{want}00000009done\n", want.len() + 4);
    tx.send(SshUploadPackRequest { stdin: stdin.into_bytes().into(), ..Default::default() }).await.unwrap();
    drop(tx);
    let mut bytes = 0u64;
    let mut exit = None;
    while let Some(m) = s.message().await.unwrap() {
        bytes += m.stdout.len() as u64;
        if let Some(e) = m.exit_status {
            exit = Some(e.value);
        }
    }
    // upload-pack's exit status is sent only when it failed.
    assert_eq!(exit.unwrap_or(0), 0, "upload-pack failed");
    bytes
}

/// Adds a commit with four 10 MiB blobs of random bytes on `refs/heads/big`; returns their ids.
fn add_big_blobs(repo: &std::path::Path) -> Vec<String> {
    let mut fi = git(repo).args(["fast-import", "--quiet"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    {
        let mut w = std::io::BufWriter::new(fi.stdin.take().unwrap());
        let mut state = 0x9E3779B97F4A7C15u64;
        for i in 1..=4 {
            let mut data = vec![0u8; BIG];
            for chunk in data.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            write!(w, "blob\nmark :{i}\ndata {BIG}\n").unwrap();
            w.write_all(&data).unwrap();
            writeln!(w).unwrap();
        }
        let msg = "big blobs\n";
        write!(
            w,
            "commit refs/heads/big\ncommitter C O Mitter <c@example.com> 1600000000 +0000\ndata {}\n{msg}",
            msg.len()
        )
        .unwrap();
        for i in 1..=4 {
            writeln!(w, "M 100644 :{i} big{i}.bin").unwrap();
        }
        writeln!(w).unwrap();
    }
    assert!(fi.wait().unwrap().success());
    (1..=4).map(|i| out(git(repo).args(["rev-parse", &format!("big:big{i}.bin")]))).collect()
}

fn gauges(text: &str) -> String {
    let names = [
        "rgitaly_read_handles{state=\"in_use\"}",
        "rgitaly_read_handles{state=\"idle\"}",
        "rgitaly_read_repositories_open",
        "rgitaly_read_cache_bytes{cache=\"delta\"}",
        "rgitaly_read_cache_bytes{cache=\"object\"}",
    ];
    names.iter().filter_map(|n| sample(text, n).map(|v| format!("{n} {v}"))).collect::<Vec<_>>().join(", ")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let extra = std::env::var("MEMORY_BENCH_CONFIG").unwrap_or_default();
    let (daemon, address, metrics_port, repo) = start(dir.path(), &extra).await;
    let pid = daemon.0.id();
    let big = add_big_blobs(&repo);
    // A served repository has bitmaps (upstream's housekeeping writes them): clones reuse the pack.
    out(git(&repo).args(["repack", "-a", "-d", "-b", "-q"]));
    let commits: Vec<String> = out(git(&repo).args(["rev-list", "main"])).lines().map(str::to_string).collect();
    let tip = commits[0].clone();
    let small: Vec<String> =
        out(git(&repo).args(["ls-tree", "-r", "--format=%(objectname)", "main"])).lines().map(str::to_string).collect();
    SMALL_BLOBS.set(small).unwrap();
    let inputs = Arc::new(Inputs { commits, big, tip });
    let [idle_rss, _, _, idle_threads] = status(pid);
    println!(
        "repository: {} commits, 4 blobs of 10 MiB; daemon idle: {:.1} MiB RSS, {idle_threads} threads",
        inputs.commits.len(),
        idle_rss as f64 / MIB
    );
    println!("\n| round | RPC | calls | calls/s | p99 ms |\n|---|---|---|---|---|");
    let mut peaks = Vec::new();
    let rounds: Vec<usize> = std::env::var("MEMORY_BENCH_ROUNDS")
        .unwrap_or("1,16,64".into())
        .split(',')
        .map(|c| c.trim().parse().expect("MEMORY_BENCH_ROUNDS: concurrencies"))
        .collect();
    let clones: usize =
        std::env::var("MEMORY_BENCH_CLONES").map(|v| v.parse().expect("MEMORY_BENCH_CLONES")).unwrap_or(50);
    let only_clones = std::env::var_os("MEMORY_BENCH_ONLY_CLONES").is_some();
    for c in rounds {
        let sampler = Sampler::start(pid);
        let started = Instant::now();
        let mut running = Vec::new();
        for (name, call, per) in if only_clones { Vec::new() } else { calls(inputs.clone()) } {
            let address = address.clone();
            let n = per * c.clamp(1, 16) * if c == 1 { 4 } else { 1 };
            let n = n.max(c);
            running.push(tokio::spawn(async move {
                let f = move |ch: AuthChannel, i: usize| call(ch, i);
                (name, n, run(&address, c, n, f).await)
            }));
        }
        let clones_n = clones;
        let clones = if c == 64 && clones > 0 {
            let inputs = inputs.clone();
            let address = address.clone();
            Some(tokio::spawn(async move {
                let t = Instant::now();
                let mut all = Vec::new();
                for _ in 0..clones {
                    let ch = rgitaly::client::connect(&address, None).await.unwrap();
                    all.push(tokio::spawn(clone(ch, inputs.tip.clone())));
                }
                let mut bytes = 0;
                for a in all {
                    bytes += a.await.unwrap();
                }
                (bytes / clones as u64, t.elapsed())
            }))
        } else {
            None
        };
        for r in running {
            let (name, n, s) = r.await.unwrap();
            println!("| c{c} | {name} | {n} | {:.0} | {:.2} |", s.rps, s.p99.as_secs_f64() * 1e3);
        }
        if let Some(clones) = clones {
            let (bytes, took) = clones.await.unwrap();
            println!(
                "| c{c} | {clones_n} clones at once | {clones_n} | {:.2} | pack {:.1} MB each, all done in {:.1}s |",
                clones_n as f64 / took.as_secs_f64(),
                bytes as f64 / 1e6,
                took.as_secs_f64(),
            );
        }
        peaks.push((c, sampler.finish(), started.elapsed()));
    }
    println!(
        "\n| round | peak RSS MiB | peak anon MiB | peak file MiB | peak threads | took s |\n|---|---|---|---|---|---|"
    );
    for (c, [rss, anon, file, threads], took) in &peaks {
        println!(
            "| c{c}{} | {:.1} | {:.1} | {:.1} | {threads} | {:.1} |",
            if *c == 64 && clones > 0 { " + clones" } else { "" },
            *rss as f64 / MIB,
            *anon as f64 / MIB,
            *file as f64 / MIB,
            took.as_secs_f64()
        );
    }
    println!("\nafter the load (RSS MiB / threads / read gauges):");
    let stopped = Instant::now();
    let mut under = None;
    for s in 0..=30 {
        let [rss, _, _, threads] = status(pid);
        if under.is_none() && rss <= 30 << 20 {
            under = Some(stopped.elapsed());
        }
        if s % 5 == 0 {
            println!("  {s:>2}s: {:.1} / {threads} / {}", rss as f64 / MIB, gauges(&scrape(metrics_port)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    match under {
        Some(t) => println!("RSS back to <= 30 MiB after {:.1}s", t.as_secs_f64()),
        None => println!("RSS not back to <= 30 MiB within 30s"),
    }
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if let Some(l) = hwm.lines().find(|l| l.starts_with("VmHWM:")) {
        println!("daemon {l}");
    }
}

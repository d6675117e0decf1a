//! Read-path benchmark (run: `cargo build --release --workspace && cargo bench --bench read`).
//!
//! On a generated repository (50,000 commits, 10,000 branches; cached under `target/bench-read/`), over the
//! daemon's Unix socket, at concurrency 1 and 16: throughput and p50/p99 latency of FindCommit, TreeEntry,
//! GetBlob, FindAllBranchNames and ListCommitsByOid, and the number of git processes the daemon started
//! (its `rgitaly_git_processes_spawned_total`).
//!
//! In the same run, two FindCommit baselines served by this process on their own Unix sockets, with the same
//! request, response and commit parsing:
//! - spawn: one `git cat-file commit` per call (what a naive server does);
//! - batch: persistent `git cat-file --batch` processes, one per concurrent call (what upstream does).
//!
//! Loopback only; every phase is bounded by a call count.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::blob_service_client::BlobServiceClient;
use rgitaly::proto::gitaly::commit_service_client::CommitServiceClient;
use rgitaly::proto::gitaly::commit_service_server::{CommitService, CommitServiceServer};
use rgitaly::proto::gitaly::ref_service_client::RefServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::{Request, Response, Status};

fn row(name: &str, c: usize, s: &Stats, forks: Option<u64>) {
    println!(
        "| {name} | {c} | {:.0} | {:.3} | {:.3} | {} |",
        s.rps,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        forks.map(|f| f.to_string()).unwrap_or_else(|| "—".into())
    );
}

/// One persistent `git cat-file --batch`.
struct CatFile {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    fn start(repo: &Path) -> CatFile {
        let mut child =
            git(repo).args(["cat-file", "--batch"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        CatFile {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        }
    }

    /// `(oid, data)` of `<revision>^{commit}`, or None if missing.
    fn commit(&mut self, revision: &str) -> Option<(String, Vec<u8>)> {
        writeln!(self.stdin, "{revision}^{{commit}}").unwrap();
        self.stdin.flush().unwrap();
        let mut header = String::new();
        self.stdout.read_line(&mut header).unwrap();
        let mut parts = header.split_whitespace();
        let oid = parts.next()?.to_string();
        if parts.next()? != "commit" {
            return None;
        }
        let size: usize = parts.next()?.parse().ok()?;
        let mut data = vec![0; size + 1];
        self.stdout.read_exact(&mut data).unwrap();
        data.pop();
        Some((oid, data))
    }
}

/// FindCommit served the way other servers do it.
#[derive(Clone)]
enum Baseline {
    Spawn(PathBuf),
    Batch(PathBuf, Arc<Mutex<Vec<CatFile>>>),
}

#[tonic::async_trait]
impl CommitService for Baseline {
    async fn find_commit(&self, r: Request<FindCommitRequest>) -> Result<Response<FindCommitResponse>, Status> {
        let rev = String::from_utf8_lossy(&r.into_inner().revision).into_owned();
        let this = self.clone();
        let commit = tokio::task::spawn_blocking(move || match this {
            Baseline::Spawn(repo) => {
                let o = git(&repo).args(["cat-file", "commit", &format!("{rev}^{{commit}}")]).output().unwrap();
                if !o.status.success() {
                    return None;
                }
                let oid = out(git(&repo).args(["rev-parse", &format!("{rev}^{{commit}}")]));
                Some(rgitaly::odb::commit::parse_commit(&oid, &o.stdout))
            }
            Baseline::Batch(repo, pool) => {
                let mut cat = pool.lock().unwrap().pop().unwrap_or_else(|| CatFile::start(&repo));
                let found = cat.commit(&rev).map(|(oid, data)| rgitaly::odb::commit::parse_commit(&oid, &data));
                pool.lock().unwrap().push(cat);
                found
            }
        })
        .await
        .unwrap();
        Ok(Response::new(FindCommitResponse { commit }))
    }
}

async fn serve_baseline(socket: PathBuf, b: Baseline) {
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CommitServiceServer::new(b))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
}

// The load generator is one thread: on a 2-core machine a multi-threaded client takes CPU time slices from
// the daemon it measures, and the p99 then shows the scheduler rather than the server.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, address, metrics_port, repo) = start(dir.path(), "").await;
    let spawn_socket = dir.path().join("spawn.socket");
    let batch_socket = dir.path().join("batch.socket");
    serve_baseline(spawn_socket.clone(), Baseline::Spawn(repo.clone())).await;
    serve_baseline(batch_socket.clone(), Baseline::Batch(repo.clone(), Arc::new(Mutex::new(Vec::new())))).await;

    let commits: Arc<Vec<String>> =
        Arc::new(out(git(&repo).args(["rev-list", "main"])).lines().map(str::to_string).collect());
    let branches = out(git(&repo).args(["for-each-ref", "--format=%(refname)", "refs/heads/"])).lines().count();
    let blob = out(git(&repo).args(["rev-parse", "main:dir7/file7.txt"]));
    println!(
        "repository: {} commits, {} branches, {}",
        commits.len(),
        branches,
        out(git(&repo).args(["count-objects", "-vH"])).replace('\n', ", ")
    );

    // For profiling: `READ_BENCH_PROFILE=N` runs only N FindCommit calls at concurrency 16 against the daemon.
    if let Some(n) = std::env::var("READ_BENCH_PROFILE").ok().and_then(|v| v.parse::<usize>().ok()) {
        println!("daemon pid {}", _daemon.0.id());
        let commits = commits.clone();
        let s = measure(&address, 16, n, move |ch: AuthChannel, i: usize| {
            let rev = commits[(i * 7919) % commits.len()].clone().into_bytes();
            async move {
                CommitServiceClient::new(ch)
                    .find_commit(FindCommitRequest { repository: r(), revision: rev, trailers: false })
                    .await
                    .unwrap();
            }
        })
        .await;
        row("FindCommit (rgitaly)", 16, &s, None);
        return;
    }
    println!("\n| RPC | concurrency | calls/s | p50 ms | p99 ms | git processes |\n|---|---|---|---|---|---|");
    // `READ_BENCH_ONLY=GetBlob,TreeEntry` measures only the RPCs whose names contain one of those words.
    let only = std::env::var("READ_BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|w| name.contains(w));
    for c in [1, 16] {
        let find_commit = {
            let commits = commits.clone();
            move |ch: AuthChannel, i: usize| {
                let rev = commits[(i * 7919) % commits.len()].clone().into_bytes();
                async move {
                    let resp = CommitServiceClient::new(ch)
                        .find_commit(FindCommitRequest { repository: r(), revision: rev, trailers: false })
                        .await
                        .unwrap();
                    assert!(resp.into_inner().commit.is_some());
                }
            }
        };
        let calls = if c == 1 { 3000 } else { 8000 };
        if want("FindCommit") {
            let before = spawned(metrics_port);
            let s = measure(&address, c, calls, find_commit.clone()).await;
            row("FindCommit (rgitaly)", c, &s, Some(spawned(metrics_port) - before));
            let base_calls = if c == 1 { 300 } else { 800 };
            let s = measure(&format!("unix:{}", spawn_socket.display()), c, base_calls, find_commit.clone()).await;
            row("FindCommit (spawn per call)", c, &s, None);
            let s = measure(&format!("unix:{}", batch_socket.display()), c, calls, find_commit.clone()).await;
            row("FindCommit (cat-file --batch)", c, &s, None);
        }

        if want("TreeEntry") {
            let before = spawned(metrics_port);
            let s = measure(&address, c, calls, tree_entry).await;
            row("TreeEntry", c, &s, Some(spawned(metrics_port) - before));
        }

        if want("GetBlob") {
            let before = spawned(metrics_port);
            let blob = blob.clone();
            let s = measure(&address, c, calls, move |ch, _| {
                let oid = blob.clone();
                async move {
                    let s = BlobServiceClient::new(ch)
                        .get_blob(GetBlobRequest { repository: r(), oid, limit: -1 })
                        .await
                        .unwrap()
                        .into_inner();
                    drain(s, |_| 0).await;
                }
            })
            .await;
            row("GetBlob", c, &s, Some(spawned(metrics_port) - before));
        }

        if want("FindAllBranchNames") {
            let before = spawned(metrics_port);
            let s = measure(&address, c, if c == 1 { 100 } else { 320 }, |ch, _| async move {
                let s = RefServiceClient::new(ch)
                    .find_all_branch_names(FindAllBranchNamesRequest { repository: r() })
                    .await
                    .unwrap()
                    .into_inner();
                let n = drain(s, |m| m.names.len()).await;
                assert!(n >= BRANCHES);
            })
            .await;
            row("FindAllBranchNames (10k names)", c, &s, Some(spawned(metrics_port) - before));
        }

        if want("ListCommitsByOid") {
            let before = spawned(metrics_port);
            let list = commits.clone();
            let s = measure(&address, c, if c == 1 { 1000 } else { 3200 }, move |ch, i| {
                list_commits_by_oid(ch, ten_commits(&list, i))
            })
            .await;
            row("ListCommitsByOid (10 ids)", c, &s, Some(spawned(metrics_port) - before));
        }
    }
}

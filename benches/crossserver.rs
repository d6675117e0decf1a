//! Repositories across servers, on the read bench's repository (50,000 commits, 10,000 branches):
//!
//! - a fork through an object pool (CloneFromPoolInternal of a source that keeps no objects of its own, as
//!   after its link and a repack with `-l`) against `git clone --bare --shared` of the pool plus writing
//!   the pool link, and the fork's disk use against the source's; then the same fork of a source with an
//!   object of its own, which is fetched;
//! - ReplicateRepository from one daemon to another against `git clone --mirror --no-local`;
//! - OptimizeRepository on a repository that is already optimised.
//!
//! `cargo build --release --workspace && cargo bench --bench crossserver`. Figures are printed; nothing is
//! asserted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{git, out};
use rgitaly::gitaly_servers::{self, ServerInfo};
use rgitaly::proto::gitaly::object_pool_service_client::ObjectPoolServiceClient;
use rgitaly::proto::gitaly::repository_service_client::RepositoryServiceClient;
use rgitaly::proto::gitaly::*;

const RUNS: usize = 5;
const POOL: &str = "@pools/ab/cd/abcd0000000000000000000000000000000000000000000000000000000000ff.git";

fn repo(storage: &str, path: &str) -> Repository {
    Repository { storage_name: storage.into(), relative_path: path.into(), ..Default::default() }
}

fn with_servers<T>(msg: T, servers: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("gitaly-servers", servers.parse().unwrap());
    r
}

fn du(path: &Path) -> u64 {
    out(std::process::Command::new("du").args(["-sk"]).arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let off = "[daily_maintenance]\ndisabled = true\n";
    let (_a, address_a, _, source) = common::start(dir_a.path(), off).await;
    let replica_storage = dir_b.path().join("replica");
    std::fs::create_dir_all(&replica_storage).unwrap();
    let (_b, address_b, _, _) =
        common::start(dir_b.path(), &format!("{off}[[storage]]\nname = \"replica\"\npath = {replica_storage:?}\n"))
            .await;
    let servers = gitaly_servers::encode("default", &ServerInfo { address: address_a.clone(), token: String::new() });
    let ch_a = rgitaly::client::connect(&address_a, None).await.unwrap();
    let ch_b = rgitaly::client::connect(&address_b, None).await.unwrap();
    let mut repo_a = RepositoryServiceClient::new(ch_a.clone());
    let mut pools = ObjectPoolServiceClient::new(ch_a.clone());
    let storage_a = source.parent().unwrap().to_path_buf();

    // Fork through a pool.
    let pool = ObjectPool { repository: Some(repo("default", POOL)) };
    pools
        .create_object_pool(CreateObjectPoolRequest { object_pool: Some(pool.clone()), origin: common::r() })
        .await
        .unwrap();
    pools
        .link_repository_to_object_pool(LinkRepositoryToObjectPoolRequest {
            object_pool: Some(pool.clone()),
            repository: common::r(),
        })
        .await
        .unwrap();
    // The source borrows from the pool from now on: its own objects go (as GitLab's housekeeping would).
    out(git(&source).args(["repack", "-a", "-d", "-l", "-q"]));
    let pool_path = storage_a.join(POOL);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut fork_bytes, mut git_fork_bytes) = (0, 0);
    for i in 0..RUNS {
        let started = Instant::now();
        let req = CloneFromPoolInternalRequest {
            repository: Some(repo("default", &format!("forks/{i}.git"))),
            pool: Some(pool.clone()),
            source_repository: common::r(),
        };
        repo_a.clone_from_pool_internal(with_servers(req, &servers)).await.unwrap();
        ours.push(started.elapsed());
        fork_bytes = du(&storage_a.join(format!("forks/{i}.git")));

        let target = dir_a.path().join(format!("git-fork-{i}.git"));
        let started = Instant::now();
        out(git(dir_a.path()).args(["clone", "--quiet", "--bare", "--shared"]).arg(&pool_path).arg(&target));
        let rel = format!("../../storage/{POOL}/objects");
        std::fs::write(target.join("objects/info/alternates"), rel).unwrap();
        theirs.push(started.elapsed());
        git_fork_bytes = du(&target);
    }
    let source_bytes = du(&source) + du(&pool_path);
    let (o, t) = (median(ours), median(theirs));
    println!(
        "fork through a pool: CloneFromPoolInternal {:.1} ms, git clone --shared + link {:.1} ms, ratio {:.2}; fork {} KiB = {:.2}% of source + pool ({} KiB), git's clone {} KiB; the source's packed-refs {} KiB",
        o.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3,
        o.as_secs_f64() / t.as_secs_f64(),
        fork_bytes / 1024,
        100.0 * fork_bytes as f64 / source_bytes as f64,
        source_bytes / 1024,
        git_fork_bytes / 1024,
        std::fs::metadata(source.join("packed-refs")).map(|m| m.len() / 1024).unwrap_or(0)
    );

    // The same fork when the source has an object the pool lacks: its refs are fetched (upstream's way).
    let tree = out(git(&source).args(["rev-parse", "main^{tree}"]));
    let commit = out(git(&source).args(["commit-tree", "-p", "main", "-m", "own object", tree.trim()]));
    out(git(&source).args(["update-ref", "refs/heads/own-object", commit.trim()]));
    let mut fetched = Vec::new();
    for i in 0..RUNS {
        let started = Instant::now();
        let req = CloneFromPoolInternalRequest {
            repository: Some(repo("default", &format!("forks/fetched-{i}.git"))),
            pool: Some(pool.clone()),
            source_repository: common::r(),
        };
        repo_a.clone_from_pool_internal(with_servers(req, &servers)).await.unwrap();
        fetched.push(started.elapsed());
    }
    out(git(&source).args(["update-ref", "-d", "refs/heads/own-object"]));
    println!(
        "fork through a pool, source with an object of its own (fetched): CloneFromPoolInternal {:.1} ms",
        median(fetched).as_secs_f64() * 1e3
    );

    // Replication between daemons (of a standalone copy: the pool-linked source would ship its pool).
    let standalone = storage_a.join("standalone.git");
    out(git(dir_a.path()).args(["clone", "--quiet", "--mirror", "--no-local"]).arg(&source).arg(&standalone));
    let mut repo_b = RepositoryServiceClient::new(ch_b);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let path = format!("standalone-{i}.git");
        std::fs::rename(&standalone, storage_a.join(&path)).unwrap();
        let req = ReplicateRepositoryRequest {
            repository: Some(repo("replica", &path)),
            source: Some(repo("default", &path)),
        };
        let started = Instant::now();
        repo_b.replicate_repository(with_servers(req, &servers)).await.unwrap();
        ours.push(started.elapsed());
        std::fs::rename(storage_a.join(&path), &standalone).unwrap();

        let target = dir_b.path().join(format!("git-mirror-{i}.git"));
        let started = Instant::now();
        out(git(dir_b.path()).args(["clone", "--quiet", "--mirror", "--no-local"]).arg(&standalone).arg(&target));
        theirs.push(started.elapsed());
    }
    let (o, t) = (median(ours), median(theirs));
    println!(
        "replicate: ReplicateRepository {:.1} ms, git clone --mirror --no-local {:.1} ms, ratio {:.2}",
        o.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3,
        o.as_secs_f64() / t.as_secs_f64()
    );

    // OptimizeRepository with nothing to do.
    let req = || OptimizeRepositoryRequest { repository: Some(repo("default", "standalone-0.git")) };
    std::fs::rename(&standalone, storage_a.join("standalone-0.git")).unwrap();
    repo_a.optimize_repository(req()).await.unwrap();
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        repo_a.optimize_repository(req()).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "OptimizeRepository, already optimised: p50 {:.2} ms, p99 {:.2} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 99 / 100].as_secs_f64() * 1e3
    );
}

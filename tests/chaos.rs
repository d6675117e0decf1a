//! Chaos: workers killed with SIGKILL at random points of the heavy writes (UserCherryPick, UserRevert,
//! ResolveConflicts, WikiWritePage), 200 runs. Every call must succeed or fail truthfully ("nothing was
//! written" means the ref did not move), no ref may point at a half result, no ref lock may be left, and
//! `git fsck` stays clean.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::conflicts_service_client::ConflictsServiceClient;
use rgitaly::proto::gitaly::operation_service_client::OperationServiceClient;
use rgitaly::proto::gitaly::resolve_conflicts_request::ResolveConflictsRequestPayload as Payload;
use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::admin_service_client::AdminServiceClient;
use rgitaly::proto::rgitaly::{worker, ListWorkersRequest, Worker};

const RUNS: usize = 200;
const CONFIG: &str = "[workers]\nnum_workers = 3\nhealth_check_interval = \"200ms\"\ncrash_threshold = 100000\n";

fn rev(repo: &Path, r: &str) -> Option<String> {
    let out = git(repo).args(["rev-parse", "--verify", "--quiet", r]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn parents(repo: &Path, commit: &str) -> String {
    stdout(git(repo).args(["log", "-1", "--format=%P", commit]))
}

async fn workers(ch: &AuthChannel) -> Vec<Worker> {
    AdminServiceClient::new(ch.clone()).list_workers(ListWorkersRequest {}).await.unwrap().into_inner().workers
}

/// Waits until the pool is whole again: two active workers and a standby, all running.
async fn pool_whole(ch: &AuthChannel) {
    assert!(
        eventually(20, || async {
            let ws = workers(ch).await;
            let up = |role: worker::Role| {
                ws.iter().filter(|w| w.role == role as i32 && w.pid > 0 && process_alive(w.pid)).count()
            };
            up(worker::Role::Active) == 2 && up(worker::Role::Standby) == 1
        })
        .await,
        "the pool did not come back"
    );
}

/// A tiny deterministic generator for kill delays (the same runs every time).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[derive(Debug)]
enum Outcome {
    /// The call answered success; the commit it reports, if any.
    Done(Option<String>),
    /// The call failed; whether it claimed nothing was written.
    Failed { nothing_written: bool, message: String },
}

fn outcome<T>(r: Result<T, tonic::Status>, commit: impl Fn(&T) -> Option<String>) -> Outcome {
    match r {
        Ok(v) => Outcome::Done(commit(&v)),
        Err(s) => Outcome::Failed {
            nothing_written: s.message().contains("nothing was written"),
            message: format!("{:?}: {}", s.code(), s.message()),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_never_leave_half_results() {
    let d = Daemon::start_with(CONFIG);
    let src = d.work_dir("src");
    let wt = sample_worktree(&src);
    // Two branches conflicting on file1.txt, for ResolveConflicts.
    run(git(&wt).args(["checkout", "--quiet", "-b", "cf-ours", "main"]));
    commit_file(&wt, "file1.txt", "ours\n");
    run(git(&wt).args(["checkout", "--quiet", "-b", "cf-theirs", "main"]));
    commit_file(&wt, "file1.txt", "theirs\n");
    run(git(&wt).args(["checkout", "--quiet", "main"]));
    let bare = d.seed_repo("p.git", &wt);
    let wiki = d.repo_path("w.git");
    run(git(&src).args(["init", "--quiet", "--bare", "-b", "master"]).arg(&wiki));
    let ch = d.channel().await;
    pool_whole(&ch).await;

    let main = rev(&bare, "main").unwrap();
    let side = rev(&bare, "side").unwrap();
    let (cf_ours, cf_theirs) = (rev(&bare, "cf-ours").unwrap(), rev(&bare, "cf-theirs").unwrap());
    let repo = Some(d.repo("p.git"));
    let mut lcg = Lcg(0x5eed);
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for run_no in 0..RUNS {
        let kind = run_no % 4;
        // Each run writes a ref of its own, so every result can be judged on its own.
        let (branch, before) = match kind {
            0 => (format!("pick-{run_no}"), side.clone()),
            1 => (format!("revert-{run_no}"), main.clone()),
            2 => (format!("src-{run_no}"), cf_ours.clone()),
            _ => ("master".to_string(), rev(&wiki, "master").unwrap_or_default()),
        };
        if kind != 3 {
            run(git(&bare).args(["update-ref", &format!("refs/heads/{branch}"), &before]));
        }
        let call = {
            let (ch, repo, main, branch) = (ch.clone(), repo.clone(), main.clone(), branch.clone());
            let (cf_ours, cf_theirs, wiki_repo) = (cf_ours.clone(), cf_theirs.clone(), d.repo("w.git"));
            tokio::spawn(async move {
                match kind {
                    0 | 1 => {
                        let mut ops = OperationServiceClient::new(ch);
                        let commit = Some(GitCommit { id: main.clone(), ..Default::default() });
                        let branch_name = branch.into_bytes();
                        if kind == 0 {
                            let req = UserCherryPickRequest {
                                repository: repo,
                                user: user(),
                                commit,
                                branch_name,
                                message: b"picked".to_vec(),
                                ..Default::default()
                            };
                            outcome(ops.user_cherry_pick(req).await, |r| {
                                r.get_ref().branch_update.as_ref().map(|b| b.commit_id.clone())
                            })
                        } else {
                            let req = UserRevertRequest {
                                repository: repo,
                                user: user(),
                                commit,
                                branch_name,
                                message: b"reverted".to_vec(),
                                ..Default::default()
                            };
                            outcome(ops.user_revert(req).await, |r| {
                                r.get_ref().branch_update.as_ref().map(|b| b.commit_id.clone())
                            })
                        }
                    }
                    2 => {
                        let header = ResolveConflictsRequestHeader {
                            repository: repo.clone(),
                            our_commit_oid: cf_ours,
                            target_repository: repo,
                            their_commit_oid: cf_theirs,
                            source_branch: branch.into_bytes(),
                            target_branch: b"cf-theirs".to_vec(),
                            commit_message: b"resolved".to_vec(),
                            user: user(),
                            timestamp: None,
                        };
                        let json = br#"[{"old_path":"file1.txt","new_path":"file1.txt","content":"both\n"}]"#;
                        let msgs = vec![
                            ResolveConflictsRequest {
                                resolve_conflicts_request_payload: Some(Payload::Header(header)),
                            },
                            ResolveConflictsRequest {
                                resolve_conflicts_request_payload: Some(Payload::FilesJson(json.to_vec())),
                            },
                        ];
                        let r = ConflictsServiceClient::new(ch).resolve_conflicts(tokio_stream::iter(msgs)).await;
                        outcome(r, |r| {
                            assert_eq!(r.get_ref().resolution_error, "");
                            None
                        })
                    }
                    _ => {
                        let req = WikiWritePageRequest {
                            repository: Some(wiki_repo),
                            name: format!("Page {run_no}").into_bytes(),
                            format: "markdown".into(),
                            commit_details: Some(WikiCommitDetails {
                                name: b"Jane".to_vec(),
                                email: b"jane@example.com".to_vec(),
                                message: format!("page {run_no}").into_bytes(),
                                user_id: 1,
                                user_name: b"jane".to_vec(),
                            }),
                            content: b"text\n".to_vec(),
                        };
                        let r = WikiServiceClient::new(ch).wiki_write_page(tokio_stream::iter(vec![req])).await;
                        outcome(r, |r| {
                            assert!(r.get_ref().duplicate_error.is_empty());
                            None
                        })
                    }
                }
            })
        };
        // Kill every active worker at a random point of the call.
        tokio::time::sleep(Duration::from_millis(lcg.next(25))).await;
        for w in workers(&ch).await {
            if w.role == worker::Role::Active as i32 && w.pid > 0 {
                unsafe { libc::kill(w.pid, libc::SIGKILL) };
            }
        }
        let result = tokio::time::timeout(Duration::from_secs(30), call).await.expect("the call ended").unwrap();

        // Judge the ref against what the call said.
        let repo_path = if kind == 3 { &wiki } else { &bare };
        let now = rev(repo_path, &format!("refs/heads/{branch}")).unwrap_or_default();
        let complete = |commit: &str| -> bool {
            match kind {
                0 => {
                    parents(&bare, commit) == side
                        && stdout(git(&bare).args(["log", "-1", "--format=%s", commit])) == "picked"
                }
                1 => {
                    parents(&bare, commit) == main
                        && stdout(git(&bare).args(["log", "-1", "--format=%s", commit])) == "reverted"
                }
                2 => {
                    parents(&bare, commit) == format!("{cf_ours} {cf_theirs}")
                        && stdout(git(&bare).args(["show", &format!("{commit}:file1.txt")])) == "both"
                }
                _ => {
                    parents(&wiki, commit) == before
                        && stdout(git(&wiki).args(["log", "-1", "--format=%s", commit])) == format!("page {run_no}")
                        && git(&wiki)
                            .args(["cat-file", "-e", &format!("{commit}:Page-{run_no}.md")])
                            .status()
                            .unwrap()
                            .success()
                }
            }
        };
        let label = match &result {
            Outcome::Done(reported) => {
                assert_ne!(now, before, "run {run_no}: success but the ref did not move");
                assert!(complete(&now), "run {run_no}: success left {now}, not a whole result");
                if let Some(reported) = reported {
                    assert_eq!(reported, &now, "run {run_no}: the reported commit is not the ref's");
                }
                "succeeded".to_string()
            }
            Outcome::Failed { nothing_written: true, .. } => {
                assert_eq!(now, before, "run {run_no}: 'nothing was written' but the ref moved: {result:?}");
                "failed, nothing written".to_string()
            }
            Outcome::Failed { message, .. } => {
                assert!(now == before || complete(&now), "run {run_no}: {message}: ref at a half result {now}");
                format!("failed ({})", if now == before { "ref unchanged" } else { "ref moved, whole" })
            }
        };
        *tally.entry(label).or_default() += 1;
        pool_whole(&ch).await;
    }
    eprintln!("chaos outcomes over {RUNS} runs: {tally:?}");
    assert!(tally.keys().any(|k| k.starts_with("failed")), "the kills must hit some calls: {tally:?}");
    for repo in [&bare, &wiki] {
        run(git(repo).args(["fsck", "--strict", "--no-progress"]));
        let locks = stdout(std::process::Command::new("find").arg(repo).args(["-name", "*.lock"]));
        assert!(locks.is_empty(), "locks left behind: {locks}");
    }
    d.assert_outside_untouched();
}

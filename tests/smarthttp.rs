//! SmartHTTPService driven by a gRPC client doing workhorse's stateless exchange, checked with real git.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;
use rgitaly::pktline;
use rgitaly::proto::gitaly::smart_http_service_client::SmartHttpServiceClient;
use rgitaly::proto::gitaly::{InfoRefsRequest, PostReceivePackRequest, PostUploadPackRequest};

fn setup() -> (Daemon, std::path::PathBuf) {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("p.git", &wt);
    (d, wt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_refs_has_service_header_and_refs() {
    let (d, wt) = setup();
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let mut c = SmartHttpServiceClient::new(d.channel().await);
    let req = InfoRefsRequest { repository: Some(d.repo("p.git")), ..Default::default() };
    let data = collect_data!(c.info_refs_upload_pack(req.clone()).await.unwrap().into_inner());
    let text = String::from_utf8_lossy(&data);
    assert!(text.starts_with("001e# service=git-upload-pack\n0000"), "{text}");
    assert!(text.contains(&format!("{head} refs/heads/main")), "{text}");
    assert!(text.ends_with("0000"));

    let data = collect_data!(c.info_refs_receive_pack(req.clone()).await.unwrap().into_inner());
    let text = String::from_utf8_lossy(&data);
    assert!(text.starts_with("001f# service=git-receive-pack\n0000"), "{text}");
    assert!(text.contains("report-status"), "{text}");

    // Protocol v2 advertisement.
    let v2 = InfoRefsRequest { git_protocol: "version=2".into(), ..req };
    let data = collect_data!(c.info_refs_upload_pack(v2).await.unwrap().into_inner());
    assert!(String::from_utf8_lossy(&data).contains("version 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_upload_pack_returns_a_pack_git_accepts() {
    let (d, wt) = setup();
    let mut c = SmartHttpServiceClient::new(d.channel().await);
    // The stateless exchange: the advertisement first, then a request for what it listed.
    let adv = InfoRefsRequest { repository: Some(d.repo("p.git")), ..Default::default() };
    let adv = String::from_utf8(collect_data!(c.info_refs_upload_pack(adv).await.unwrap().into_inner())).unwrap();
    let head = adv
        .lines()
        .find_map(|l| l.strip_suffix(" refs/heads/main").map(|p| p[p.len() - 40..].to_string()))
        .expect("main advertised");
    assert_eq!(head, stdout(git(&wt).args(["rev-parse", "HEAD"])));
    let mut body = pktline::encode(format!("want {head} ofs-delta no-progress\n").as_bytes());
    body.extend_from_slice(pktline::FLUSH);
    body.extend_from_slice(&pktline::encode(b"done\n"));
    let first = PostUploadPackRequest { repository: Some(d.repo("p.git")), ..Default::default() };
    // Split the body over several messages, as workhorse streams it.
    let mut reqs = vec![first];
    for chunk in body.chunks(7) {
        reqs.push(PostUploadPackRequest { data: chunk.to_vec().into(), ..Default::default() });
    }
    let data = collect_data!(c.post_upload_pack(futures::stream::iter(reqs)).await.unwrap().into_inner());
    assert!(data.starts_with(b"0008NAK\n"), "{:?}", String::from_utf8_lossy(&data[..data.len().min(40)]));
    let pack = &data[8..];
    assert!(pack.starts_with(b"PACK"));

    let target = d.work_dir("idx");
    run(git(&target).args(["init", "--quiet", "--bare", "r.git"]));
    let r = target.join("r.git");
    let mut child = git(&r).args(["index-pack", "--stdin", "--fix-thin"]).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(pack).unwrap();
    assert!(child.wait().unwrap().success(), "index-pack rejected the pack");
    assert_eq!(stdout(git(&r).args(["cat-file", "-t", &head])), "commit");
    assert_eq!(stdout(git(&r).args(["rev-list", "--count", &head])), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_receive_pack_updates_the_ref() {
    let (d, wt) = setup();
    let old = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let new = commit_file(&wt, "pushed.txt", "via smart http\n");
    let mut pack_objects = git(&wt)
        .args(["pack-objects", "--stdout", "--revs", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    pack_objects.stdin.take().unwrap().write_all(format!("{new}\n^{old}\n").as_bytes()).unwrap();
    let pack = pack_objects.wait_with_output().unwrap().stdout;

    let mut body = pktline::encode(format!("{old} {new} refs/heads/main\0report-status\n").as_bytes());
    body.extend_from_slice(pktline::FLUSH);
    body.extend_from_slice(&pack);
    let reqs = vec![
        PostReceivePackRequest { repository: Some(d.repo("p.git")), gl_id: "user-1".into(), ..Default::default() },
        PostReceivePackRequest { data: body.into(), ..Default::default() },
    ];
    let mut c = SmartHttpServiceClient::new(d.channel().await);
    let data = collect_data!(c.post_receive_pack(futures::stream::iter(reqs)).await.unwrap().into_inner());
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("unpack ok") && text.contains("ok refs/heads/main"), "{text}");
    assert_eq!(stdout(git(&d.repo_path("p.git")).args(["rev-parse", "main"])), new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_validation() {
    let (d, _) = setup();
    let mut c = SmartHttpServiceClient::new(d.channel().await);
    let bad = PostUploadPackRequest {
        repository: Some(d.repo("p.git")),
        data: b"0000".to_vec().into(),
        ..Default::default()
    };
    let e = c.post_upload_pack(futures::stream::iter(vec![bad])).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, "PostUploadPack: non-empty Data"));

    for (req, msg) in [
        (
            PostReceivePackRequest { repository: Some(d.repo("p.git")), ..Default::default() },
            "PostReceivePack: empty GlId",
        ),
        (
            PostReceivePackRequest {
                repository: Some(d.repo("p.git")),
                gl_id: "u".into(),
                data: b"x".to_vec().into(),
                ..Default::default()
            },
            "PostReceivePack: non-empty Data",
        ),
        (PostReceivePackRequest { gl_id: "u".into(), ..Default::default() }, "PostReceivePack: empty Repository"),
    ] {
        let e = c.post_receive_pack(futures::stream::iter(vec![req])).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, msg));
    }
    let e = c
        .info_refs_upload_pack(InfoRefsRequest { repository: Some(d.repo("missing.git")), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

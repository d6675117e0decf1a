//! What idle, silent and dead connections may cost: the open-file limit is raised at start, a listener
//! holds at most `connections.max_per_listener` connections, a connection that sends no request is closed
//! after `first_request_timeout`, a peer that stops answering HTTP/2 PINGs is closed, and each connection
//! is told its stream cap.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use rgitaly::proto::gitaly::server_service_client::ServerServiceClient;
use rgitaly::proto::gitaly::ServerInfoRequest;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn hard_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a plain getrlimit into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max
}

#[test]
fn open_file_limit_is_raised_to_the_hard_limit() {
    let d = Daemon::start_with_nofile("", 256);
    assert_eq!(soft_nofile(d.pid()), hard_nofile());
}

/// Reads frames until the connection ends; returns how long that took and the frame types seen.
fn read_until_closed(mut c: UnixStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    c.set_read_timeout(Some(limit)).unwrap();
    let mut kinds = Vec::new();
    let mut head = [0u8; 9];
    loop {
        if c.read_exact(&mut head).is_err() {
            return (started.elapsed(), kinds);
        }
        let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
        let mut payload = vec![0u8; len];
        if c.read_exact(&mut payload).is_err() {
            return (started.elapsed(), kinds);
        }
        kinds.push(head[3]);
        if started.elapsed() > limit {
            return (started.elapsed(), kinds);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_served_ones_are_not() {
    let d = Daemon::start_with("[connections]\nfirst_request_timeout = \"500ms\"\n");
    // Preface and SETTINGS, then nothing: closed after the deadline.
    let mut silent = UnixStream::connect(&d.socket).unwrap();
    silent.write_all(PREFACE).unwrap();
    silent.write_all(&EMPTY_SETTINGS).unwrap();
    let (took, _) = read_until_closed(silent, Duration::from_secs(10));
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "closed after {took:?}");
    // Not even a preface: closed too.
    let (took, _) = read_until_closed(UnixStream::connect(&d.socket).unwrap(), Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // A client that calls keeps its connection past the deadline.
    let mut c = ServerServiceClient::new(d.channel().await);
    c.server_info(ServerInfoRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.server_info(ServerInfoRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_listener_are_capped() {
    let d = Daemon::start_with("[connections]\nmax_per_listener = 4\nfirst_request_timeout = \"1m\"\n");
    // The harness's readiness probe must be gone before counting.
    std::thread::sleep(Duration::from_millis(500));
    let held: Vec<UnixStream> = (0..4)
        .map(|i| {
            let mut c = UnixStream::connect(&d.socket).unwrap();
            c.write_all(PREFACE).unwrap();
            c.write_all(&EMPTY_SETTINGS).unwrap();
            // Served: the server's SETTINGS arrive.
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = [0u8; 9];
            c.read_exact(&mut head).unwrap_or_else(|e| panic!("connection {i} not served: {e}"));
            assert_eq!(head[3], 4, "connection {i}");
            c
        })
        .collect();
    // A fifth is closed at once, without a SETTINGS frame.
    let extra = UnixStream::connect(&d.socket).unwrap();
    let (took, kinds) = read_until_closed(extra, Duration::from_secs(10));
    assert!(took < Duration::from_secs(3) && kinds.is_empty(), "{took:?} {kinds:?}");
    // When one closes, a new client is served.
    drop(held);
    let ok = eventually(10, || async {
        match rgitaly::client::connect(&d.address(), None).await {
            Ok(ch) => ServerServiceClient::new(ch).server_info(ServerInfoRequest {}).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(ok, "no client served after the idle connections closed");
}

#[test]
fn dead_peers_are_closed_by_keepalive_and_stream_cap_is_advertised() {
    let d = Daemon::start_with(
        "[connections]\nmax_streams = 7\nfirst_request_timeout = \"1m\"\nkeepalive_interval = \"300ms\"\nkeepalive_timeout = \"300ms\"\n",
    );
    let mut c = UnixStream::connect(&d.socket).unwrap();
    c.write_all(PREFACE).unwrap();
    c.write_all(&EMPTY_SETTINGS).unwrap();
    // The server's SETTINGS carry MAX_CONCURRENT_STREAMS (0x3) = 7.
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 9];
    c.read_exact(&mut head).unwrap();
    assert_eq!(head[3], 4, "first frame is SETTINGS");
    let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
    let mut payload = vec![0u8; len];
    c.read_exact(&mut payload).unwrap();
    let streams = payload.chunks(6).find(|s| s[..2] == [0, 3]).map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(streams, Some(7));
    // A peer that never answers PING is closed after interval + timeout, well before the first-request
    // deadline.
    let (took, kinds) = read_until_closed(c, Duration::from_secs(20));
    assert!(kinds.contains(&6), "no PING sent: {kinds:?}");
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
}

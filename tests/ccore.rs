//! Every real gRPC client is served on every listener. gRPC C-core (Ruby's grpc gem, which GitLab Rails
//! uses, and Python's grpcio) sends the percent-encoded socket path as `:authority` on a Unix socket,
//! grpc-java the raw path, grpc-go `localhost`; a stock h2 server resets such streams. Two tests: a real
//! C-core client with default channel options on Unix, TCP and TLS, and hand-made HEADERS frames with each
//! authority form.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use prost::Message;

const SECRET: &str = "ccore-secret";

/// The interpreter of the test venv (`tests/python/venv.sh`; `.ci/run` prepares it and passes it in).
fn python() -> String {
    if let Ok(p) = std::env::var("RGITALY_TEST_PYTHON") {
        return p;
    }
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/venv.sh"))
        .output()
        .expect("run tests/python/venv.sh");
    assert!(out.status.success(), "venv.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn wait_tcp(port: u16) {
    let wait = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(wait.elapsed() < Duration::from_secs(20), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ccore_client_on_unix_tcp_and_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let (tcp, tls) = (free_port(), free_port());
    let d = Daemon::start_with(&format!(
        "listen_addr = \"127.0.0.1:{tcp}\"\ntls_listen_addr = \"127.0.0.1:{tls}\"\n[tls]\ncertificate_path = {cert:?}\nkey_path = {key:?}\n[auth]\ntoken = \"{SECRET}\"\n"
    ));
    wait_tcp(tcp);
    wait_tcp(tls);
    let work = tempfile::tempdir().unwrap();
    let wt = sample_worktree(work.path());
    // A blob of several 128 KiB pieces: its answers carry data frames that are not copied (`bulk`).
    let big: String = (0..40_000).map(|i| format!("line {i:06}\n")).collect();
    commit_file(&wt, "big.txt", &big);
    d.seed_repo("ccore.git", &wt);
    let head = stdout(git(&wt).args(["rev-parse", "HEAD"]));
    let big_oid = stdout(git(&wt).args(["rev-parse", "HEAD:big.txt"]));
    let python = python();

    for (name, target, root) in [
        ("unix", d.address(), None),
        ("tcp", format!("127.0.0.1:{tcp}"), None),
        ("tls", format!("localhost:{tls}"), Some(&ca)),
    ] {
        let mut cmd = Command::new(&python);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ccore_client.py"))
            .arg("--proto-dir")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"))
            .args(["--target", &target, "--token", SECRET, "--storage", STORAGE, "--repo", "ccore.git"])
            .args(["--commit", &head, "--big-oid", &big_oid, "--big-size", &big.len().to_string()]);
        if let Some(root) = root {
            cmd.arg("--root-cert").arg(root);
        }
        let out = cmd.output().expect("run python");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "C-core client on {name} ({target}) failed:\n{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("ok ")).count(), 10, "{name}: {text}");
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing and without Huffman coding.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How the server answered stream 1: the ServerInfo response it sent, or the RST_STREAM code.
#[derive(Debug)]
enum Answer {
    Response(rgitaly::proto::gitaly::ServerInfoResponse),
    Reset(#[allow(dead_code)] u32),
    GoAway(#[allow(dead_code)] u32),
}

/// Sends one ServerInfo call on a fresh connection with `authority` (None: no `:authority` at all).
fn call_with_authority(mut conn: impl Read + Write, authority: Option<&str>) -> Answer {
    const HEADERS: u8 = 1;
    const DATA: u8 = 0;
    const SETTINGS: u8 = 4;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let token = rgitaly::auth::bearer_now(SECRET);
    let mut fields = vec![(":method", "POST"), (":scheme", "http"), (":path", "/gitaly.ServerService/ServerInfo")];
    if let Some(a) = authority {
        fields.push((":authority", a));
    }
    fields.extend([("content-type", "application/grpc"), ("te", "trailers"), ("authorization", token.as_str())]);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &header_block(&fields)));
    // An empty ServerInfoRequest: uncompressed, zero length.
    out.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    conn.write_all(&out).unwrap();

    let mut head = [0u8; 9];
    loop {
        conn.read_exact(&mut head).expect("connection closed before an answer");
        let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).unwrap();
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match (head[3], stream) {
            (4, 0) if head[4] & 1 == 0 => conn.write_all(&frame(SETTINGS, 1, 0, &[])).unwrap(),
            (3, 1) => return Answer::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap())),
            (7, 0) => return Answer::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
            (0, 1) if len >= 5 => {
                let msg = rgitaly::proto::gitaly::ServerInfoResponse::decode(&payload[5..]).expect("decode");
                return Answer::Response(msg);
            }
            _ => {}
        }
    }
}

#[test]
fn every_authority_form_is_served() {
    let tcp = free_port();
    let d = Daemon::start_with(&format!("listen_addr = \"127.0.0.1:{tcp}\"\n[auth]\ntoken = \"{SECRET}\"\n"));
    wait_tcp(tcp);
    let socket = d.socket.display().to_string();
    let encoded: String =
        socket.bytes().map(|b| if b == b'/' { "%2F".to_string() } else { (b as char).to_string() }).collect();
    let forms: Vec<(&str, Option<String>)> = vec![
        ("percent-encoded path (C-core)", Some(encoded)),
        ("raw path (grpc-java)", Some(socket.clone())),
        ("localhost (grpc-go, tonic)", Some("localhost".into())),
        ("host and port", Some(format!("127.0.0.1:{tcp}"))),
        ("empty", Some(String::new())),
        ("absent", None),
    ];
    for (form, authority) in &forms {
        for listener in ["unix", "tcp"] {
            let answer = if listener == "unix" {
                let c = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                call_with_authority(c, authority.as_deref())
            } else {
                let c = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                call_with_authority(c, authority.as_deref())
            };
            match answer {
                Answer::Response(r) => assert!(!r.git_version.is_empty(), "{form} on {listener}: {r:?}"),
                other => panic!("{form} on {listener}: {other:?}"),
            }
        }
    }
    // Nothing else was loosened: a connection-specific `te` is still reset as malformed.
    let mut c = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(
        1,
        4 | 1,
        1,
        &header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/gitaly.ServerService/ServerInfo"),
            (":authority", "%2Fx"),
            ("te", "gzip"),
        ]),
    ));
    c.write_all(&out).unwrap();
    let mut head = [0u8; 9];
    let reset = loop {
        c.read_exact(&mut head).expect("no answer to a malformed request");
        let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).unwrap();
        if head[3] == 3 {
            break u32::from_be_bytes(payload[..4].try_into().unwrap());
        }
    };
    assert_eq!(reset, 1, "a malformed request must still be reset with PROTOCOL_ERROR");
}

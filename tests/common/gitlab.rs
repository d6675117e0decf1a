//! A stand-in for GitLab's internal API, as far as the hook chain uses it: a real HTTP server (hyper) on TCP
//! or a Unix socket, on a thread of its own, that records every call and answers from a script. Shared by
//! the hook tests and the hook bench (`benches/hooks.rs`).

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One call GitLab's stand-in received.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub path: String,
    pub secret: String,
    /// The `Authorization` header (`[gitlab.http-settings]` user and password).
    pub authorization: String,
    pub body: serde_json::Value,
}

/// The answer to a call: status, JSON body, and a delay before answering.
pub type Script = dyn Fn(&str, &serde_json::Value) -> (u16, serde_json::Value, Duration) + Send + Sync;

/// GitLab's internal API, as far as the hooks use it, served by a thread of its own (left to the end of the
/// test process).
pub struct FakeGitlab {
    pub calls: Arc<Mutex<Vec<ApiCall>>>,
    pub url: String,
}

pub enum Bound {
    Tcp(std::net::TcpListener),
    Tls(std::net::TcpListener, std::sync::Arc<tokio_rustls::rustls::ServerConfig>),
    Unix(std::os::unix::net::UnixListener),
}

impl FakeGitlab {
    pub fn tcp(
        script: impl Fn(&str, &serde_json::Value) -> (u16, serde_json::Value, Duration) + Send + Sync + 'static,
    ) -> FakeGitlab {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        Self::start(Bound::Tcp(l), url, Arc::new(script))
    }

    /// HTTPS with the PEM certificate and key (for `localhost`).
    pub fn https(
        cert: &Path,
        key: &Path,
        script: impl Fn(&str, &serde_json::Value) -> (u16, serde_json::Value, Duration) + Send + Sync + 'static,
    ) -> FakeGitlab {
        use rustls_pki_types::pem::PemObject;
        let chain =
            rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://localhost:{}", l.local_addr().unwrap().port());
        Self::start(Bound::Tls(l, Arc::new(config)), url, Arc::new(script))
    }

    pub fn unix(
        dir: &Path,
        script: impl Fn(&str, &serde_json::Value) -> (u16, serde_json::Value, Duration) + Send + Sync + 'static,
    ) -> FakeGitlab {
        let path = dir.join("gitlab.socket");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        Self::start(Bound::Unix(l), format!("http+unix://{}", path.display()), Arc::new(script))
    }

    pub fn start(bound: Bound, url: String, script: Arc<Script>) -> FakeGitlab {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                match bound {
                    Bound::Tcp(l) => {
                        l.set_nonblocking(true).unwrap();
                        let l = tokio::net::TcpListener::from_std(l).unwrap();
                        while let Ok((s, _)) = l.accept().await {
                            serve(TokioIo::new(s), c.clone(), script.clone());
                        }
                    }
                    Bound::Tls(l, config) => {
                        l.set_nonblocking(true).unwrap();
                        let l = tokio::net::TcpListener::from_std(l).unwrap();
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        while let Ok((s, _)) = l.accept().await {
                            if let Ok(tls) = acceptor.accept(s).await {
                                serve(TokioIo::new(tls), c.clone(), script.clone());
                            }
                        }
                    }
                    Bound::Unix(l) => {
                        l.set_nonblocking(true).unwrap();
                        let l = tokio::net::UnixListener::from_std(l).unwrap();
                        while let Ok((s, _)) = l.accept().await {
                            serve(TokioIo::new(s), c.clone(), script.clone());
                        }
                    }
                }
            });
        });
        FakeGitlab { calls, url }
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.path).collect()
    }

    /// The config for a daemon that talks to this GitLab, with the secret in `dir`.
    pub fn config(&self, dir: &Path, extra_http: &str) -> String {
        let secret = dir.join("gitlab_secret");
        std::fs::write(&secret, SECRET).unwrap();
        format!("[gitlab]\nurl = {:?}\nrelative_url_root = \"/\"\nsecret_file = {secret:?}\n[gitlab.http-settings]\n{extra_http}\n", self.url)
    }
}

pub const SECRET: &str = "a shared secret\n";

pub fn serve<I>(io: I, calls: Arc<Mutex<Vec<ApiCall>>>, script: Arc<Script>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (calls, script) = (calls.clone(), script.clone());
        async move {
            let path = req.uri().path().to_string();
            let authorization =
                req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let secret =
                req.headers().get("gitlab-shared-secret").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            calls.lock().unwrap().push(ApiCall { path: path.clone(), secret, authorization, body: body.clone() });
            let (status, answer, delay) = script(&path, &body);
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(answer.to_string())))
                    .unwrap(),
            )
        }
    });
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
    });
}

/// GitLab allowing everything, with a basic message after the push.
pub fn allow_all(path: &str, _: &serde_json::Value) -> (u16, serde_json::Value, Duration) {
    let body = match path {
        "/api/v4/internal/allowed" => serde_json::json!({"status": true}),
        "/api/v4/internal/pre_receive" => serde_json::json!({"reference_counter_increased": true}),
        "/api/v4/internal/post_receive" => serde_json::json!({
            "reference_counter_decreased": true,
            "messages": [{"message": "To create a merge request for feature, visit:\n  http://gitlab/mr", "type": "basic"}]
        }),
        "/api/v4/internal/check" => {
            serde_json::json!({"gitlab_version": "13.12.0", "gitlab_revision": "abc", "api_version": "v4", "redis": true})
        }
        _ => return (404, serde_json::json!({"message": "404 Not Found"}), Duration::ZERO),
    };
    (200, body, Duration::ZERO)
}

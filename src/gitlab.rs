//! The client of GitLab's internal API (`/api/v4/internal/…`), which the hook chain asks whether a push
//! may land (`allowed`, `pre_receive`) and tells that it did (`post_receive`).
//!
//! One HTTP/1.1 request per connection (`Connection: close`, as upstream's client sends): hook calls are
//! a few per push, and a fresh connection never carries a stale one's failure. The request shapes, the
//! shared-secret header and the error texts are upstream's (gitlab-shell's client), because GitLab's
//! answers and its operators' runbooks are written against them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

use crate::config::Config;

/// The API's answers are small JSON documents; anything bigger is not GitLab.
const MAX_RESPONSE: usize = 4 << 20;
const API_PREFIX: &str = "/api/v4/internal";

/// A failed call, worded as upstream words it (the hook shows it to the pushing user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GitlabError(pub String);

fn err(s: impl Into<String>) -> GitlabError {
    GitlabError(s.into())
}

#[derive(Debug, Clone)]
enum Target {
    Tcp { host: String, port: u16, tls: Option<Arc<rustls::ClientConfig>> },
    Unix(PathBuf),
}

/// A configured GitLab API client (`[gitlab]` and `[gitlab.http-settings]`).
#[derive(Debug, Clone)]
pub struct Gitlab {
    target: Target,
    /// `Host` header value.
    authority: String,
    /// Path before `/api/v4/internal`, without a trailing slash.
    base_path: String,
    /// `Gitlab-Shared-Secret`: the secret file's bytes, base64.
    secret: String,
    basic_auth: Option<String>,
    timeout: Duration,
}

/// What `/allowed` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub status: bool,
    pub message: String,
}

/// One message of `/post_receive` for the pushing user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostReceiveMessage {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// What `/post_receive` answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostReceive {
    #[serde(default)]
    pub reference_counter_decreased: bool,
    #[serde(default)]
    pub messages: Vec<PostReceiveMessage>,
}

/// What `/check` answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Check {
    #[serde(default)]
    pub gitlab_version: String,
    #[serde(default)]
    pub gitlab_revision: String,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub redis: bool,
}

/// The arguments of `/allowed`.
#[derive(Debug, Clone)]
pub struct AllowedParams<'a> {
    pub gl_repository: &'a str,
    pub gl_id: &'a str,
    pub protocol: &'a str,
    pub changes: &'a str,
    pub repo_path: &'a Path,
    /// The push's quarantine directory and the repository's own, relative to the repository.
    pub object_directory: Option<String>,
    pub alternate_object_directories: Vec<String>,
}

impl Gitlab {
    /// The client for `config`'s `[gitlab]` section; `None` when no URL is set (pushes are then not checked
    /// by GitLab, and the daemon says so at start).
    pub fn from_config(config: &Config) -> Result<Option<Gitlab>, String> {
        let g = &config.gitlab;
        let Some(url) = g.url.as_deref().filter(|u| !u.is_empty()) else { return Ok(None) };
        let url = percent_encoding::percent_decode_str(url)
            .decode_utf8()
            .map_err(|e| format!("gitlab.url: {e}"))?
            .into_owned();
        let secret_path = config.gitlab_secret_file();
        let secret = std::fs::read(&secret_path)
            .map_err(|e| format!("gitlab.secret_file: reading secret file: {}: {e}", secret_path.display()))?;
        let h = &g.http_settings;
        let basic_auth = match (h.user.as_deref(), h.password.as_deref()) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
            }
            _ => None,
        };
        let timeout = Duration::from_secs(h.read_timeout.filter(|t| *t > 0).unwrap_or(300));
        let (target, authority, base_path) = if let Some(socket) = url.strip_prefix("http+unix://") {
            let root = g.relative_url_root.as_deref().unwrap_or("").trim_matches('/');
            let base = if root.is_empty() { String::new() } else { format!("/{root}") };
            (Target::Unix(PathBuf::from(socket)), "unix".to_string(), base)
        } else if url.starts_with("http://") || url.starts_with("https://") {
            let uri: http::Uri = url.parse().map_err(|e| format!("gitlab.url: {url:?}: {e}"))?;
            let https = uri.scheme_str() == Some("https");
            let host = uri.host().ok_or_else(|| format!("gitlab.url: {url:?}: no host"))?.to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = if https { Some(Arc::new(tls_config(config)?)) } else { None };
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
            let base = uri.path().trim_end_matches('/').to_string();
            (Target::Tcp { host: host.trim_matches(['[', ']']).to_string(), port, tls }, authority, base)
        } else {
            return Err(format!("gitlab.url: {url:?}: unknown GitLab URL prefix"));
        };
        Ok(Some(Gitlab {
            target,
            authority,
            base_path,
            secret: base64::engine::general_purpose::STANDARD.encode(secret),
            basic_auth,
            timeout,
        }))
    }

    /// `POST /allowed`: may this push land? A refusal by status (GitLab's usual 403 with a message) is an
    /// error, as upstream treats it; `status: false` in a 200 is an answer.
    pub async fn allowed(&self, p: &AllowedParams<'_>) -> Result<Allowed, GitlabError> {
        #[derive(Serialize)]
        struct Env<'a> {
            #[serde(rename = "GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE")]
            alternates: Option<&'a [String]>,
            #[serde(rename = "GIT_OBJECT_DIRECTORY_RELATIVE")]
            object_directory: &'a str,
        }
        let mut body = serde_json::json!({
            "action": "git-receive-pack",
            "gl_repository": p.gl_repository,
            "project": p.repo_path.to_string_lossy().replace('\'', ""),
            "changes": p.changes,
            "protocol": p.protocol,
        });
        // Always sent, as upstream (empty when git gave no quarantine).
        let alternates = (!p.alternate_object_directories.is_empty()).then_some(&p.alternate_object_directories[..]);
        let object_directory = p.object_directory.as_deref().unwrap_or("");
        body["env"] = serde_json::to_string(&Env { alternates, object_directory }).expect("plain json").into();
        let (key, value) = identifier(p.gl_id)?;
        body[key] = value;
        let resp = self.call(http::Method::POST, "/allowed", Some(body)).await?;
        if resp.status != 200 && resp.status != 300 {
            return Err(err(format!("gitlab api is not accessible: {}", resp.status)));
        }
        if !resp.is_json() {
            let media = resp.content_type.split(';').next().unwrap_or("").trim();
            return Err(err(format!("/allowed endpoint respond with unsupported content type: {media}")));
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            status: bool,
            #[serde(default)]
            message: String,
        }
        let a: Answer = resp.json()?;
        Ok(Allowed { status: a.status, message: a.message })
    }

    /// `POST /pre_receive`: raises the repository's reference counter; `false` means it was not raised.
    pub async fn pre_receive(&self, gl_repository: &str) -> Result<bool, GitlabError> {
        let resp =
            self.call(http::Method::POST, "/pre_receive", Some(serde_json::json!({ "gl_repository": gl_repository })));
        let resp = resp.await?;
        if resp.status != 200 || !resp.is_json() {
            return Err(err(format!("pre-receive call failed with status: {}", resp.status)));
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            reference_counter_increased: bool,
        }
        Ok(resp.json::<Answer>()?.reference_counter_increased)
    }

    /// `POST /post_receive`: the push landed; GitLab answers with messages for the pushing user.
    pub async fn post_receive(
        &self,
        gl_repository: &str,
        gl_id: &str,
        changes: &str,
        push_options: &[String],
    ) -> Result<PostReceive, GitlabError> {
        let body = serde_json::json!({
            "gl_repository": gl_repository,
            "identifier": gl_id,
            "changes": changes,
            "push_options": if push_options.is_empty() { serde_json::Value::Null } else { push_options.into() },
        });
        let resp = self.call(http::Method::POST, "/post_receive", Some(body)).await?;
        if resp.status != 200 || !resp.is_json() {
            return Err(err(format!("post-receive call failed with status: {}", resp.status)));
        }
        resp.json()
    }

    /// `GET /check`: GitLab's version, and whether it accepts our secret.
    pub async fn check(&self) -> Result<Check, GitlabError> {
        let resp = self
            .call(http::Method::GET, "/check", None)
            .await
            .map_err(|e| err(format!("HTTP GET to GitLab endpoint /check failed: {e}")))?;
        if resp.status != 200 {
            return Err(err(format!("Check HTTP request failed with status: {}", resp.status)));
        }
        resp.json()
    }

    async fn call(
        &self,
        method: http::Method,
        endpoint: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Response, GitlabError> {
        let path = format!("{}{API_PREFIX}{endpoint}", self.base_path);
        let resp = tokio::time::timeout(self.timeout, self.round_trip(method, &path, body))
            .await
            .map_err(|_| err("Internal API unreachable"))??;
        if !(200..400).contains(&resp.status) {
            #[derive(Deserialize)]
            struct Message {
                #[serde(default)]
                message: String,
            }
            return Err(match serde_json::from_slice::<Message>(&resp.body) {
                Ok(m) => err(m.message),
                Err(_) => err(format!("Internal API error ({})", resp.status)),
            });
        }
        Ok(resp)
    }

    async fn round_trip(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Response, GitlabError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "gitlab api call failed");
            err("Internal API unreachable")
        };
        let io: Box<dyn Io> = match &self.target {
            Target::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await.map_err(|e| unreachable(&e))?),
            Target::Tcp { host, port, tls } => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(|e| unreachable(&e))?;
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => Box::new(tcp),
                    Some(cfg) => {
                        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
                        let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(|e| unreachable(&e))?;
                        Box::new(stream)
                    }
                }
            }
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = body.map(|b| serde_json::to_vec(&b).expect("plain json")).unwrap_or_default();
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header("Gitlab-Shared-Secret", &self.secret)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, format!("rgitaly/{}", crate::VERSION))
            .header(http::header::CONNECTION, "close");
        if let Some(auth) = &self.basic_auth {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(Bytes::from(payload))).map_err(|e| unreachable(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await.map_err(|e| unreachable(&e))?;
        Ok(Response { status, content_type, body: body.to_bytes() })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Response {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Response {
    fn is_json(&self) -> bool {
        self.content_type.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, GitlabError> {
        serde_json::from_slice(&self.body).map_err(|e| err(format!("parsing response: {e}")))
    }
}

/// The identifier field of `/allowed` from a `gl_id`: `user-N`, `key-N` or `username-NAME`.
fn identifier(gl_id: &str) -> Result<(&'static str, serde_json::Value), GitlabError> {
    let numeric = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    if let Some(name) = gl_id.strip_prefix("username-") {
        return Ok(("username", name.into()));
    }
    if let Some(n) = gl_id.strip_prefix("key-").filter(|n| numeric(n)) {
        return Ok(("key_id", n.into()));
    }
    if let Some(n) = gl_id.strip_prefix("user-").filter(|n| numeric(n)) {
        return Ok(("user_id", n.into()));
    }
    Err(err(format!("setting gl_id: gl_id='{gl_id}' is invalid")))
}

/// The system's roots, plus `ca_file` and every file in `ca_path`; no verification at all with
/// `self_signed_cert`, as upstream.
fn tls_config(config: &Config) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let h = &config.gitlab.http_settings;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("gitlab: tls: {e}"))?;
    // The daemon's own certificate, when it has one, identifies it to GitLab (as upstream).
    let client = match (&config.tls.certificate_path, &config.tls.key_path) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls.certificate_path: {}: {e}", cert.display()))?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.key_path: {}: {e}", key.display()))?;
            Some((chain, key))
        }
        _ => None,
    };
    let finish = |b: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>| match client {
        Some((chain, key)) => {
            b.with_client_auth_cert(chain, key).map_err(|e| format!("gitlab: tls client certificate: {e}"))
        }
        None => Ok(b.with_no_client_auth()),
    };
    if h.self_signed_cert.unwrap_or(false) {
        return finish(builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut files: Vec<PathBuf> = h.ca_file.iter().cloned().collect();
    if let Some(dir) = &h.ca_path {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("gitlab.http-settings.ca_path: {}: {e}", dir.display()))?;
        files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
    }
    for f in files {
        let certs = CertificateDer::pem_file_iter(&f)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("gitlab.http-settings: {}: {e}", f.display()))?;
        for c in certs {
            roots.add(c).map_err(|e| format!("gitlab.http-settings: {}: {e}", f.display()))?;
        }
    }
    finish(builder.with_root_certificates(roots))
}

/// `self_signed_cert = true`: the server's certificate is not checked (signatures still are).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Writes GitLab's post-receive messages as upstream prints them: each after a blank line; an alert
/// framed by 72 `=` and word-wrapped to 68 columns, centred.
pub fn format_messages(messages: &[PostReceiveMessage]) -> Result<Vec<u8>, GitlabError> {
    const WIDTH: usize = 72;
    const WRAP: usize = 68;
    let center = |line: &str| {
        let line = line.trim();
        format!("{}{line}", " ".repeat(WIDTH.saturating_sub(line.len()) / 2))
    };
    let mut out = String::new();
    for m in messages {
        out.push('\n');
        match m.kind.as_str() {
            "basic" => out.push_str(&m.message),
            "alert" => {
                out.push_str(&"=".repeat(WIDTH));
                out.push_str("\n\n");
                let mut line = String::new();
                for word in m.message.split_whitespace() {
                    if line.len() + 1 + word.len() > WRAP {
                        out.push_str(&center(&line));
                        out.push('\n');
                        line.clear();
                    }
                    line.push_str(word);
                    line.push(' ');
                }
                out.push_str(&center(&line));
                out.push_str("\n\n");
                out.push_str(&"=".repeat(WIDTH));
            }
            other => return Err(err(format!("error writing messages to stream: invalid message type: {other}"))),
        }
        out.push_str("\n\n");
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_as_upstream() {
        assert_eq!(identifier("user-12").unwrap(), ("user_id", "12".into()));
        assert_eq!(identifier("key-3").unwrap(), ("key_id", "3".into()));
        assert_eq!(identifier("username-jane").unwrap(), ("username", "jane".into()));
        assert_eq!(identifier("user-x").unwrap_err().0, "setting gl_id: gl_id='user-x' is invalid");
        assert!(identifier("user-").is_err());
        assert!(identifier("").is_err());
    }

    #[test]
    fn alert_is_framed_wrapped_and_centred() {
        let words = "word ".repeat(20);
        let out = format_messages(&[
            PostReceiveMessage { message: "To create a merge request, visit:".into(), kind: "basic".into() },
            PostReceiveMessage { message: words.clone(), kind: "alert".into() },
        ])
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let bar = "=".repeat(72);
        assert!(out.starts_with("\nTo create a merge request, visit:\n\n\n"));
        let body: Vec<&str> = out.lines().skip_while(|l| *l != bar).collect();
        assert_eq!(body[0], bar);
        assert_eq!(body[1], "");
        // 20 words of 4 letters: 13 fit in 68 columns ("word " * 13 = 65, one more = 70).
        assert_eq!(body[2].trim(), "word ".repeat(13).trim());
        assert_eq!(body[2].len() - body[2].trim_start().len(), (72 - 64) / 2);
        assert_eq!(body[3].trim(), "word ".repeat(7).trim());
        assert_eq!(body[5], bar);
        assert!(format_messages(&[PostReceiveMessage { message: "x".into(), kind: "shout".into() }]).is_err());
    }
}

//! CreateRepositoryFromSnapshot: a new repository from a tar (GetSnapshot's format) downloaded over
//! HTTP(S), as GitLab's imports use it. The tar is unpacked while it downloads, over a fresh `git init`
//! in the scratch area (snapshots carry no config), members checked as ReplicateRepository checks them,
//! and the repository moved into place only when whole. As upstream: no redirects followed, a
//! non-2xx answer is an error, `http_auth` is sent as the `Authorization` header.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tonic::Status;

use super::staging::{unpack_tar, ChannelReader, Staging};
use crate::proto::gitaly::{CreateRepositoryFromSnapshotRequest, CreateRepositoryFromSnapshotResponse};
use crate::service::Context;

/// Upstream's limits: to connect (TLS included) and to the response's headers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn create_repository_from_snapshot(
    ctx: &Context,
    req: CreateRepositoryFromSnapshotRequest,
) -> Result<CreateRepositoryFromSnapshotResponse, Status> {
    let repository = req.repository.as_ref().ok_or_else(|| Status::invalid_argument("empty Repository"))?;
    let target = ctx.locator.target_path(Some(repository)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(Status::invalid_argument("destination directory exists"));
    }
    if req.http_auth.contains(['\r', '\n', '\0']) {
        return Err(Status::invalid_argument("Bad HTTP auth header"));
    }
    let uri: http::Uri = req.http_url.parse().map_err(|e| Status::invalid_argument(format!("Bad HTTP URL: {e}")))?;
    let staged = Staging::new(ctx, &repository.storage_name, "CreateRepositoryFromSnapshot")?;
    staged.init(ctx).await.map_err(|e| Status::internal(format!("create repository: {e}")))?;

    let resp = get(&uri, &req.http_auth).await?;
    if !resp.status().is_success() {
        return Err(Status::internal(format!("HTTP server: {}", resp.status())));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let dir = staged.path.clone();
    let unpacker = tokio::task::spawn_blocking(move || unpack_tar(&dir, ChannelReader::new(rx)));
    let mut body = resp.into_body();
    let downloaded = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Status::internal(format!("HTTP request failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if tx.send(data.to_vec()).await.is_err() {
                    break;
                }
            }
        }
        Ok::<(), Status>(())
    }
    .await;
    drop(tx);
    unpacker
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("Extracting snapshot: {e}")))?;
    downloaded?;
    staged.place(&target, "CreateRepositoryFromSnapshot")?;
    Ok(CreateRepositoryFromSnapshotResponse {})
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One GET, HTTP/1.1, no redirects; HTTPS checked against the system's roots (and `SSL_CERT_FILE`).
async fn get(uri: &http::Uri, auth: &str) -> Result<http::Response<hyper::body::Incoming>, Status> {
    let bad = |m: &str| Status::invalid_argument(format!("Bad HTTP URL: {m}"));
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("only http and https are supported")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let failed = |e: &dyn std::fmt::Display| Status::internal(format!("HTTP request failed: {e}"));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| failed(&e))?;
        let io: Box<dyn Io> = if tls {
            let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| failed(&e))?;
            let config = tokio::task::spawn_blocking(|| CLIENT_CONFIG.clone())
                .await
                .map_err(|e| failed(&e))?
                .map_err(|e| failed(&e))?;
            let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| failed(&e))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        Ok::<_, Status>(io)
    };
    let io = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| failed(&"connect timed out"))??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
    let mut req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, format!("rgitaly/{}", crate::VERSION));
    if !auth.is_empty() {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| failed(&e))?;
    tokio::time::timeout(HEADER_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| failed(&"no response headers in time"))?
        .map_err(|e| failed(&e))
}

/// Built once (reading the system's certificates is slow blocking work), at the first HTTPS download.
static CLIENT_CONFIG: std::sync::LazyLock<Result<std::sync::Arc<rustls::ClientConfig>, String>> =
    std::sync::LazyLock::new(client_config);

fn client_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Ok(file) = std::env::var("SSL_CERT_FILE") {
        if let Ok(certs) = rustls_pki_types::CertificateDer::pem_file_iter(&file) {
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

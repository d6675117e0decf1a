//! Connecting to a Gitaly-compatible server the way gitaly-ssh and GitLab address it: `unix:PATH`,
//! `tcp://host:port`, `tls://host:port` (or a bare `host:port`), with an optional v2 token on every call.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::auth;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("gitaly address can not be empty")]
    EmptyAddress,
    #[error("invalid address {0:?}: expected unix:PATH, tcp://HOST:PORT or tls://HOST:PORT")]
    BadAddress(String),
    #[error("connect {address}: {source}")]
    Connect { address: String, source: tonic::transport::Error },
    #[error("read CA file {0}: {1}")]
    CaFile(String, std::io::Error),
}

/// Adds a freshly signed token to each call when a secret is set.
#[derive(Clone)]
pub struct TokenInterceptor(Option<String>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(secret) = &self.0 {
            let value = auth::bearer_now(secret).parse().map_err(|_| tonic::Status::internal("bad token"))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// Opens a channel to `address`; `token` is the shared secret (empty or None: no auth).
pub async fn connect(address: &str, token: Option<&str>) -> Result<AuthChannel, ClientError> {
    let channel = channel(address).await?;
    let token = token.filter(|t| !t.is_empty()).map(str::to_string);
    Ok(InterceptedService::new(channel, TokenInterceptor(token)))
}

/// A channel to a Unix socket that connects on first use (and reconnects after failures).
pub fn unix_channel_lazy(path: &std::path::Path) -> Channel {
    let path = path.to_path_buf();
    tuned(Endpoint::from_static("http://localhost")).connect_with_connector_lazy(tower::service_fn(move |_| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    }))
}

/// The same HTTP/2 sizes the server uses, so bulk streams are not throttled by default windows.
fn tuned(ep: Endpoint) -> Endpoint {
    use crate::transport::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
    ep.initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

async fn channel(address: &str) -> Result<Channel, ClientError> {
    if address.is_empty() {
        return Err(ClientError::EmptyAddress);
    }
    let connect_err = |source| ClientError::Connect { address: address.to_string(), source };
    if let Some(path) = address.strip_prefix("unix://").or_else(|| address.strip_prefix("unix:")) {
        let path = PathBuf::from(path);
        // The URI is a placeholder: the connector below ignores it.
        return tuned(Endpoint::from_static("http://localhost"))
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    crate::transport::grow_socket_buffers(&s);
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .map_err(connect_err);
    }
    if let Some(host) = address.strip_prefix("tls://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Ok(ca) = std::env::var("SSL_CERT_FILE") {
            let pem = std::fs::read(&ca).map_err(|e| ClientError::CaFile(ca.clone(), e))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        let domain = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        tls = tls.domain_name(domain.trim_start_matches('[').trim_end_matches(']'));
        let ep = tuned(
            Endpoint::from_shared(format!("https://{host}"))
                .map_err(|_| ClientError::BadAddress(address.to_string()))?,
        )
        .tls_config(tls)
        .map_err(connect_err)?;
        return ep.connect().await.map_err(connect_err);
    }
    let host = address.strip_prefix("tcp://").unwrap_or(address);
    if host.contains("://") || !host.contains(':') {
        return Err(ClientError::BadAddress(address.to_string()));
    }
    tuned(Endpoint::from_shared(format!("http://{host}")).map_err(|_| ClientError::BadAddress(address.to_string()))?)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(connect_err)
}

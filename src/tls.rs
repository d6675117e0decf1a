//! TLS for `tls_listen_addr`. The handshake is done here with tokio-rustls rather than by tonic, because
//! tonic's TLS configuration is fixed when the server starts: here the certificate is looked up per
//! handshake, so `reload` (on SIGHUP, or when the files change) swaps it for new connections while
//! established ones keep theirs and are never dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::Stream;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

/// A client that does not finish its handshake in this time is dropped, so it cannot hold a task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The certificate and key files, and the pair currently served.
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<FileStamp>)>,
}

/// What the two files looked like when last loaded, to notice that they changed.
type FileStamp = [(SystemTime, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Option<FileStamp> {
    let s = |p: &Path| std::fs::metadata(p).and_then(|m| Ok((m.modified()?, m.len()))).ok();
    Some([s(cert)?, s(key)?])
}

/// Reads a PEM certificate chain and private key, and checks that they belong together.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.certificate_path: {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.certificate_path: {}: no certificate found", cert_path.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("tls.key_path: {}: {e}", key_path.display()))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("tls: {} and {}: {e}", cert_path.display(), key_path.display()))
}

impl Certificates {
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, String> {
        let key = load(cert_path, key_path)?;
        Ok(Arc::new(Certificates {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((Arc::new(key), stamp(cert_path, key_path))),
        }))
    }

    /// Loads the files again and serves the new pair to new connections. On error the old pair stays.
    pub fn reload(&self) -> Result<(), String> {
        let before = stamp(&self.cert_path, &self.key_path);
        let key = load(&self.cert_path, &self.key_path)?;
        *self.current.write().expect("not poisoned") = (Arc::new(key), before);
        Ok(())
    }

    /// Reloads if either file changed since the last load; `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = stamp(&self.cert_path, &self.key_path)?;
        if self.current.read().expect("not poisoned").1 == Some(now) {
            return None;
        }
        Some(self.reload())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The rustls configuration for the listener: HTTP/2 over ALPN, certificate looked up per handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").0.clone())
    }
}

/// Accepts TCP connections and hands over those that complete a TLS handshake. Handshakes run in their own
/// tasks so a slow client does not hold up the others; the accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    on_accept: impl Fn() + Send + 'static,
) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "tls accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            on_accept();
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!(peer = %peer, "tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

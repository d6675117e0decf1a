//! Binding the configured listeners (Unix socket, TCP, TLS), taking them over from a predecessor during an
//! upgrade, and the incoming-connection streams the server reads: counted, with `TCP_NODELAY`, and ended
//! at shutdown without closing open connections.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use super::{io_err, ServeError};
use crate::config::Config;
use crate::transport::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::upgrade::Inherited;

/// A bound listener, ready to serve.
pub(super) enum Listener {
    Unix(UnixListener, PathBuf),
    /// The daemon's own socket for `rgitaly-hooks` (its own token; never handed to a successor, which
    /// has its own).
    Internal(UnixListener, PathBuf),
    Tcp(TcpListener),
    Tls(TcpListener, Arc<crate::tls::Certificates>),
}

impl Listener {
    /// The name under which the listener is handed to a successor.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Listener::Unix(..) => "unix",
            Listener::Internal(..) => "internal",
            Listener::Tcp(_) => "tcp",
            Listener::Tls(..) => "tls",
        }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) | Listener::Internal(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) | Listener::Tls(l, _) => l.as_raw_fd(),
        }
    }
}

/// Refuses to start beside a live daemon: something answering on the configured socket, or listening on
/// a configured address. Checked before anything else starts (workers included); a successor started
/// by an upgrade (SIGUSR2) takes its predecessor's listeners instead and skips this.
pub(super) fn refuse_if_in_use(config: &Config, inherited: &Inherited) -> Result<(), ServeError> {
    if inherited.is_successor() {
        return Ok(());
    }
    if let Some(path) = &config.socket_path {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(format!(
                "socket_path: another daemon is serving on {}; stop it first (or upgrade it with SIGUSR2)",
                path.display()
            )));
        }
    }
    for (key, addr) in [("listen_addr", &config.listen_addr), ("tls_listen_addr", &config.tls_listen_addr)] {
        let Some(addr) = addr else { continue };
        let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str()) else { continue };
        for a in addrs {
            // A wildcard address is checked on loopback, where a listener on it answers too.
            let probe = match a.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    std::net::SocketAddr::from(([127, 0, 0, 1], a.port()))
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
                }
                _ => a,
            };
            if std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(500)).is_ok() {
                return Err(ServeError::InUse(format!("{key}: {addr} is already in use by another process")));
            }
        }
    }
    Ok(())
}

pub(super) fn bind_all(config: &Config, inherited: &mut Inherited) -> Result<Vec<Listener>, ServeError> {
    let mut out = Vec::new();
    if let Some(path) = &config.socket_path {
        let l = match inherited_unix(inherited, path) {
            Some(l) => l,
            None => {
                // A socket left by a previous run would make bind fail; only a socket is removed, and only
                // when nothing answers on it: a live daemon there is never taken over.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        if std::os::unix::net::UnixStream::connect(path).is_ok() {
                            return Err(ServeError::InUse(format!(
                                "socket_path: another daemon is serving on {}; stop it first (or upgrade it with SIGUSR2)",
                                path.display()
                            )));
                        }
                        let _ = std::fs::remove_file(path);
                    }
                }
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err(format!("socket_path: create {}", parent.display())))?;
                }
                UnixListener::bind(path).map_err(io_err(format!("socket_path: bind {}", path.display())))?
            }
        };
        out.push(Listener::Unix(l, path.clone()));
    }
    if let Some(addr) = &config.listen_addr {
        let l = tcp_listener(inherited, "tcp", addr).map_err(io_err(format!("listen_addr: bind {addr}")))?;
        out.push(Listener::Tcp(l));
    }
    if let Some(addr) = &config.tls_listen_addr {
        let (cert, key) = (config.tls.certificate_path.as_ref(), config.tls.key_path.as_ref());
        let certs = crate::tls::Certificates::open(cert.expect("validated"), key.expect("validated"))
            .map_err(ServeError::Tls)?;
        let l = tcp_listener(inherited, "tls", addr).map_err(io_err(format!("tls_listen_addr: bind {addr}")))?;
        out.push(Listener::Tls(l, certs));
    }
    Ok(out)
}

/// Binds the internal socket at `path` (its directory is the daemon's private one); a socket left there by
/// a crashed daemon with the same pid is replaced.
pub(super) fn bind_internal(path: &Path) -> Result<Listener, ServeError> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(io_err(format!("internal socket: bind {}", path.display())))?;
    Ok(Listener::Internal(l, path.to_path_buf()))
}

/// The predecessor's Unix listener, if it is bound to the configured path.
fn inherited_unix(inherited: &mut Inherited, path: &Path) -> Option<UnixListener> {
    let l = std::os::unix::net::UnixListener::from(inherited.take("unix")?);
    let bound = l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    if bound.as_deref() != Some(path) {
        tracing::warn!(address = %path.display(), "inherited unix listener is bound elsewhere; binding anew");
        return None;
    }
    l.set_nonblocking(true).ok()?;
    UnixListener::from_std(l).ok()
}

/// The predecessor's listener called `name` when it listens on `addr`, else a new one.
pub(super) fn tcp_listener(inherited: &mut Inherited, name: &str, addr: &str) -> std::io::Result<TcpListener> {
    if let Some(fd) = inherited.take(name) {
        let l = std::net::TcpListener::from(fd);
        let wanted: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(addr).map(|a| a.collect()).unwrap_or_default();
        if l.local_addr().is_ok_and(|a| wanted.contains(&a)) {
            l.set_nonblocking(true)?;
            return TcpListener::from_std(l);
        }
        tracing::warn!(address = addr, listener = name, "inherited listener is bound elsewhere; binding anew");
    }
    std_tcp(addr)
}

/// A server builder with the transport's window and frame sizes, the per-connection stream cap and
/// HTTP/2 keepalive, which closes a connection whose peer stopped answering.
pub(super) fn tuned(b: Server, c: &crate::config::Connections) -> Server {
    b.initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(Some(c.max_streams()))
        .http2_keepalive_interval(Some(c.keepalive_interval()))
        .http2_keepalive_timeout(Some(c.keepalive_timeout()))
}

fn std_tcp(addr: &str) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// `incoming` until `stop` turns true: then the listener is dropped (closing this process's copy of the
/// socket) and the stream stays pending, so the server keeps serving its open connections until told to
/// shut down (an ended stream would make it shut them down at once).
pub(super) fn until<S, T>(incoming: S, mut stop: watch::Receiver<bool>) -> Until<S>
where
    S: futures::Stream<Item = std::io::Result<T>>,
{
    let stop = Box::pin(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    Until { inner: Some(Box::pin(incoming)), stop }
}

pub(super) struct Until<S> {
    inner: Option<std::pin::Pin<Box<S>>>,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl<S: futures::Stream> futures::Stream for Until<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        use std::task::Poll;
        if self.inner.is_some() && self.stop.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll_next(cx),
            None => Poll::Pending,
        }
    }
}

pub(super) fn dup_cloexec(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: duplicates a descriptor we own; the copy is owned by the returned value.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Counts accepted connections in `gitaly_connections_total{type}`.
pub(super) fn counted<S, T>(incoming: S, kind: &'static str) -> impl futures::Stream<Item = std::io::Result<T>>
where
    S: futures::Stream<Item = std::io::Result<T>>,
{
    use futures::StreamExt;
    incoming.inspect(move |c| {
        if c.is_ok() {
            crate::metrics::CONNECTIONS.with_label_values(&[kind]).inc();
        }
    })
}

/// Accepted Unix-socket connections, with the larger buffers bulk transfer wants (a cap, not memory an idle
/// connection holds).
pub(super) fn unix_incoming(l: UnixListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(l).map(|s| {
        let s = s?;
        crate::transport::grow_socket_buffers(&s);
        Ok(s)
    })
}

pub(super) fn nodelay(l: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(l).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

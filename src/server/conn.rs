//! What an accepted connection may cost before and while it is served: at most `max_per_listener`
//! connections per listener (one over the cap is closed at once, so idle peers cannot exhaust the
//! descriptors every git spawn needs), and a connection that sends no request within
//! `first_request_timeout` is closed. HTTP/2 keepalive (closing dead peers) and the per-connection stream
//! cap are the server builder's; see [`super::listeners::tuned`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// The HTTP/2 client preface every connection starts with.
const PREFACE_LEN: usize = 24;
/// HTTP/2 frame type HEADERS: a request.
const HEADERS: u8 = 1;

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_per_listener: usize,
    pub first_request_timeout: Duration,
}

/// `incoming` with the per-listener cap and the first-request deadline applied.
pub fn limited<S, IO>(
    incoming: S,
    limits: ConnLimits,
    listener: &'static str,
) -> impl Stream<Item = std::io::Result<Guarded<IO>>>
where
    S: Stream<Item = std::io::Result<IO>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_per_listener));
    incoming.filter_map(move |conn| {
        let permits = permits.clone();
        async move {
            let io = match conn {
                Ok(io) => io,
                Err(e) => return Some(Err(e)),
            };
            match permits.try_acquire_owned() {
                Ok(permit) => Some(Ok(Guarded::new(io, permit, limits.first_request_timeout))),
                Err(_) => {
                    crate::metrics::CONNECTIONS_REFUSED.with_label_values(&[listener]).inc();
                    tracing::warn!(
                        listener,
                        max = limits.max_per_listener,
                        "connection limit reached; closing a new connection"
                    );
                    None
                }
            }
        }
    })
}

/// An accepted connection: holds its listener's permit, and fails its reads once the first-request
/// deadline passes without a HEADERS frame, which makes the server close it.
pub struct Guarded<IO> {
    inner: IO,
    _permit: OwnedSemaphorePermit,
    /// Until the first request: the deadline and a scanner of the frames read so far.
    waiting: Option<(Pin<Box<tokio::time::Sleep>>, FrameScan)>,
}

impl<IO> Guarded<IO> {
    fn new(inner: IO, permit: OwnedSemaphorePermit, timeout: Duration) -> Self {
        Guarded { inner, _permit: permit, waiting: Some((Box::pin(tokio::time::sleep(timeout)), FrameScan::default())) }
    }
}

/// Finds the first HEADERS frame in a connection's byte stream, fed as it is read.
#[derive(Debug, Default)]
struct FrameScan {
    /// Bytes of the preface still to skip.
    preface_seen: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl FrameScan {
    /// True once a HEADERS frame header has passed.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.preface_seen < PREFACE_LEN {
                let k = (PREFACE_LEN - self.preface_seen).min(data.len());
                self.preface_seen += k;
                data = &data[k..];
                continue;
            }
            if self.skip > 0 {
                let k = self.skip.min(data.len());
                self.skip -= k;
                data = &data[k..];
                continue;
            }
            let k = (9 - self.have).min(data.len());
            self.header[self.have..self.have + k].copy_from_slice(&data[..k]);
            self.have += k;
            data = &data[k..];
            if self.have == 9 {
                if self.header[3] == HEADERS {
                    return true;
                }
                self.have = 0;
                self.skip = (self.header[0] as usize) << 16 | (self.header[1] as usize) << 8 | self.header[2] as usize;
            }
        }
        false
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some((deadline, _)) = this.waiting.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time")));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some((_, scan))) = (&polled, this.waiting.as_mut()) {
            if scan.feed(&buf.filled()[before..]) {
                this.waiting = None;
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::FrameScan;

    #[test]
    fn finds_the_first_headers_frame_however_split() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS with one 6-byte setting, a WINDOW_UPDATE, then HEADERS.
        stream.extend([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        stream.extend([0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        let before_headers = stream.len();
        stream.extend([0, 0, 3, 1, 4, 0, 0, 0, 1, 1, 2, 3]);
        for chunk in [1, 2, 7, 9, 100] {
            let mut scan = FrameScan::default();
            let mut seen_at = None;
            for (i, piece) in stream.chunks(chunk).enumerate() {
                if scan.feed(piece) {
                    seen_at = Some((i + 1) * chunk);
                    break;
                }
            }
            let at = seen_at.expect("headers found");
            assert!(at >= before_headers + 9 && at < before_headers + 9 + chunk, "chunk {chunk}: {at}");
        }
        let mut scan = FrameScan::default();
        assert!(!scan.feed(&stream[..before_headers]));
    }
}

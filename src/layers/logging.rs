//! One log line per finished RPC (and the grpc_server_* counters), with upstream's field names (`grpc.service`, `grpc.method`,
//! `grpc.code`, `grpc.time_ms`, `correlation_id`). The line is written when the response body ends (or the
//! client goes away), so a streaming call is logged with its real duration and final status.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};

use tower::{Layer, Service};

use super::call::{Call, RepositorySlot};
use crate::registry::Method;

#[derive(Debug, Clone, Copy, Default)]
pub struct LogLayer;

impl<S> Layer<S> for LogLayer {
    type Service = LogService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LogService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct LogService<S> {
    inner: S,
}

/// What is known about a call when it ends.
struct CallLog {
    method: &'static Method,
    correlation_id: String,
    started: Instant,
    code: Option<tonic::Code>,
    /// Filled in by the resolve layer, after authentication, for repository-scoped calls.
    repository: RepositorySlot,
}

impl CallLog {
    fn observe(&mut self, headers: &HeaderMap) {
        if let Some(code) = super::grpc_status(headers) {
            self.code = Some(code);
        }
    }
}

/// A status code as Go's gRPC names it (OK, Canceled, NotFound, …), for log lines and metric labels.
fn code_label(code: Option<tonic::Code>) -> String {
    match code {
        Some(tonic::Code::Ok) => "OK".to_string(),
        Some(tonic::Code::Cancelled) | None => "Canceled".to_string(),
        Some(c) => format!("{c:?}"),
    }
}

impl Drop for CallLog {
    fn drop(&mut self) {
        // No trailers means the client went away before the call finished: Canceled.
        let code = code_label(self.code);
        let seconds = self.started.elapsed().as_secs_f64();
        // As upstream logs it: milliseconds with microsecond precision (3.281, not 3.2810000000000001).
        let time_ms = time_ms(self.started.elapsed());
        crate::metrics::record_handled(self.method, &code, seconds);
        let repo = self.repository.0.lock().ok().and_then(|mut r| r.take()).unwrap_or_default();
        tracing::info!(
            grpc.service = self.method.service,
            grpc.method = self.method.name,
            grpc.code = %code,
            grpc.time_ms = time_ms,
            grpc.request.repoStorage = %repo.storage_name,
            grpc.request.repoPath = %repo.relative_path,
            grpc.request.glProjectPath = %repo.gl_project_path,
            correlation_id = %self.correlation_id,
            "finished call"
        );
    }
}

impl<S> Service<Request<tonic::body::Body>> for LogService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let method = Call::of(&req);
        let correlation_id = req
            .headers()
            .get("x-gitlab-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        crate::metrics::record_started(method);
        let (received, sent) = crate::metrics::message_counters(method);
        let repository = RepositorySlot::default();
        req.extensions_mut().insert(repository.clone());
        let mut log = CallLog { method, correlation_id, started: Instant::now(), code: None, repository };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, tonic::body::Body::new(Counted::new(body, received)));
        Box::pin(async move {
            let resp = inner.call(req).await?;
            // Trailers-only responses (errors) carry the status in the headers.
            log.observe(resp.headers());
            let (parts, body) = resp.into_parts();
            let body = Counted::new(body, sent).logging(log);
            Ok(Response::from_parts(parts, tonic::body::Body::new(body)))
        })
    }
}

/// Counts the gRPC messages in a byte stream: each is a 5-byte header (compression flag, big-endian
/// length) and that many bytes, and may be split across or share data frames.
#[derive(Debug, Default)]
struct MessageCounter {
    header: [u8; 5],
    have: usize,
    remaining: u64,
}

impl MessageCounter {
    /// The number of messages whose header ends in `data`.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = (self.remaining.min(data.len() as u64)) as usize;
                data = &data[k..];
                self.remaining -= k as u64;
                continue;
            }
            let k = (5 - self.have).min(data.len());
            self.header[self.have..self.have + k].copy_from_slice(&data[..k]);
            self.have += k;
            data = &data[k..];
            if self.have == 5 {
                messages += 1;
                self.have = 0;
                self.remaining =
                    u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as u64;
            }
        }
        messages
    }
}

/// A body whose gRPC messages are counted into `grpc_server_msg_received_total` or `_sent_total` as they
/// pass, so long streams are counted while they run. On the response side it also carries the call's log
/// line and watches for the trailers.
struct Counted<B> {
    inner: B,
    counter: MessageCounter,
    metric: prometheus::IntCounter,
    log: Option<CallLog>,
}

impl<B> Counted<B> {
    fn new(inner: B, metric: prometheus::IntCounter) -> Self {
        Counted { inner, counter: MessageCounter::default(), metric, log: None }
    }

    /// The response body: written out as the call's log line when it ends (or is dropped).
    fn logging(mut self, log: CallLog) -> Self {
        self.log = Some(log);
        self
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(data) = f.data_ref() {
                let n = this.counter.feed(data);
                if n > 0 {
                    this.metric.inc_by(n);
                }
            }
            if let (Some(trailers), Some(log)) = (f.trailers_ref(), this.log.as_mut()) {
                log.observe(trailers);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::MessageCounter;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    #[test]
    fn counts_messages_however_they_are_split() {
        let stream: Vec<u8> = [message(0), message(3), message(70_000), message(1)].concat();
        for chunk in [1, 2, 4, 5, 6, 1000, stream.len()] {
            let mut c = MessageCounter::default();
            let n: u64 = stream.chunks(chunk).map(|d| c.feed(d)).sum();
            assert_eq!(n, 4, "chunk size {chunk}");
        }
    }
}

/// A duration in milliseconds rounded to the microsecond, as upstream's `grpc.time_ms`.
fn time_ms(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn time_ms_is_rounded_to_the_microsecond() {
        let d = std::time::Duration::from_nanos(3_280_181);
        assert_eq!(super::time_ms(d).to_string(), "3.28");
        assert_eq!(super::time_ms(std::time::Duration::from_nanos(12_345_678)).to_string(), "12.345");
    }
}

//! One log line per finished RPC (and the grpc_server_* counters), with upstream's field names (`grpc.service`, `grpc.method`,
//! `grpc.code`, `grpc.time_ms`, `correlation_id`). The line is written when the response body ends (or the
//! client goes away), so a streaming call is logged with its real duration and final status.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};

use std::sync::{Arc, Mutex};

use crate::proto::gitaly::Repository;
use tower::{Layer, Service};

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
    service: String,
    method: String,
    correlation_id: String,
    started: Instant,
    code: Option<tonic::Code>,
    /// Filled in when the first request message has passed.
    repository: Option<Arc<Mutex<Option<Repository>>>>,
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
        let time_ms = seconds * 1000.0;
        crate::metrics::record_handled(&self.service, &self.method, &code, seconds);
        let repo = self.repository.as_ref().and_then(|r| r.lock().ok().and_then(|r| r.clone())).unwrap_or_default();
        tracing::info!(
            grpc.service = %self.service,
            grpc.method = %self.method,
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

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let correlation_id = req
            .headers()
            .get("x-gitlab-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        crate::metrics::record_started(service, method);
        let (received, sent) = crate::metrics::message_counters(service, method);
        let mut log = CallLog {
            service: service.to_string(),
            method: method.to_string(),
            correlation_id,
            started: Instant::now(),
            code: None,
            repository: None,
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // The repository for the log line is read from the first request message as it passes on to the
        // handler: nothing waits for it here, so the layers inside (auth first) see the call at once.
        let repository = Arc::new(Mutex::new(None));
        log.repository = Some(repository.clone());
        let (parts, body) = req.into_parts();
        let tap = Counted::new(body, received).capturing_repository(repository);
        let req = Request::from_parts(parts, tonic::body::Body::new(tap));
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
/// pass, so long streams are counted while they run. On the request side it also captures the
/// repository; on the response side it carries the call's log line and watches for the trailers.
struct Counted<B> {
    inner: B,
    counter: MessageCounter,
    metric: prometheus::IntCounter,
    capture: Option<Capture>,
    log: Option<CallLog>,
}

impl<B> Counted<B> {
    fn new(inner: B, metric: prometheus::IntCounter) -> Self {
        Counted { inner, counter: MessageCounter::default(), metric, capture: None, log: None }
    }

    /// The response body: written out as the call's log line when it ends (or is dropped).
    fn logging(mut self, log: CallLog) -> Self {
        self.log = Some(log);
        self
    }

    fn capturing_repository(mut self, slot: Arc<Mutex<Option<Repository>>>) -> Self {
        self.capture = Some(Capture { buf: Vec::new(), slot });
        self
    }
}

/// How much of the first message is kept to find its repository: Gitaly clients encode it first, and it
/// is a few hundred bytes.
const CAPTURE_LIMIT: usize = 64 * 1024;

/// The start of the first request message, until its repository can be read.
struct Capture {
    buf: Vec<u8>,
    slot: Arc<Mutex<Option<Repository>>>,
}

impl Capture {
    /// Adds `data`; true once done (found, or no more worth reading).
    fn feed(&mut self, data: &[u8]) -> bool {
        self.buf.extend_from_slice(&data[..data.len().min(CAPTURE_LIMIT + 5 - self.buf.len().min(CAPTURE_LIMIT + 5))]);
        if self.buf.len() < 5 {
            return false;
        }
        if self.buf[0] != 0 {
            // A compressed message: nothing to read the repository from.
            return true;
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let have = self.buf.len() - 5;
        if have < len.min(CAPTURE_LIMIT) {
            return false;
        }
        let message = &self.buf[5..5 + have.min(len)];
        if let Ok(mut slot) = self.slot.lock() {
            *slot = repository_in_prefix(message);
        }
        true
    }
}

/// Field 1 (the repository, in nearly every Gitaly request) from the start of an encoded message, skipping
/// fields before it; `None` when it is not within `prefix`.
fn repository_in_prefix(mut prefix: &[u8]) -> Option<Repository> {
    use prost::encoding::{decode_varint, WireType};
    use prost::Message;
    while !prefix.is_empty() {
        let key = decode_varint(&mut prefix).ok()?;
        let (field, wire) = (key >> 3, WireType::try_from(key & 7).ok()?);
        let len = match wire {
            WireType::Varint => {
                decode_varint(&mut prefix).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut prefix).ok()? as usize,
            _ => return None,
        };
        if len > prefix.len() {
            return None;
        }
        if field == 1 && wire == WireType::LengthDelimited {
            return Repository::decode(&prefix[..len]).ok();
        }
        prefix = &prefix[len..];
    }
    None
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
                if this.capture.as_mut().is_some_and(|c| c.feed(data)) {
                    this.capture = None;
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
    use super::{repository_in_prefix, MessageCounter};
    use crate::proto::gitaly::{FindCommitRequest, Repository};

    #[test]
    fn finds_the_repository_in_a_message_prefix() {
        use prost::Message;
        let repo = Repository { storage_name: "default".into(), relative_path: "a/b.git".into(), ..Default::default() };
        let msg = FindCommitRequest { repository: Some(repo.clone()), revision: vec![b'x'; 100_000], trailers: true };
        let bytes = msg.encode_to_vec();
        assert_eq!(repository_in_prefix(&bytes), Some(repo.clone()));
        assert_eq!(repository_in_prefix(&bytes[..60]), Some(repo));
        assert_eq!(repository_in_prefix(&bytes[..10]), None);
        // Fields before it are skipped: a varint (trailers = 4) first.
        let mut reordered = vec![0x20, 1];
        reordered.extend_from_slice(
            &FindCommitRequest { repository: msg.repository.clone(), ..Default::default() }.encode_to_vec(),
        );
        assert_eq!(repository_in_prefix(&reordered), msg.repository);
    }

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

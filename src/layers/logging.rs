//! One log line per finished RPC (and the grpc_server_* counters), with upstream's field names (`grpc.service`, `grpc.method`,
//! `grpc.code`, `grpc.time_ms`, `correlation_id`). The line is written when the response body ends (or the
//! client goes away), so a streaming call is logged with its real duration and final status.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};

use super::peek::{self, Replay};
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
    repository: Option<crate::proto::gitaly::Repository>,
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
        let repo = self.repository.clone().unwrap_or_default();
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
        Box::pin(async move {
            // The repository for the log line comes from the first request message, which goes on untouched.
            let (parts, mut body) = req.into_parts();
            let first = match peek::first_message(&mut body).await {
                Ok(p) => {
                    log.repository = peek::repository_field(&p.message());
                    p.bytes
                }
                Err((_, read)) => read,
            };
            let req = Request::from_parts(parts, tonic::body::Body::new(Replay { first: Some(first), rest: body }));
            let resp = inner.call(req).await?;
            // Trailers-only responses (errors) carry the status in the headers.
            log.observe(resp.headers());
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(parts, tonic::body::Body::new(LoggedBody { inner: body, log })))
        })
    }
}

/// The response body, watched for its trailers.
struct LoggedBody {
    inner: tonic::body::Body,
    log: CallLog,
}

impl http_body::Body for LoggedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(trailers) = f.trailers_ref() {
                this.log.observe(trailers);
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

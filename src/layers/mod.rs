//! Cross-cutting behaviour as tower layers around the whole server, so each sees the full life of a call,
//! streaming ones included (a tonic interceptor would stop seeing the call when the handler starts).
//! Authentication, the concurrency limiter and metrics join this stack.

pub mod auth;
pub mod call;
pub mod limiter;
pub mod logging;
pub mod peek;

/// The gRPC status code in response headers or trailers, if they carry one.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(code))
}

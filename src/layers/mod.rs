//! Cross-cutting behaviour as tower layers around the whole server, so each sees the full life of a call,
//! streaming ones included (a tonic interceptor would stop seeing the call when the handler starts).
//! Authentication, the concurrency limiter and metrics join this stack.

pub mod logging;

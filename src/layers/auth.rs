//! Authentication of every call on every listener: Gitaly's v2 token (`authorization: Bearer
//! v2.<hex HMAC-SHA256(secret, ts)>.<ts>`, valid within ±30 s).
//!
//! A tower layer, so health, reflection, the admin API and proxied worker calls are covered alike. Beyond
//! upstream, `previous_tokens` are also accepted (and counted apart), so a secret can be rotated without an
//! unenforced window.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use http::{Request, Response};
use tower::{Layer, Service};

use super::call::{Call, UNKNOWN};
use crate::metrics::AUTHENTICATIONS;

/// How far a token's timestamp may be from now, in seconds.
pub const MAX_SKEW: u64 = 30;

/// Why a token was not accepted: upstream's two codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Missing or malformed: `Unauthenticated`.
    Unauthenticated,
    /// Wrong signature, unknown version or stale time: `PermissionDenied`.
    Denied,
}

/// Which secret signed a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Current,
    Previous,
}

/// Checks an `authorization` header value against the current and previous secrets.
pub fn check_token(header: Option<&str>, current: &str, previous: &[String], now: u64) -> Result<Accepted, AuthError> {
    // As grpc-go's AuthFromMD: the scheme is matched without regard to case.
    let token = header
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or(AuthError::Unauthenticated)?;
    let parts: Vec<&str> = token.split('.').collect();
    let [version, sig, ts] = parts.as_slice() else { return Err(AuthError::Unauthenticated) };
    let sig = hex::decode(sig).map_err(|_| AuthError::Unauthenticated)?;
    if *version != "v2" {
        return Err(AuthError::Denied);
    }
    let issued: u64 = ts.parse().map_err(|_| AuthError::Denied)?;
    if issued.abs_diff(now) > MAX_SKEW {
        return Err(AuthError::Denied);
    }
    let verify = |secret: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(ts.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig).is_ok()
    };
    if verify(current) {
        return Ok(Accepted::Current);
    }
    if previous.iter().filter(|p| !p.is_empty()).any(|p| verify(p)) {
        return Ok(Accepted::Previous);
    }
    Err(AuthError::Denied)
}

#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub token: String,
    pub previous_tokens: Vec<String>,
    pub transitioning: bool,
}

#[derive(Clone)]
pub struct AuthLayer(Arc<AuthConfig>);

impl AuthLayer {
    pub fn new(cfg: AuthConfig) -> Self {
        AuthLayer(Arc::new(cfg))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, cfg: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    cfg: Arc<AuthConfig>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A method no service declares is answered Unimplemented by the routes, token or not, as grpc-go
        // answers it before any interceptor: nothing to protect, nothing to count.
        if std::ptr::eq(Call::of(&req), &UNKNOWN) {
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move { inner.call(req).await });
        }
        let enforced = if self.cfg.transitioning { "false" } else { "true" };
        let outcome = if self.cfg.token.is_empty() {
            AUTHENTICATIONS.with_label_values(&[enforced, "server disabled authentication"]).inc();
            Ok(())
        } else {
            let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let result = check_token(header, &self.cfg.token, &self.cfg.previous_tokens, now);
            let label = match result {
                Ok(Accepted::Current) if self.cfg.transitioning => "would be ok",
                Ok(Accepted::Current) => "ok",
                Ok(Accepted::Previous) => "ok (previous token)",
                Err(AuthError::Unauthenticated) => "unauthenticated",
                Err(AuthError::Denied) => "denied",
            };
            AUTHENTICATIONS.with_label_values(&[enforced, label]).inc();
            match result {
                Err(e) if !self.cfg.transitioning => Err(e),
                _ => Ok(()),
            }
        };
        match outcome {
            Ok(()) => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await })
            }
            Err(e) => {
                let status = match e {
                    AuthError::Unauthenticated => tonic::Status::unauthenticated("authentication required"),
                    AuthError::Denied => tonic::Status::permission_denied("permission denied"),
                };
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sign_v2;

    #[test]
    fn tokens() {
        let now = 1_600_000_000;
        let bearer = |t: String| format!("Bearer {t}");
        let ok = bearer(sign_v2(b"secret", now));
        assert_eq!(check_token(Some(&ok), "secret", &[], now), Ok(Accepted::Current));
        assert_eq!(check_token(Some(&ok), "secret", &[], now + 30), Ok(Accepted::Current));
        assert_eq!(check_token(Some(&ok), "secret", &[], now + 31), Err(AuthError::Denied));
        assert_eq!(check_token(Some(&ok), "secret", &[], now - 31), Err(AuthError::Denied));
        assert_eq!(check_token(Some(&ok), "other", &[], now), Err(AuthError::Denied));
        assert_eq!(check_token(Some(&ok), "new", &["secret".into()], now), Ok(Accepted::Previous));
        assert_eq!(check_token(None, "secret", &[], now), Err(AuthError::Unauthenticated));
        for bad in ["secret", "Bearer", "Bearer v2.zz.1", "Bearer v2.00", "Basic abc", "Bearer v2.00.1.2"] {
            assert_eq!(check_token(Some(bad), "secret", &[], now), Err(AuthError::Unauthenticated), "{bad}");
        }
        let v1 = ok.replacen("v2.", "v1.", 1);
        assert_eq!(check_token(Some(&v1), "secret", &[], now), Err(AuthError::Denied));
        let bad_ts = bearer(format!("v2.{}.notanumber", "00".repeat(32)));
        assert_eq!(check_token(Some(&bad_ts), "secret", &[], now), Err(AuthError::Denied));
    }
}

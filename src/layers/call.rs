//! The outermost layer, and the one after authentication that resolves repositories.
//!
//! [`CallLayer`] looks the request path up in the method registry once and puts the entry in the request's
//! extensions ([`Call`]); every layer after it, and the worker proxy, read it from there. A path no service
//! declares gets the `unknown` entry, so a client-chosen path never becomes a metric label or a log field,
//! and the routes answer it `Unimplemented`.
//!
//! [`ResolveLayer`] runs after authentication, so nothing is read or resolved for a caller without a valid
//! token. For a repository-scoped method it reads the first request message (the bytes go on untouched),
//! finds the target and additional repositories where the registry says they are, and resolves each with
//! the locator to its canonical path ([`Resolved`]): the limiter keys on that path and the worker proxy
//! hands it to the worker. [`ScopeLayer`], innermost, lets the handler's locator reuse those paths.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use super::peek::{self, Replay};
use crate::locator::{LocateError, Locator};
use crate::proto::gitaly::Repository;
use crate::registry::{self, Method, Op};

/// The registry entry of a call.
#[derive(Debug, Clone, Copy)]
pub struct Call(pub &'static Method);

/// Stands for every path the registry does not know.
pub static UNKNOWN: Method = Method {
    full: registry::UNKNOWN,
    service: registry::UNKNOWN,
    name: registry::UNKNOWN,
    request: registry::UNKNOWN,
    client_streaming: false,
    server_streaming: false,
    op: Op::Unknown,
    scope: None,
    target_repository: None,
    additional_repository: None,
    storage: None,
    user: None,
};

impl Call {
    /// The entry a request carries (the unknown entry if none was set, as for a request built in a test).
    pub fn of<B>(req: &Request<B>) -> &'static Method {
        req.extensions().get::<Call>().map(|c| c.0).unwrap_or(&UNKNOWN)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CallLayer;

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CallService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for CallService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let method = registry::lookup(req.uri().path()).unwrap_or(&UNKNOWN);
        req.extensions_mut().insert(Call(method));
        self.inner.call(req)
    }
}

/// One repository of a request, as the client named it and as the locator resolved it.
#[derive(Debug, Clone)]
pub struct Target {
    pub repository: Repository,
    /// The canonical path of the existing repository, or why there is none.
    pub path: Result<PathBuf, LocateError>,
}

/// The repositories of a repository-scoped call.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The first message was read; either repository may be absent from it.
    Read { target: Option<Box<Target>>, additional: Option<Box<Target>> },
    /// The first message could not be read (compressed, too large, missing); the handler answers the call
    /// itself, and anything that needed the repository answers with this.
    Unreadable(Status),
}

impl Resolved {
    pub fn target(&self) -> Option<&Target> {
        match self {
            Resolved::Read { target, .. } => target.as_deref(),
            Resolved::Unreadable(_) => None,
        }
    }

    /// The canonical paths of the repositories that resolved.
    fn paths(&self) -> Vec<PathBuf> {
        match self {
            Resolved::Read { target, additional } => {
                [target, additional].into_iter().flatten().filter_map(|t| t.path.as_ref().ok().cloned()).collect()
            }
            Resolved::Unreadable(_) => Vec::new(),
        }
    }
}

/// Where the log layer wants the call's repository once it is known.
#[derive(Debug, Clone, Default)]
pub struct RepositorySlot(pub Arc<Mutex<Option<Repository>>>);

#[derive(Debug, Clone)]
pub struct ResolveLayer(Arc<Locator>);

impl ResolveLayer {
    pub fn new(locator: Locator) -> Self {
        ResolveLayer(Arc::new(locator))
    }
}

impl<S> Layer<S> for ResolveLayer {
    type Service = ResolveService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ResolveService { inner, locator: self.0.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct ResolveService<S> {
    inner: S,
    locator: Arc<Locator>,
}

impl<S> Service<Request<Body>> for ResolveService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = Call::of(&req);
        if method.target_repository.is_none() {
            return Box::pin(inner.call(req));
        }
        let locator = self.locator.clone();
        Box::pin(async move {
            let (mut parts, mut body) = req.into_parts();
            let (first, resolved) = match peek::first_message(&mut body).await {
                Ok(p) => {
                    let msg = p.message();
                    let resolve = |repository: Option<Repository>| {
                        repository.map(|repository| Box::new(Target { path: locator.resolve(&repository), repository }))
                    };
                    let repositories =
                        method.target_repository_in(&msg).and_then(|t| Ok((t, method.additional_repository_in(&msg)?)));
                    let resolved = match repositories {
                        Ok((t, a)) => Resolved::Read { target: resolve(t), additional: resolve(a) },
                        Err(e) => Resolved::Unreadable(Status::invalid_argument(format!("decode request: {e}"))),
                    };
                    (p.bytes, resolved)
                }
                Err((status, read)) => (read, Resolved::Unreadable(status)),
            };
            if let (Some(slot), Some(t)) = (parts.extensions.get::<RepositorySlot>(), resolved.target()) {
                if let Ok(mut slot) = slot.0.lock() {
                    *slot = Some(t.repository.clone());
                }
            }
            parts.extensions.insert(resolved);
            inner.call(Request::from_parts(parts, Body::new(Replay { first: Some(first), rest: body }))).await
        })
    }
}

/// The innermost layer, after the limiter: runs the handler inside [`crate::locator::with_resolved`] with
/// the paths [`ResolveLayer`] resolved, so the handler's own `repo_path` for them does no filesystem work
/// again. After the limiter, so a repository removed while its call waited in the queue is still found
/// missing by the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopeLayer;

impl<S> Layer<S> for ScopeLayer {
    type Service = ScopeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ScopeService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ScopeService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for ScopeService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let paths = req.extensions().get::<Resolved>().map(Resolved::paths).unwrap_or_default();
        if paths.is_empty() {
            return Box::pin(inner.call(req));
        }
        Box::pin(crate::locator::with_resolved(paths, async move { inner.call(req).await }))
    }
}

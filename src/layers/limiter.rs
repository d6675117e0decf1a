//! The concurrency limiter (`[[concurrency]] rpc, max_per_repo, max_queue_size, max_queue_wait`).
//!
//! Per RPC (full method name) per repository (its canonical path, from the resolve layer), at most
//! `max_per_repo` calls run; the rest wait in a bounded queue. A slot is held for the whole life of the
//! call, streams included: it is released when the response body ends or the client goes away, not when the
//! handler returns; a call cancelled while it waits gives its queue place back at once. A full queue and a queue timeout are
//! `ResourceExhausted` with distinct messages and counted by reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use super::call::{Call, Resolved};
use super::peek::HoldUntilEnd;
use crate::config::Concurrency;
use crate::metrics::REGISTRY;
use crate::registry::Method;

pub const QUEUE_FULL: &str = "maximum queue size reached";
pub const QUEUE_TIMEOUT: &str = "maximum time in concurrency queue reached";

/// Waits longer than this are logged with `acquire_ms`.
const LOG_WAIT: Duration = Duration::from_millis(10);

const LABELS: &[&str] = &["system", "grpc_service", "grpc_method"];

static IN_PROGRESS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new("gitaly_rate_limiting_in_progress", "Gauge of number of concurrent in-progress calls"),
        LABELS,
    )
    .expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("registered once");
    g
});

static QUEUED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(Opts::new("gitaly_rate_limiting_queued", "Gauge of number of queued calls"), LABELS)
        .expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("registered once");
    g
});

static ACQUIRING: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "gitaly_rate_limiting_acquiring_seconds",
            "Histogram of time calls are rate limited (in seconds)",
        )
        .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 10.0, 30.0, 60.0, 300.0, 1500.0]),
        LABELS,
    )
    .expect("valid metric");
    REGISTRY.register(Box::new(h.clone())).expect("registered once");
    h
});

static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("gitaly_requests_dropped_total", "Number of requests dropped from the execution"),
        &["system", "grpc_service", "grpc_method", "reason"],
    )
    .expect("valid metric");
    REGISTRY.register(Box::new(c.clone())).expect("registered once");
    c
});

#[derive(Debug, Clone)]
struct Limit {
    max_per_repo: usize,
    max_queue_size: Option<u32>,
    max_queue_wait: Option<Duration>,
}

/// One RPC on one repository.
struct Slot {
    permits: Arc<Semaphore>,
    queued: AtomicU32,
}

/// One method (full name) on one repository (canonical path).
type Key = (&'static str, PathBuf);

struct Limits {
    by_rpc: HashMap<String, Limit>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
}

#[derive(Clone)]
pub struct LimiterLayer(Arc<Limits>);

impl LimiterLayer {
    pub fn new(config: &[Concurrency]) -> Self {
        LazyLock::force(&IN_PROGRESS);
        LazyLock::force(&QUEUED);
        LazyLock::force(&ACQUIRING);
        LazyLock::force(&DROPPED);
        let by_rpc = config
            .iter()
            .filter(|c| c.max_per_repo > 0)
            .map(|c| {
                let limit = Limit {
                    max_per_repo: c.max_per_repo as usize,
                    max_queue_size: c.max_queue_size,
                    max_queue_wait: c.max_queue_wait.map(|d| d.0),
                };
                (c.rpc.clone(), limit)
            })
            .collect();
        LimiterLayer(Arc::new(Limits { by_rpc, slots: Mutex::new(HashMap::new()) }))
    }
}

impl<S> Layer<S> for LimiterLayer {
    type Service = Limiter<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limiter { inner, limits: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Limiter<S> {
    inner: S,
    limits: Arc<Limits>,
}

/// A held slot: released (and the gauges updated) when dropped.
struct Held {
    _permit: OwnedSemaphorePermit,
    labels: [&'static str; 3],
    cleanup: Option<(Arc<Limits>, Key)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        IN_PROGRESS.with_label_values(&self.labels).dec();
        if let Some((limits, key)) = self.cleanup.take() {
            forget_idle(&limits, &key, 1);
        }
    }
}

/// Drops the slot for a key once nobody holds or waits for it (`held` = permits about to be returned).
fn forget_idle(limits: &Limits, key: &Key, held: usize) {
    let mut slots = limits.slots.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(slot) = slots.get(key) {
        let max = limits.by_rpc.get(key.0).map(|l| l.max_per_repo).unwrap_or(0);
        if slot.queued.load(Ordering::SeqCst) == 0 && slot.permits.available_permits() + held >= max {
            slots.remove(key);
        }
    }
}

impl<S> Service<Request<Body>> for Limiter<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = Call::of(&req);
        let Some(limit) = self.limits.by_rpc.get(method.full).cloned() else {
            return Box::pin(async move { inner.call(req).await });
        };
        // The canonical path: every spelling of one repository is one key. A call whose repository does
        // not resolve is not limited; its handler refuses it.
        let Some(repo) = req.extensions().get::<Resolved>().and_then(|r| r.target()?.path.clone().ok()) else {
            return Box::pin(async move { inner.call(req).await });
        };
        let limits = self.limits.clone();
        Box::pin(async move {
            let key = (method.full, repo);
            let held = match acquire(&limits, &limit, key, method).await {
                Ok(h) => h,
                Err(status) => return Ok(status.into_http()),
            };
            let resp = inner.call(req).await?;
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(parts, Body::new(HoldUntilEnd { inner: body, guard: Some(held) })))
        })
    }
}

/// A place in a slot's queue, given back when dropped: also when the caller gives up waiting or the client
/// cancels the call while it waits.
struct QueuePlace<'a> {
    slot: &'a Slot,
    labels: [&'static str; 3],
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.slot.queued.fetch_sub(1, Ordering::SeqCst);
        QUEUED.with_label_values(&self.labels).dec();
    }
}

/// Unless disarmed, forgets a key's slot when dropped if nobody holds or waits for it any more: a waiter
/// that leaves without a permit (timed out, or cancelled by its client) may be the slot's last user.
struct ForgetIdle<'a> {
    limits: &'a Limits,
    key: &'a Key,
    armed: bool,
}

impl Drop for ForgetIdle<'_> {
    fn drop(&mut self) {
        if self.armed {
            forget_idle(self.limits, self.key, 0);
        }
    }
}

async fn acquire(limits: &Arc<Limits>, limit: &Limit, key: Key, method: &'static Method) -> Result<Held, Status> {
    let labels = ["gitaly", method.service, method.name];
    let started = Instant::now();
    // Taking a permit or a queue place happens under the map lock, so an idle slot is never forgotten
    // while someone is about to use it.
    let (slot, immediate) = {
        let mut slots = limits.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot { permits: Arc::new(Semaphore::new(limit.max_per_repo)), queued: AtomicU32::new(0) })
            })
            .clone();
        match slot.permits.clone().try_acquire_owned() {
            Ok(p) => (slot, Some(p)),
            Err(_) => {
                if limit.max_queue_size.is_some_and(|max| slot.queued.load(Ordering::SeqCst) >= max) {
                    DROPPED.with_label_values(&[labels[0], labels[1], labels[2], "max_size"]).inc();
                    return Err(Status::resource_exhausted(QUEUE_FULL));
                }
                slot.queued.fetch_add(1, Ordering::SeqCst);
                QUEUED.with_label_values(&labels).inc();
                (slot, None)
            }
        }
    };
    let permit = match immediate {
        Some(p) => p,
        None => {
            // Declared first, dropped last: the slot is forgotten only after the queue place is given back.
            let mut forget = ForgetIdle { limits, key: &key, armed: true };
            let place = QueuePlace { slot: &slot, labels };
            let waited = match limit.max_queue_wait {
                Some(max) => tokio::time::timeout(max, slot.permits.clone().acquire_owned()).await.ok(),
                None => Some(slot.permits.clone().acquire_owned().await),
            };
            drop(place);
            match waited {
                Some(Ok(p)) => {
                    forget.armed = false;
                    p
                }
                _ => {
                    DROPPED.with_label_values(&[labels[0], labels[1], labels[2], "max_time"]).inc();
                    return Err(Status::resource_exhausted(QUEUE_TIMEOUT));
                }
            }
        }
    };
    let waited = started.elapsed();
    ACQUIRING.with_label_values(&labels).observe(waited.as_secs_f64());
    if waited > LOG_WAIT {
        tracing::info!(
            grpc.service = labels[1],
            grpc.method = labels[2],
            acquire_ms = waited.as_millis() as u64,
            "concurrency queue wait"
        );
    }
    IN_PROGRESS.with_label_values(&labels).inc();
    Ok(Held { _permit: permit, labels, cleanup: Some((limits.clone(), key)) })
}

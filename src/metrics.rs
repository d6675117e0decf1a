//! Prometheus metrics, registered in one registry with upstream's names so dashboards carry over, and the
//! `/metrics` endpoint on `prometheus_listen_addr` that serves them.

use std::sync::{LazyLock, OnceLock};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::registry::Method;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("metric registered once");
    g
}

pub static SUPERVISOR_STARTS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("gitaly_supervisor_starts_total", "Number of starts of supervised processes.", &["name"]));

/// Ours: attempts to start a supervised process that failed (each is retried with back-off).
pub static SUPERVISOR_SPAWN_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("rgitaly_supervisor_spawn_failures_total", "Failed attempts to start a supervised process.", &["name"])
});

/// Ours: how calls that lost their worker mid-call were settled (`retried`, `not_applied`, `recovered`,
/// `unknown`).
pub static WORKER_CALLS_LOST: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "rgitaly_worker_calls_lost_total",
        "Calls whose worker died before answering, by how the daemon settled them.",
        &["grpc_method", "outcome"],
    )
});

pub static SUPERVISOR_RSS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("gitaly_supervisor_rss_bytes", "Resident set size of supervised processes, in bytes.", &["name"])
});

pub static SUPERVISOR_HEALTH_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("gitaly_supervisor_health_checks_total", "Count of health checks by status.", &["name", "status"])
});

pub static MEMORY_TERMINATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("gitaly_ruby_memory_terminations_total", "Number of worker rotations for exceeding max_rss.", &["name"])
});

pub static GRPC_CLIENT_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_client_handled_total",
        "Total number of RPCs completed by the client, regardless of success or failure.",
        &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
    )
});

pub static AUTHENTICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "gitaly_authentications_total",
        "Counts of of Gitaly request authentication attempts",
        &["enforced", "status"],
    )
});

pub static GRPC_SERVER_STARTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_server_started_total",
        "Total number of RPCs started on the server.",
        &["grpc_type", "grpc_service", "grpc_method"],
    )
});

pub static GRPC_SERVER_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
    )
});

pub static CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("gitaly_connections_total", "Total number of connections accepted by this Gitaly process", &["type"])
});

/// Ours: connections closed at once because their listener was at `connections.max_per_listener`.
pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "rgitaly_connections_refused_total",
        "Connections closed on accept because the listener was at its connection limit",
        &["type"],
    )
});

pub static COMMANDS_RUNNING: LazyLock<IntGauge> = LazyLock::new(|| {
    let g = IntGauge::new("gitaly_commands_running", "Total number of processes currently being executed")
        .expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("metric registered once");
    g
});

/// Not upstream's: every git process this daemon started, so an operator (and our tests) can see which
/// calls fork. Brought up to date at each scrape.
pub static GIT_SPAWNED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    let c = prometheus::IntCounter::new("rgitaly_git_processes_spawned_total", "Git processes started by the daemon.")
        .expect("valid metric");
    REGISTRY.register(Box::new(c.clone())).expect("metric registered once");
    c
});

/// Ours: the read pool's size, its busy threads and its queue (`src/odb/pool.rs`).
/// Upstream's: each repository's OptimizeRepository in the daily maintenance window.
pub static DAILY_MAINTENANCE_SECONDS: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    let h = prometheus::Histogram::with_opts(
        HistogramOpts::new(
            "gitaly_daily_maintenance_repo_optimization_seconds",
            "How many seconds each repo takes to successfully optimize during daily maintenance",
        )
        .buckets(vec![0.01, 0.1, 1.0, 10.0, 100.0]),
    )
    .expect("valid histogram");
    REGISTRY.register(Box::new(h.clone())).expect("metric registered once");
    h
});

pub static READ_THREADS: LazyLock<IntGauge> =
    LazyLock::new(|| int_gauge("rgitaly_read_threads", "Threads that run object reads."));
pub static READ_THREADS_BUSY: LazyLock<IntGauge> =
    LazyLock::new(|| int_gauge("rgitaly_read_threads_busy", "Read threads running a read."));
pub static READ_QUEUE: LazyLock<IntGauge> =
    LazyLock::new(|| int_gauge("rgitaly_read_queue", "Reads waiting for a read thread."));

/// Ours: the object-read budget (`[read_cache]`, `src/odb/mod.rs`). `cache` is `object` or `delta`; the
/// bytes are what the handles' caches may grow to, the budget's unit.
pub static READ_CACHE_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("rgitaly_read_cache_bytes", "Bytes reserved by the caches of open repository handles.", &["cache"])
});
pub static READ_CACHE_BUDGET: LazyLock<IntGauge> = LazyLock::new(|| {
    int_gauge("rgitaly_read_cache_budget_bytes", "Bytes the caches of all repository handles may hold together.")
});
/// `state` is `in_use` or `idle`.
pub static READ_HANDLES: LazyLock<IntGaugeVec> =
    LazyLock::new(|| gauge("rgitaly_read_handles", "Open repository handles for in-process reads.", &["state"]));
pub static READ_REPOSITORIES: LazyLock<IntGauge> = LazyLock::new(|| {
    int_gauge("rgitaly_read_repositories_open", "Repositories open for in-process reads (their packs mapped).")
});
/// `reason`: `idle` (unused past `idle_timeout`), `budget` (its cache was needed elsewhere), `count` (more
/// idle handles than `[git] catfile_cache_size`), `changed` (packs or refs changed on disk), `capacity`.
pub static READ_EVICTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("rgitaly_read_cache_evictions_total", "Repository handles and repositories closed, by reason.", &["reason"])
});
/// Handles opened without caches because the budget was held by handles in use.
pub static READ_UNCACHED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    let c = prometheus::IntCounter::new(
        "rgitaly_read_handles_uncached_total",
        "Repository handles opened without caches because the read cache budget was in use.",
    )
    .expect("valid metric");
    REGISTRY.register(Box::new(c.clone())).expect("metric registered once");
    c
});

fn int_gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("metric registered once");
    g
}

pub static BUILD_INFO: LazyLock<IntGaugeVec> =
    LazyLock::new(|| gauge("gitaly_build_info", "Current build information.", &["version", "git_version"]));

/// `grpc_server_handling_seconds`, only when `[prometheus] grpc_latency_buckets` is configured (as upstream).
static HANDLING_SECONDS: OnceLock<HistogramVec> = OnceLock::new();

pub fn enable_latency_histogram(buckets: &[f64]) {
    if buckets.is_empty() {
        return;
    }
    let h = HistogramVec::new(
        HistogramOpts::new(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
        )
        .buckets(buckets.to_vec()),
        &["grpc_type", "grpc_service", "grpc_method"],
    )
    .expect("valid histogram");
    if HANDLING_SECONDS.set(h.clone()).is_ok() {
        REGISTRY.register(Box::new(h)).expect("metric registered once");
    }
}

pub static GRPC_SERVER_MSG_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_server_msg_received_total",
        "Total number of RPC stream messages received on the server.",
        &["grpc_type", "grpc_service", "grpc_method"],
    )
});

pub static GRPC_SERVER_MSG_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_server_msg_sent_total",
        "Total number of gRPC stream messages sent by the server.",
        &["grpc_type", "grpc_service", "grpc_method"],
    )
});

/// grpc-prometheus' labels of a method: its registry entry, so a label is never a client-chosen string.
fn labels(m: &Method) -> [&'static str; 3] {
    [m.grpc_type(), m.service, m.name]
}

/// The received and sent message counters of one method, looked up once per call.
pub fn message_counters(m: &Method) -> (prometheus::IntCounter, prometheus::IntCounter) {
    let labels = labels(m);
    (GRPC_SERVER_MSG_RECEIVED.with_label_values(&labels), GRPC_SERVER_MSG_SENT.with_label_values(&labels))
}

pub fn record_started(m: &Method) {
    GRPC_SERVER_STARTED.with_label_values(&labels(m)).inc();
}

pub fn record_handled(m: &Method, code: &str, seconds: f64) {
    let [kind, service, method] = labels(m);
    GRPC_SERVER_HANDLED.with_label_values(&[kind, service, method, code]).inc();
    if let Some(h) = HANDLING_SECONDS.get() {
        h.with_label_values(&labels(m)).observe(seconds);
    }
}

/// The registry in Prometheus text format.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&REGISTRY.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

pub static GIT_PROTOCOL_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "gitaly_git_protocol_requests_total",
        "Counter of Git protocol requests",
        &["grpc_service", "grpc_method", "git_protocol"],
    )
});

/// Forces registration of every family (so a scrape lists them before first use).
pub fn register_all() {
    LazyLock::force(&SUPERVISOR_STARTS);
    LazyLock::force(&SUPERVISOR_SPAWN_FAILURES);
    LazyLock::force(&WORKER_CALLS_LOST);
    LazyLock::force(&SUPERVISOR_RSS);
    LazyLock::force(&SUPERVISOR_HEALTH_CHECKS);
    LazyLock::force(&MEMORY_TERMINATIONS);
    LazyLock::force(&GRPC_CLIENT_HANDLED);
    LazyLock::force(&AUTHENTICATIONS);
    LazyLock::force(&GRPC_SERVER_STARTED);
    LazyLock::force(&GRPC_SERVER_HANDLED);
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&CONNECTIONS_REFUSED);
    LazyLock::force(&COMMANDS_RUNNING);
    LazyLock::force(&BUILD_INFO);
    LazyLock::force(&GIT_SPAWNED);
    LazyLock::force(&GIT_PROTOCOL_REQUESTS);
    LazyLock::force(&GRPC_SERVER_MSG_RECEIVED);
    LazyLock::force(&GRPC_SERVER_MSG_SENT);
    LazyLock::force(&READ_THREADS);
    LazyLock::force(&READ_THREADS_BUSY);
    LazyLock::force(&READ_QUEUE);
    LazyLock::force(&READ_CACHE_BUDGET);
    LazyLock::force(&READ_REPOSITORIES);
    LazyLock::force(&READ_EVICTIONS);
    LazyLock::force(&READ_UNCACHED);
    for cache in ["object", "delta"] {
        READ_CACHE_BYTES.with_label_values(&[cache]).add(0);
    }
    for state in ["in_use", "idle"] {
        READ_HANDLES.with_label_values(&[state]).add(0);
    }
    // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, … as Go's client exports.
    static PROCESS: OnceLock<()> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let _ = REGISTRY.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
    });
}

/// Serves `GET /metrics` on `listener` until the task is dropped. `before_scrape` refreshes gauges read at
/// scrape time.
pub async fn serve(listener: tokio::net::TcpListener, before_scrape: std::sync::Arc<dyn Fn() + Send + Sync>) {
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let before_scrape = before_scrape.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let before_scrape = before_scrape.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        before_scrape();
                        hyper::Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(http_body_util::Full::new(bytes::Bytes::from(render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"not found\n")))
                    };
                    Ok::<_, std::convert::Infallible>(resp.expect("valid response"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

//! Prometheus metrics, registered in one registry with upstream's names so dashboards carry over. The HTTP
//! endpoint that serves them (`prometheus_listen_addr`) comes with the operations work; families are
//! registered and updated now.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

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

/// Forces registration of every family (so a scrape lists them before first use).
pub fn register_all() {
    LazyLock::force(&SUPERVISOR_STARTS);
    LazyLock::force(&SUPERVISOR_RSS);
    LazyLock::force(&SUPERVISOR_HEALTH_CHECKS);
    LazyLock::force(&MEMORY_TERMINATIONS);
    LazyLock::force(&GRPC_CLIENT_HANDLED);
}

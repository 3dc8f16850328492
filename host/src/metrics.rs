//! Prometheus metrics, served at `GET /metrics`.
//!
//! One process-wide registry: requests per route and status, policy calls per
//! tenant, policy and engine (with failures by reason), reloads, activities
//! created by status, and the database pool. Every label set is bounded: routes
//! are templates, statuses and reasons are closed sets, and the tenant label
//! on policy metrics can be switched off (`RETEN_METRICS_TENANT_LABELS=false`)
//! when tenants are too many to count one by one.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder, exponential_buckets,
};

use crate::policy::{EngineKind, FailureKind, PolicyFailure};

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub policy_calls: IntCounterVec,
    pub policy_duration: HistogramVec,
    pub reloads: IntCounterVec,
    pub load_errors: IntCounterVec,
    pub activities_created: IntCounterVec,
    pub db_pool: IntGaugeVec,
    pub db_acquire: HistogramVec,
    tenant_labels: AtomicBool,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    registry.register(Box::new(c.clone())).expect("each metric is registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h =
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("a valid metric definition");
    registry.register(Box::new(h.clone())).expect("each metric is registered once");
    h
}

/// 50 µs to ~3 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.000_05, 2.0, 17).expect("valid buckets")
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let http_requests = counter(
        &registry,
        "reten_http_requests_total",
        "HTTP requests by route template, method and status.",
        &["route", "method", "status"],
    );
    let http_duration = histogram(
        &registry,
        "reten_http_request_duration_seconds",
        "HTTP request latency by route template, method and status.",
        &["route", "method", "status"],
        latency_buckets(),
    );
    let policy_calls = counter(
        &registry,
        "reten_policy_calls_total",
        "Policy calls by tenant, policy, engine and outcome (ok, or the failure's reason).",
        &["tenant", "policy", "engine", "outcome"],
    );
    let policy_duration = histogram(
        &registry,
        "reten_policy_call_duration_seconds",
        "Policy call latency by tenant, policy and engine.",
        &["tenant", "policy", "engine"],
        exponential_buckets(0.000_002, 2.0, 20).expect("valid buckets"),
    );
    let reloads = counter(
        &registry,
        "reten_policy_reloads_total",
        "Policy reloads by result: published (something changed) or unchanged.",
        &["result"],
    );
    let load_errors = counter(
        &registry,
        "reten_policy_load_errors_total",
        "Policy files that failed to load (each distinct error once).",
        &["layer"],
    );
    let activities_created =
        counter(&registry, "reten_activities_created_total", "Activities created, by status.", &["status"]);
    let db_pool = IntGaugeVec::new(
        Opts::new(
            "reten_db_pool_connections",
            "Database connections by pool (main, or create for the create path) and state (in_use, idle, max).",
        ),
        &["pool", "state"],
    )
    .expect("a valid metric definition");
    registry.register(Box::new(db_pool.clone())).expect("each metric is registered once");
    let db_acquire = histogram(
        &registry,
        "reten_db_pool_acquire_seconds",
        "Time the create path waited for a database connection.",
        &["outcome"],
        latency_buckets(),
    );
    Metrics {
        registry,
        http_requests,
        http_duration,
        policy_calls,
        policy_duration,
        reloads,
        load_errors,
        activities_created,
        db_pool,
        db_acquire,
        tenant_labels: AtomicBool::new(true),
    }
});

impl Metrics {
    /// The registry every metric of the process is on, for parts that
    /// define their own metrics (the dispatcher).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Switches the tenant label of policy metrics on or off (off: `_all`).
    pub fn set_tenant_labels(&self, on: bool) {
        self.tenant_labels.store(on, Ordering::Relaxed);
    }

    /// Records one policy call.
    pub fn policy_call(
        &self,
        tenant: &str,
        policy: &str,
        engine: EngineKind,
        elapsed: Duration,
        failure: Option<&PolicyFailure>,
    ) {
        let tenant = if self.tenant_labels.load(Ordering::Relaxed) { tenant } else { "_all" };
        let outcome = failure.map_or("ok", |f| outcome(f.kind));
        self.policy_calls.with_label_values(&[tenant, policy, engine.as_str(), outcome]).inc();
        self.policy_duration.with_label_values(&[tenant, policy, engine.as_str()]).observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric, after refreshing the pool gauges.
    pub fn render(&self, pool: &sqlx::PgPool, fast: &crate::store::fast_pool::FastPool) -> String {
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let max = i64::from(pool.options().get_max_connections());
        self.db_pool.with_label_values(&["main", "in_use"]).set(size - idle);
        self.db_pool.with_label_values(&["main", "idle"]).set(idle);
        self.db_pool.with_label_values(&["main", "max"]).set(max);
        let (in_use, idle) = fast.usage();
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.db_pool.with_label_values(&["create", "in_use"]).set(as_gauge(in_use));
        self.db_pool.with_label_values(&["create", "idle"]).set(as_gauge(idle));
        self.db_pool.with_label_values(&["create", "max"]).set(max);
        let mut out = Vec::new();
        // Encoding to a Vec cannot fail for text.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn outcome(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Deadline => "deadline",
        FailureKind::Memory => "memory",
        FailureKind::Trap => "trap",
        FailureKind::PolicyError => "policy_error",
        FailureKind::BadOutput => "bad_output",
        FailureKind::OutputTooLarge => "output_too_large",
        FailureKind::CircuitOpen => "circuit_open",
    }
}

//! Prometheus metrics, served at `GET /metrics`.
//!
//! One registry per application, owned by it (the app's state and the policy
//! registry hold the same `Arc<Metrics>`), so two apps in one process — as in
//! the tests — count apart. Requests per route and status, policy calls per
//! tenant, policy and engine (with failures by reason), reloads, activities
//! created by status, and the database pools. Every label set is bounded:
//! routes are templates, statuses and reasons are closed sets, and the tenant
//! label on policy metrics can be switched off
//! (`RETEN_METRICS_TENANT_LABELS=false`) when tenants are too many to count
//! one by one.
//!
//! A leaf module: it knows label values as strings and imports nothing of the
//! rest of the crate, so policy and store code can record into it without an
//! import cycle.

use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// What an engine counts a call's cost in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostUnit {
    /// Wasm fuel (`reten_policy_fuel_total`).
    Fuel,
    /// Rhai operations (`reten_policy_operations_total`).
    Operations,
}

/// The series of one policy's calls for one tenant ([`Metrics::policy_meter`]).
pub struct PolicyMeter {
    tenant: String,
    policy: String,
    engine: String,
    ok: IntCounter,
    duration: Histogram,
    seconds: Counter,
    cost: IntCounter,
}

impl PolicyMeter {
    /// Records one call: its outcome (`None` for ok, else the failure's
    /// reason, counted under that outcome), its time and its cost.
    pub fn record(&self, metrics: &Metrics, elapsed: Duration, failure: Option<&str>, cost: Option<u64>) {
        let secs = elapsed.as_secs_f64();
        match failure {
            None => self.ok.inc(),
            Some(outcome) => {
                metrics.policy_calls.with_label_values(&[&self.tenant, &self.policy, &self.engine, outcome]).inc()
            }
        }
        self.duration.observe(secs);
        self.seconds.inc_by(secs);
        if let Some(cost) = cost {
            self.cost.inc_by(cost);
        }
    }
}

/// The gauges of one connection pool at the moment of a scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolGauges {
    pub in_use: usize,
    pub idle: usize,
    pub max: usize,
}

/// Every metric of one application.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub policy_calls: IntCounterVec,
    pub policy_duration: HistogramVec,
    pub policy_seconds: CounterVec,
    pub policy_fuel: IntCounterVec,
    pub policy_operations: IntCounterVec,
    pub reloads: IntCounterVec,
    pub load_errors: IntCounterVec,
    pub activities_created: IntCounterVec,
    pub db_pool: IntGaugeVec,
    pub db_acquire: HistogramVec,
    tenant_labels: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("tenant_labels", &self.tenant_labels).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(true)
    }
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

impl Metrics {
    /// A fresh registry with every metric at zero; `tenant_labels: false`
    /// counts policy calls under the tenant `_all`.
    pub fn new(tenant_labels: bool) -> Self {
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
        let policy_seconds = CounterVec::new(
            Opts::new(
                "reten_policy_call_seconds_total",
                "Time spent in policy calls, by tenant and engine (each call's clock from start to answer).",
            ),
            &["tenant", "engine"],
        )
        .expect("a valid metric definition");
        registry.register(Box::new(policy_seconds.clone())).expect("each metric is registered once");
        let policy_fuel = counter(
            &registry,
            "reten_policy_fuel_total",
            "Wasm fuel burned by policy calls, by tenant: a deterministic count of the instructions they ran.",
            &["tenant"],
        );
        let policy_operations = counter(
            &registry,
            "reten_policy_operations_total",
            "Rhai operations run by policy calls, by tenant: their deterministic cost.",
            &["tenant"],
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
            policy_seconds,
            policy_fuel,
            policy_operations,
            reloads,
            load_errors,
            activities_created,
            db_pool,
            db_acquire,
            tenant_labels,
        }
    }

    /// The label a tenant's series go under: its id, or `_all` when tenant
    /// labels are off.
    pub fn tenant_label(&self, tenant: &str) -> String {
        if self.tenant_labels { tenant.to_owned() } else { "_all".to_owned() }
    }

    /// The registry, for parts of the app that register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The series one policy's calls for one tenant count in, looked up
    /// once: a caller that keeps the meter records a call without hashing
    /// label values (four lookups of a few dozen ns each, on a call of a few
    /// µs). `cost` is the engine's counter: fuel for Wasm, operations for
    /// Rhai.
    pub fn policy_meter(&self, tenant: &str, policy: &str, engine: &str, cost: CostUnit) -> PolicyMeter {
        let tenant = if self.tenant_labels { tenant } else { "_all" };
        PolicyMeter {
            tenant: tenant.to_owned(),
            policy: policy.to_owned(),
            engine: engine.to_owned(),
            ok: self.policy_calls.with_label_values(&[tenant, policy, engine, "ok"]),
            duration: self.policy_duration.with_label_values(&[tenant, policy, engine]),
            seconds: self.policy_seconds.with_label_values(&[tenant, engine]),
            cost: match cost {
                CostUnit::Fuel => self.policy_fuel.with_label_values(&[tenant]),
                CostUnit::Operations => self.policy_operations.with_label_values(&[tenant]),
            },
        }
    }

    /// The text exposition of every metric, after refreshing the pool gauges
    /// (by pool name: `main`, `create`).
    pub fn render(&self, pools: &[(&str, PoolGauges)]) -> String {
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (name, gauges) in pools {
            self.db_pool.with_label_values(&[name, "in_use"]).set(as_gauge(gauges.in_use));
            self.db_pool.with_label_values(&[name, "idle"]).set(as_gauge(gauges.idle));
            self.db_pool.with_label_values(&[name, "max"]).set(as_gauge(gauges.max));
        }
        let mut out = Vec::new();
        // Encoding to a Vec cannot fail for text.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

//! The dispatcher's metrics: attempts by tenant, channel and result; the
//! lag from due to dispatched; and the age of each tenant's oldest due
//! activity. Registered on the registry the app passes in, so a test builds
//! its own.

use std::time::Duration;

use prometheus::{GaugeVec, core::Collector};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry, exponential_buckets};

use crate::domain::TenantId;

/// The dispatcher's metrics.
#[derive(Clone)]
pub struct DispatchMetrics {
    attempts: IntCounterVec,
    lag: Histogram,
    oldest_due: GaugeVec,
    tenant_labels: bool,
}

impl std::fmt::Debug for DispatchMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchMetrics").finish_non_exhaustive()
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // A second registration (a second app in one process) keeps counting
    // on its own collector; only the first is exported.
    let _ = registry.register(Box::new(c.clone()));
    c
}

impl DispatchMetrics {
    /// The metrics, registered on `registry`. Without `tenant_labels`, the
    /// tenant label is `_all`.
    pub fn new(registry: &Registry, tenant_labels: bool) -> Self {
        let attempts = IntCounterVec::new(
            Opts::new(
                "reten_dispatch_attempts_total",
                "Dispatch attempts by tenant, channel and result (success, or the failure's code class).",
            ),
            &["tenant", "channel", "result"],
        )
        .expect("a valid metric definition");
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "reten_dispatch_lag_seconds",
                "From when an activity became due to when its provider answered 2xx.",
            )
            .buckets(exponential_buckets(0.005, 2.0, 16).expect("valid buckets")),
        )
        .expect("a valid metric definition");
        let oldest_due = GaugeVec::new(
            Opts::new(
                "reten_dispatch_oldest_due_seconds",
                "The age of each tenant's oldest due READY activity that has a dispatch config (0: none).",
            ),
            &["tenant"],
        )
        .expect("a valid metric definition");
        Self {
            attempts: register(registry, attempts),
            lag: register(registry, lag),
            oldest_due: register(registry, oldest_due),
            tenant_labels,
        }
    }

    fn tenant(&self, tenant: TenantId) -> String {
        if self.tenant_labels { tenant.to_string() } else { "_all".into() }
    }

    /// Counts one attempt.
    pub fn attempt(&self, tenant: TenantId, channel: &str, result: &str) {
        self.attempts.with_label_values(&[self.tenant(tenant).as_str(), channel, result]).inc();
    }

    /// The number of attempts counted with these labels.
    pub fn attempts(&self, tenant: TenantId, channel: &str, result: &str) -> u64 {
        self.attempts.with_label_values(&[self.tenant(tenant).as_str(), channel, result]).get()
    }

    /// Records how long a dispatched activity waited after it was due.
    pub fn dispatched_after(&self, lag: Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    /// How many lags were recorded.
    pub fn lag_count(&self) -> u64 {
        self.lag.get_sample_count()
    }

    /// Replaces the oldest-due ages with these.
    pub fn set_oldest_due(&self, ages: &[(TenantId, f64)]) {
        self.oldest_due.reset();
        if !self.tenant_labels {
            let oldest = ages.iter().map(|(_, age)| *age).fold(0.0, f64::max);
            self.oldest_due.with_label_values(&["_all"]).set(oldest);
            return;
        }
        for (tenant, age) in ages {
            self.oldest_due.with_label_values(&[tenant.to_string().as_str()]).set(*age);
        }
    }
}

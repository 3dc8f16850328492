//! Dispatch: a due READY activity reaches the provider its tenant set up for
//! its channel, with ON_DISPATCH decisions made by the tenant's policies at
//! the moment of sending.
//!
//! - [`worker`]: the claim loop that runs in every `reten serve`, fair across
//!   tenants, woken by `NOTIFY` and by its interval.
//! - [`pipeline`]: one claimed activity, from load to recorded attempt; the
//!   manual dispatch route runs the same.
//! - [`resolution`]: ON_DISPATCH targets and attributes, through `resolve/`.
//! - [`sender`], [`signing`], [`ssrf`]: the webhook client, its signature,
//!   and the guard that keeps it off private addresses.
//! - [`secrets`], [`providers`]: credentials at rest, and the catalogue.
//!
//! Uses Resolve and Policy for decisions and Store for claims and events;
//! never Api.

pub mod metrics;
pub mod payload;
pub mod pipeline;
pub mod providers;
pub mod resolution;
pub mod secrets;
pub mod sender;
pub mod signing;
pub mod ssrf;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use metrics::DispatchMetrics;
pub use secrets::Secrets;
pub use ssrf::HostPolicy;

/// How many activities of one tenant a round claims at most.
pub const BATCH_PER_TENANT: usize = 100;

/// The dispatcher's settings (`RETEN_DISPATCH_*`).
#[derive(Clone, Debug)]
pub struct DispatchSettings {
    /// Whether this replica runs the dispatcher (`RETEN_DISPATCH`).
    pub enabled: bool,
    /// How often it looks for due activities without being woken.
    pub interval: Duration,
    /// Sends in flight per tenant on this replica.
    pub per_tenant: usize,
    /// Sends in flight on this replica, all tenants together.
    pub max_in_flight: usize,
    /// How long a provider has to answer.
    pub timeout: Duration,
    /// The wait after a first failed attempt; ×4 after each further one.
    pub retry_base: Duration,
    /// Attempts before the activity is FAILED.
    pub max_attempts: u32,
    /// Hosts exempt from the https and public-address rules.
    pub allow_hosts: Vec<String>,
    /// Whether hosts outside `allow_hosts` may be reached at all.
    pub allow_public: bool,
    /// How long attempts are kept.
    pub attempt_retention: Duration,
    /// Label the dispatch metrics with the tenant id.
    pub tenant_labels: bool,
    /// Keep the input of each resolution at dispatch
    /// (`RETEN_DECISION_INPUT_RETENTION_DAYS` above 0).
    pub keep_decision_inputs: bool,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_millis(1_000),
            per_tenant: 16,
            max_in_flight: 256,
            timeout: Duration::from_millis(10_000),
            retry_base: Duration::from_millis(30_000),
            max_attempts: 3,
            allow_hosts: Vec::new(),
            allow_public: true,
            attempt_retention: Duration::from_secs(30 * 86_400),
            tenant_labels: true,
            keep_decision_inputs: true,
        }
    }
}

impl DispatchSettings {
    /// How long a claim lasts: twice a send's whole timeout, plus room for
    /// the resolution before it and the writes after it. A claim whose
    /// holder died is taken again after this.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// What the dispatcher and the dispatch routes share: settings, keys, the
/// client, the metrics, and the local wake-up.
#[derive(Debug)]
pub struct Dispatch {
    pub settings: DispatchSettings,
    pub secrets: Secrets,
    pub hosts: Arc<HostPolicy>,
    pub sender: sender::Sender,
    pub metrics: DispatchMetrics,
    wake: Notify,
}

impl Dispatch {
    /// Builds the shared dispatch state; metrics go on `registry`.
    pub fn new(settings: DispatchSettings, secrets: Secrets, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let hosts = Arc::new(HostPolicy::new(&settings.allow_hosts, settings.allow_public));
        let sender = sender::Sender::new(Arc::clone(&hosts), settings.timeout)?;
        let metrics = DispatchMetrics::new(registry, settings.tenant_labels);
        Ok(Self { settings, secrets, hosts, sender, metrics, wake: Notify::new() })
    }

    /// Wakes this replica's dispatcher for a round now (other replicas hear
    /// the create's `NOTIFY`).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Dispatch::wake`] was called (a call while nobody waits
    /// is kept for the next wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

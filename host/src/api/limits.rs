//! Abuse limits and request metrics.
//!
//! - A header cap (431) and the request metrics: one middleware around every
//!   route ([`guard`]). No crate caps the total size of the headers (hyper
//!   caps their count and its read buffer, not their sum), so that check is
//!   ours.
//! - The in-flight bound and the request deadline: tower layers
//!   ([`with_overload_limits`]) — `LoadShed` over a `GlobalConcurrencyLimit`, so a
//!   saturated service sheds at once instead of queueing without end, and
//!   `Timeout` — whose errors become today's answers: 503 with `Retry-After`,
//!   not tower-http's 408 or a queue. Health, readiness and metrics are
//!   outside them, so a saturated service still says so.
//! - The per-tenant rate limit: `governor`'s keyed GCRA limiter (429 with
//!   `Retry-After`), checked by the tenant extractor after authentication so
//!   that no one can spend another tenant's budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;

use super::{ApiError, AppState};
use crate::domain::TenantId;

/// The limits, as configured.
#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// The most bytes all request headers may take together.
    pub max_header_bytes: usize,
    /// The longest a request may take.
    pub request_timeout: Duration,
    /// The most requests served at once.
    pub max_in_flight: usize,
    /// Sustained requests per second per tenant; 0 disables the limit.
    pub tenant_rate: f64,
    /// How many requests a tenant may send at once above its rate.
    pub tenant_burst: f64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 << 10,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1_024,
            tenant_rate: 1_000.0,
            tenant_burst: 2_000.0,
        }
    }
}

/// The live state of the limits: the settings and every tenant's bucket.
#[derive(Debug)]
pub struct Limiter {
    pub settings: LimitSettings,
    /// The in-flight bound's permits, shared by every route's layer.
    in_flight: Arc<Semaphore>,
    tenants: Option<DefaultKeyedRateLimiter<TenantId>>,
    clock: DefaultClock,
}

impl Limiter {
    /// Limits with these settings.
    pub fn new(settings: LimitSettings) -> Self {
        let tenants = (settings.tenant_rate > 0.0).then(|| {
            let burst = std::num::NonZeroU32::new(settings.tenant_burst.max(1.0).min(f64::from(u32::MAX)) as u32)
                .expect("the burst is at least one");
            let period = Duration::from_secs_f64(1.0 / settings.tenant_rate);
            let quota = Quota::with_period(period).expect("a positive rate has a non-zero period").allow_burst(burst);
            RateLimiter::keyed(quota)
        });
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
        Self { settings, in_flight, tenants, clock: DefaultClock::default() }
    }

    /// How many requests are being served now (health, readiness and
    /// metrics not counted).
    pub fn in_flight(&self) -> usize {
        self.settings.max_in_flight - self.in_flight.available_permits()
    }

    /// Takes one request from the tenant's budget, or says how long to wait.
    pub fn admit(&self, tenant: TenantId) -> Result<(), ApiError> {
        let Some(limiter) = &self.tenants else { return Ok(()) };
        limiter.check_key(&tenant).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::TooManyRequests {
                detail: format!("tenant {tenant} exceeds its {} requests per second", self.settings.tenant_rate),
                retry_after_secs: u32::try_from(wait.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX).max(1),
            }
        })
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(LimitSettings::default())
    }
}

/// Puts the in-flight bound and the deadline on every route of `router`:
/// past the bound a request is shed at once (503), past the deadline it is
/// dropped (503), both with `Retry-After`.
pub fn with_overload_limits<S: Clone + Send + Sync + 'static>(router: Router<S>, limiter: &Limiter) -> Router<S> {
    let timeout = limiter.settings.request_timeout;
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::<_, ()>::new(move |err: BoxError| async move { overload_answer(&err, timeout) }))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(&limiter.in_flight)))
            .layer(TimeoutLayer::new(timeout)),
    )
}

fn overload_answer(err: &BoxError, timeout: Duration) -> ApiError {
    if err.is::<Overloaded>() {
        return ApiError::Unavailable("the service is at capacity; retry shortly".into());
    }
    if err.is::<Elapsed>() {
        tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request timed out");
        return ApiError::Unavailable(format!(
            "the request did not finish within {} ms; retry it (a create retried with the same \
             idempotency_key answers 409 naming the activity if the first one was stored)",
            timeout.as_millis()
        ));
    }
    tracing::error!(error = %err, "unexpected middleware error");
    ApiError::Unavailable("the service could not take this request; retry shortly".into())
}

/// The middleware around every route: the header cap, and the request
/// metrics by route template, method and status.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let max = state.limits.settings.max_header_bytes;
    let header_bytes: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let response = if header_bytes > max {
        ApiError::HeadersTooLarge(format!("the request headers take {header_bytes} bytes; at most {max} are allowed"))
            .into_response()
    } else {
        next.run(request).await
    };
    let status = response.status().as_u16().to_string();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    state.metrics.http_requests.with_label_values(&labels).inc();
    state.metrics.http_duration.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_burst_waits_and_others_do_not() {
        let limiter = Limiter::new(LimitSettings { tenant_rate: 1.0, tenant_burst: 2.0, ..LimitSettings::default() });
        let (a, b) = (TenantId::new(), TenantId::new());
        assert!(limiter.admit(a).is_ok());
        assert!(limiter.admit(a).is_ok());
        assert!(matches!(limiter.admit(a), Err(ApiError::TooManyRequests { retry_after_secs: 1, .. })));
        assert!(limiter.admit(b).is_ok());
    }

    #[test]
    fn a_zero_rate_admits_everything() {
        let limiter = Limiter::new(LimitSettings { tenant_rate: 0.0, tenant_burst: 0.0, ..LimitSettings::default() });
        let tenant = TenantId::new();
        assert!((0..10_000).all(|_| limiter.admit(tenant).is_ok()));
    }
}

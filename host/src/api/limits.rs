//! Abuse limits and request metrics: one middleware around every route, and
//! a per-tenant rate limiter the tenant extractor consults.
//!
//! The middleware caps the total size of the request headers (431), bounds
//! the requests in flight (503 past the bound, so an overload sheds instead of
//! queueing without end), and gives every request a deadline (503 with
//! `Retry-After` past it). Health, readiness and metrics are exempt, so a
//! saturated service still says so. The rate limiter is a token bucket per
//! tenant (429 with `Retry-After`), checked after authentication so that no
//! one can spend another tenant's budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::{ApiError, AppState};
use crate::domain::TenantId;
use crate::metrics::METRICS;

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

/// The live state of the limits.
#[derive(Debug)]
pub struct Limiter {
    pub settings: LimitSettings,
    in_flight: Semaphore,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Limiter {
    /// Limits with these settings.
    pub fn new(settings: LimitSettings) -> Self {
        Self { settings, in_flight: Semaphore::new(settings.max_in_flight), buckets: Mutex::new(HashMap::new()) }
    }

    /// How many requests are being served now.
    pub fn in_flight(&self) -> usize {
        self.settings.max_in_flight - self.in_flight.available_permits()
    }

    /// Takes one token from the tenant's bucket, or says how long to wait.
    pub fn admit(&self, tenant: TenantId) -> Result<(), ApiError> {
        let LimitSettings { tenant_rate: rate, tenant_burst: burst, .. } = self.settings;
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(tenant).or_insert(Bucket { tokens: burst.max(1.0), refilled: now });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst.max(1.0));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
        Err(ApiError::TooManyRequests {
            detail: format!("tenant {tenant} exceeds its {rate} requests per second"),
            retry_after_secs: wait as u32,
        })
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(LimitSettings::default())
    }
}

/// Routes that answer even when the service is saturated.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The middleware: header cap, in-flight bound, deadline, and metrics.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let response = limited(&state, &route, request, next).await;
    let status = response.status().as_u16().to_string();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    METRICS.http_requests.with_label_values(&labels).inc();
    METRICS.http_duration.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    response
}

async fn limited(state: &AppState, route: &str, request: Request, next: Next) -> Response {
    let limiter = &state.limits;
    let header_bytes: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > limiter.settings.max_header_bytes {
        return ApiError::HeadersTooLarge(format!(
            "the request headers take {header_bytes} bytes; at most {} are allowed",
            limiter.settings.max_header_bytes
        ))
        .into_response();
    }
    if exempt(route) {
        return next.run(request).await;
    }
    let Ok(_permit) = limiter.in_flight.try_acquire() else {
        return ApiError::Unavailable("the service is at capacity; retry shortly".into()).into_response();
    };
    match tokio::time::timeout(limiter.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                route,
                timeout_ms = limiter.settings.request_timeout.as_millis() as u64,
                "request timed out"
            );
            ApiError::Unavailable(format!(
                "the request did not finish within {} ms; retry it (a create retried with the same \
                 idempotency_key answers 409 naming the activity if the first one was stored)",
                limiter.settings.request_timeout.as_millis()
            ))
            .into_response()
        }
    }
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
}

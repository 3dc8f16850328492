//! Liveness and readiness.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The health routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// The answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String, pattern = "^ok$")]
    pub status: &'static str,
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "status": "ready",
    "checks": {"database": "ok", "policies": {"generation": 3, "loadErrors": 0}}
}))]
pub struct Readiness {
    /// `ready`, or `unavailable` (with a 503).
    #[schema(value_type = String, pattern = "^(ready|unavailable)$")]
    pub status: &'static str,
    pub checks: ReadinessChecks,
}

/// What readiness checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `ok`, or `unreachable`.
    #[schema(value_type = String, pattern = "^(ok|unreachable)$")]
    pub database: &'static str,
    pub policies: PolicyHealth,
}

/// The policy registry, as readiness sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyHealth {
    /// The registry generation: 0 until the policies are first loaded.
    pub generation: u64,
    /// Files whose last load failed (the previous version serves).
    pub load_errors: usize,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "The process is up.", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers and the policies are loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: the database answers and the policies are loaded.", body = Readiness),
        (status = 503, description = "Not ready: the database does not answer, or no policies are loaded yet.",
            body = Readiness,
            example = json!({
                "status": "unavailable",
                "checks": {"database": "unreachable", "policies": {"generation": 1, "loadErrors": 0}}
            }))
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let db = crate::store::reachable(&state.pool, Duration::from_secs(2)).await;
    let registry = state.registry.state();
    let policies_loaded = registry.generation > 0;
    let load_errors = registry.errors().count();
    let ready = db && policies_loaded;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks: ReadinessChecks {
            database: if db { "ok" } else { "unreachable" },
            policies: PolicyHealth { generation: registry.generation, load_errors },
        },
    };
    (status, Json(body))
}

/// Prometheus metrics.
///
/// Requests per route and status, policy calls per tenant, policy and engine
/// (with failures by reason), reloads, activities created by status, and the
/// database pool, in the Prometheus text format. Metrics name every tenant, so
/// only the scraper's static token (`RETEN_METRICS_TOKEN`, as a bearer token)
/// or a SUPER_ADMIN may read them.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The metrics, in the Prometheus text format.", body = String,
        content_type = "text/plain; version=0.0.4",
        example = json!("# TYPE reten_http_requests_total counter\nreten_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1\n")))
)]
async fn metrics(
    _reader: super::auth::MetricsReader,
    State(state): State<AppState>,
) -> impl axum::response::IntoResponse {
    let body = state.metrics.render(&crate::store::pool_gauges(&state.pool, &state.fast));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

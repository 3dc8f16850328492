//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

/// The health routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and the policies are loaded.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.pool))
        .await
        .is_ok_and(|r| r.is_ok());
    let registry = state.registry.state();
    let policies_loaded = registry.generation > 0;
    let load_errors = registry.errors().count();
    let ready = db && policies_loaded;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "database": if db { "ok" } else { "unreachable" },
            "policies": { "generation": registry.generation, "loadErrors": load_errors },
        },
    });
    (status, Json(body))
}

//! `POST /api/tenant/setup`: provision a tenant.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::TypedBody;
use super::{ApiError, AppState};
use crate::domain::validation::Errors;
use crate::domain::{Permission, TenantId};
use crate::store::tenants::{self as store, CreateTenantError};

/// The tenant routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/tenant/setup", post(setup))
}

/// The body of `POST /api/tenant/setup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub name: String,
    pub slug: String,
}

/// A tenant.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
}

/// Slugs: lower-case letters, digits and inner hyphens, 1–63 characters.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

async fn setup(
    caller: Caller,
    State(state): State<AppState>,
    TypedBody(req): TypedBody<SetupRequest>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    caller.require(Permission::CreateTenant)?;
    let mut errors = Errors::default();
    if req.name.trim().is_empty() || req.name.chars().count() > 200 {
        errors.add("name", "must be 1 to 200 characters");
    }
    if !is_slug(&req.slug) {
        errors.add("slug", "must be 1 to 63 lower-case letters, digits or inner hyphens");
    }
    errors.finish(()).map_err(ApiError::Validation)?;
    let id = TenantId::new();
    let row = store::create(&state.pool, id, req.name.trim(), &req.slug).await.map_err(|e| match e {
        CreateTenantError::SlugTaken => {
            ApiError::Conflict { detail: format!("the slug '{}' is already taken", req.slug), activity_id: None }
        }
        CreateTenantError::Db(db) => db.into(),
    })?;
    state.tenants.remember(id);
    tracing::info!(tenant_id = %id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantView { id: row.id, name: row.name, slug: row.slug, created_at: row.created_at }),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_lower_case_with_inner_hyphens() {
        assert!(super::is_slug("acme-foods"));
        assert!(!super::is_slug("-acme"));
        assert!(!super::is_slug("Acme"));
    }
}

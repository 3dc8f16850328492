//! `POST /api/tenant/setup`: provision a tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Permitted, perm};
use super::extract::TypedBody;
use super::openapi::{BadRequest, Conflict, PayloadTooLarge, UnsupportedMediaType};
use super::{ApiError, AppState};
use crate::domain::TenantId;
use crate::domain::validation::Errors;
use crate::store::tenants::{self as store, CreateTenantError};

/// The tenant routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(setup))
}

/// The body of `POST /api/tenant/setup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Foods", "slug": "acme-foods"}))]
pub struct SetupRequest {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Unique: lower-case letters, digits and inner hyphens, 1 to 63 characters.
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]
    pub slug: String,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "name": "Acme Foods", "slug": "acme-foods",
                          "createdAt": "2025-01-15T12:00:00.000Z"}))]
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

/// Provision a tenant (`CREATE_TENANT`).
///
/// Users and passwords belong to the identity provider that issues the
/// JWTs; a tenant here is its id, name and slug.
#[utoipa::path(
    post,
    path = "/api/tenant/setup",
    operation_id = "setupTenant",
    tag = "tenants",
    request_body = SetupRequest,
    responses(
        (status = 201, description = "The tenant, created.", body = TenantView),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn setup(
    _caller: Permitted<perm::CreateTenant>,
    State(state): State<AppState>,
    TypedBody(req): TypedBody<SetupRequest>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
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

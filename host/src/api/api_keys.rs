//! `/api/api-keys`: the routes that create, list and revoke tenant-bound keys
//! for integrations (verifying a presented key is `auth::api_key`'s job).
//!
//! Only the SHA-256 of a key is stored; the plaintext is shown once, in the
//! create response. A key's permissions are a subset of its creator's.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{KEY_PREFIX, Tenant, hash_key, perm};
use super::extract::{ApiPath, TypedBody, path_id};
use super::openapi::{BadRequest, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::{ApiError, AppState};
use crate::domain::validation::Errors;
use crate::domain::{Permission, PermissionSet, TenantId};
use crate::store::api_keys::{self as store, ApiKeyRow, NewKey};

/// The API key routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(create, list)).routes(routes!(revoke))
}

/// The body of `POST /api/api-keys` (camelCase, as documented).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"name": "ERP integration", "permissions": ["CREATE_ACTIVITY", "VIEW_ACTIVITIES"],
                          "expiresAt": "2030-01-01T00:00:00.000Z"}))]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: String,
    /// Permission names (case-insensitive), each one the caller holds.
    #[schema(value_type = Vec<Permission>, min_items = 1)]
    pub permissions: Vec<String>,
    /// When the key stops working; in the future. Absent: never.
    #[serde(default, with = "crate::domain::time::millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as listed (never its plaintext).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, to recognise it (`rtn_sk_1a2b3c4d`).
    pub key_prefix: String,
    /// The `sub` of the user who created it.
    pub user_id: String,
    pub tenant_id: TenantId,
    /// Neither revoked nor expired.
    pub is_active: bool,
    #[schema(value_type = Vec<Permission>)]
    pub permissions: Vec<String>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(r: ApiKeyRow) -> Self {
        let expired = r.expires_at.is_some_and(|at| at <= Utc::now());
        Self {
            id: r.id,
            name: r.name,
            key_prefix: r.key_prefix,
            user_id: r.user_sub,
            tenant_id: r.tenant_id,
            is_active: r.revoked_at.is_none() && !expired,
            permissions: r.permissions,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// The create response: the key, with its plaintext this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The key to send as `x-api-key`; shown only here.
    pub plaintext_key: String,
}

/// The answer to a revoke.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"message": "API key revoked successfully"}))]
pub struct Revoked {
    pub message: &'static str,
}

/// Create an API key for this tenant.
///
/// Its permissions must be a subset of the caller's. The plaintext is in
/// this answer only; only its SHA-256 is stored.
#[utoipa::path(
    post,
    path = "/api/api-keys",
    operation_id = "createApiKey",
    tag = "api-keys",
    params(TenantHeader),
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `plaintextKey` is shown this once.", body = CreatedKey),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn create(
    ctx: Tenant<perm::ManageApiKeys>,
    State(state): State<AppState>,
    TypedBody(body): TypedBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let mut errors = Errors::default();
    if body.name.trim().is_empty() || body.name.chars().count() > 255 {
        errors.add("name", "must be 1 to 255 characters");
    }
    if body.permissions.is_empty() {
        errors.add("permissions", "must name at least one permission");
    }
    let mut granted = PermissionSet::default();
    for (i, p) in body.permissions.iter().enumerate() {
        match Permission::parse(&p.to_ascii_uppercase()) {
            Some(p) => granted.insert(p),
            None => errors.add(format!("permissions[{i}]"), format!("must be one of {}", Permission::expected())),
        }
    }
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        errors.add("expiresAt", "must be in the future");
    }
    errors.finish(()).map_err(ApiError::Validation)?;
    let beyond: Vec<&str> =
        granted.iter().filter(|p| !ctx.caller.permissions.contains(*p)).map(|p| p.as_str()).collect();
    if !beyond.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "a key's permissions must be a subset of yours; you do not have {}",
            beyond.join(", ")
        )));
    }
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let plaintext = format!("{KEY_PREFIX}{secret}");
    let key_prefix = format!("{KEY_PREFIX}{}", &secret[..8]);
    let permissions: Vec<String> = granted.iter().map(|p| p.as_str().to_owned()).collect();
    let row = store::create(
        &state.pool,
        &NewKey {
            tenant: ctx.tenant_id,
            id: crate::domain::new_id(),
            user_sub: &ctx.caller.sub,
            name: body.name.trim(),
            key_prefix: &key_prefix,
            key_hash: &hash_key(&plaintext),
            permissions: &permissions,
            expires_at: body.expires_at,
        },
    )
    .await?;
    tracing::info!(tenant_id = %ctx.tenant_id, key_id = %row.id, key_prefix = %row.key_prefix, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { key: row.into(), plaintext_key: plaintext })))
}

/// The caller's API keys in this tenant, newest first.
#[utoipa::path(
    get,
    path = "/api/api-keys",
    operation_id = "listApiKeys",
    tag = "api-keys",
    params(TenantHeader),
    responses(
        (status = 200, description = "The caller's keys (never their plaintext).", body = Vec<KeyView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list(ctx: Tenant<perm::ManageApiKeys>, State(state): State<AppState>) -> Result<Json<Vec<KeyView>>, ApiError> {
    let rows = store::list(&state.pool, ctx.tenant_id, &ctx.caller.sub).await?;
    Ok(Json(rows.into_iter().map(KeyView::from).collect()))
}

/// Revoke one of the caller's API keys; the record is kept for audit.
#[utoipa::path(
    post,
    path = "/api/api-keys/{id}/revoke",
    operation_id = "revokeApiKey",
    tag = "api-keys",
    params(TenantHeader, ("id" = Uuid, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "Revoked.", body = Revoked),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn revoke(
    ctx: Tenant<perm::ManageApiKeys>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Revoked>, ApiError> {
    let id = path_id("id", &raw, Uuid::parse_str)?;
    let row = store::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("API key", id))?;
    if row.user_sub != ctx.caller.sub {
        return Err(ApiError::Forbidden("only the key's owner may revoke it".into()));
    }
    if !store::revoke(&state.pool, ctx.tenant_id, id).await? {
        return Err(ApiError::BadRequest("the API key is already revoked".into()));
    }
    state.api_keys.forget(id);
    tracing::info!(tenant_id = %ctx.tenant_id, key_id = %id, "API key revoked");
    Ok(Json(Revoked { message: "API key revoked successfully" }))
}

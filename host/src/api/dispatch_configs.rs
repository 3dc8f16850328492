//! `/api/dispatch-configs`: each tenant's config per channel (reference
//! §9.4).
//!
//! Credentials are sealed before they reach the store and never leave it in
//! plaintext: no answer carries them (only whether each is set), and no log
//! line does. A `base_url` passes the SSRF guard before it is stored.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, TypedBody, path_id};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::{ApiError, AppState};
use crate::dispatch::providers::{self, Credentials, Provider};
use crate::domain::validation::Errors;
use crate::domain::{Channel, ProviderCode, TenantId};
use crate::store::dispatch_configs::{self as store, ACTIVE_CHANNEL_CONSTRAINT, ConfigRow, ConfigWrite};

/// The config routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list, create)).routes(routes!(update, delete))
}

/// `dispatchProvider` of a config.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderRef {
    pub code: ProviderCode,
    pub name: &'static str,
}

/// A config as answered: never its credentials, only whether each is set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatchConfigView {
    pub id: Uuid,
    pub dispatch_provider_id: Uuid,
    pub channel: Channel,
    pub base_url: Option<String>,
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    pub is_active: bool,
    pub dispatch_provider: ProviderRef,
    pub has_api_key: bool,
    pub has_signing_secret: bool,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis")]
    pub updated_at: DateTime<Utc>,
}

impl DispatchConfigView {
    fn new(r: ConfigRow) -> Result<Self, ApiError> {
        let corrupt = || ApiError::Internal(anyhow::anyhow!("dispatch config {} holds an unknown value", r.id));
        let provider = providers::by_code(r.provider().ok_or_else(corrupt)?);
        Ok(Self {
            id: r.id,
            dispatch_provider_id: provider.id(),
            channel: Channel::parse(&r.channel).ok_or_else(corrupt)?,
            base_url: r.base_url,
            settings: r.settings.0,
            is_active: r.is_active,
            dispatch_provider: ProviderRef { code: provider.code, name: provider.name },
            has_api_key: r.has_api_key,
            has_signing_secret: r.has_signing_secret,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// `credentials`: sealed at rest, never answered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    /// Sent as `x-api-key`. Required by WEBHOOK.
    #[schema(min_length = 1, max_length = 1024)]
    pub api_key: Option<String>,
    /// Signs each request (`x-reten-signature`); at least 16 characters.
    #[schema(min_length = 16, max_length = 1024)]
    pub signing_secret: Option<String>,
}

/// The body of `POST /api/dispatch-configs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dispatch_provider_id": providers::provider_id(ProviderCode::Webhook),
    "channel": "WHATSAPP", "base_url": "https://hooks.example.com/reten",
    "credentials": {"api_key": "sk-live-…", "signing_secret": "whsec-at-least-16-chars"},
    "settings": {}, "is_active": true}))]
pub struct CreateConfig {
    /// A provider of `GET /api/dispatch-providers`.
    pub dispatch_provider_id: Uuid,
    pub channel: Channel,
    /// `https://` to a public address (WEBHOOK; MOCK needs none). The
    /// provider receives `POST {base_url}/activities`.
    #[schema(max_length = 2048)]
    pub base_url: Option<String>,
    pub credentials: Option<CredentialsBody>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
    /// Default true; one active config per channel.
    pub is_active: Option<bool>,
}

/// A field that may be absent (keep), `null` (remove) or a value (set).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `credentials` of a PATCH: each key absent (kept), `null` (removed) or set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1024)]
    pub api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 16, max_length = 1024)]
    pub signing_secret: Option<Option<String>>,
}

/// The body of `PATCH /api/dispatch-configs/{id}`: what is sent changes.
/// Any write seals the credentials again, under the current key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"is_active": false}))]
pub struct UpdateConfig {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    pub base_url: Option<Option<String>>,
    pub credentials: Option<CredentialsPatch>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
    pub is_active: Option<bool>,
}

/// A config about to be written, before its checks.
struct Draft {
    provider: &'static Provider,
    channel: Channel,
    base_url: Option<String>,
    credentials: Credentials,
    settings: Map<String, Value>,
    is_active: bool,
}

/// Checks a draft, listing every bad field; then the secrets key; then the
/// SSRF guard on `base_url`.
async fn check(state: &AppState, d: &Draft) -> Result<(), ApiError> {
    let mut errors = Errors::default();
    let text_ok = |s: &str| !s.is_empty() && s.chars().count() <= 1024 && !s.chars().any(char::is_control);
    if d.provider.code == ProviderCode::Mock && !d.credentials.is_empty() {
        errors.add("credentials", "MOCK takes no credentials");
    }
    for field in d.provider.credentials().iter().filter(|f| f.required) {
        if field.key == "api_key" && d.credentials.api_key.is_none() {
            errors.add("credentials.api_key", format!("is required by {}", d.provider.code));
        }
    }
    if d.credentials.api_key.as_deref().is_some_and(|k| !text_ok(k)) {
        errors.add("credentials.api_key", "must be 1 to 1024 characters, without control characters");
    }
    if d.credentials.signing_secret.as_deref().is_some_and(|s| !text_ok(s) || s.chars().count() < 16) {
        errors.add("credentials.signing_secret", "must be 16 to 1024 characters, without control characters");
    }
    if d.provider.needs_base_url() && d.base_url.is_none() {
        errors.add("base_url", format!("is required by {}", d.provider.code));
    }
    errors.finish(()).map_err(ApiError::Validation)?;
    if !d.credentials.is_empty() && !state.dispatch.secrets.can_seal() {
        return Err(ApiError::BadRequest(
            "credentials cannot be stored: RETEN_SECRETS_KEY is not set on this server (MOCK needs none)".into(),
        ));
    }
    if let Some(url) = &d.base_url {
        state.dispatch.hosts.check_config_url(url).await.map_err(|e| ApiError::field("base_url", e.0))?;
    }
    Ok(())
}

/// Seals and writes a checked draft (a new config when `existing` is None).
async fn write(state: &AppState, tenant: TenantId, id: Uuid, d: &Draft, new: bool) -> Result<ConfigRow, ApiError> {
    let sealed = if d.credentials.is_empty() {
        None
    } else {
        let sealed =
            d.credentials.seal(&state.dispatch.secrets, tenant, id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Some(sealed)
    };
    let w = ConfigWrite {
        provider: d.provider.code,
        channel: d.channel,
        base_url: d.base_url.as_deref(),
        sealed: sealed.as_ref().map(|s| (s.blob.as_slice(), s.key_id.as_str())),
        has_api_key: d.credentials.api_key.is_some(),
        has_signing_secret: d.credentials.signing_secret.is_some(),
        settings: &d.settings,
        is_active: d.is_active,
    };
    let written = if new {
        store::insert(&state.pool, tenant, id, &w).await.map(Some)
    } else {
        store::update(&state.pool, tenant, id, &w).await
    };
    match written {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(ApiError::not_found("dispatch config", id)),
        Err(e) if crate::store::violated_constraint(&e) == Some(ACTIVE_CHANNEL_CONSTRAINT) => Err(ApiError::Conflict {
            detail: format!("channel {} already has an active dispatch config; deactivate it first", d.channel),
            activity_id: None,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The tenant's dispatch configs (never their credentials).
#[utoipa::path(
    get,
    path = "/api/dispatch-configs",
    operation_id = "listDispatchConfigs",
    tag = "dispatch",
    params(TenantHeader),
    responses(
        (status = 200, description = "Every config of the tenant, oldest first.", body = Vec<DispatchConfigView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
) -> Result<Json<Vec<DispatchConfigView>>, ApiError> {
    let rows = store::list(&state.pool, ctx.tenant_id).await?;
    Ok(Json(rows.into_iter().map(DispatchConfigView::new).collect::<Result<_, _>>()?))
}

/// Create a dispatch config for a channel.
///
/// Credentials are sealed with AES-256-GCM under `RETEN_SECRETS_KEY` (400
/// when it is not set); `base_url` must be `https://` to a public address
/// unless its host is in `RETEN_DISPATCH_ALLOW_HOSTS`.
#[utoipa::path(
    post,
    path = "/api/dispatch-configs",
    operation_id = "createDispatchConfig",
    tag = "dispatch",
    params(TenantHeader),
    request_body = CreateConfig,
    responses(
        (status = 201, description = "Created (without its credentials).", body = DispatchConfigView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn create(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    TypedBody(body): TypedBody<CreateConfig>,
) -> Result<(StatusCode, Json<DispatchConfigView>), ApiError> {
    let provider = providers::by_id(body.dispatch_provider_id)
        .ok_or_else(|| ApiError::field("dispatch_provider_id", "is not a provider of GET /api/dispatch-providers"))?;
    let credentials = body
        .credentials
        .map_or_else(Credentials::default, |c| Credentials { api_key: c.api_key, signing_secret: c.signing_secret });
    let draft = Draft {
        provider,
        channel: body.channel,
        base_url: body.base_url,
        credentials,
        settings: body.settings.unwrap_or_default(),
        is_active: body.is_active.unwrap_or(true),
    };
    check(&state, &draft).await?;
    let row = write(&state, ctx.tenant_id, crate::domain::new_id(), &draft, true).await?;
    tracing::info!(tenant_id = %ctx.tenant_id, config_id = %row.id, provider = %provider.code,
        channel = %draft.channel, "dispatch config created");
    state.dispatch.wake();
    Ok((StatusCode::CREATED, Json(DispatchConfigView::new(row)?)))
}

/// Change a dispatch config.
///
/// Fields sent replace the stored ones; in `credentials`, a key set to
/// `null` is removed. The credentials are sealed again under the current
/// `RETEN_SECRETS_KEY` (a write after a key rotation moves them to it).
#[utoipa::path(
    patch,
    path = "/api/dispatch-configs/{id}",
    operation_id = "updateDispatchConfig",
    tag = "dispatch",
    params(TenantHeader, ("id" = Uuid, Path, description = "The config's id.")),
    request_body = UpdateConfig,
    responses(
        (status = 200, description = "The config after the change.", body = DispatchConfigView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn update(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    TypedBody(body): TypedBody<UpdateConfig>,
) -> Result<Json<DispatchConfigView>, ApiError> {
    let id = path_id("id", &raw, Uuid::parse_str)?;
    let row =
        store::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("dispatch config", id))?;
    let corrupt = || ApiError::Internal(anyhow::anyhow!("dispatch config {id} holds an unknown value"));
    let mut credentials = match (&row.credentials_sealed, &row.credentials_key_id) {
        (Some(blob), Some(key_id)) => Credentials::open(&state.dispatch.secrets, ctx.tenant_id, id, key_id, blob)
            .map_err(|e| ApiError::BadRequest(format!("the stored credentials cannot be read: {e}")))?,
        _ => Credentials::default(),
    };
    if let Some(patch) = body.credentials {
        if let Some(v) = patch.api_key {
            credentials.api_key = v;
        }
        if let Some(v) = patch.signing_secret {
            credentials.signing_secret = v;
        }
    }
    let draft = Draft {
        provider: providers::by_code(row.provider().ok_or_else(corrupt)?),
        channel: Channel::parse(&row.channel).ok_or_else(corrupt)?,
        base_url: body.base_url.unwrap_or(row.base_url),
        credentials,
        settings: body.settings.unwrap_or(row.settings.0),
        is_active: body.is_active.unwrap_or(row.is_active),
    };
    check(&state, &draft).await?;
    let row = write(&state, ctx.tenant_id, id, &draft, false).await?;
    tracing::info!(tenant_id = %ctx.tenant_id, config_id = %id, "dispatch config updated");
    state.dispatch.wake();
    Ok(Json(DispatchConfigView::new(row)?))
}

/// Delete a dispatch config; its channel's activities wait for another.
#[utoipa::path(
    delete,
    path = "/api/dispatch-configs/{id}",
    operation_id = "deleteDispatchConfig",
    tag = "dispatch",
    params(TenantHeader, ("id" = Uuid, Path, description = "The config's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn delete(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id("id", &raw, Uuid::parse_str)?;
    if !store::delete(&state.pool, ctx.tenant_id, id).await? {
        return Err(ApiError::not_found("dispatch config", id));
    }
    tracing::info!(tenant_id = %ctx.tenant_id, config_id = %id, "dispatch config deleted");
    Ok(StatusCode::NO_CONTENT)
}

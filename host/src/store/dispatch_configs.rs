//! Dispatch configs: one per tenant and channel may be active. Credentials
//! arrive here already sealed; this module never sees them in plaintext.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{Channel, ProviderCode, TenantId};

/// The unique index that keeps one active config per tenant and channel.
pub const ACTIVE_CHANNEL_CONSTRAINT: &str = "dispatch_configs_active_channel_key";

/// A stored config.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConfigRow {
    pub id: Uuid,
    pub provider_code: String,
    pub channel: String,
    pub base_url: Option<String>,
    pub credentials_sealed: Option<Vec<u8>>,
    pub credentials_key_id: Option<String>,
    pub has_api_key: bool,
    pub has_signing_secret: bool,
    pub settings: Json<Map<String, Value>>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ConfigRow {
    /// The provider's code; a row only holds known ones (a CHECK constraint).
    pub fn provider(&self) -> Option<ProviderCode> {
        ProviderCode::parse(&self.provider_code)
    }
}

/// What a create or an update writes.
#[derive(Debug)]
pub struct ConfigWrite<'a> {
    pub provider: ProviderCode,
    pub channel: Channel,
    pub base_url: Option<&'a str>,
    /// The sealed credentials and the key that sealed them.
    pub sealed: Option<(&'a [u8], &'a str)>,
    pub has_api_key: bool,
    pub has_signing_secret: bool,
    pub settings: &'a Map<String, Value>,
    pub is_active: bool,
}

const COLUMNS: &str = "id, provider_code, channel, base_url, credentials_sealed, credentials_key_id, has_api_key, \
    has_signing_secret, settings, is_active, created_at, updated_at";

/// The tenant's configs, oldest first.
pub async fn list(pool: &PgPool, tenant: TenantId) -> Result<Vec<ConfigRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM dispatch_configs WHERE tenant_id = $1 ORDER BY created_at, id"))
        .bind(tenant)
        .fetch_all(pool)
        .await
}

/// One config, if the tenant has it.
pub async fn get(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<Option<ConfigRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM dispatch_configs WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The active config of a channel, if any.
pub async fn active_for(pool: &PgPool, tenant: TenantId, channel: &str) -> Result<Option<ConfigRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dispatch_configs WHERE tenant_id = $1 AND channel = $2 AND is_active"
    ))
    .bind(tenant)
    .bind(channel)
    .fetch_optional(pool)
    .await
}

/// Creates a config. A second active config for the channel breaks
/// [`ACTIVE_CHANNEL_CONSTRAINT`].
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, config_id = %id))]
pub async fn insert(pool: &PgPool, tenant: TenantId, id: Uuid, w: &ConfigWrite<'_>) -> Result<ConfigRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO dispatch_configs (tenant_id, id, provider_code, channel, base_url, credentials_sealed, \
           credentials_key_id, has_api_key, has_signing_secret, settings, is_active) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(w.provider.as_str())
    .bind(w.channel.as_str())
    .bind(w.base_url)
    .bind(w.sealed.map(|(blob, _)| blob))
    .bind(w.sealed.map(|(_, key)| key))
    .bind(w.has_api_key)
    .bind(w.has_signing_secret)
    .bind(Json(w.settings))
    .bind(w.is_active)
    .fetch_one(pool)
    .await
}

/// Replaces a config's fields (its provider and channel stay).
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, config_id = %id))]
pub async fn update(
    pool: &PgPool,
    tenant: TenantId,
    id: Uuid,
    w: &ConfigWrite<'_>,
) -> Result<Option<ConfigRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE dispatch_configs SET base_url = $3, credentials_sealed = $4, credentials_key_id = $5, \
           has_api_key = $6, has_signing_secret = $7, settings = $8, is_active = $9, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(w.base_url)
    .bind(w.sealed.map(|(blob, _)| blob))
    .bind(w.sealed.map(|(_, key)| key))
    .bind(w.has_api_key)
    .bind(w.has_signing_secret)
    .bind(Json(w.settings))
    .bind(w.is_active)
    .fetch_optional(pool)
    .await
}

/// Deletes a config; whether it existed.
pub async fn delete(pool: &PgPool, tenant: TenantId, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dispatch_configs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Creates an active MOCK config for each channel that has no active config
/// (the demo tenant's); returns how many were created.
pub async fn ensure_mock(pool: &PgPool, tenant: TenantId) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO dispatch_configs (tenant_id, id, provider_code, channel) \
         SELECT $1, reten_uuid_v7(), 'MOCK', c FROM unnest($2::text[]) AS c \
         ON CONFLICT (tenant_id, channel) WHERE is_active DO NOTHING",
    )
    .bind(tenant)
    .bind(Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

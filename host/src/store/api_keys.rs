//! API keys: tenant-bound, with only the SHA-256 of the key stored.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::TenantId;

/// A stored key (never the plaintext).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub tenant_id: TenantId,
    pub id: Uuid,
    pub user_sub: String,
    pub name: String,
    pub key_prefix: String,
    pub permissions: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "tenant_id, id, user_sub, name, key_prefix, permissions, expires_at, last_used_at, created_at, revoked_at";

/// A key to store.
pub struct NewKey<'a> {
    pub tenant: TenantId,
    pub id: Uuid,
    pub user_sub: &'a str,
    pub name: &'a str,
    pub key_prefix: &'a str,
    pub key_hash: &'a str,
    pub permissions: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a new key.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %k.tenant))]
pub async fn create(pool: &PgPool, k: &NewKey<'_>) -> Result<ApiKeyRow, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!(
        "INSERT INTO api_keys (tenant_id, id, user_sub, name, key_prefix, key_hash, permissions, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(k.tenant)
    .bind(k.id)
    .bind(k.user_sub)
    .bind(k.name)
    .bind(k.key_prefix)
    .bind(k.key_hash)
    .bind(k.permissions)
    .bind(k.expires_at)
    .fetch_one(pool)
    .await
}

/// The caller's keys in a tenant, newest first.
pub async fn list(pool: &PgPool, tenant: TenantId, user_sub: &str) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND user_sub = $2 ORDER BY created_at DESC, id"
    ))
    .bind(tenant)
    .bind(user_sub)
    .fetch_all(pool)
    .await
}

/// One key of a tenant.
pub async fn get(pool: &PgPool, tenant: TenantId, id: Uuid) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The key with this hash, whatever its tenant: a presented key names no
/// tenant, its row does.
pub async fn find_by_hash(pool: &PgPool, key_hash: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1"))
        .bind(key_hash)
        .fetch_optional(pool)
        .await
}

/// Revokes a key that is not revoked yet; `false` if it already was.
pub async fn revoke(pool: &PgPool, tenant: TenantId, id: Uuid) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(tenant)
            .bind(id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Records when a key was last used.
pub async fn touch(pool: &PgPool, tenant: TenantId, id: Uuid, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

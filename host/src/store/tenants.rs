//! Tenants.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::TenantId;

/// A tenant row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTenantError {
    #[error("the slug is already taken")]
    SlugTaken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates a tenant.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %id))]
pub async fn create(pool: &PgPool, id: TenantId, name: &str, slug: &str) -> Result<TenantRow, CreateTenantError> {
    sqlx::query_as::<_, TenantRow>(
        "INSERT INTO tenants (id, name, slug) VALUES ($1, $2, $3) RETURNING id, name, slug, created_at",
    )
    .bind(id)
    .bind(name)
    .bind(slug)
    .fetch_one(pool)
    .await
    .map_err(|e| match super::violated_constraint(&e) {
        Some("tenants_slug_key") => CreateTenantError::SlugTaken,
        _ => CreateTenantError::Db(e),
    })
}

/// Whether a tenant exists.
pub async fn exists(pool: &PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(id).fetch_one(pool).await
}

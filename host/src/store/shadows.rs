//! Shadow sets: one per tenant at most, with counts summed over every
//! replica that evaluates it, and the decisions it disagreed with.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::{ActivityId, TenantId};

/// How many disagreements are kept per shadow; the counts go on past that.
pub const KEPT_DISAGREEMENTS: i64 = 1_000;

/// A shadow as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ShadowRow {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub author: String,
    pub message: Option<String>,
    pub set_sha256: String,
    pub evaluated: i64,
    pub agreed: i64,
    pub disagreed: i64,
    pub errors: i64,
    pub dropped: i64,
}

/// Starts a shadow for `set_sha256` with fresh counts, replacing any other;
/// a shadow of the same set keeps its id and counts (unless `restart`).
/// Answers the shadow's id.
pub async fn start(
    pool: &PgPool,
    tenant: TenantId,
    set_sha256: &str,
    author: &str,
    message: Option<&str>,
    restart: bool,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query(
        "INSERT INTO policy_shadows (tenant_id, id, author, message, set_sha256) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id) DO UPDATE SET id = EXCLUDED.id, started_at = now(), author = EXCLUDED.author, \
           message = EXCLUDED.message, set_sha256 = EXCLUDED.set_sha256, evaluated = 0, agreed = 0, \
           disagreed = 0, errors = 0, dropped = 0 \
         WHERE $6 OR policy_shadows.set_sha256 <> EXCLUDED.set_sha256",
    )
    .bind(tenant)
    .bind(crate::domain::new_id())
    .bind(author)
    .bind(message)
    .bind(set_sha256)
    .bind(restart)
    .execute(pool)
    .await?;
    sqlx::query_scalar("SELECT id FROM policy_shadows WHERE tenant_id = $1").bind(tenant).fetch_one(pool).await
}

/// The tenant's shadow, if it has one.
pub async fn get(pool: &PgPool, tenant: TenantId) -> Result<Option<ShadowRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, started_at, author, message, set_sha256, evaluated, agreed, disagreed, errors, dropped \
         FROM policy_shadows WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// Ends the tenant's shadow and forgets its disagreements; whether it had one.
pub async fn end(pool: &PgPool, tenant: TenantId) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM shadow_disagreements WHERE tenant_id = $1").bind(tenant).execute(&mut *tx).await?;
    let deleted = sqlx::query("DELETE FROM policy_shadows WHERE tenant_id = $1").bind(tenant).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(deleted.rows_affected() > 0)
}

/// Counts to add to a shadow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub evaluated: i64,
    pub agreed: i64,
    pub disagreed: i64,
    pub errors: i64,
    pub dropped: i64,
}

impl Counts {
    /// Whether there is nothing to add.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Adds one replica's counts to a shadow (nothing if it has ended or been
/// replaced meanwhile).
pub async fn add(pool: &PgPool, tenant: TenantId, shadow: Uuid, c: &Counts) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE policy_shadows SET evaluated = evaluated + $3, agreed = agreed + $4, disagreed = disagreed + $5, \
           errors = errors + $6, dropped = dropped + $7 \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(shadow)
    .bind(c.evaluated)
    .bind(c.agreed)
    .bind(c.disagreed)
    .bind(c.errors)
    .bind(c.dropped)
    .execute(pool)
    .await?;
    Ok(())
}

/// A decision the shadow set disagreed with, or failed on.
#[derive(Clone, Debug)]
pub struct Disagreement {
    pub activity: ActivityId,
    pub error: Option<String>,
    pub live: Value,
    pub shadow: Value,
}

/// Keeps disagreements, up to [`KEPT_DISAGREEMENTS`] per shadow.
pub async fn keep(pool: &PgPool, tenant: TenantId, shadow: Uuid, found: &[Disagreement]) -> Result<(), sqlx::Error> {
    if found.is_empty() {
        return Ok(());
    }
    let activities: Vec<uuid::Uuid> = found.iter().map(|d| d.activity.0).collect();
    let errors: Vec<Option<String>> = found.iter().map(|d| d.error.clone()).collect();
    let live: Vec<Json<&Value>> = found.iter().map(|d| Json(&d.live)).collect();
    let shadows: Vec<Json<&Value>> = found.iter().map(|d| Json(&d.shadow)).collect();
    sqlx::query(
        "INSERT INTO shadow_disagreements (tenant_id, shadow_id, activity_id, error, live, shadow) \
         SELECT $1, $2, x.activity_id, x.error, x.live, x.shadow \
         FROM unnest($3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[]) AS x(activity_id, error, live, shadow) \
         WHERE EXISTS (SELECT 1 FROM policy_shadows WHERE tenant_id = $1 AND id = $2) \
           AND (SELECT count(*) FROM shadow_disagreements WHERE tenant_id = $1 AND shadow_id = $2) < $7 \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(shadow)
    .bind(&activities)
    .bind(&errors)
    .bind(&live)
    .bind(&shadows)
    .bind(KEPT_DISAGREEMENTS)
    .execute(pool)
    .await?;
    Ok(())
}

/// The latest `n` disagreements of a shadow, newest first.
pub async fn recent(pool: &PgPool, tenant: TenantId, shadow: Uuid, n: i64) -> Result<Vec<Disagreement>, sqlx::Error> {
    type Row = (Uuid, Option<String>, Json<Value>, Json<Value>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT activity_id, error, live, shadow FROM shadow_disagreements \
         WHERE tenant_id = $1 AND shadow_id = $2 ORDER BY recorded_at DESC, activity_id LIMIT $3",
    )
    .bind(tenant)
    .bind(shadow)
    .bind(n)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(a, error, live, shadow)| Disagreement { activity: ActivityId(a), error, live: live.0, shadow: shadow.0 })
        .collect())
}

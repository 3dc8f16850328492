//! Replay jobs: their state, progress and report, so that any replica
//! answers for a job another one runs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::Page;
use crate::domain::TenantId;

/// A new job, RUNNING.
#[derive(Debug)]
pub struct NewReplay<'a> {
    pub tenant: TenantId,
    pub id: Uuid,
    pub author: &'a str,
    pub message: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// What the candidate changes: `[{path, sha256, change}]`.
    pub files: Value,
    pub total: i64,
}

/// Records a new job.
pub async fn insert(pool: &PgPool, r: &NewReplay<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO policy_replays (tenant_id, id, status, author, message, since, until, row_limit, files, total) \
         VALUES ($1, $2, 'RUNNING', $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(r.tenant)
    .bind(r.id)
    .bind(r.author)
    .bind(r.message)
    .bind(r.since)
    .bind(r.until)
    .bind(i32::try_from(r.limit).unwrap_or(i32::MAX))
    .bind(Json(&r.files))
    .bind(r.total)
    .execute(pool)
    .await?;
    Ok(())
}

/// The counts of a job, as they stand.
#[derive(Debug)]
pub struct Progress<'a> {
    pub evaluated: i64,
    pub changed: i64,
    pub unchanged: i64,
    pub errors: i64,
    pub changes: &'a Value,
    pub samples: &'a Value,
}

/// Writes a running job's progress (and its heartbeat); `false` when the job
/// is no longer RUNNING (it was canceled).
pub async fn progress(pool: &PgPool, tenant: TenantId, id: Uuid, p: &Progress<'_>) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE policy_replays SET evaluated = $3, changed = $4, unchanged = $5, errors = $6, changes = $7, \
           samples = $8, heartbeat_at = now() \
         WHERE tenant_id = $1 AND id = $2 AND status = 'RUNNING'",
    )
    .bind(tenant)
    .bind(id)
    .bind(p.evaluated)
    .bind(p.changed)
    .bind(p.unchanged)
    .bind(p.errors)
    .bind(Json(p.changes))
    .bind(Json(p.samples))
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Ends a running job: DONE with its final counts, or FAILED with why.
pub async fn finish(
    pool: &PgPool,
    tenant: TenantId,
    id: Uuid,
    p: &Progress<'_>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE policy_replays SET evaluated = $3, changed = $4, unchanged = $5, errors = $6, changes = $7, \
           samples = $8, heartbeat_at = now(), finished_at = now(), error = $9, \
           status = CASE WHEN $9 IS NULL THEN 'DONE' ELSE 'FAILED' END \
         WHERE tenant_id = $1 AND id = $2 AND status = 'RUNNING'",
    )
    .bind(tenant)
    .bind(id)
    .bind(p.evaluated)
    .bind(p.changed)
    .bind(p.unchanged)
    .bind(p.errors)
    .bind(Json(p.changes))
    .bind(Json(p.samples))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Cancels a running job; `None` when the tenant has no such job, else
/// whether it was still running.
pub async fn cancel(pool: &PgPool, tenant: TenantId, id: Uuid) -> Result<Option<bool>, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "WITH c AS (UPDATE policy_replays SET status = 'CANCELED', finished_at = now() \
           WHERE tenant_id = $1 AND id = $2 AND status = 'RUNNING' RETURNING status) \
         SELECT COALESCE((SELECT status FROM c), (SELECT status FROM policy_replays WHERE tenant_id = $1 AND id = $2))",
    )
    .bind(tenant)
    .bind(id)
    .fetch_one(pool)
    .await?;
    Ok(status.map(|s| s == "CANCELED"))
}

/// A job as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReplayRow {
    pub id: Uuid,
    pub status: String,
    pub author: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub row_limit: i32,
    pub files: Json<Value>,
    pub total: i64,
    pub evaluated: i64,
    pub changed: i64,
    pub unchanged: i64,
    pub errors: i64,
    pub changes: Json<Value>,
    pub samples: Json<Value>,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, status, author, message, created_at, heartbeat_at, finished_at, since, until, row_limit, \
    files, total, evaluated, changed, unchanged, errors, changes, samples, error";

/// One job of the tenant's.
pub async fn get(pool: &PgPool, tenant: TenantId, id: Uuid) -> Result<Option<ReplayRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM policy_replays WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The tenant's jobs, newest first, and how many there are.
pub async fn list(pool: &PgPool, tenant: TenantId, page: Page) -> Result<(Vec<ReplayRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM policy_replays WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC \
         LIMIT $2 OFFSET $3"
    ))
    .bind(tenant)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM policy_replays WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

//! Activity results. A result for an activity locks the activity's row,
//! decides from its status what the result does ([`crate::domain::result`]),
//! and stores the result, the transition and its status event in one
//! transaction.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::result::{ContactDirection, ResultEffect, ResultSource, ResultStatus, effect};
use crate::domain::{ActivityId, ActivityStatus, CommerceId, TenantId};

/// A result to store.
#[derive(Debug)]
pub struct NewResult<'a> {
    pub id: Uuid,
    pub provider_activity_id: Option<&'a str>,
    pub commerce_external_id: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub status: ResultStatus,
    pub external_status: Option<&'a str>,
    pub result_code: &'a str,
    pub comment: Option<&'a str>,
    pub contact_type: Option<ContactDirection>,
    pub operator_external_id: Option<&'a str>,
    pub future_scheduled_at: Option<DateTime<Utc>>,
    pub payload: Option<&'a Map<String, Value>>,
    pub raw_payload: Option<&'a Map<String, Value>>,
    pub hard_override: bool,
    /// The caller's `sub`, or `api-key:<id>`.
    pub submitted_by: &'a str,
}

/// A stored result.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ResultRow {
    pub id: Uuid,
    pub activity_id: Option<ActivityId>,
    pub source: String,
    pub provider_activity_id: Option<String>,
    pub commerce_id: Option<CommerceId>,
    pub commerce_external_id: String,
    pub occurred_at: DateTime<Utc>,
    pub status: String,
    pub external_status: Option<String>,
    pub result_code: String,
    pub comment: Option<String>,
    pub contact_type: Option<String>,
    pub operator_external_id: Option<String>,
    pub future_scheduled_at: Option<DateTime<Utc>>,
    pub payload: Option<Json<Value>>,
    pub raw_payload: Option<Json<Value>>,
    pub hard_override: bool,
    pub activity_status_before: Option<String>,
    pub activity_status_after: Option<String>,
    pub replaced_at: Option<DateTime<Utc>>,
    pub submitted_by: String,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, activity_id, source, provider_activity_id, commerce_id, commerce_external_id, occurred_at, \
    status, external_status, result_code, comment, contact_type, operator_external_id, future_scheduled_at, payload, \
    raw_payload, hard_override, activity_status_before, activity_status_after, replaced_at, submitted_by, created_at";

/// What submitting a result for an activity did.
#[derive(Debug)]
pub enum Submitted {
    Stored(Box<ResultRow>),
    /// The tenant has no such activity.
    NotFound,
    /// The activity belongs to another commerce (its external id).
    OtherCommerce(String),
    /// A terminal result for an activity that cannot take one (its status).
    Conflict(ActivityStatus),
}

/// Stores a result for an activity and moves the activity as the result
/// says, with a RESULT_RECEIVED event; with `hard_override`, earlier
/// terminal results are marked replaced.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %activity))]
pub async fn submit_for_activity(
    pool: &PgPool,
    tenant: TenantId,
    activity: ActivityId,
    r: &NewResult<'_>,
) -> Result<Submitted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found: Option<(String, CommerceId, String)> = sqlx::query_as(
        "SELECT a.status, a.commerce_id, c.external_id FROM activities a \
         JOIN commerces c ON c.tenant_id = a.tenant_id AND c.id = a.commerce_id \
         WHERE a.tenant_id = $1 AND a.id = $2 FOR UPDATE OF a",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((current, commerce_id, external_id)) = found else { return Ok(Submitted::NotFound) };
    if external_id != r.commerce_external_id {
        return Ok(Submitted::OtherCommerce(external_id));
    }
    let current = ActivityStatus::parse(&current).unwrap_or(ActivityStatus::Failed);
    let after = match effect(current, r.status, r.hard_override) {
        ResultEffect::Conflict => return Ok(Submitted::Conflict(current)),
        ResultEffect::Keep => current,
        ResultEffect::Move(to) => {
            if r.hard_override {
                sqlx::query(
                    "UPDATE activity_results SET replaced_at = now() WHERE tenant_id = $1 AND activity_id = $2 \
                     AND replaced_at IS NULL AND status <> 'PENDING'",
                )
                .bind(tenant)
                .bind(activity)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "WITH u AS ( \
                   UPDATE activities SET status = $3, dispatch_lease_owner = NULL, dispatch_lease_until = NULL, \
                     version = version + 1, updated_at = now() \
                   WHERE tenant_id = $1 AND id = $2 RETURNING tenant_id, id) \
                 INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status) \
                 SELECT tenant_id, reten_uuid_v7(), id, 'RESULT_RECEIVED', $4, $3 FROM u",
            )
            .bind(tenant)
            .bind(activity)
            .bind(to.as_str())
            .bind(current.as_str())
            .execute(&mut *tx)
            .await?;
            to
        }
    };
    let row = insert(&mut tx, tenant, Some((activity, current, after)), Some(commerce_id), r).await?;
    tx.commit().await?;
    Ok(Submitted::Stored(Box::new(row)))
}

/// Stores a result that matched no activity, with its commerce; `None` when
/// the tenant has no commerce of that external id.
pub async fn submit_standalone(
    pool: &PgPool,
    tenant: TenantId,
    r: &NewResult<'_>,
) -> Result<Option<ResultRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let commerce: Option<CommerceId> =
        sqlx::query_scalar("SELECT id FROM commerces WHERE tenant_id = $1 AND external_id = $2")
            .bind(tenant)
            .bind(r.commerce_external_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(commerce) = commerce else { return Ok(None) };
    let row = insert(&mut tx, tenant, None, Some(commerce), r).await?;
    tx.commit().await?;
    Ok(Some(row))
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: TenantId,
    activity: Option<(ActivityId, ActivityStatus, ActivityStatus)>,
    commerce: Option<CommerceId>,
    r: &NewResult<'_>,
) -> Result<ResultRow, sqlx::Error> {
    let source = if activity.is_some() { ResultSource::RetenActivity } else { ResultSource::Standalone };
    sqlx::query_as(&format!(
        "INSERT INTO activity_results (tenant_id, id, activity_id, source, provider_activity_id, commerce_id, \
           commerce_external_id, occurred_at, status, external_status, result_code, comment, contact_type, \
           operator_external_id, future_scheduled_at, payload, raw_payload, hard_override, activity_status_before, \
           activity_status_after, submitted_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(r.id)
    .bind(activity.map(|a| a.0))
    .bind(source.as_str())
    .bind(r.provider_activity_id)
    .bind(commerce)
    .bind(r.commerce_external_id)
    .bind(r.occurred_at)
    .bind(r.status.as_str())
    .bind(r.external_status)
    .bind(r.result_code)
    .bind(r.comment)
    .bind(r.contact_type.map(|c| c.as_str()))
    .bind(r.operator_external_id)
    .bind(r.future_scheduled_at)
    .bind(r.payload.map(Json))
    .bind(r.raw_payload.map(Json))
    .bind(r.hard_override)
    .bind(activity.map(|a| a.1.as_str()))
    .bind(activity.map(|a| a.2.as_str()))
    .bind(r.submitted_by)
    .fetch_one(&mut **tx)
    .await
}

/// The activity a provider's id names, if any.
pub async fn find_by_provider_id(
    pool: &PgPool,
    tenant: TenantId,
    provider_id: &str,
) -> Result<Option<ActivityId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM activities WHERE tenant_id = $1 AND provider_activity_id = $2 ORDER BY created_at LIMIT 1",
    )
    .bind(tenant)
    .bind(provider_id)
    .fetch_optional(pool)
    .await
}

/// An activity's results, oldest first.
pub async fn list(pool: &PgPool, tenant: TenantId, activity: ActivityId) -> Result<Vec<ResultRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM activity_results WHERE tenant_id = $1 AND activity_id = $2 ORDER BY created_at, id"
    ))
    .bind(tenant)
    .bind(activity)
    .fetch_all(pool)
    .await
}

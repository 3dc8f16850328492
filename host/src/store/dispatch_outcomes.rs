//! What a send leaves behind: the attempt, and the activity's transition
//! with its status event, written in one statement while the writer still
//! holds its claim. Also the ON_DISPATCH resolution written before a send,
//! and retry-dispatch.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::{ActivityId, ActivityStatus, CommerceId, TenantId};
use crate::resolve::{AttributeDecision, TargetDecision};

use super::decision_inputs;
use super::transitions::{self, TransitionError};

/// What started a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The dispatcher, because the activity was due.
    Scheduled,
    /// `POST /api/activities/tasks/{id}/dispatch`.
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "SCHEDULED",
            Trigger::Manual => "MANUAL",
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug)]
pub struct Attempt<'a> {
    pub tenant: TenantId,
    pub activity: ActivityId,
    /// The claim's holder: the write applies only while it holds it.
    pub owner: Uuid,
    /// 1 for the first attempt.
    pub number: i32,
    pub config_id: Option<Uuid>,
    pub provider: &'a str,
    pub channel: &'a str,
    pub trigger: Trigger,
    pub http_status: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
}

/// Records a 2xx: the activity is DISPATCHED with its provider id and a
/// DISPATCH_SUCCESS event. `false` when the claim was lost meanwhile (the
/// attempt is recorded all the same).
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %a.tenant, activity_id = %a.activity))]
pub async fn record_success(
    pool: &PgPool,
    a: &Attempt<'_>,
    provider_activity_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let applied: i64 = sqlx::query_scalar(
        "WITH u AS ( \
           UPDATE activities SET status = 'DISPATCHED', provider_activity_id = $4, dispatched_at = now(), \
             dispatch_attempts = dispatch_attempts + 1, dispatch_lease_owner = NULL, dispatch_lease_until = NULL, \
             version = version + 1, updated_at = now() \
           WHERE tenant_id = $1 AND id = $2 AND status = 'READY' AND dispatch_lease_owner = $3 \
           RETURNING tenant_id, id \
         ), e AS ( \
           INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status) \
           SELECT tenant_id, reten_uuid_v7(), id, 'DISPATCH_SUCCESS', 'READY', 'DISPATCHED' FROM u \
         ), t AS ( \
           INSERT INTO dispatch_attempts (tenant_id, id, activity_id, attempt, config_id, provider_code, channel, \
             trigger, outcome, http_status, provider_activity_id, started_at, duration_ms) \
           VALUES ($1, reten_uuid_v7(), $2, $5, $6, $7, $8, $9, 'SUCCESS', $10, $4, $11, $12) \
         ) \
         SELECT count(*) FROM u",
    )
    .bind(a.tenant)
    .bind(a.activity)
    .bind(a.owner)
    .bind(provider_activity_id)
    .bind(a.number)
    .bind(a.config_id)
    .bind(a.provider)
    .bind(a.channel)
    .bind(a.trigger.as_str())
    .bind(a.http_status)
    .bind(a.started_at)
    .bind(a.duration_ms)
    .fetch_one(pool)
    .await?;
    Ok(applied > 0)
}

/// How attempts back off and when they end.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    /// The wait after the first failed attempt; ×4 after each further one.
    pub base_secs: f64,
}

/// Records a failed attempt: a DISPATCH_ATTEMPT_FAILED event and a retry
/// after the backoff, or, when it was the last attempt, FAILED with a
/// DISPATCH_FAILED event too. Returns the status it left, `None` when the
/// claim was lost meanwhile (the attempt is recorded all the same).
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %a.tenant, activity_id = %a.activity))]
pub async fn record_failure(
    pool: &PgPool,
    a: &Attempt<'_>,
    retry: RetryPolicy,
    error_code: &str,
    error_message: &str,
) -> Result<Option<ActivityStatus>, sqlx::Error> {
    let exhausted = format!("{} attempts failed; the last: {error_message}", retry.max_attempts);
    let status: Option<String> = sqlx::query_scalar(
        "WITH u AS ( \
           UPDATE activities SET dispatch_attempts = dispatch_attempts + 1, \
             status = CASE WHEN dispatch_attempts + 1 >= $4 THEN 'FAILED' ELSE 'READY' END, \
             next_dispatch_at = CASE WHEN dispatch_attempts + 1 >= $4 THEN NULL \
               ELSE now() + make_interval(secs => $5 * power(4, dispatch_attempts)) END, \
             dispatch_lease_owner = NULL, dispatch_lease_until = NULL, version = version + 1, updated_at = now() \
           WHERE tenant_id = $1 AND id = $2 AND status = 'READY' AND dispatch_lease_owner = $3 \
           RETURNING tenant_id, id, status \
         ), e AS ( \
           INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status, \
             error_code, error_message) \
           SELECT u.tenant_id, reten_uuid_v7(), u.id, x.event_type, 'READY', x.to_status, $6, x.message \
           FROM u CROSS JOIN (VALUES (1, 'DISPATCH_ATTEMPT_FAILED', 'READY', $7), \
                                     (2, 'DISPATCH_FAILED', 'FAILED', $8)) AS x(n, event_type, to_status, message) \
           WHERE x.n = 1 OR u.status = 'FAILED' ORDER BY x.n \
         ), t AS ( \
           INSERT INTO dispatch_attempts (tenant_id, id, activity_id, attempt, config_id, provider_code, channel, \
             trigger, outcome, http_status, error_code, error_message, started_at, duration_ms) \
           VALUES ($1, reten_uuid_v7(), $2, $9, $10, $11, $12, $13, 'FAILED', $14, $6, $7, $15, $16) \
         ) \
         SELECT status FROM u",
    )
    .bind(a.tenant)
    .bind(a.activity)
    .bind(a.owner)
    .bind(retry.max_attempts)
    .bind(retry.base_secs)
    .bind(error_code)
    .bind(error_message)
    .bind(&exhausted)
    .bind(a.number)
    .bind(a.config_id)
    .bind(a.provider)
    .bind(a.channel)
    .bind(a.trigger.as_str())
    .bind(a.http_status)
    .bind(a.started_at)
    .bind(a.duration_ms)
    .fetch_optional(pool)
    .await?;
    Ok(status.as_deref().and_then(ActivityStatus::parse))
}

/// ON_DISPATCH items resolved at dispatch, to be written before the send.
#[derive(Debug)]
pub struct DispatchResolution<'a> {
    pub owner: Uuid,
    pub targets: Vec<(Uuid, &'a TargetDecision)>,
    pub attributes: Vec<(Uuid, &'a AttributeDecision)>,
    /// Stored as the activity's `resolutionTrace.dispatch`.
    pub trace: Value,
    /// Why the activity cannot be sent, when something failed: it becomes
    /// UNRESOLVED with a DISPATCH_RESOLUTION_FAILED event.
    pub failure: Option<String>,
    pub commerce_id: CommerceId,
    pub channel: &'a str,
    /// The input the policies decided on, in its stored form, when kept.
    pub decision_input: Option<Vec<u8>>,
}

/// Writes a resolution at dispatch. [`TransitionError::Raced`] when the
/// claim was lost meanwhile (nothing is written).
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn apply_resolution(
    pool: &PgPool,
    tenant: TenantId,
    id: ActivityId,
    r: &DispatchResolution<'_>,
) -> Result<(), TransitionError> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE activities SET resolution_trace = jsonb_set(resolution_trace, '{dispatch}', $4::jsonb), \
           status = CASE WHEN $5 THEN 'UNRESOLVED' ELSE status END, \
           dispatch_lease_owner = CASE WHEN $5 THEN NULL ELSE dispatch_lease_owner END, \
           dispatch_lease_until = CASE WHEN $5 THEN NULL ELSE dispatch_lease_until END, \
           version = version + 1, updated_at = $6 \
         WHERE tenant_id = $1 AND id = $2 AND status = 'READY' AND dispatch_lease_owner = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(r.owner)
    .bind(Json(&r.trace))
    .bind(r.failure.is_some())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(TransitionError::Raced);
    }
    for (target_id, t) in &r.targets {
        transitions::update_target(&mut tx, tenant, *target_id, t, now).await?;
        if let Some(user) = t.commerce_user_id {
            transitions::touch_history(&mut tx, tenant, user.0, r.channel, r.commerce_id, id, now).await?;
        }
    }
    for (attribute_id, a) in &r.attributes {
        transitions::update_attribute(&mut tx, tenant, *attribute_id, a, now).await?;
    }
    if let Some(input) = &r.decision_input {
        decision_inputs::insert(&mut *tx, tenant, id, decision_inputs::Stage::Dispatch, now, input).await?;
    }
    if let Some(error) = &r.failure {
        sqlx::query(
            "INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status, \
               error_code, error_message) \
             VALUES ($1, reten_uuid_v7(), $2, 'DISPATCH_RESOLUTION_FAILED', 'READY', 'UNRESOLVED', \
               'UNRESOLVED_PARTS', $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(error)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Puts a FAILED activity back to READY with its attempts reset and a
/// DISPATCH_RETRY event; the dispatcher takes it at once.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn retry_dispatch(pool: &PgPool, tenant: TenantId, id: ActivityId) -> Result<(), TransitionError> {
    let mut tx = pool.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT status FROM activities WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.ok_or(TransitionError::NotFound)?;
    if current != ActivityStatus::Failed.as_str() {
        return Err(TransitionError::WrongStatus(current));
    }
    sqlx::query(
        "WITH u AS ( \
           UPDATE activities SET status = 'READY', dispatch_attempts = 0, next_dispatch_at = NULL, \
             dispatch_lease_owner = NULL, dispatch_lease_until = NULL, version = version + 1, updated_at = now() \
           WHERE tenant_id = $1 AND id = $2 RETURNING tenant_id, id) \
         INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status) \
         SELECT tenant_id, reten_uuid_v7(), id, 'DISPATCH_RETRY', 'FAILED', 'READY' FROM u",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An attempt as listed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub trigger: String,
    pub outcome: String,
    pub http_status: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
}

/// An activity's attempts, oldest first.
pub async fn attempts(pool: &PgPool, tenant: TenantId, id: ActivityId) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt, trigger, outcome, http_status, error_code, error_message, started_at, duration_ms \
         FROM dispatch_attempts WHERE tenant_id = $1 AND activity_id = $2 ORDER BY started_at, attempt",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(pool)
    .await
}

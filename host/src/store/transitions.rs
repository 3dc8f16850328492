//! Activity transitions after creation: retry-resolution, manual assignment
//! and cancel.
//!
//! Invariant: every transition writes its status event in the same
//! transaction, and two concurrent transitions on one activity cannot both
//! win. Cancel locks the row; retry and manual assignment apply only to the
//! `version` they read, so the loser of a race changes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{ActivityId, ActivityStatus, CommerceId, EventType, TenantId};
use crate::resolve::{AttributeDecision, TargetDecision};

/// Why a transition did not apply.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("the activity does not exist")]
    NotFound,
    /// The activity is in a status the transition does not start from.
    #[error("the activity is {0}")]
    WrongStatus(String),
    /// Another transition changed the activity after it was read.
    #[error("the activity changed while this request ran; read it again and retry")]
    Raced,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Cancels a READY or UNRESOLVED activity, locking its row so that of two
/// concurrent cancels exactly one applies. Returns the status it left.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn cancel(pool: &PgPool, tenant: TenantId, id: ActivityId) -> Result<ActivityStatus, TransitionError> {
    let mut tx = pool.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT status FROM activities WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.ok_or(TransitionError::NotFound)?;
    let from = ActivityStatus::parse(&current).ok_or_else(|| TransitionError::WrongStatus(current.clone()))?;
    if !matches!(from, ActivityStatus::Ready | ActivityStatus::Unresolved) {
        return Err(TransitionError::WrongStatus(current));
    }
    sqlx::query(
        "UPDATE activities SET status = 'CANCELED', version = version + 1, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    insert_event(&mut tx, tenant, id, EventType::Canceled, from, ActivityStatus::Canceled, None).await?;
    tx.commit().await?;
    Ok(from)
}

/// What a retry decided, to be written if the activity did not change.
pub struct RetryOutcome<'a> {
    pub version: i32,
    pub status: ActivityStatus,
    /// Target users that were re-resolved, by id.
    pub targets: Vec<(Uuid, &'a TargetDecision)>,
    /// Attributes that were re-resolved, by id.
    pub attributes: Vec<(Uuid, &'a AttributeDecision)>,
    pub trace: Value,
    /// Why the activity is still unresolved, when it is.
    pub error: Option<String>,
    pub commerce_id: CommerceId,
    pub channel: &'a str,
    /// The input the policies decided on, in its stored form, when kept.
    pub decision_input: Option<Vec<u8>>,
}

/// Writes a retry: the re-resolved parts, the activity's status, the trace,
/// and a RESOLUTION_RETRY_SUCCESS or RESOLUTION_RETRY_FAILED event.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn apply_retry(
    pool: &PgPool,
    tenant: TenantId,
    id: ActivityId,
    outcome: &RetryOutcome<'_>,
) -> Result<(), TransitionError> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE activities SET status = $4, version = version + 1, updated_at = $5, \
           resolution_trace = jsonb_set(resolution_trace, '{retries}', \
             COALESCE(resolution_trace->'retries', '[]'::jsonb) || jsonb_build_array($6::jsonb)) \
         WHERE tenant_id = $1 AND id = $2 AND version = $3 AND status = 'UNRESOLVED'",
    )
    .bind(tenant)
    .bind(id)
    .bind(outcome.version)
    .bind(outcome.status.as_str())
    .bind(now)
    .bind(Json(&outcome.trace))
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(TransitionError::Raced);
    }
    for (target_id, t) in &outcome.targets {
        update_target(&mut tx, tenant, *target_id, t, now).await?;
        if let Some(user) = t.commerce_user_id {
            touch_history(&mut tx, tenant, user.0, outcome.channel, outcome.commerce_id, id, now).await?;
        }
    }
    for (attribute_id, a) in &outcome.attributes {
        update_attribute(&mut tx, tenant, *attribute_id, a, now).await?;
    }
    if let Some(input) = &outcome.decision_input {
        super::decision_inputs::insert(&mut *tx, tenant, id, super::decision_inputs::Stage::Retry, now, input).await?;
    }
    let event = if outcome.status == ActivityStatus::Ready {
        EventType::ResolutionRetrySuccess
    } else {
        EventType::ResolutionRetryFailed
    };
    insert_event(&mut tx, tenant, id, event, ActivityStatus::Unresolved, outcome.status, outcome.error.as_deref())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Writes a re-resolved attribute.
pub(crate) async fn update_attribute(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    attribute_id: Uuid,
    a: &AttributeDecision,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE activity_attributes SET value = $3, resolution_status = $4, resolver_type = $5, \
           policy_name = $6, policy_engine = $7, policy_version = $8, resolved_at = $9, error_message = $10, \
           updated_at = $11 \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(attribute_id)
    .bind(a.value.as_ref().map(Json))
    .bind(a.status.as_str())
    .bind(a.resolver_type.map(|r| r.as_str()))
    .bind(a.policy.as_ref().map(|p| p.name.as_str()))
    .bind(a.policy.as_ref().map(|p| p.engine.as_str()))
    .bind(a.policy.as_ref().map(|p| p.version.as_str()))
    .bind(a.value.is_some().then_some(now))
    .bind(&a.error_message)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a re-resolved target user.
pub(crate) async fn update_target(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    target_id: Uuid,
    t: &TargetDecision,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let decided = t.commerce_user_id.is_some().then_some(now);
    sqlx::query(
        "UPDATE activity_target_users SET commerce_user_id = $3, resolution_status = $4, resolution_strategy = $5, \
           lock_reason = $6, criterion_type = $7, policy_name = $8, policy_engine = $9, policy_version = $10, \
           resolved_at = $11, locked_at = $11, error_message = $12, updated_at = $13 \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(target_id)
    .bind(t.commerce_user_id)
    .bind(t.status.as_str())
    .bind(t.strategy.as_str())
    .bind(t.lock_reason.map(|r| r.as_str()))
    .bind(&t.criterion_type)
    .bind(t.policy.as_ref().map(|p| p.name.as_str()))
    .bind(t.policy.as_ref().map(|p| p.engine.as_str()))
    .bind(t.policy.as_ref().map(|p| p.version.as_str()))
    .bind(decided)
    .bind(&t.error_message)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records that a commerce user was just targeted on a channel.
pub(crate) async fn touch_history(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    user: Uuid,
    channel: &str,
    commerce: CommerceId,
    activity: ActivityId,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO commerce_user_last_targets (tenant_id, commerce_user_id, channel, commerce_id, activity_id, \
           last_targeted_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, commerce_user_id, channel) DO UPDATE SET commerce_id = EXCLUDED.commerce_id, \
           activity_id = EXCLUDED.activity_id, last_targeted_at = EXCLUDED.last_targeted_at \
         WHERE commerce_user_last_targets.last_targeted_at <= EXCLUDED.last_targeted_at",
    )
    .bind(tenant)
    .bind(user)
    .bind(channel)
    .bind(commerce)
    .bind(activity)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A manual assignment, to be written if the activity did not change.
pub struct Assignment<'a> {
    pub version: i32,
    pub target_id: Uuid,
    pub decision: &'a TargetDecision,
    pub from: ActivityStatus,
    pub to: ActivityStatus,
    pub commerce_id: CommerceId,
    pub channel: &'a str,
}

/// Writes a manual assignment: the target user LOCKED by MANUAL_ASSIGNMENT,
/// the activity's new status, and a TARGET_USER_RESOLVED event. An activity
/// the dispatcher parked for want of an assignment is due again.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn apply_assignment(
    pool: &PgPool,
    tenant: TenantId,
    id: ActivityId,
    a: &Assignment<'_>,
) -> Result<(), TransitionError> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE activities SET status = $4, version = version + 1, updated_at = $5, \
           next_dispatch_at = CASE WHEN next_dispatch_at = 'infinity' THEN NULL ELSE next_dispatch_at END \
         WHERE tenant_id = $1 AND id = $2 AND version = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(a.version)
    .bind(a.to.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(TransitionError::Raced);
    }
    update_target(&mut tx, tenant, a.target_id, a.decision, now).await?;
    if let Some(user) = a.decision.commerce_user_id {
        touch_history(&mut tx, tenant, user.0, a.channel, a.commerce_id, id, now).await?;
    }
    insert_event(&mut tx, tenant, id, EventType::TargetUserResolved, a.from, a.to, None).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    activity: ActivityId,
    event: EventType,
    from: ActivityStatus,
    to: ActivityStatus,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status, \
           error_code, error_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(crate::domain::new_id())
    .bind(activity)
    .bind(event.as_str())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(error.map(|_| "UNRESOLVED_PARTS"))
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether a commerce user belongs to a commerce, and is active.
pub async fn commerce_user_state(
    pool: &PgPool,
    tenant: TenantId,
    commerce: CommerceId,
    user: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT is_active FROM commerce_users WHERE tenant_id = $1 AND commerce_id = $2 AND id = $3")
        .bind(tenant)
        .bind(commerce)
        .bind(user)
        .fetch_optional(pool)
        .await
}

//! Activities, their target users, attributes and status events.
//!
//! Invariant: an activity is written whole or not at all. The create is one
//! statement (data-modifying CTEs), so the activity, its target users, its
//! attributes, its `CREATED` event, its decision input and the targeting
//! history commit together.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::activity::{CallerAttribute, NewActivity, TargetCriterion};
use crate::domain::{
    ActivityId, ActivityStatus, ActivityType, AttributeStatus, Channel, CommerceId, EventType, LockReason,
    ResolutionStrategy, ResolverType, TargetStatus, TenantId, attribute_key_id,
};
use crate::policy::EngineKind;
use crate::resolve::{AttributeDecision, Resolution, TargetDecision};

use super::Page;

/// The id of the activity that already holds an idempotency key, if any.
pub async fn find_by_idempotency_key(
    pool: &PgPool,
    tenant: TenantId,
    key: &str,
) -> Result<Option<ActivityId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM activities WHERE tenant_id = $1 AND idempotency_key = $2")
        .bind(tenant)
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// What `insert` stored, or the activity that won the idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// Another request holds the key: its activity's id.
    Duplicate(ActivityId),
}

/// A new activity and everything resolution decided, ready to be written.
pub struct NewRecord<'a> {
    pub tenant: TenantId,
    pub id: ActivityId,
    pub activity: &'a NewActivity,
    pub resolution: &'a Resolution,
    pub created_by: &'a str,
    pub created_at: DateTime<Utc>,
    pub target_user_id: Uuid,
    pub event_id: Uuid,
    pub attribute_ids: &'a [Uuid],
    /// The policy input the decisions were made on, in its stored form
    /// (`None`: decision inputs are not kept).
    pub decision_input: Option<&'a [u8]>,
}

/// The create statement. Kept as a constant so the load harness can replay
/// exactly what the service sends.
pub const INSERT_ACTIVITY_SQL: &str = r#"
WITH a AS (
  INSERT INTO activities (tenant_id, id, idempotency_key, type, channel, status, reason, commerce_id,
    scheduled_at, suggested_execution_time, user_status, score, assignment_reason, target_criteria,
    attribute_keys, caller_attributes, resolution_trace, created_by, created_at, updated_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $19)
  ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
  RETURNING tenant_id, id, channel, commerce_id, status, scheduled_at, created_at
), t AS (
  INSERT INTO activity_target_users (tenant_id, id, activity_id, commerce_user_id, resolution_status,
    resolution_strategy, lock_reason, criterion_type, policy_name, policy_engine, policy_version,
    resolved_at, locked_at, error_message, created_at, updated_at)
  SELECT a.tenant_id, ($23::uuid[])[x.position + 1], a.id, x.commerce_user_id, x.resolution_status,
    x.resolution_strategy, x.lock_reason, x.criterion_type, x.policy_name, x.policy_engine, x.policy_version,
    x.resolved_at, x.locked_at, x.error_message, a.created_at, a.created_at
  FROM a, jsonb_to_recordset($20) AS x(position int, commerce_user_id uuid, resolution_status text,
    resolution_strategy text, lock_reason text, criterion_type text, policy_name text, policy_engine text,
    policy_version text, resolved_at timestamptz, locked_at timestamptz, error_message text)
), v AS (
  INSERT INTO activity_attributes (tenant_id, id, activity_id, key, attribute_key_id, value,
    resolution_status, resolver_type, policy_name, policy_engine, policy_version, position, resolved_at,
    error_message, created_at, updated_at)
  SELECT a.tenant_id, ($24::uuid[])[x.position + 1], a.id, x.key, x.attribute_key_id, x.value,
    x.resolution_status, x.resolver_type, x.policy_name, x.policy_engine, x.policy_version, x.position,
    x.resolved_at, x.error_message, a.created_at, a.created_at
  FROM a, jsonb_to_recordset($21) AS x(key text, attribute_key_id uuid, value jsonb,
    resolution_status text, resolver_type text, policy_name text, policy_engine text,
    policy_version text, position int, resolved_at timestamptz, error_message text)
), e AS (
  INSERT INTO activity_status_events (tenant_id, id, activity_id, event_type, from_status, to_status, occurred_at)
  SELECT a.tenant_id, $22, a.id, 'CREATED', NULL, a.status, a.created_at FROM a
), h AS (
  INSERT INTO commerce_user_last_targets (tenant_id, commerce_user_id, channel, commerce_id, activity_id, last_targeted_at)
  SELECT a.tenant_id, x.commerce_user_id, a.channel, a.commerce_id, a.id, a.created_at
  FROM a, jsonb_to_recordset($20) AS x(commerce_user_id uuid)
  WHERE x.commerce_user_id IS NOT NULL
  ON CONFLICT (tenant_id, commerce_user_id, channel) DO UPDATE SET
    commerce_id = EXCLUDED.commerce_id, activity_id = EXCLUDED.activity_id,
    last_targeted_at = EXCLUDED.last_targeted_at
  WHERE commerce_user_last_targets.last_targeted_at <= EXCLUDED.last_targeted_at
), d AS (
  -- The exact policy input of the decisions (policy::input::encode_stored).
  INSERT INTO decision_inputs (tenant_id, activity_id, stage, recorded_at, input)
  SELECT a.tenant_id, a.id, 'CREATE', a.created_at, $25::bytea FROM a WHERE $25::bytea IS NOT NULL
), n AS (
  -- A due activity that a dispatcher would send (its tenant has an active
  -- config for its channel) wakes the dispatchers (store::dispatch::WAKE_CHANNEL)
  -- at commit. Others notify nobody: a NOTIFY serialises the commits of every
  -- notifying transaction, and wakes a claim that would find nothing.
  SELECT pg_notify('reten_dispatch', a.tenant_id::text) FROM a
  WHERE a.status = 'READY' AND a.scheduled_at <= now()
    AND EXISTS (SELECT 1 FROM dispatch_configs c
                WHERE c.tenant_id = a.tenant_id AND c.channel = a.channel AND c.is_active)
)
SELECT id, (SELECT count(*) FROM n) AS woken FROM a
"#;

/// A target user row as the create statement reads it from JSON (its id
/// comes from the `$23` array, by position, so the JSON is the same for any
/// activity that decided the same).
#[derive(Serialize)]
struct TargetJson<'a> {
    position: i32,
    commerce_user_id: Option<Uuid>,
    resolution_status: &'static str,
    resolution_strategy: &'static str,
    lock_reason: Option<&'static str>,
    criterion_type: Option<&'a str>,
    policy_name: Option<&'a str>,
    policy_engine: Option<&'static str>,
    policy_version: Option<&'a str>,
    resolved_at: Option<DateTime<Utc>>,
    locked_at: Option<DateTime<Utc>>,
    error_message: Option<&'a str>,
}

impl<'a> TargetJson<'a> {
    fn new(position: i32, t: &'a TargetDecision, at: DateTime<Utc>) -> Self {
        let decided = t.commerce_user_id.is_some().then_some(at);
        Self {
            position,
            commerce_user_id: t.commerce_user_id.map(|u| u.0),
            resolution_status: t.status.as_str(),
            resolution_strategy: t.strategy.as_str(),
            lock_reason: t.lock_reason.map(|r| r.as_str()),
            criterion_type: t.criterion_type.as_deref(),
            policy_name: t.policy.as_ref().map(|p| p.name.as_str()),
            policy_engine: t.policy.as_ref().map(|p| p.engine.as_str()),
            policy_version: t.policy.as_ref().map(|p| p.version.as_str()),
            resolved_at: decided,
            locked_at: decided,
            error_message: t.error_message.as_deref(),
        }
    }
}

/// An attribute row as the create statement reads it from JSON (its id
/// comes from the `$24` array, by position).
#[derive(Serialize)]
struct AttributeJson<'a> {
    key: &'a str,
    attribute_key_id: Uuid,
    value: Option<&'a Value>,
    resolution_status: &'static str,
    resolver_type: Option<&'static str>,
    policy_name: Option<&'a str>,
    policy_engine: Option<&'static str>,
    policy_version: Option<&'a str>,
    position: i32,
    resolved_at: Option<DateTime<Utc>>,
    error_message: Option<&'a str>,
}

impl<'a> AttributeJson<'a> {
    fn new(position: usize, a: &'a AttributeDecision, at: DateTime<Utc>) -> Self {
        Self {
            key: &a.key,
            attribute_key_id: attribute_key_id(&a.key),
            value: a.value.as_ref(),
            resolution_status: a.status.as_str(),
            resolver_type: a.resolver_type.map(|r| r.as_str()),
            policy_name: a.policy.as_ref().map(|p| p.name.as_str()),
            policy_engine: a.policy.as_ref().map(|p| p.engine.as_str()),
            policy_version: a.policy.as_ref().map(|p| p.version.as_str()),
            position: i32::try_from(position).unwrap_or(i32::MAX),
            resolved_at: a.value.is_some().then_some(at),
            error_message: a.error_message.as_deref(),
        }
    }
}

/// Writes a new activity and all it carries, atomically. A concurrent
/// request that took the same idempotency key first wins: the answer is then
/// its activity's id.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %r.tenant, activity_id = %r.id))]
pub async fn insert(pool: &super::fast_pool::FastPool, r: &NewRecord<'_>) -> Result<Inserted, sqlx::Error> {
    let a = r.activity;
    let res = r.resolution;
    let targets = [TargetJson::new(0, &res.target, r.created_at)];
    let attributes: Vec<AttributeJson<'_>> =
        res.attributes.iter().enumerate().map(|(pos, attr)| AttributeJson::new(pos, attr, r.created_at)).collect();
    let mut conn = pool.acquire().await?;
    let inserted: Option<Uuid> = sqlx::query_scalar(INSERT_ACTIVITY_SQL)
        .bind(r.tenant)
        .bind(r.id)
        .bind(&a.idempotency_key)
        .bind(a.activity_type.as_str())
        .bind(a.channel.as_str())
        .bind(res.status.as_str())
        .bind(&a.reason)
        .bind(a.commerce_id)
        .bind(a.scheduled_at)
        .bind(a.suggested_execution_time)
        .bind(&a.user_status)
        .bind(a.score)
        .bind(&a.assignment_reason)
        .bind(a.target_criteria.as_ref().map(Json))
        .bind(&a.attribute_keys)
        .bind(Json(&a.attributes))
        .bind(Json(&res.trace))
        .bind(r.created_by)
        .bind(r.created_at)
        .bind(Json(&targets))
        .bind(Json(&attributes))
        .bind(r.event_id)
        .bind([r.target_user_id])
        .bind(r.attribute_ids)
        .bind(r.decision_input)
        .fetch_optional(&mut *conn)
        .await?;
    if inserted.is_some() {
        conn.done();
        return Ok(Inserted::Created);
    }
    // The key's holder committed before our insert gave up on it, so a fresh
    // statement sees it.
    let holder: Option<ActivityId> =
        sqlx::query_scalar("SELECT id FROM activities WHERE tenant_id = $1 AND idempotency_key = $2")
            .bind(r.tenant)
            .bind(&a.idempotency_key)
            .fetch_optional(&mut *conn)
            .await?;
    conn.done();
    holder.map(Inserted::Duplicate).ok_or(sqlx::Error::RowNotFound)
}

/// An activity row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: ActivityId,
    pub idempotency_key: String,
    #[sqlx(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    pub status: ActivityStatus,
    pub reason: String,
    pub commerce_id: CommerceId,
    pub commerce_name: Option<String>,
    pub commerce_external_id: Option<String>,
    pub scheduled_at: DateTime<Utc>,
    pub suggested_execution_time: Option<DateTime<Utc>>,
    pub user_status: Option<String>,
    pub score: Option<i32>,
    pub assignment_reason: Option<String>,
    pub target_criteria: Option<Json<Vec<TargetCriterion>>>,
    pub attribute_keys: Vec<String>,
    pub caller_attributes: Json<Vec<CallerAttribute>>,
    pub resolution_trace: Json<Value>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every transition (optimistic concurrency).
    pub version: i32,
    /// The provider's id for the activity, once dispatched.
    pub provider_activity_id: Option<String>,
}

impl ActivityRow {
    /// The request the activity was created from, as stored: what a retry or
    /// a resolution at dispatch replays.
    pub fn replay(&self) -> NewActivity {
        NewActivity {
            activity_type: self.activity_type,
            channel: self.channel,
            reason: self.reason.clone(),
            commerce_id: self.commerce_id,
            idempotency_key: self.idempotency_key.clone(),
            scheduled_at: self.scheduled_at,
            suggested_execution_time: self.suggested_execution_time,
            user_status: self.user_status.clone(),
            score: self.score,
            assignment_reason: self.assignment_reason.clone(),
            target_criteria: self.target_criteria.as_ref().map(|c| c.0.clone()),
            attribute_keys: self.attribute_keys.clone(),
            attributes: self.caller_attributes.0.clone(),
        }
    }
}

/// The columns of an [`ActivityRow`], over `activities a` joined to `commerces c`.
pub(crate) const ACTIVITY_COLUMNS: &str = "a.id, a.idempotency_key, a.type, a.channel, a.status, a.reason, a.commerce_id, \
    c.name AS commerce_name, c.external_id AS commerce_external_id, a.scheduled_at, a.suggested_execution_time, \
    a.user_status, a.score, a.assignment_reason, a.target_criteria, a.attribute_keys, a.caller_attributes, \
    a.resolution_trace, a.created_by, a.created_at, a.updated_at, a.version, a.provider_activity_id";

/// One activity, if the tenant has it.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn get(pool: &PgPool, tenant: TenantId, id: ActivityId) -> Result<Option<ActivityRow>, sqlx::Error> {
    sqlx::query_as::<_, ActivityRow>(&format!(
        "SELECT {ACTIVITY_COLUMNS} FROM activities a \
         LEFT JOIN commerces c ON c.tenant_id = a.tenant_id AND c.id = a.commerce_id \
         WHERE a.tenant_id = $1 AND a.id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The filters of `GET /api/activities`.
#[derive(Clone, Debug, Default)]
pub struct ActivityFilter {
    pub status: Option<ActivityStatus>,
    pub activity_type: Option<ActivityType>,
    pub channel: Option<Channel>,
    pub commerce_id: Option<CommerceId>,
    pub scheduled_from: Option<DateTime<Utc>>,
    pub scheduled_to: Option<DateTime<Utc>>,
    /// Matches the reason or the idempotency key, case-insensitively.
    pub search: Option<String>,
}

/// One page of activities, newest first, and the total count.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant))]
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &ActivityFilter,
    page: Page,
) -> Result<(Vec<ActivityRow>, i64), sqlx::Error> {
    fn push_filters<'a>(qb: &mut QueryBuilder<'a, Postgres>, tenant: TenantId, f: &'a ActivityFilter) {
        qb.push(" WHERE a.tenant_id = ").push_bind(tenant);
        if let Some(s) = f.status {
            qb.push(" AND a.status = ").push_bind(s.as_str());
        }
        if let Some(t) = f.activity_type {
            qb.push(" AND a.type = ").push_bind(t.as_str());
        }
        if let Some(c) = f.channel {
            qb.push(" AND a.channel = ").push_bind(c.as_str());
        }
        if let Some(c) = f.commerce_id {
            qb.push(" AND a.commerce_id = ").push_bind(c);
        }
        if let Some(t) = f.scheduled_from {
            qb.push(" AND a.scheduled_at >= ").push_bind(t);
        }
        if let Some(t) = f.scheduled_to {
            qb.push(" AND a.scheduled_at <= ").push_bind(t);
        }
        if let Some(s) = &f.search {
            let pattern = format!("%{}%", super::commerces::escape_like(s));
            qb.push(" AND (a.reason ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR a.idempotency_key ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
    }
    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM activities a");
    push_filters(&mut count, tenant, filter);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT {ACTIVITY_COLUMNS} FROM activities a \
         LEFT JOIN commerces c ON c.tenant_id = a.tenant_id AND c.id = a.commerce_id"
    ));
    push_filters(&mut qb, tenant, filter);
    qb.push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ")
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = qb.build_query_as::<ActivityRow>().fetch_all(pool).await?;
    Ok((rows, total))
}

/// A target user row, with the commerce user's name.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TargetUserRow {
    pub id: Uuid,
    pub activity_id: ActivityId,
    pub commerce_user_id: Option<Uuid>,
    pub commerce_user_name: Option<String>,
    pub commerce_user_external_id: Option<String>,
    pub resolution_status: TargetStatus,
    pub resolution_strategy: ResolutionStrategy,
    pub lock_reason: Option<LockReason>,
    pub criterion_type: Option<String>,
    pub policy_name: Option<String>,
    pub policy_engine: Option<EngineKind>,
    pub policy_version: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub locked_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The target users of an activity.
pub async fn target_users(
    pool: &PgPool,
    tenant: TenantId,
    activity: ActivityId,
) -> Result<Vec<TargetUserRow>, sqlx::Error> {
    sqlx::query_as::<_, TargetUserRow>(
        "SELECT t.id, t.activity_id, t.commerce_user_id, u.name AS commerce_user_name, \
           u.external_id AS commerce_user_external_id, t.resolution_status, t.resolution_strategy, \
           t.lock_reason, t.criterion_type, t.policy_name, t.policy_engine, t.policy_version, \
           t.resolved_at, t.locked_at, t.error_message, t.created_at, t.updated_at \
         FROM activity_target_users t \
         LEFT JOIN commerce_users u ON u.tenant_id = t.tenant_id AND u.id = t.commerce_user_id \
         WHERE t.tenant_id = $1 AND t.activity_id = $2 \
         ORDER BY t.created_at, t.id",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_all(pool)
    .await
}

/// An attribute row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttributeRow {
    pub id: Uuid,
    pub activity_id: ActivityId,
    pub key: String,
    pub attribute_key_id: Uuid,
    pub value: Option<Json<Value>>,
    pub resolution_status: AttributeStatus,
    pub resolver_type: Option<ResolverType>,
    pub policy_name: Option<String>,
    pub policy_engine: Option<EngineKind>,
    pub policy_version: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The attributes of an activity, in request order.
pub async fn attributes(
    pool: &PgPool,
    tenant: TenantId,
    activity: ActivityId,
) -> Result<Vec<AttributeRow>, sqlx::Error> {
    sqlx::query_as::<_, AttributeRow>(
        "SELECT id, activity_id, key, attribute_key_id, value, resolution_status, resolver_type, policy_name, \
           policy_engine, policy_version, resolved_at, error_message, created_at, updated_at \
         FROM activity_attributes WHERE tenant_id = $1 AND activity_id = $2 ORDER BY position, key",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_all(pool)
    .await
}

/// A status event row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub event_type: EventType,
    pub from_status: Option<ActivityStatus>,
    pub to_status: ActivityStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// The status events of an activity, oldest first.
pub async fn status_events(
    pool: &PgPool,
    tenant: TenantId,
    activity: ActivityId,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>(
        "SELECT id, event_type, from_status, to_status, error_code, error_message, occurred_at \
         FROM activity_status_events WHERE tenant_id = $1 AND activity_id = $2 ORDER BY seq",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_all(pool)
    .await
}

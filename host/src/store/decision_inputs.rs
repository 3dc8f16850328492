//! Decision inputs: the exact policy input each decision was made on (a
//! create, a retry, a resolution at dispatch), compressed
//! ([`crate::policy::input::encode_stored`]). A create writes its input in
//! its own statement (`activities::INSERT_ACTIVITY_SQL`); the others here.
//!
//! Invariant: an input older than the retention is never answered, even
//! before the pruner has deleted it, so the retention is exact to the
//! request, and the pruner's pace only bounds the disk.

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgPool, Postgres};

use sqlx::types::Json;

use crate::domain::activity::{CallerAttribute, NewActivity, TargetCriterion};
use crate::domain::{ActivityId, ActivityType, Channel, CommerceId, TenantId};

/// Which decision an input was kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Create,
    Retry,
    Dispatch,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Retry => "RETRY",
            Self::Dispatch => "DISPATCH",
        }
    }
}

/// Keeps the input of a retry or of a resolution at dispatch, in the
/// caller's transaction.
pub async fn insert<'e>(
    executor: impl Executor<'e, Database = Postgres>,
    tenant: TenantId,
    activity: ActivityId,
    stage: Stage,
    at: DateTime<Utc>,
    input: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO decision_inputs (tenant_id, activity_id, stage, recorded_at, input) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(activity)
    .bind(stage.as_str())
    .bind(at)
    .bind(input)
    .execute(executor)
    .await?;
    Ok(())
}

/// The latest input of an activity recorded at or after `not_before`.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %activity))]
pub async fn latest(
    pool: &PgPool,
    tenant: TenantId,
    activity: ActivityId,
    not_before: DateTime<Utc>,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT input FROM decision_inputs WHERE tenant_id = $1 AND activity_id = $2 AND recorded_at >= $3 \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(activity)
    .bind(not_before)
    .fetch_optional(pool)
    .await
}

/// Deletes every input recorded before `before`, a batch at a time so that
/// no one statement holds locks for long. Across tenants: retention is the
/// platform's, and this reads nothing back. Returns how many went.
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 5_000;
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM decision_inputs WHERE ctid = ANY (ARRAY( \
               SELECT ctid FROM decision_inputs WHERE recorded_at < $1 LIMIT $2))",
        )
        .bind(before)
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The activities a replay evaluates: a tenant's, created in the window,
/// the most recent `limit`, each with its latest input still kept.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// Inputs recorded before this are past the retention.
    pub not_before: DateTime<Utc>,
}

const WINDOW_FROM: &str = "FROM activities a \
     JOIN LATERAL (SELECT d.input FROM decision_inputs d \
        WHERE d.tenant_id = a.tenant_id AND d.activity_id = a.id AND d.recorded_at >= $4 \
        ORDER BY d.seq DESC LIMIT 1) d ON true \
     WHERE a.tenant_id = $1 AND ($2::timestamptz IS NULL OR a.created_at >= $2) \
       AND ($3::timestamptz IS NULL OR a.created_at <= $3) \
       AND ($5::timestamptz IS NULL OR (a.created_at, a.id) < ($5, $6::uuid))";

/// How many activities the window holds (at most its limit).
pub async fn count_window(pool: &PgPool, tenant: TenantId, w: &Window) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM (SELECT 1 {WINDOW_FROM} LIMIT $7) w"))
        .bind(tenant)
        .bind(w.since)
        .bind(w.until)
        .bind(w.not_before)
        .bind(None::<DateTime<Utc>>)
        .bind(None::<ActivityId>)
        .bind(w.limit)
        .fetch_one(pool)
        .await
}

/// One activity of a replay window: the request it was created from (what
/// resolution reads besides the input) and its stored input. Not its trace
/// nor its commerce: a replay reads a million of these.
#[derive(Debug, sqlx::FromRow)]
pub struct WindowRow {
    pub id: ActivityId,
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    pub reason: String,
    pub commerce_id: CommerceId,
    pub idempotency_key: String,
    pub scheduled_at: DateTime<Utc>,
    pub suggested_execution_time: Option<DateTime<Utc>>,
    pub user_status: Option<String>,
    pub score: Option<i32>,
    pub assignment_reason: Option<String>,
    pub target_criteria: Option<Json<Vec<TargetCriterion>>>,
    pub attribute_keys: Vec<String>,
    pub caller_attributes: Json<Vec<CallerAttribute>>,
    pub input: Vec<u8>,
}

impl WindowRow {
    /// The request the activity was created from.
    pub fn request(&self) -> NewActivity {
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

/// The columns of a [`WindowRow`].
const WINDOW_COLUMNS: &str = "a.id, a.created_at, a.type, a.channel, a.reason, a.commerce_id, a.idempotency_key, \
    a.scheduled_at, a.suggested_execution_time, a.user_status, a.score, a.assignment_reason, a.target_criteria, \
    a.attribute_keys, a.caller_attributes, d.input";

/// Where a page of a window starts: after this activity (the window runs
/// newest first).
pub type Cursor = (DateTime<Utc>, ActivityId);

/// Up to `n` activities of the window after `cursor`, newest first: pages
/// of short statements, so a long replay holds no snapshot, no statement
/// open and no connection between pages.
pub async fn page(
    pool: &PgPool,
    tenant: TenantId,
    w: &Window,
    cursor: Option<Cursor>,
    n: i64,
) -> Result<Vec<WindowRow>, sqlx::Error> {
    // Formatted per page (a page is up to a thousand activities): nothing
    // kept process-wide.
    let sql = format!("SELECT {WINDOW_COLUMNS} {WINDOW_FROM} ORDER BY a.created_at DESC, a.id DESC LIMIT $7");
    sqlx::query_as::<_, WindowRow>(&sql)
        .bind(tenant)
        .bind(w.since)
        .bind(w.until)
        .bind(w.not_before)
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map(|c| c.1))
        .bind(n)
        .fetch_all(pool)
        .await
}

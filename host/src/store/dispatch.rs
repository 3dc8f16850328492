//! The dispatcher's queries: claiming due activities, loading one to send,
//! and recording each attempt with its transition.
//!
//! A claim is a lease (`dispatch_lease_owner`, `dispatch_lease_until`) taken
//! with `FOR UPDATE SKIP LOCKED`, so two dispatchers never hold one activity
//! at once; a lease whose holder died runs out and the next round takes it.
//! Every write that ends a send applies only while its writer still holds
//! the lease and the activity is READY, and writes the status event in the
//! same statement.
//!
//! The claim and the housekeeping read across tenants by design: they are
//! the one place that serves every tenant, each in its own slice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::{ActivityId, TenantId};

use super::activities::ActivityRow;

/// The `NOTIFY` channel a create of a due activity wakes the dispatchers on.
pub const WAKE_CHANNEL: &str = "reten_dispatch";

/// One activity a claim took.
#[derive(Clone, Copy, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub tenant_id: TenantId,
    pub id: ActivityId,
}

/// How much a claim may take.
#[derive(Debug)]
pub struct ClaimLimits<'a> {
    /// Per tenant, when the tenant is not in `busy`.
    pub per_tenant: i64,
    /// Tenants with sends in flight here, and how many more each may take.
    pub busy: &'a [(TenantId, i64)],
    /// In all.
    pub total: i64,
}

/// Claims due READY activities of every tenant that has an active config
/// for their channel: oldest due first within a tenant, and round-robin
/// across tenants (each tenant's first, then each one's second, …), so no
/// tenant's backlog delays another's.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim(
    pool: &PgPool,
    owner: Uuid,
    limits: &ClaimLimits<'_>,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let (busy, free): (Vec<TenantId>, Vec<i64>) = limits.busy.iter().copied().unzip();
    sqlx::query_as(
        "WITH slots AS ( \
           SELECT c.tenant_id, c.channel, COALESCE(b.free, $2) AS n \
           FROM dispatch_configs c \
           LEFT JOIN unnest($3::uuid[], $4::bigint[]) AS b(tenant_id, free) ON b.tenant_id = c.tenant_id \
           WHERE c.is_active \
         ), due AS ( \
           SELECT x.tenant_id, x.id, s.n, \
             row_number() OVER (PARTITION BY x.tenant_id ORDER BY x.due_at, x.id) AS rank, x.due_at \
           FROM slots s CROSS JOIN LATERAL ( \
             SELECT a.tenant_id, a.id, COALESCE(a.next_dispatch_at, a.scheduled_at) AS due_at \
             FROM activities a \
             WHERE a.tenant_id = s.tenant_id AND a.channel = s.channel AND a.status = 'READY' \
               AND COALESCE(a.next_dispatch_at, a.scheduled_at) <= now() \
               AND (a.dispatch_lease_until IS NULL OR a.dispatch_lease_until < now()) \
             ORDER BY COALESCE(a.next_dispatch_at, a.scheduled_at) \
             LIMIT s.n \
             FOR UPDATE OF a SKIP LOCKED \
           ) x \
           WHERE s.n > 0 \
         ), picked AS ( \
           SELECT tenant_id, id FROM due WHERE rank <= n ORDER BY rank, due_at LIMIT $5 \
         ) \
         UPDATE activities a SET dispatch_lease_owner = $1, \
           dispatch_lease_until = now() + make_interval(secs => $6) \
         FROM picked p WHERE a.tenant_id = p.tenant_id AND a.id = p.id \
         RETURNING a.tenant_id, a.id",
    )
    .bind(owner)
    .bind(limits.per_tenant)
    .bind(busy)
    .bind(free)
    .bind(limits.total)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Claims one READY activity now, whatever its due time (a manual
/// dispatch). `false` when it is not READY or another dispatcher holds it.
pub async fn claim_one(
    pool: &PgPool,
    tenant: TenantId,
    id: ActivityId,
    owner: Uuid,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE activities SET dispatch_lease_owner = $3, dispatch_lease_until = now() + make_interval(secs => $4) \
         WHERE tenant_id = $1 AND id = $2 AND status = 'READY' \
           AND (dispatch_lease_until IS NULL OR dispatch_lease_until < now())",
    )
    .bind(tenant)
    .bind(id)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A target user as a send needs it: its state, and who it is.
#[derive(Clone, Debug, Deserialize)]
pub struct TargetForSend {
    pub id: Uuid,
    pub commerce_user_id: Option<Uuid>,
    pub resolution_status: String,
    pub resolution_strategy: String,
    pub external_id: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub contacts: Vec<ContactForSend>,
}

/// A contact of the target user.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct ContactForSend {
    #[serde(rename = "type")]
    pub contact_type: String,
    pub value: String,
    pub is_primary: bool,
}

/// An attribute as a send needs it.
#[derive(Clone, Debug, Deserialize)]
pub struct AttributeForSend {
    pub id: Uuid,
    pub key: String,
    pub value: Option<Value>,
    pub resolution_status: String,
}

/// Everything one send needs, read in one round trip.
#[derive(Debug, sqlx::FromRow)]
pub struct ForSend {
    #[sqlx(flatten)]
    pub activity: ActivityRow,
    pub dispatch_attempts: i32,
    pub dispatch_lease_owner: Option<Uuid>,
    /// When it became due: its due time, or its creation when created late.
    pub due_at: DateTime<Utc>,
    pub targets: Json<Vec<TargetForSend>>,
    pub attributes: Json<Vec<AttributeForSend>>,
    pub config_id: Option<Uuid>,
}

/// The read of [`ForSend`] rows over `activities a` (joined to `commerces c`),
/// for a `WHERE` clause that follows.
fn for_send_select() -> String {
    format!(
        "SELECT {columns}, a.dispatch_attempts, a.dispatch_lease_owner, \
           GREATEST(COALESCE(a.next_dispatch_at, a.scheduled_at), a.created_at) AS due_at, \
           COALESCE((SELECT json_agg(json_build_object('id', t.id, 'commerce_user_id', t.commerce_user_id, \
               'resolution_status', t.resolution_status, 'resolution_strategy', t.resolution_strategy, \
               'external_id', u.external_id, 'name', u.name, \
               'contacts', COALESCE((SELECT json_agg(json_build_object('type', k.contact_type, 'value', k.value, \
                   'is_primary', k.is_primary) ORDER BY k.is_primary DESC, k.position) \
                 FROM commerce_user_contacts k \
                 WHERE k.tenant_id = u.tenant_id AND k.commerce_user_id = u.id AND k.is_active), '[]')) \
               ORDER BY t.created_at, t.id) \
             FROM activity_target_users t \
             LEFT JOIN commerce_users u ON u.tenant_id = t.tenant_id AND u.id = t.commerce_user_id \
             WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id), '[]') AS targets, \
           COALESCE((SELECT json_agg(json_build_object('id', v.id, 'key', v.key, 'value', v.value, \
               'resolution_status', v.resolution_status) ORDER BY v.position, v.key) \
             FROM activity_attributes v WHERE v.tenant_id = a.tenant_id AND v.activity_id = a.id), '[]') \
             AS attributes, \
           (SELECT cfg.id FROM dispatch_configs cfg \
             WHERE cfg.tenant_id = a.tenant_id AND cfg.channel = a.channel AND cfg.is_active) AS config_id \
         FROM activities a \
         LEFT JOIN commerces c ON c.tenant_id = a.tenant_id AND c.id = a.commerce_id ",
        columns = super::activities::ACTIVITY_COLUMNS
    )
}

/// Reads an activity with its target users (and their contacts), its
/// attributes and the id of its channel's active config.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn load(pool: &PgPool, tenant: TenantId, id: ActivityId) -> Result<Option<ForSend>, sqlx::Error> {
    sqlx::query_as(&format!("{} WHERE a.tenant_id = $1 AND a.id = $2", for_send_select()))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// One page of the tenant's tasks in `statuses` (pull mode), oldest
/// scheduled first, and how many there are.
pub async fn list_tasks(
    pool: &PgPool,
    tenant: TenantId,
    statuses: &[&str],
    channel: Option<&str>,
    page: super::Page,
) -> Result<(Vec<ForSend>, i64), sqlx::Error> {
    let filter = "a.tenant_id = $1 AND a.type = 'TASK' AND a.status = ANY($2) AND ($3::text IS NULL OR a.channel = $3)";
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM activities a WHERE {filter}"))
        .bind(tenant)
        .bind(statuses)
        .bind(channel)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query_as(&format!(
        "{} WHERE {filter} ORDER BY a.scheduled_at, a.id LIMIT $4 OFFSET $5",
        for_send_select()
    ))
    .bind(tenant)
    .bind(statuses)
    .bind(channel)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

/// Gives a claim back without an attempt: the next round may take it.
pub async fn release(pool: &PgPool, tenant: TenantId, id: ActivityId, owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE activities SET dispatch_lease_owner = NULL, dispatch_lease_until = NULL \
         WHERE tenant_id = $1 AND id = $2 AND dispatch_lease_owner = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives back claims a dispatcher still holds (at shutdown), by tenant and
/// id; how many it still held.
pub async fn release_many(pool: &PgPool, owner: Uuid, claims: &[Claimed]) -> Result<u64, sqlx::Error> {
    let (tenants, ids): (Vec<TenantId>, Vec<ActivityId>) = claims.iter().map(|c| (c.tenant_id, c.id)).unzip();
    let done = sqlx::query(
        "UPDATE activities a SET dispatch_lease_owner = NULL, dispatch_lease_until = NULL \
         FROM unnest($2::uuid[], $3::uuid[]) AS c(tenant_id, id) \
         WHERE a.tenant_id = c.tenant_id AND a.id = c.id AND a.dispatch_lease_owner = $1",
    )
    .bind(owner)
    .bind(tenants)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Parks an activity whose target waits for a manual assignment: it is not
/// due again until the assignment ([`super::transitions::apply_assignment`])
/// unparks it.
pub async fn park(pool: &PgPool, tenant: TenantId, id: ActivityId, owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE activities SET next_dispatch_at = 'infinity', dispatch_lease_owner = NULL, \
           dispatch_lease_until = NULL \
         WHERE tenant_id = $1 AND id = $2 AND dispatch_lease_owner = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// The age, in seconds, of each tenant's oldest due READY activity that has
/// an active config for its channel.
pub async fn oldest_due(pool: &PgPool) -> Result<Vec<(TenantId, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.tenant_id, \
           EXTRACT(EPOCH FROM now() - min(x.due_at))::float8 AS age \
         FROM dispatch_configs c CROSS JOIN LATERAL ( \
           SELECT GREATEST(COALESCE(a.next_dispatch_at, a.scheduled_at), a.created_at) AS due_at \
           FROM activities a \
           WHERE a.tenant_id = c.tenant_id AND a.channel = c.channel AND a.status = 'READY' \
             AND COALESCE(a.next_dispatch_at, a.scheduled_at) <= now() \
           ORDER BY COALESCE(a.next_dispatch_at, a.scheduled_at) LIMIT 1) x \
         WHERE c.is_active GROUP BY c.tenant_id",
    )
    .fetch_all(pool)
    .await
}

/// Deletes attempts older than `before`, tenant by tenant; how many.
pub async fn purge_attempts(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let tenants: Vec<TenantId> = sqlx::query_scalar("SELECT id FROM tenants").fetch_all(pool).await?;
    let mut purged = 0;
    for tenant in tenants {
        let done = sqlx::query("DELETE FROM dispatch_attempts WHERE tenant_id = $1 AND started_at < $2")
            .bind(tenant)
            .bind(before)
            .execute(pool)
            .await?;
        purged += done.rows_affected();
    }
    Ok(purged)
}

//! Commerces with their addresses, users, roles and contacts.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::commerce::{Address, Commerce, CommercePatch, CommerceUser, HistoryEntry, with_overall_history};
use crate::domain::{ActivityId, CommerceId, TenantId};

use super::Page;

/// The one read of a create: the activity already holding the idempotency
/// key (if any), and the commerce with its addresses, users, contacts and the
/// targeting history of its users. Kept as a constant so the load harness can
/// replay exactly what the service sends.
pub const LOAD_FOR_CREATE_SQL: &str = r#"
SELECT
  (SELECT x.id FROM activities x WHERE x.tenant_id = $1 AND x.idempotency_key = $3) AS existing,
  c.id, c.external_id, c.name, c.tax_id, c.global_external_id, c.is_active, c.metadata,
  COALESCE((
    SELECT json_agg(json_build_object(
      'address_alias', a.address_alias, 'street', a.street, 'street_number', a.street_number,
      'unit', a.unit, 'city', a.city, 'commune', a.commune, 'region', a.region,
      'country_code', a.country_code, 'formatted_address', a.formatted_address,
      'latitude', a.latitude, 'longitude', a.longitude, 'is_primary', a.is_primary)
      ORDER BY a.is_primary DESC, a.position)
    FROM commerce_addresses a
    WHERE a.tenant_id = c.tenant_id AND a.commerce_id = c.id AND a.is_active), '[]') AS addresses,
  COALESCE((
    SELECT json_agg(json_build_object(
      'id', u.id, 'external_id', u.external_id, 'name', u.name, 'is_active', u.is_active,
      'roles', u.roles,
      'contacts', COALESCE((
        SELECT json_agg(json_build_object('type', k.contact_type, 'value', k.value, 'is_primary', k.is_primary)
          ORDER BY k.is_primary DESC, k.position)
        FROM commerce_user_contacts k
        WHERE k.tenant_id = u.tenant_id AND k.commerce_user_id = u.id AND k.is_active), '[]'))
      ORDER BY u.position, u.created_at, u.id)
    FROM commerce_users u
    WHERE u.tenant_id = c.tenant_id AND u.commerce_id = c.id), '[]') AS users,
  COALESCE((
    SELECT json_agg(json_build_object(
      'commerce_user_id', h.commerce_user_id, 'channel', h.channel,
      'activity_id', h.activity_id, 'last_targeted_at', h.last_targeted_at))
    FROM commerce_user_last_targets h
    WHERE h.tenant_id = c.tenant_id AND h.commerce_id = c.id), '[]') AS history
FROM (SELECT 1) AS one
LEFT JOIN commerces c ON c.tenant_id = $1 AND c.id = $2
"#;

/// What a create (or a preview, or a retry) reads before resolving.
#[derive(Debug)]
pub struct ForCreate {
    /// The activity that holds the idempotency key already, if any.
    pub existing: Option<ActivityId>,
    /// The commerce and its users' targeting history; `None` when the tenant
    /// has no such commerce.
    pub commerce: Option<(Commerce, Vec<HistoryEntry>)>,
}

/// Reads, in one round trip, whether `idempotency_key` is taken and the
/// commerce with everything resolution needs. Without a key, only the
/// commerce.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, commerce_id = %id))]
pub async fn load_for_create(
    pool: &super::fast_pool::FastPool,
    tenant: TenantId,
    id: CommerceId,
    idempotency_key: Option<&str>,
) -> Result<ForCreate, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        existing: Option<ActivityId>,
        id: Option<CommerceId>,
        external_id: Option<String>,
        name: Option<String>,
        tax_id: Option<String>,
        global_external_id: Option<String>,
        is_active: Option<bool>,
        metadata: Option<Json<Map<String, Value>>>,
        addresses: Json<Vec<Address>>,
        users: Json<Vec<CommerceUser>>,
        history: Json<Vec<HistoryEntry>>,
    }
    let mut conn = pool.acquire().await?;
    let r = sqlx::query_as::<_, Row>(LOAD_FOR_CREATE_SQL)
        .bind(tenant)
        .bind(id)
        .bind(idempotency_key)
        .fetch_one(&mut *conn)
        .await?;
    conn.done();
    let commerce = match (r.id, r.external_id, r.name) {
        (Some(id), Some(external_id), Some(name)) => Some((
            Commerce {
                id,
                external_id,
                name,
                tax_id: r.tax_id,
                global_external_id: r.global_external_id,
                is_active: r.is_active.unwrap_or(true),
                metadata: r.metadata.map(|m| m.0).unwrap_or_default(),
                addresses: r.addresses.0,
                users: r.users.0,
            },
            with_overall_history(r.history.0),
        )),
        _ => None,
    };
    Ok(ForCreate { existing: r.existing, commerce })
}

/// The commerce with everything resolution needs (see [`load_for_create`]).
pub async fn load_for_resolution(
    pool: &super::fast_pool::FastPool,
    tenant: TenantId,
    id: CommerceId,
) -> Result<Option<(Commerce, Vec<HistoryEntry>)>, sqlx::Error> {
    Ok(load_for_create(pool, tenant, id, None).await?.commerce)
}

/// A commerce as listed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CommerceRow {
    pub id: CommerceId,
    pub external_id: String,
    pub name: String,
    pub tax_id: Option<String>,
    pub global_external_id: Option<String>,
    pub is_active: bool,
    pub metadata: Json<Map<String, Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COMMERCE_COLUMNS: &str =
    "id, external_id, name, tax_id, global_external_id, is_active, metadata, created_at, updated_at";

/// The filters of `GET /api/commerces`.
#[derive(Clone, Debug, Default)]
pub struct CommerceFilter {
    /// Matches the name or the external id, case-insensitively.
    pub search: Option<String>,
    pub external_id: Option<String>,
    pub global_external_id: Option<String>,
    pub is_active: Option<bool>,
}

/// One page of commerces, newest first, and the total count.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant))]
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &CommerceFilter,
    page: Page,
) -> Result<(Vec<CommerceRow>, i64), sqlx::Error> {
    fn push_filters<'a>(qb: &mut QueryBuilder<'a, Postgres>, tenant: TenantId, f: &'a CommerceFilter) {
        qb.push(" WHERE tenant_id = ").push_bind(tenant);
        if let Some(s) = &f.search {
            let pattern = format!("%{}%", escape_like(s));
            qb.push(" AND (name ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR external_id ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
        if let Some(x) = &f.external_id {
            qb.push(" AND external_id = ").push_bind(x);
        }
        if let Some(x) = &f.global_external_id {
            qb.push(" AND global_external_id = ").push_bind(x);
        }
        if let Some(x) = f.is_active {
            qb.push(" AND is_active = ").push_bind(x);
        }
    }
    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM commerces");
    push_filters(&mut count, tenant, filter);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {COMMERCE_COLUMNS} FROM commerces"));
    push_filters(&mut qb, tenant, filter);
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = qb.build_query_as::<CommerceRow>().fetch_all(pool).await?;
    Ok((rows, total))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
pub fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A commerce with its addresses and users, as `GET /api/commerces/:id` shows it.
#[derive(Clone, Debug)]
pub struct CommerceDetail {
    pub commerce: CommerceRow,
    pub addresses: Vec<AddressRow>,
    pub users: Vec<UserRow>,
}

/// An address as shown.
#[derive(Clone, Debug, Deserialize)]
pub struct AddressRow {
    pub id: Uuid,
    #[serde(flatten)]
    pub address: Address,
    pub source_ref: Option<String>,
    pub is_active: bool,
}

/// A commerce user as shown.
#[derive(Clone, Debug, Deserialize)]
pub struct UserRow {
    pub id: Uuid,
    pub external_id: String,
    pub name: Option<String>,
    pub is_active: bool,
    pub roles: Vec<String>,
    pub contacts: Vec<ContactRow>,
}

/// A contact as shown.
#[derive(Clone, Debug, Deserialize)]
pub struct ContactRow {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub contact_type: String,
    pub value: String,
    pub is_primary: bool,
    pub is_active: bool,
}

/// One commerce with its addresses, users, roles and contacts.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, commerce_id = %id))]
pub async fn get(pool: &PgPool, tenant: TenantId, id: CommerceId) -> Result<Option<CommerceDetail>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        commerce: CommerceRow,
        addresses: Json<Vec<AddressRow>>,
        users: Json<Vec<UserRow>>,
    }
    let row = sqlx::query_as::<_, Row>(&format!(
        r#"
        SELECT {COMMERCE_COLUMNS},
          COALESCE((
            SELECT json_agg(json_build_object(
              'id', a.id, 'address_alias', a.address_alias, 'street', a.street, 'street_number', a.street_number,
              'unit', a.unit, 'city', a.city, 'commune', a.commune, 'region', a.region,
              'country_code', a.country_code, 'formatted_address', a.formatted_address,
              'latitude', a.latitude, 'longitude', a.longitude, 'is_primary', a.is_primary,
              'source_ref', a.source_ref, 'is_active', a.is_active)
              ORDER BY a.is_primary DESC, a.position)
            FROM commerce_addresses a WHERE a.tenant_id = c.tenant_id AND a.commerce_id = c.id), '[]') AS addresses,
          COALESCE((
            SELECT json_agg(json_build_object(
              'id', u.id, 'external_id', u.external_id, 'name', u.name, 'is_active', u.is_active, 'roles', u.roles,
              'contacts', COALESCE((
                SELECT json_agg(json_build_object('id', k.id, 'type', k.contact_type, 'value', k.value,
                  'is_primary', k.is_primary, 'is_active', k.is_active) ORDER BY k.is_primary DESC, k.position)
                FROM commerce_user_contacts k WHERE k.tenant_id = u.tenant_id AND k.commerce_user_id = u.id), '[]'))
              ORDER BY u.position, u.created_at, u.id)
            FROM commerce_users u WHERE u.tenant_id = c.tenant_id AND u.commerce_id = c.id), '[]') AS users
        FROM commerces c
        WHERE c.tenant_id = $1 AND c.id = $2
        "#
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| CommerceDetail { commerce: r.commerce, addresses: r.addresses.0, users: r.users.0 }))
}

/// Why a patch failed.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("tax_id is already used by another commerce")]
    TaxIdTaken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Applies a patch; `None` when the tenant has no such commerce.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, commerce_id = %id))]
pub async fn patch(
    pool: &PgPool,
    tenant: TenantId,
    id: CommerceId,
    patch: &CommercePatch,
) -> Result<Option<CommerceRow>, PatchError> {
    sqlx::query_as::<_, CommerceRow>(&format!(
        r#"
        UPDATE commerces SET
          name = COALESCE($3, name),
          tax_id = CASE WHEN $4 THEN $5 ELSE tax_id END,
          global_external_id = CASE WHEN $6 THEN $7 ELSE global_external_id END,
          is_active = COALESCE($8, is_active),
          metadata = metadata || COALESCE($9, '{{}}'::jsonb),
          updated_at = now()
        WHERE tenant_id = $1 AND id = $2
        RETURNING {COMMERCE_COLUMNS}
        "#
    ))
    .bind(tenant)
    .bind(id)
    .bind(&patch.name)
    .bind(patch.tax_id.is_some())
    .bind(patch.tax_id.clone().flatten())
    .bind(patch.global_external_id.is_some())
    .bind(patch.global_external_id.clone().flatten())
    .bind(patch.is_active)
    .bind(patch.metadata.as_ref().map(|m| Json(m.clone())))
    .fetch_optional(pool)
    .await
    .map_err(|e| match super::violated_constraint(&e) {
        Some("commerces_tax_id_key") => PatchError::TaxIdTaken,
        _ => PatchError::Db(e),
    })
}

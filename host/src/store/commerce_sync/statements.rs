//! The statements of a sync, each over a whole batch: upserts and
//! replacements that `unnest` the arrays of [`super::columns`].
//!
//! Inserts read their rows `ORDER BY` the request order (`WITH ORDINALITY`),
//! so a batch writes its rows in the order the items came, as writing them
//! one by one did: that order decides which of two commerces sending one tax
//! id gets it.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use super::columns::{Addresses, Commerces, Contacts, Flags, Sent, Upserted, Users};
use crate::domain::TenantId;

/// Every row of an upsert is either inserted or updated, and `RETURNING`
/// reports both; keys are unique within a batch (`SyncRequest::validate`), so
/// no row is written twice.
const EVERY_ROW_RETURNED: &str = "an upsert returns every row it was given";

/// The upsert of every commerce, up to its `DO UPDATE SET` list; what the
/// list holds for `is_active` depends on the batch (see `Sent`).
const UPSERT_COMMERCES: &str = r#"
    INSERT INTO commerces (tenant_id, id, external_id, name, tax_id, global_external_id, is_active, metadata)
    SELECT $1, reten_uuid_v7(), i.external_id, i.name, i.tax_id, i.global_external_id,
           COALESCE(i.is_active, true), COALESCE(i.metadata, '{}'::jsonb)
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::jsonb[])
         WITH ORDINALITY AS i(external_id, name, tax_id, global_external_id, is_active, metadata, ord)
    ORDER BY i.ord
    ON CONFLICT (tenant_id, external_id) DO UPDATE SET
"#;

/// The rest of the commerces' `DO UPDATE SET`: what every row updates.
const UPSERT_COMMERCES_SET: &str = r#"
      name = EXCLUDED.name,
      tax_id = COALESCE(EXCLUDED.tax_id, commerces.tax_id),
      global_external_id = COALESCE(EXCLUDED.global_external_id, commerces.global_external_id),
      metadata = commerces.metadata || EXCLUDED.metadata,
      updated_at = now()
    RETURNING id, external_id, (xmax = 0) AS inserted
"#;

/// The upsert of every user, up to its `DO UPDATE SET` list.
const UPSERT_USERS: &str = r#"
    INSERT INTO commerce_users (tenant_id, id, commerce_id, external_id, name, roles, is_active, position)
    SELECT $1, reten_uuid_v7(), u.commerce_id, u.external_id, u.name,
           COALESCE(string_to_array(u.roles, ','), '{}'::text[]), COALESCE(u.is_active, true), u.position
    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::int4[])
         WITH ORDINALITY AS u(commerce_id, external_id, name, roles, is_active, position, ord)
    ORDER BY u.ord
    ON CONFLICT (tenant_id, commerce_id, external_id) DO UPDATE SET
"#;

/// The rest of the users' `DO UPDATE SET`: what every row updates.
const UPSERT_USERS_SET: &str = r#"
      name = COALESCE(EXCLUDED.name, commerce_users.name),
      position = EXCLUDED.position,
      updated_at = now()
    RETURNING id, commerce_id, external_id, (xmax = 0) AS inserted
"#;

/// An assignment for a `DO UPDATE SET` list, when every row of the batch
/// sent the column: the proposed row then holds what was sent.
fn taken_if_all(sent: Sent, assignment: &'static str) -> &'static str {
    if sent == Sent::Everywhere { assignment } else { "" }
}

/// Creates or updates the commerces by external id. Returns, for each item in
/// order, its id and whether it was created.
pub(super) async fn upsert_commerces(
    conn: &mut PgConnection,
    tenant: TenantId,
    c: &Commerces<'_>,
) -> Result<Vec<Upserted>, sqlx::Error> {
    let sql =
        [UPSERT_COMMERCES, taken_if_all(c.is_active_sent, "is_active = EXCLUDED.is_active,"), UPSERT_COMMERCES_SET]
            .concat();
    let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&c.external_id)
        .bind(&c.name)
        .bind(&c.tax_id)
        .bind(&c.global_external_id)
        .bind(&c.is_active)
        .bind(&c.metadata)
        .fetch_all(conn)
        .await?;
    let by_key: HashMap<&str, Upserted> = rows
        .iter()
        .map(|(id, external_id, inserted)| (external_id.as_str(), Upserted { id: *id, inserted: *inserted }))
        .collect();
    Ok(c.external_id.iter().map(|e| *by_key.get(e).expect(EVERY_ROW_RETURNED)).collect())
}

/// Sets `is_active` on the updated commerces that the upsert left to it.
pub(super) async fn set_commerce_flags(
    conn: &mut PgConnection,
    tenant: TenantId,
    flags: &Flags,
) -> Result<(), sqlx::Error> {
    if flags.id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE commerces c SET is_active = i.is_active \
         FROM unnest($2::uuid[], $3::bool[]) AS i(id, is_active) \
         WHERE c.tenant_id = $1 AND c.id = i.id",
    )
    .bind(tenant)
    .bind(&flags.id)
    .bind(&flags.is_active)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the addresses of the commerces that sent some.
pub(super) async fn replace_addresses(
    conn: &mut PgConnection,
    tenant: TenantId,
    a: &Addresses<'_>,
) -> Result<(), sqlx::Error> {
    if a.replaced.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM commerce_addresses WHERE tenant_id = $1 AND commerce_id = ANY($2)")
        .bind(tenant)
        .bind(&a.replaced)
        .execute(&mut *conn)
        .await?;
    if a.commerce_id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"
        INSERT INTO commerce_addresses (tenant_id, id, commerce_id, address_alias, is_primary, country_code, region,
                                        commune, city, street, street_number, unit, formatted_address, latitude,
                                        longitude, source_ref, position)
        SELECT $1, reten_uuid_v7(), a.*
        FROM unnest($2::uuid[], $3::text[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                    $10::text[], $11::text[], $12::text[], $13::float8[], $14::float8[], $15::text[], $16::int4[]) AS a
        "#,
    )
    .bind(tenant)
    .bind(&a.commerce_id)
    .bind(&a.address_alias)
    .bind(&a.is_primary)
    .bind(&a.country_code)
    .bind(&a.region)
    .bind(&a.commune)
    .bind(&a.city)
    .bind(&a.street)
    .bind(&a.street_number)
    .bind(&a.unit)
    .bind(&a.formatted_address)
    .bind(&a.latitude)
    .bind(&a.longitude)
    .bind(&a.source_ref)
    .bind(&a.position)
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates or updates the users by commerce and external id; users not sent
/// are left alone. Returns, for each user in order, its id and whether it was
/// created.
pub(super) async fn upsert_users(
    conn: &mut PgConnection,
    tenant: TenantId,
    u: &Users<'_>,
) -> Result<Vec<Upserted>, sqlx::Error> {
    if u.sent.is_empty() {
        return Ok(Vec::new());
    }
    let sql = [
        UPSERT_USERS,
        taken_if_all(u.roles_sent, "roles = EXCLUDED.roles,"),
        taken_if_all(u.is_active_sent, "is_active = EXCLUDED.is_active,"),
        UPSERT_USERS_SET,
    ]
    .concat();
    let rows: Vec<(Uuid, Uuid, String, bool)> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&u.commerce_id)
        .bind(&u.external_id)
        .bind(&u.name)
        .bind(&u.roles)
        .bind(&u.is_active)
        .bind(&u.position)
        .fetch_all(conn)
        .await?;
    let by_key: HashMap<(Uuid, &str), Upserted> = rows
        .iter()
        .map(|(id, commerce_id, external_id, inserted)| {
            ((*commerce_id, external_id.as_str()), Upserted { id: *id, inserted: *inserted })
        })
        .collect();
    Ok(u.commerce_id
        .iter()
        .zip(&u.external_id)
        .map(|(c, e)| *by_key.get(&(*c, *e)).expect(EVERY_ROW_RETURNED))
        .collect())
}

/// Sets `roles` and `is_active` on the updated users that the upsert left to
/// it.
pub(super) async fn set_user_flags(
    conn: &mut PgConnection,
    tenant: TenantId,
    flags: &Flags,
) -> Result<(), sqlx::Error> {
    if flags.id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE commerce_users u SET \
           roles = COALESCE(string_to_array(i.roles, ','), u.roles), \
           is_active = COALESCE(i.is_active, u.is_active) \
         FROM unnest($2::uuid[], $3::text[], $4::bool[]) AS i(id, roles, is_active) \
         WHERE u.tenant_id = $1 AND u.id = i.id",
    )
    .bind(tenant)
    .bind(&flags.id)
    .bind(&flags.roles)
    .bind(&flags.is_active)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the contacts of the users that sent some.
pub(super) async fn replace_contacts(
    conn: &mut PgConnection,
    tenant: TenantId,
    c: &Contacts<'_>,
) -> Result<(), sqlx::Error> {
    if c.replaced.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM commerce_user_contacts WHERE tenant_id = $1 AND commerce_user_id = ANY($2)")
        .bind(tenant)
        .bind(&c.replaced)
        .execute(&mut *conn)
        .await?;
    if c.user_id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"
        INSERT INTO commerce_user_contacts (tenant_id, id, commerce_user_id, contact_type, value, is_primary, position)
        SELECT $1, reten_uuid_v7(), c.*
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bool[], $6::int4[]) AS c
        "#,
    )
    .bind(tenant)
    .bind(&c.user_id)
    .bind(&c.contact_type)
    .bind(&c.value)
    .bind(&c.is_primary)
    .bind(&c.position)
    .execute(conn)
    .await?;
    Ok(())
}

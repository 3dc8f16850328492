//! `POST /api/commerces/sync`: commerces, addresses, users, roles and
//! contacts upserted by external id, all in one transaction.

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::domain::TenantId;
use crate::domain::commerce::{SyncCommerce, SyncRequest};

/// The outcome of a sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub created: u64,
    pub updated: u64,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("items[{index}].tax_id '{tax_id}' is already used by another commerce")]
    TaxIdTaken { index: usize, tax_id: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates or updates every commerce of the request, in one transaction.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, items = req.items.len()))]
pub async fn sync(pool: &PgPool, tenant: TenantId, req: &SyncRequest) -> Result<SyncCounts, SyncError> {
    let mut tx = pool.begin().await?;
    let mut counts = SyncCounts::default();
    for (index, item) in req.items.iter().enumerate() {
        let inserted = upsert_commerce(&mut tx, tenant, index, item).await?;
        if inserted { counts.created += 1 } else { counts.updated += 1 }
    }
    tx.commit().await?;
    Ok(counts)
}

async fn upsert_commerce(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    index: usize,
    item: &SyncCommerce,
) -> Result<bool, SyncError> {
    let (id, inserted): (Uuid, bool) = sqlx::query_as(
        r#"
        INSERT INTO commerces (tenant_id, id, external_id, name, tax_id, global_external_id, is_active, metadata)
        VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, true), COALESCE($8, '{}'::jsonb))
        ON CONFLICT (tenant_id, external_id) DO UPDATE SET
          name = EXCLUDED.name,
          tax_id = COALESCE($5, commerces.tax_id),
          global_external_id = COALESCE($6, commerces.global_external_id),
          is_active = COALESCE($7, commerces.is_active),
          metadata = commerces.metadata || COALESCE($8, '{}'::jsonb),
          updated_at = now()
        RETURNING id, (xmax = 0) AS inserted
        "#,
    )
    .bind(tenant)
    .bind(Uuid::new_v4())
    .bind(&item.external_id)
    .bind(&item.name)
    .bind(&item.tax_id)
    .bind(&item.global_external_id)
    .bind(item.is_active)
    .bind(item.metadata.as_ref().map(|m| Json(m.clone())))
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match super::violated_constraint(&e) {
        Some("commerces_tax_id_key") => {
            SyncError::TaxIdTaken { index, tax_id: item.tax_id.clone().unwrap_or_default() }
        }
        _ => SyncError::Db(e),
    })?;

    if let Some(addresses) = &item.addresses {
        sqlx::query("DELETE FROM commerce_addresses WHERE tenant_id = $1 AND commerce_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        if !addresses.is_empty() {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO commerce_addresses (tenant_id, id, commerce_id, address_alias, is_primary, country_code, \
                 region, commune, city, street, street_number, unit, formatted_address, latitude, longitude, \
                 source_ref, position) ",
            );
            qb.push_values(addresses.iter().enumerate(), |mut b, (pos, a)| {
                b.push_bind(tenant)
                    .push_bind(Uuid::new_v4())
                    .push_bind(id)
                    .push_bind(&a.address_alias)
                    .push_bind(a.is_primary)
                    .push_bind(&a.country_code)
                    .push_bind(&a.region)
                    .push_bind(&a.commune)
                    .push_bind(&a.city)
                    .push_bind(&a.street)
                    .push_bind(&a.street_number)
                    .push_bind(&a.unit)
                    .push_bind(&a.formatted_address)
                    .push_bind(a.latitude)
                    .push_bind(a.longitude)
                    .push_bind(&a.source_ref)
                    .push_bind(pos as i32);
            });
            qb.build().execute(&mut **tx).await?;
        }
    }

    for (pos, user) in item.users.iter().flatten().enumerate() {
        let roles: Option<Vec<&str>> = user.roles.as_ref().map(|r| r.iter().map(|r| r.as_str()).collect());
        let user_id: Uuid = sqlx::query_scalar(
            r#"
            INSERT INTO commerce_users (tenant_id, id, commerce_id, external_id, name, roles, is_active, position)
            VALUES ($1, $2, $3, $4, $5, COALESCE($6, '{}'::text[]), COALESCE($7, true), $8)
            ON CONFLICT (tenant_id, commerce_id, external_id) DO UPDATE SET
              name = COALESCE($5, commerce_users.name),
              roles = COALESCE($6, commerce_users.roles),
              is_active = COALESCE($7, commerce_users.is_active),
              position = $8,
              updated_at = now()
            RETURNING id
            "#,
        )
        .bind(tenant)
        .bind(Uuid::new_v4())
        .bind(id)
        .bind(&user.external_id)
        .bind(&user.name)
        .bind(roles)
        .bind(user.is_active)
        .bind(pos as i32)
        .fetch_one(&mut **tx)
        .await?;

        if let Some(contacts) = &user.contacts {
            sqlx::query("DELETE FROM commerce_user_contacts WHERE tenant_id = $1 AND commerce_user_id = $2")
                .bind(tenant)
                .bind(user_id)
                .execute(&mut **tx)
                .await?;
            if !contacts.is_empty() {
                let mut qb = QueryBuilder::<Postgres>::new(
                    "INSERT INTO commerce_user_contacts (tenant_id, id, commerce_user_id, contact_type, value, \
                     is_primary, position) ",
                );
                qb.push_values(contacts.iter().enumerate(), |mut b, (cpos, c)| {
                    b.push_bind(tenant)
                        .push_bind(Uuid::new_v4())
                        .push_bind(user_id)
                        .push_bind(c.contact_type.as_str())
                        .push_bind(&c.value)
                        .push_bind(c.is_primary)
                        .push_bind(cpos as i32);
                });
                qb.build().execute(&mut **tx).await?;
            }
        }
    }
    Ok(inserted)
}

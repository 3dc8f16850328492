//! `POST /api/commerces/sync`: commerces, addresses, users, roles and
//! contacts upserted by external id, all in one transaction.
//!
//! A batch is written set by set, not item by item: one upsert of every
//! commerce, one replacement of the addresses that were sent, one upsert of
//! every user, one replacement of the contacts that were sent. A sync of
//! 1,000 commerces is six round trips, not thousands (two more when only
//! some items send `is_active` or `roles`: see `columns::Sent`).
//!
//! Rules, as the API documents them:
//! - all or nothing: any failure rolls the whole batch back;
//! - commerces are matched on `external_id`, users on (commerce,
//!   `external_id`); a sync never deletes a commerce or a user;
//! - `addresses`, `roles` and `contacts`, when sent (even empty), replace
//!   the stored ones; when absent, they are kept;
//! - `metadata` is merged into the stored object (`||`);
//! - an absent `tax_id`, `global_external_id`, `is_active` or user `name`
//!   keeps the stored value; a new row gets `is_active = true`, `{}`, `[]`;
//! - addresses, users and contacts keep the order they were sent in
//!   (`position`).

mod columns;
mod statements;
mod tax_id;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use self::columns::{Addresses, Commerces, Contacts, Flags, Upserted, Users};
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
/// The request's external ids are unique (`SyncRequest::validate`).
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, items = req.items.len()))]
pub async fn sync(pool: &PgPool, tenant: TenantId, req: &SyncRequest) -> Result<SyncCounts, SyncError> {
    let mut tx = pool.begin().await?;
    match write(&mut tx, tenant, &req.items).await {
        Ok(counts) => {
            tx.commit().await?;
            Ok(counts)
        }
        Err(e) if super::violated_constraint(&e) == Some("commerces_tax_id_key") => {
            tx.rollback().await?;
            // A clash a concurrent change has since resolved cannot be named;
            // it stays the database error it was.
            match tax_id::first_clash(pool, tenant, &req.items).await? {
                Some((index, tax_id)) => Err(SyncError::TaxIdTaken { index, tax_id }),
                None => Err(SyncError::Db(e)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the batch: commerces, their addresses, their users, the users'
/// contacts.
async fn write(conn: &mut PgConnection, tenant: TenantId, items: &[SyncCommerce]) -> Result<SyncCounts, sqlx::Error> {
    let columns = Commerces::new(items);
    let commerces = statements::upsert_commerces(conn, tenant, &columns).await?;
    statements::set_commerce_flags(conn, tenant, &Flags::of_commerces(&columns, &commerces)).await?;
    let commerce_ids = ids(&commerces);
    statements::replace_addresses(conn, tenant, &Addresses::new(items, &commerce_ids)).await?;

    let users = Users::new(items, &commerce_ids);
    let upserted_users = statements::upsert_users(conn, tenant, &users).await?;
    statements::set_user_flags(conn, tenant, &Flags::of_users(&users, &upserted_users)).await?;
    statements::replace_contacts(conn, tenant, &Contacts::new(&users, &ids(&upserted_users))).await?;

    let created = commerces.iter().filter(|c| c.inserted).count() as u64;
    Ok(SyncCounts { created, updated: commerces.len() as u64 - created })
}

fn ids(rows: &[Upserted]) -> Vec<Uuid> {
    rows.iter().map(|r| r.id).collect()
}

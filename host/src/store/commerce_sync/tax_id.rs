//! Which item of a sync took a tax id that was not free.
//!
//! The commerces of a batch are upserted by one statement, and a broken
//! `commerces_tax_id_key` does not say which of its rows broke it. The
//! statement writes its rows in request order, so it fails exactly where
//! writing the items one by one would: this module replays that order over
//! the stored owners of the batch's tax ids and names the first item whose
//! tax id was still held by another commerce.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::domain::TenantId;
use crate::domain::commerce::SyncCommerce;

/// The first item whose tax id another commerce holds when its turn comes,
/// read after the failed transaction rolled back: its index and tax id.
/// `None` when the clash is gone (a concurrent change freed the tax id).
pub(super) async fn first_clash(
    pool: &PgPool,
    tenant: TenantId,
    items: &[SyncCommerce],
) -> Result<Option<(usize, String)>, sqlx::Error> {
    let tax_ids: Vec<&str> = items.iter().filter_map(|i| i.tax_id.as_deref()).collect();
    let external_ids: Vec<&str> = items.iter().map(|i| i.external_id.as_str()).collect();
    let stored: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT external_id, tax_id FROM commerces \
         WHERE tenant_id = $1 AND (tax_id = ANY($2) OR external_id = ANY($3))",
    )
    .bind(tenant)
    .bind(&tax_ids)
    .bind(&external_ids)
    .fetch_all(pool)
    .await?;
    Ok(replay(items, &stored).map(|index| (index, items[index].tax_id.clone().unwrap_or_default())))
}

/// Writes the items in order over `stored` (`external_id`, `tax_id`) the way
/// the upsert does (an absent tax id keeps the stored one) and returns the
/// first item that takes a tax id another commerce holds.
fn replay(items: &[SyncCommerce], stored: &[(String, Option<String>)]) -> Option<usize> {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut held: HashMap<&str, &str> = HashMap::new();
    for (external_id, tax_id) in stored {
        if let Some(tax_id) = tax_id {
            owner.insert(tax_id, external_id);
            held.insert(external_id, tax_id);
        }
    }
    for (index, item) in items.iter().enumerate() {
        let Some(tax_id) = item.tax_id.as_deref() else { continue };
        let external_id = item.external_id.as_str();
        if owner.get(tax_id).is_some_and(|&o| o != external_id) {
            return Some(index);
        }
        if let Some(previous) = held.insert(external_id, tax_id) {
            owner.remove(previous);
        }
        owner.insert(tax_id, external_id);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::commerce::SyncRequest;
    use serde_json::json;

    fn items(pairs: &[(&str, Option<&str>)]) -> Vec<SyncCommerce> {
        let items: Vec<_> = pairs.iter().map(|(e, t)| json!({"external_id": e, "name": "x", "tax_id": t})).collect();
        serde_json::from_value::<SyncRequest>(json!({ "items": items })).unwrap().items
    }

    fn stored(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(e, t)| (e.to_string(), Some(t.to_string()))).collect()
    }

    #[test]
    fn a_tax_id_twice_in_one_batch_names_the_second_item() {
        let batch = items(&[("c-1", Some("T")), ("c-2", Some("U")), ("c-3", Some("T"))]);
        assert_eq!(replay(&batch, &[]), Some(2));
    }

    #[test]
    fn a_tax_id_held_by_a_stored_commerce_names_the_item_that_takes_it() {
        let batch = items(&[("c-2", Some("U")), ("c-3", Some("T"))]);
        assert_eq!(replay(&batch, &stored(&[("c-1", "T")])), Some(1));
    }

    #[test]
    fn a_commerce_keeps_or_resends_its_own_tax_id() {
        let batch = items(&[("c-1", Some("T")), ("c-2", None)]);
        assert_eq!(replay(&batch, &stored(&[("c-1", "T"), ("c-2", "U")])), None);
    }

    #[test]
    fn a_tax_id_freed_earlier_in_the_batch_may_be_taken_later() {
        let moved_first = items(&[("c-1", Some("U")), ("c-2", Some("T"))]);
        assert_eq!(replay(&moved_first, &stored(&[("c-1", "T")])), None);
        let taken_first = items(&[("c-2", Some("T")), ("c-1", Some("U"))]);
        assert_eq!(replay(&taken_first, &stored(&[("c-1", "T")])), Some(0));
    }
}

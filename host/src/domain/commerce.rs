//! Commerces, their users, contacts and addresses: as loaded for resolution,
//! and as sent by `POST /api/commerces/sync` and `PATCH /api/commerces/:id`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::validation::{Errors, FieldError};
use super::{ActivityId, Channel, CommerceId, CommerceUserId, ContactType, UserRole};

/// At most this many commerces in one sync request.
pub const MAX_SYNC_ITEMS: usize = 1_000;

/// A commerce with everyone who works there: what resolution looks at.
/// Serialised, it is the `commerce` of a policy's input (`snake_case`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commerce {
    pub id: CommerceId,
    pub external_id: String,
    pub name: String,
    pub tax_id: Option<String>,
    pub global_external_id: Option<String>,
    pub is_active: bool,
    pub metadata: Map<String, Value>,
    /// Active addresses, the primary one first.
    pub addresses: Vec<Address>,
    /// Every user, in a stable order (sync order).
    pub users: Vec<CommerceUser>,
}

impl Commerce {
    /// The user with this id, if they belong to this commerce.
    pub fn user(&self, id: CommerceUserId) -> Option<&CommerceUser> {
        self.users.iter().find(|u| u.id == id)
    }
}

/// A person at a commerce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommerceUser {
    pub id: CommerceUserId,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub is_active: bool,
    pub roles: Vec<UserRole>,
    /// Active contacts only.
    pub contacts: Vec<Contact>,
}

impl CommerceUser {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: UserRole) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the activity can reach this user on `channel`: the user is
    /// active and has a contact the channel can use.
    pub fn reachable_on(&self, channel: Channel) -> bool {
        let types: Vec<ContactType> = self.contacts.iter().map(|c| c.contact_type).collect();
        self.is_active && channel.reaches(&types)
    }
}

/// One way to reach a commerce user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(rename = "type")]
    pub contact_type: ContactType,
    pub value: String,
    pub is_primary: bool,
}

/// A postal address of a commerce.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    pub address_alias: Option<String>,
    pub street: Option<String>,
    pub street_number: Option<String>,
    pub unit: Option<String>,
    pub city: Option<String>,
    pub commune: Option<String>,
    pub region: Option<String>,
    pub country_code: Option<String>,
    pub formatted_address: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub is_primary: bool,
}

/// When a commerce user was last the target of an activity, on one channel
/// (`channel: None` covers all channels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub commerce_user_id: CommerceUserId,
    pub channel: Option<Channel>,
    pub activity_id: ActivityId,
    #[serde(with = "super::time::millis")]
    pub last_targeted_at: DateTime<Utc>,
}

/// Adds, for each user, the entry that covers all channels: the most recent
/// of their per-channel entries.
pub fn with_overall_history(mut per_channel: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    per_channel.sort_by(|a, b| {
        (a.commerce_user_id, std::cmp::Reverse(a.last_targeted_at))
            .cmp(&(b.commerce_user_id, std::cmp::Reverse(b.last_targeted_at)))
    });
    let mut out = Vec::with_capacity(per_channel.len() * 2);
    let mut last_user = None;
    for entry in &per_channel {
        if last_user != Some(entry.commerce_user_id) {
            last_user = Some(entry.commerce_user_id);
            out.push(HistoryEntry { channel: None, ..entry.clone() });
        }
    }
    out.extend(per_channel);
    out
}

/// Splits a display name the way the documented `firstName`/`lastName` shape
/// wants it: "Maria Gonzalez" → ("Maria", "Gonzalez").
pub fn split_name(name: Option<&str>) -> (Option<String>, Option<String>) {
    match name.map(str::trim) {
        Some(n) if !n.is_empty() => match n.split_once(char::is_whitespace) {
            Some((first, last)) => (Some(first.to_owned()), Some(last.trim().to_owned())),
            None => (Some(n.to_owned()), None),
        },
        _ => (None, None),
    }
}

/// The body of `POST /api/commerces/sync`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"items": [{
    "external_id": "c-1",
    "name": "Almacén Don Pepe",
    "tax_id": "76.123.456-7",
    "metadata": {"segment": "gold"},
    "addresses": [{"street": "Av. Siempre Viva", "street_number": "742", "city": "Santiago", "is_primary": true}],
    "users": [{"external_id": "u-maria", "name": "Maria Gonzalez", "roles": ["OWNER"],
               "contacts": [{"contact_type": "WHATSAPP", "value": "+56911111111", "is_primary": true}]}]
}]}))]
pub struct SyncRequest {
    /// 1 to 1,000 commerces, each `external_id` once.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<SyncCommerce>,
}

/// One commerce to create or update, matched on `external_id`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncCommerce {
    /// The commerce's id in the tenant's systems: the key of the upsert.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub external_id: String,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub name: String,
    #[serde(default)]
    pub global_external_id: Option<String>,
    #[serde(default)]
    pub tax_id: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Merged into the stored metadata.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// When present, replaces the commerce's addresses.
    #[serde(default)]
    pub addresses: Option<Vec<SyncAddress>>,
    /// When present, each user is created or updated by `external_id`; users
    /// not listed are kept.
    #[serde(default)]
    pub users: Option<Vec<SyncUser>>,
}

/// An address in a sync item.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncAddress {
    #[serde(default)]
    pub address_alias: Option<String>,
    #[serde(default)]
    pub is_primary: bool,
    #[serde(default)]
    pub country_code: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub commune: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub street: Option<String>,
    #[serde(default)]
    pub street_number: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub formatted_address: Option<String>,
    #[serde(default)]
    #[schema(minimum = -90, maximum = 90)]
    pub latitude: Option<f64>,
    #[serde(default)]
    #[schema(minimum = -180, maximum = 180)]
    pub longitude: Option<f64>,
    #[serde(default)]
    pub source_ref: Option<String>,
}

/// A commerce user in a sync item, matched on `external_id`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncUser {
    /// The user's id in the tenant's systems, once per commerce.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub external_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
    /// When present, replaces the user's roles.
    #[serde(default)]
    pub roles: Option<Vec<UserRole>>,
    /// When present, replaces the user's contacts.
    #[serde(default)]
    pub contacts: Option<Vec<SyncContact>>,
}

/// A contact in a sync item.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncContact {
    /// Also accepted as `type`, the name the policy input and fixtures use.
    #[serde(alias = "type")]
    pub contact_type: ContactType,
    #[schema(min_length = 1, max_length = 320, pattern = r"\S")]
    pub value: String,
    #[serde(default)]
    pub is_primary: bool,
}

impl SyncRequest {
    /// Checks what serde cannot: sizes, blanks and duplicates, listing every
    /// problem.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        if self.items.is_empty() {
            errors.add("items", "must not be empty");
        }
        if self.items.len() > MAX_SYNC_ITEMS {
            errors.add("items", format!("must have at most {MAX_SYNC_ITEMS} items (got {})", self.items.len()));
        }
        let mut external_ids = BTreeSet::new();
        for (i, item) in self.items.iter().enumerate() {
            let p = format!("items[{i}]");
            check_text(&mut errors, &format!("{p}.external_id"), &item.external_id, 255);
            check_text(&mut errors, &format!("{p}.name"), &item.name, 500);
            if !external_ids.insert(item.external_id.as_str()) {
                errors.add(format!("{p}.external_id"), format!("'{}' appears twice in this request", item.external_id));
            }
            if let Some(addresses) = &item.addresses {
                for (j, a) in addresses.iter().enumerate() {
                    if a.latitude.is_some_and(|l| !(-90.0..=90.0).contains(&l)) {
                        errors.add(format!("{p}.addresses[{j}].latitude"), "must be between -90 and 90");
                    }
                    if a.longitude.is_some_and(|l| !(-180.0..=180.0).contains(&l)) {
                        errors.add(format!("{p}.addresses[{j}].longitude"), "must be between -180 and 180");
                    }
                }
            }
            let mut user_ids = BTreeSet::new();
            for (j, user) in item.users.iter().flatten().enumerate() {
                let up = format!("{p}.users[{j}]");
                check_text(&mut errors, &format!("{up}.external_id"), &user.external_id, 255);
                if !user_ids.insert(user.external_id.as_str()) {
                    errors.add(
                        format!("{up}.external_id"),
                        format!("'{}' appears twice in this commerce", user.external_id),
                    );
                }
                for (k, contact) in user.contacts.iter().flatten().enumerate() {
                    check_text(&mut errors, &format!("{up}.contacts[{k}].value"), &contact.value, 320);
                }
            }
        }
        errors.finish(())
    }
}

fn check_text(errors: &mut Errors, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        errors.add(field, "must not be empty");
    } else if value.chars().count() > max {
        errors.add(field, format!("must be at most {max} characters"));
    }
}

/// The body of `PATCH /api/commerces/:id`. Absent fields are left alone; a
/// `null` clears an optional field.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Almacén Don Pepe SpA", "tax_id": null, "metadata": {"segment": "platinum"}}))]
pub struct CommercePatch {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    pub tax_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub global_external_id: Option<Option<String>>,
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Merged: new keys added, existing keys overwritten, absent keys kept.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

impl CommercePatch {
    /// Checks the values serde accepted.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        if let Some(name) = &self.name {
            check_text(&mut errors, "name", name, 500);
        }
        if let Some(Some(tax_id)) = &self.tax_id {
            check_text(&mut errors, "tax_id", tax_id, 64);
        }
        errors.finish(())
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overall_history_is_the_latest_channel_entry_per_user() {
        let user = CommerceUserId::new();
        let at = |s: &str| crate::domain::time::parse(s).unwrap();
        let entries = vec![
            HistoryEntry {
                commerce_user_id: user,
                channel: Some(Channel::Email),
                activity_id: ActivityId::new(),
                last_targeted_at: at("2025-01-01T00:00:00Z"),
            },
            HistoryEntry {
                commerce_user_id: user,
                channel: Some(Channel::Sms),
                activity_id: ActivityId::new(),
                last_targeted_at: at("2025-02-01T00:00:00Z"),
            },
        ];
        let all = with_overall_history(entries);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].channel, None);
        assert_eq!(all[0].last_targeted_at, at("2025-02-01T00:00:00Z"));
    }

    #[test]
    fn sync_validation_reports_duplicates_and_blanks() {
        let req: SyncRequest = serde_json::from_value(json!({"items": [
            {"external_id": "c-1", "name": "A", "users": [{"external_id": "u"}, {"external_id": "u"}]},
            {"external_id": "c-1", "name": " "}
        ]}))
        .unwrap();
        let fields: Vec<String> = req.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["items[0].users[1].external_id", "items[1].name", "items[1].external_id"]);
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: CommercePatch = serde_json::from_value(json!({"tax_id": null})).unwrap();
        assert_eq!(p.tax_id, Some(None));
        assert_eq!(p.global_external_id, None);
    }
}

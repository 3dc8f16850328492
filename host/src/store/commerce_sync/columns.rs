//! A sync request turned into columns: one array per column, in request
//! order. Each statement of a sync binds whole arrays and `unnest`s them, so
//! a batch costs the same handful of round trips at 1 item or at 1,000.

use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::commerce::{SyncCommerce, SyncUser};

/// Which rows of a batch sent an optional column that has a default on
/// insert (`is_active`, `roles`).
///
/// An upsert's `DO UPDATE` sees the row the insert proposed, where a value
/// the request left out is already the default: it cannot tell the two
/// apart. When every row (or no row) sent the column, the statement itself
/// takes (or keeps) it; only a batch where some rows sent it leaves it to a
/// second statement over those rows ([`Flags`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Sent {
    Everywhere,
    #[default]
    Nowhere,
    Partly,
}

impl Sent {
    fn of<T>(values: &[Option<T>]) -> Self {
        match values.iter().filter(|v| v.is_some()).count() {
            n if n == values.len() => Sent::Everywhere,
            0 => Sent::Nowhere,
            _ => Sent::Partly,
        }
    }

    /// The value the second statement must still write.
    fn left_over<T: Clone>(self, value: &Option<T>) -> Option<T> {
        if self == Sent::Partly { value.clone() } else { None }
    }
}

/// The commerces of a request, one entry per item.
pub(super) struct Commerces<'a> {
    pub external_id: Vec<&'a str>,
    pub name: Vec<&'a str>,
    pub tax_id: Vec<Option<&'a str>>,
    pub global_external_id: Vec<Option<&'a str>>,
    pub is_active: Vec<Option<bool>>,
    pub is_active_sent: Sent,
    pub metadata: Vec<Option<Json<&'a Map<String, Value>>>>,
}

impl<'a> Commerces<'a> {
    pub fn new(items: &'a [SyncCommerce]) -> Self {
        let is_active: Vec<_> = items.iter().map(|i| i.is_active).collect();
        Self {
            external_id: items.iter().map(|i| i.external_id.as_str()).collect(),
            name: items.iter().map(|i| i.name.as_str()).collect(),
            tax_id: items.iter().map(|i| i.tax_id.as_deref()).collect(),
            global_external_id: items.iter().map(|i| i.global_external_id.as_deref()).collect(),
            is_active_sent: Sent::of(&is_active),
            is_active,
            metadata: items.iter().map(|i| i.metadata.as_ref().map(Json)).collect(),
        }
    }
}

/// What the database did with one row of an upsert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Upserted {
    pub id: Uuid,
    pub inserted: bool,
}

/// The `is_active` and `roles` the upsert left to a second statement (see
/// [`Sent`]): for rows that already existed and sent them, in a batch where
/// only some rows did. `None` keeps the stored value.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Flags {
    pub id: Vec<Uuid>,
    pub is_active: Vec<Option<bool>>,
    /// Roles as `roles_text` encodes them; always `None` for commerces.
    pub roles: Vec<Option<String>>,
}

impl Flags {
    fn push(&mut self, row: Upserted, is_active: Option<bool>, roles: Option<String>) {
        if !row.inserted && (is_active.is_some() || roles.is_some()) {
            self.id.push(row.id);
            self.is_active.push(is_active);
            self.roles.push(roles);
        }
    }

    /// `rows[i]` is what the upsert did with `commerces`' row `i`.
    pub fn of_commerces(commerces: &Commerces<'_>, rows: &[Upserted]) -> Self {
        let mut flags = Self::default();
        for (is_active, row) in commerces.is_active.iter().zip(rows) {
            flags.push(*row, commerces.is_active_sent.left_over(is_active), None);
        }
        flags
    }

    /// `rows[i]` is what the upsert did with `users`' row `i`.
    pub fn of_users(users: &Users<'_>, rows: &[Upserted]) -> Self {
        let mut flags = Self::default();
        for ((is_active, roles), row) in users.is_active.iter().zip(&users.roles).zip(rows) {
            flags.push(*row, users.is_active_sent.left_over(is_active), users.roles_sent.left_over(roles));
        }
        flags
    }
}

/// The addresses of the commerces that sent some: those commerces lose
/// their stored addresses and get these.
#[derive(Debug, Default)]
pub(super) struct Addresses<'a> {
    /// The commerces whose addresses are replaced (an empty list counts).
    pub replaced: Vec<Uuid>,
    pub commerce_id: Vec<Uuid>,
    pub address_alias: Vec<Option<&'a str>>,
    pub is_primary: Vec<bool>,
    pub country_code: Vec<Option<&'a str>>,
    pub region: Vec<Option<&'a str>>,
    pub commune: Vec<Option<&'a str>>,
    pub city: Vec<Option<&'a str>>,
    pub street: Vec<Option<&'a str>>,
    pub street_number: Vec<Option<&'a str>>,
    pub unit: Vec<Option<&'a str>>,
    pub formatted_address: Vec<Option<&'a str>>,
    pub latitude: Vec<Option<f64>>,
    pub longitude: Vec<Option<f64>>,
    pub source_ref: Vec<Option<&'a str>>,
    /// The address's index in its commerce's list.
    pub position: Vec<i32>,
}

impl<'a> Addresses<'a> {
    /// `commerce_ids[i]` is the id of `items[i]`.
    pub fn new(items: &'a [SyncCommerce], commerce_ids: &[Uuid]) -> Self {
        let mut out = Self::default();
        for (item, &commerce_id) in items.iter().zip(commerce_ids) {
            let Some(addresses) = &item.addresses else { continue };
            out.replaced.push(commerce_id);
            for (position, a) in addresses.iter().enumerate() {
                out.commerce_id.push(commerce_id);
                out.address_alias.push(a.address_alias.as_deref());
                out.is_primary.push(a.is_primary);
                out.country_code.push(a.country_code.as_deref());
                out.region.push(a.region.as_deref());
                out.commune.push(a.commune.as_deref());
                out.city.push(a.city.as_deref());
                out.street.push(a.street.as_deref());
                out.street_number.push(a.street_number.as_deref());
                out.unit.push(a.unit.as_deref());
                out.formatted_address.push(a.formatted_address.as_deref());
                out.latitude.push(a.latitude);
                out.longitude.push(a.longitude);
                out.source_ref.push(a.source_ref.as_deref());
                out.position.push(position as i32);
            }
        }
        out
    }
}

/// Every user of every item, flattened in request order.
#[derive(Debug, Default)]
pub(super) struct Users<'a> {
    /// The users as sent, for their contacts and flags.
    pub sent: Vec<&'a SyncUser>,
    pub commerce_id: Vec<Uuid>,
    pub external_id: Vec<&'a str>,
    pub name: Vec<Option<&'a str>>,
    pub roles: Vec<Option<String>>,
    pub roles_sent: Sent,
    pub is_active: Vec<Option<bool>>,
    pub is_active_sent: Sent,
    /// The user's index in its commerce's list.
    pub position: Vec<i32>,
}

impl<'a> Users<'a> {
    /// `commerce_ids[i]` is the id of `items[i]`.
    pub fn new(items: &'a [SyncCommerce], commerce_ids: &[Uuid]) -> Self {
        let mut out = Self::default();
        for (item, &commerce_id) in items.iter().zip(commerce_ids) {
            for (position, user) in item.users.iter().flatten().enumerate() {
                out.sent.push(user);
                out.commerce_id.push(commerce_id);
                out.external_id.push(&user.external_id);
                out.name.push(user.name.as_deref());
                out.roles.push(roles_text(user));
                out.is_active.push(user.is_active);
                out.position.push(position as i32);
            }
        }
        out.roles_sent = Sent::of(&out.roles);
        out.is_active_sent = Sent::of(&out.is_active);
        out
    }
}

/// A user's roles as one text, `OWNER,ADMIN`, which SQL turns back into an
/// array with `string_to_array(roles, ',')`. Postgres arrays must be
/// rectangular, so a ragged list of lists cannot be bound as `text[][]`; a
/// role name never holds a comma, and `string_to_array` keeps what the
/// upsert needs: `NULL` (not sent) stays `NULL`, `''` (sent empty) is `{}`.
fn roles_text(user: &SyncUser) -> Option<String> {
    user.roles.as_ref().map(|roles| roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","))
}

/// The contacts of the users that sent some: those users lose their stored
/// contacts and get these.
#[derive(Debug, Default)]
pub(super) struct Contacts<'a> {
    /// The users whose contacts are replaced (an empty list counts).
    pub replaced: Vec<Uuid>,
    pub user_id: Vec<Uuid>,
    pub contact_type: Vec<&'static str>,
    pub value: Vec<&'a str>,
    pub is_primary: Vec<bool>,
    /// The contact's index in its user's list.
    pub position: Vec<i32>,
}

impl<'a> Contacts<'a> {
    /// `user_ids[i]` is the id of `users.sent[i]`.
    pub fn new(users: &Users<'a>, user_ids: &[Uuid]) -> Self {
        let mut out = Self::default();
        for (user, &user_id) in users.sent.iter().zip(user_ids) {
            let Some(contacts) = &user.contacts else { continue };
            out.replaced.push(user_id);
            for (position, c) in contacts.iter().enumerate() {
                out.user_id.push(user_id);
                out.contact_type.push(c.contact_type.as_str());
                out.value.push(&c.value);
                out.is_primary.push(c.is_primary);
                out.position.push(position as i32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::commerce::SyncRequest;
    use serde_json::json;

    fn items() -> Vec<SyncCommerce> {
        let req: SyncRequest = serde_json::from_value(json!({"items": [
            {"external_id": "c-1", "name": "A", "is_active": false,
             "addresses": [{"street": "x"}, {"street": "y", "is_primary": true}],
             "users": [{"external_id": "u-1", "roles": ["OWNER", "ADMIN"],
                        "contacts": [{"contact_type": "PHONE", "value": "1"}]},
                       {"external_id": "u-2", "roles": [], "contacts": []}]},
            {"external_id": "c-2", "name": "B", "addresses": [],
             "users": [{"external_id": "u-1", "is_active": true}]},
            {"external_id": "c-3", "name": "C"}
        ]}))
        .unwrap();
        req.items
    }

    #[test]
    fn positions_count_within_their_commerce_or_user() {
        let items = items();
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let addresses = Addresses::new(&items, &ids);
        assert_eq!(addresses.replaced, [ids[0], ids[1]], "an empty list replaces too; an absent one does not");
        assert_eq!(addresses.commerce_id, [ids[0], ids[0]]);
        assert_eq!(addresses.position, [0, 1]);
        assert_eq!(addresses.street, [Some("x"), Some("y")]);

        let users = Users::new(&items, &ids);
        assert_eq!(users.commerce_id, [ids[0], ids[0], ids[1]]);
        assert_eq!(users.external_id, ["u-1", "u-2", "u-1"]);
        assert_eq!(users.position, [0, 1, 0]);

        let user_ids = [Uuid::from_u128(10), Uuid::from_u128(11), Uuid::from_u128(12)];
        let contacts = Contacts::new(&users, &user_ids);
        assert_eq!(contacts.replaced, [user_ids[0], user_ids[1]]);
        assert_eq!(contacts.user_id, [user_ids[0]]);
        assert_eq!(contacts.contact_type, ["PHONE"]);
    }

    #[test]
    fn roles_keep_not_sent_apart_from_sent_empty() {
        let items = items();
        let users = Users::new(&items, &[Uuid::nil(); 3]);
        assert_eq!(users.roles, [Some("OWNER,ADMIN".to_owned()), Some(String::new()), None]);
    }

    #[test]
    fn flags_name_only_updated_rows_that_sent_a_value_some_rows_left_out() {
        let items = items();
        let old = |n| Upserted { id: Uuid::from_u128(n), inserted: false };
        let new = |n| Upserted { id: Uuid::from_u128(n), inserted: true };

        let commerces = Commerces::new(&items);
        assert_eq!(commerces.is_active_sent, Sent::Partly);
        let flags = Flags::of_commerces(&commerces, &[old(1), old(2), old(3)]);
        assert_eq!(flags.id, [Uuid::from_u128(1)], "only c-1 sent is_active");
        assert_eq!(flags.is_active, [Some(false)]);
        let flags = Flags::of_commerces(&commerces, &[new(1), old(2), old(3)]);
        assert!(flags.id.is_empty(), "an insert took them already");

        let users = Users::new(&items, &[Uuid::nil(); 3]);
        assert_eq!((users.roles_sent, users.is_active_sent), (Sent::Partly, Sent::Partly));
        let flags = Flags::of_users(&users, &[old(10), new(11), old(12)]);
        assert_eq!(flags.id, [Uuid::from_u128(10), Uuid::from_u128(12)]);
        assert_eq!(flags.roles, [Some("OWNER,ADMIN".to_owned()), None]);
        assert_eq!(flags.is_active, [None, Some(true)]);
    }

    #[test]
    fn a_column_every_row_or_no_row_sent_needs_no_second_statement() {
        let req: SyncRequest = serde_json::from_value(json!({"items": [
            {"external_id": "c-1", "name": "A", "is_active": true, "users": [{"external_id": "u", "roles": []}]},
            {"external_id": "c-2", "name": "B", "is_active": false, "users": [{"external_id": "u", "roles": ["OWNER"]}]}
        ]}))
        .unwrap();
        let old = [Upserted { id: Uuid::nil(), inserted: false }; 2];
        let commerces = Commerces::new(&req.items);
        assert_eq!(commerces.is_active_sent, Sent::Everywhere);
        assert_eq!(Flags::of_commerces(&commerces, &old), Flags::default());
        let users = Users::new(&req.items, &[Uuid::nil(); 2]);
        assert_eq!((users.roles_sent, users.is_active_sent), (Sent::Everywhere, Sent::Nowhere));
        assert_eq!(Flags::of_users(&users, &old), Flags::default());
    }
}

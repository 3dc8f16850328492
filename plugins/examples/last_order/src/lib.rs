//! `last_order` — a target criterion: the users with the most recent
//! successful order, newest first.
//!
//! Reads `commerce.metadata.orders`, an array of
//!
//! ```json
//! { "commerce_user_id": "<uuid>", "status": "DELIVERED", "placed_at": "2025-01-10T12:00:00Z" }
//! ```
//!
//! (`user_external_id` may stand for `commerce_user_id`: it is matched against
//! the users' `external-id`). Orders whose `status` is one of
//! `config.statuses` (default `["DELIVERED", "PAID"]`, compared
//! case-insensitively) count; every user with such an order is proposed,
//! ordered by their latest one, newest first. Orders of unknown users and
//! orders without a readable status or timestamp are skipped; no orders means
//! no candidates.
//!
//! Config: `{ "statuses": ["DELIVERED", "PAID"] }`; anything else in it is a
//! bad-config error.
//!
//! Timestamps are parsed by `chrono` without its default features: no clock,
//! so the component still imports nothing.

use chrono::DateTime;
use reten_policy_sdk::prelude::*;
use serde::Deserialize;

/// The criterion's config.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The order statuses that count as successful.
    statuses: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { statuses: vec!["DELIVERED".to_owned(), "PAID".to_owned()] }
    }
}

/// A user's latest successful order.
struct Latest<'a> {
    user_index: usize,
    at: (i64, u32),
    placed_at: &'a str,
}

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    let config: Config = input.config()?;
    let metadata = input.commerce.metadata()?;
    let orders = match metadata.get("orders") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(orders)) => orders,
        Some(_) => {
            return Err(PolicyError::bad_input("commerce metadata `orders` is not an array"));
        }
    };

    let mut latest: Vec<Latest<'_>> = Vec::new();
    for order in orders {
        let Some(status) = order.get("status").and_then(Value::as_str) else {
            continue;
        };
        if !config.statuses.iter().any(|wanted| wanted.eq_ignore_ascii_case(status)) {
            continue;
        }
        let Some(placed_at) = order.get("placed_at").and_then(Value::as_str) else {
            continue;
        };
        let Some(at) = parse_rfc3339(placed_at) else {
            continue;
        };
        let Some(user_index) = user_of(&input.commerce, order) else {
            continue;
        };
        match latest.iter_mut().find(|l| l.user_index == user_index) {
            Some(entry) if entry.at >= at => {}
            Some(entry) => {
                entry.at = at;
                entry.placed_at = placed_at;
            }
            None => latest.push(Latest { user_index, at, placed_at }),
        }
    }

    // Newest first; equal times keep the commerce's user order.
    latest.sort_by(|a, b| b.at.cmp(&a.at).then(a.user_index.cmp(&b.user_index)));
    Ok(latest
        .into_iter()
        .map(|l| {
            Candidate::new(&input.commerce.users[l.user_index].id)
                .with_note(format!("last successful order {}", l.placed_at))
        })
        .collect())
}

/// The index in `commerce.users` of the order's user.
fn user_of(commerce: &Commerce, order: &Value) -> Option<usize> {
    if let Some(id) = order.get("commerce_user_id").and_then(Value::as_str) {
        return commerce.users.iter().position(|user| user.id == id);
    }
    let external_id = order.get("user_external_id").and_then(Value::as_str)?;
    commerce.users.iter().position(|user| user.external_id.as_deref() == Some(external_id))
}

/// Parses an RFC 3339 timestamp (`2025-01-10T12:00:00.123Z`,
/// `2025-01-10T09:00:00-03:00`) into seconds since the Unix epoch and
/// nanoseconds.
fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let at = DateTime::parse_from_rfc3339(text).ok()?;
    Some((at.timestamp(), at.timestamp_subsec_nanos()))
}

reten_policy_sdk::export_criterion!(resolve);

#[cfg(test)]
mod tests;

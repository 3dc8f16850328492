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
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }

    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset * 60;
    Some((seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

reten_policy_sdk::export_criterion!(resolve);

#[cfg(test)]
mod tests;

//! `loyalty_tier` — an attribute resolver: the commerce's loyalty tier.
//!
//! From `commerce.metadata.total_spend` (a number) computes
//! `{"tier": "GOLD" | "SILVER" | "BRONZE", "total_spend": n}`: GOLD from
//! `config.gold` up, SILVER from `config.silver` up, BRONZE below. Without a
//! `total_spend` (or with `null`) there is no value, and the host falls back.
//!
//! Config: `{ "gold": 10000, "silver": 2000 }` (these are the defaults);
//! `silver` above `gold`, or anything else in it, is a bad-config error.

use reten_policy_sdk::prelude::*;
use serde::Deserialize;

/// The attribute's config.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The least spend of a GOLD commerce.
    gold: f64,
    /// The least spend of a SILVER commerce.
    silver: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { gold: 10_000.0, silver: 2_000.0 }
    }
}

fn resolve(input: Input) -> Result<Option<Value>, PolicyError> {
    let config: Config = input.config()?;
    if config.silver > config.gold {
        return Err(PolicyError::bad_config(format!(
            "silver threshold {} is above gold threshold {}",
            config.silver, config.gold
        )));
    }
    let metadata = input.commerce.metadata()?;
    let total_spend = match metadata.get("total_spend") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => {
            return Err(PolicyError::bad_input("commerce metadata `total_spend` is not a number"));
        }
    };
    let spend = total_spend.as_f64().unwrap_or(0.0);
    let tier = if spend >= config.gold {
        "GOLD"
    } else if spend >= config.silver {
        "SILVER"
    } else {
        "BRONZE"
    };
    Ok(Some(json!({ "tier": tier, "total_spend": total_spend })))
}

reten_policy_sdk::export_attribute!(resolve);

#[cfg(test)]
mod tests;

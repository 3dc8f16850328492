//! `role_match_wasm` — a target criterion: a Wasm port of the built-in
//! `ROLE_MATCH`.
//!
//! Proposes the active users holding `config.role`, in the commerce's user
//! order. Used to compare the cost of a Wasm policy with the Rhai and
//! built-in ones.
//!
//! Config: `{ "role": "COMMERCE_REP" }` — required; a role name as the host
//! spells it (`OWNER`, `ORDERS`, `FINANCE`, `ATTENTION`, `ADMIN`,
//! `COMMERCE_REP`, `OTHER`). A missing or unknown role is a bad-config error.

use reten_policy_sdk::prelude::*;
use serde::Deserialize;

/// The criterion's config.
#[derive(Debug, Deserialize)]
struct Config {
    /// The role to match.
    role: String,
}

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    let config: Config = input.config()?;
    let role =
        Role::parse(&config.role).ok_or_else(|| PolicyError::bad_config(format!("unknown role `{}`", config.role)))?;
    Ok(input.commerce.active_users().filter(|user| user.has_role(role)).map(|user| Candidate::new(&user.id)).collect())
}

reten_policy_sdk::export_criterion!(resolve);

#[cfg(test)]
mod tests;

//! `test_log_v2` — a 0.2 criterion that logs three kinds of line, then
//! returns the users holding OWNER: `info` "looking for the owner", `debug`
//! "users: <n>", and `warn` "no owner" when there is none.

use reten_policy_sdk::log;
use reten_policy_sdk::prelude::*;

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    log::info("looking for the owner");
    log::debug(format!("users: {}", input.commerce.users.len()));
    let owners: Vec<Candidate> = input
        .commerce
        .users
        .iter()
        .filter(|user| user.has_role(Role::Owner))
        .map(|user| Candidate::new(&user.id).with_note("owner (0.2)"))
        .collect();
    if owners.is_empty() {
        log::warn("no owner");
    }
    Ok(owners)
}

reten_policy_sdk::export_criterion!(resolve);

//! `test_log_flood` — a 0.2 criterion that writes 2,000 log lines ("line
//! <i>"), then returns the users holding OWNER. The host must keep a bounded
//! number and say how many it dropped.

use reten_policy_sdk::log;
use reten_policy_sdk::prelude::*;

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    for i in 0..2_000 {
        log::info(format!("line {i}"));
    }
    Ok(input
        .commerce
        .users
        .iter()
        .filter(|user| user.has_role(Role::Owner))
        .map(|user| Candidate::new(&user.id).with_note("owner after a flood"))
        .collect())
}

reten_policy_sdk::export_criterion!(resolve);

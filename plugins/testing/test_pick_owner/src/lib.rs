//! `test_pick_owner` — a test criterion: the active users holding OWNER, in
//! input order. Hot-reload tests swap this build with `test_pick_rep`,
//! whose decision differs, and watch the host's answer change.

use reten_policy_sdk::prelude::*;

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    Ok(input
        .commerce
        .active_users()
        .filter(|user| user.has_role(Role::Owner))
        .map(|user| Candidate::new(&user.id).with_note("test_pick_owner"))
        .collect())
}

reten_policy_sdk::export_criterion!(resolve);

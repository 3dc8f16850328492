//! `test_bad_output` — a test criterion that proposes ids that are not users
//! of the commerce: not UUIDs, a path, an empty string, and the nil UUID. The
//! host must drop every one of them (and must not, e.g., use them in a query
//! unchecked).

use reten_policy_sdk::prelude::*;

/// What the criterion proposes, in order.
pub const BAD_IDS: [&str; 4] = ["not-a-user", "../../etc", "", "00000000-0000-0000-0000-000000000000"];

fn resolve(_input: Input) -> Result<Vec<Candidate>, PolicyError> {
    Ok(BAD_IDS.iter().map(|id| Candidate::new(*id).with_note("not a user of the commerce")).collect())
}

reten_policy_sdk::export_criterion!(resolve);

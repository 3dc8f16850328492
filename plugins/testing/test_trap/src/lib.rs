//! `test_trap` — a test criterion that panics. Guests build with
//! `panic = "abort"`, so the panic is a trap the host sees.

use reten_policy_sdk::prelude::*;

fn resolve(_input: Input) -> Result<Vec<Candidate>, PolicyError> {
    panic!("boom")
}

reten_policy_sdk::export_criterion!(resolve);

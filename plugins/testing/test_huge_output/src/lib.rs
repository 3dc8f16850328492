//! `test_huge_output` — a test criterion with a huge answer: 2,000,000
//! candidates with 64-byte ids (128 MB of ids; about 230 MB of guest memory
//! once lowered). The host must refuse it — by its memory cap (a trap) or by
//! its output limits — rather than take it in.

use reten_policy_sdk::prelude::*;

/// How many candidates the criterion returns.
pub const COUNT: usize = 2_000_000;

fn resolve(_input: Input) -> Result<Vec<Candidate>, PolicyError> {
    let mut candidates = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        candidates.push(Candidate::new(format!("{i:064}")));
    }
    Ok(candidates)
}

reten_policy_sdk::export_criterion!(resolve);

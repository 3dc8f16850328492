//! `test_attr_trap` — a test attribute resolver that panics. Guests build with
//! `panic = "abort"`, so the panic is a trap the host sees.

use reten_policy_sdk::prelude::*;

fn resolve(_input: Input) -> Result<Option<Value>, PolicyError> {
    panic!("boom")
}

reten_policy_sdk::export_attribute!(resolve);

//! `test_attr_v2` — a test attribute resolver whose value is always
//! `{"version": 2}`. Hot-reload tests swap this build with `test_attr_v1`
//! and watch the value change.

use reten_policy_sdk::prelude::*;

fn resolve(_input: Input) -> Result<Option<Value>, PolicyError> {
    Ok(Some(json!({ "version": 2 })))
}

reten_policy_sdk::export_attribute!(resolve);

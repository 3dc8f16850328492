//! `test_attr_v1` — a test attribute resolver whose value is always
//! `{"version": 1}`. Hot-reload tests swap this build with `test_attr_v2`
//! and watch the value change.

use reten_policy_sdk::prelude::*;

fn resolve(_input: Input) -> Result<Option<Value>, PolicyError> {
    Ok(Some(json!({ "version": 1 })))
}

reten_policy_sdk::export_attribute!(resolve);

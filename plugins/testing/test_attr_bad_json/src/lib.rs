//! `test_attr_bad_json` — a test attribute resolver whose value is not JSON:
//! `some("{not json")`. The SDK's `export_attribute!` always returns valid
//! JSON, so this one implements the raw bindings' `Guest` itself.

use reten_policy_sdk::bindings::attribute::{self, Guest};
use reten_policy_sdk::{Input, Json, PolicyError};

/// What the resolver returns.
pub const NOT_JSON: &str = "{not json";

struct BadJson;

impl Guest for BadJson {
    fn resolve(_input: Input) -> Result<Option<Json>, PolicyError> {
        Ok(Some(NOT_JSON.to_owned()))
    }
}

attribute::export!(BadJson with_types_in reten_policy_sdk::bindings::attribute);

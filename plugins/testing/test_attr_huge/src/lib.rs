//! `test_attr_huge` — a test attribute resolver whose value is a 20 MiB JSON
//! string (`"xxx…"`). The host must refuse a value that large.
//!
//! It builds the JSON text itself, in one allocation of the exact size, and
//! returns it through the raw bindings: the guest then needs only about
//! 21 MiB of memory, so a host with a modest memory cap sees the huge value
//! (and must refuse it) rather than an out-of-memory trap.

use reten_policy_sdk::bindings::attribute::{self, Guest};
use reten_policy_sdk::{Input, Json, PolicyError};

/// The length of the JSON string's contents, in bytes (its JSON text has 2
/// more: the quotes).
pub const LEN: usize = 20 << 20;

struct Huge;

impl Guest for Huge {
    fn resolve(_input: Input) -> Result<Option<Json>, PolicyError> {
        let mut text = String::with_capacity(LEN + 2);
        text.push('"');
        text.extend(std::iter::repeat_n('x', LEN));
        text.push('"');
        Ok(Some(text))
    }
}

attribute::export!(Huge with_types_in reten_policy_sdk::bindings::attribute);

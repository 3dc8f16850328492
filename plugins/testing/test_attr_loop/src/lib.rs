//! `test_attr_loop` — a test attribute resolver that never returns: it spins
//! forever.
//!
//! The host must stop it at its deadline. `black_box` keeps the optimiser from
//! proving the loop useless.

use core::hint::black_box;
use reten_policy_sdk::prelude::*;

fn resolve(input: Input) -> Result<Option<Value>, PolicyError> {
    let mut spins: u64 = 0;
    loop {
        let users = black_box(&input).commerce.users.len() as u64;
        spins = black_box(spins.wrapping_add(users + 1));
    }
}

reten_policy_sdk::export_attribute!(resolve);

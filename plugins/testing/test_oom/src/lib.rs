//! `test_oom` — a test criterion that allocates without bound.
//!
//! It keeps 1 MiB blocks, writing every byte of each, until an allocation
//! fails (`memory.grow` refused by the host's memory cap), which aborts: a
//! trap.

use core::hint::black_box;
use reten_policy_sdk::prelude::*;

const BLOCK: usize = 1 << 20;

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    // Never zero, so every block is written in full (not left to fresh,
    // zeroed pages).
    let fill = black_box(input.commerce.users.len() as u8) | 1;
    loop {
        hoard.push(black_box(vec![fill; BLOCK]));
    }
}

reten_policy_sdk::export_criterion!(resolve);

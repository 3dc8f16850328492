//! Integration tests: the real router, a fresh Postgres database per test
//! (`#[sqlx::test]`), and real policy files.

#![allow(clippy::unwrap_used)]

mod support;

mod activities;
mod auth;
mod cli;
mod commerces;
mod policy_admin;
mod reload;
mod resolution;
mod validation;
mod wasm;

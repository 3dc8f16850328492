//! Integration tests: the real router, a fresh Postgres database per test
//! (`#[sqlx::test]`), and real policy files.

#![allow(clippy::unwrap_used)]

mod support;

mod activities;
mod auth;
mod commerces;
mod resolution;
mod validation;

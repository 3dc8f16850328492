//! Integration tests: the real router, a fresh Postgres database per test
//! (`#[sqlx::test]`), and real policy files.

#![allow(clippy::unwrap_used)]

mod support;

mod activities;
mod api_keys;
mod auth;
mod auth_hardening;
mod authoring;
mod authoring_cli;
mod cli;
mod commerce_sync;
mod commerces;
mod config_views;
mod demo;
mod dispatch;
mod dispatch_configs;
mod dispatch_fairness;
mod dispatch_replicas;
mod dispatch_schema;
mod fast_pool;
mod hostile;
mod http1;
mod idempotency;
mod isolation;
mod lifecycle;
mod limits;
mod listener;
mod load_sql;
mod openapi;
mod policy_admin;
mod policy_changes;
mod policy_cost;
mod preview;
mod read_only;
mod receiver;
mod reload;
mod replay;
mod replicas;
mod resolution;
mod results;
mod revisions;
mod sandbox;
mod shadow;
mod shutdown;
mod validation;
mod wasm;

//! The Reten host: an axum service that creates activities for a tenant's
//! commerces, with target and attribute resolution delegated to the tenant's
//! policies (Rhai scripts and WebAssembly components).
//!
//! Code map:
//! - [`config`], [`telemetry`], [`startup`]: settings, logging, building and
//!   running the app.
//! - [`api`]: the HTTP boundary — routes, extractors, auth, problem+json.
//! - [`domain`]: ids, enums and request values, parsed once at the edge.
//! - [`resolve`]: target and attribute resolution over a policy snapshot.
//!   Pure: no HTTP, no database.
//! - [`policy`]: the registry of compiled policies, the loaders and engines.
//! - [`rollout`]: safe policy changes — changesets, revisions, restore, and
//!   every replica in step.
//! - [`store`]: Postgres queries, one module per aggregate.
//! - [`dispatch`]: the dispatcher, providers, signing, the SSRF guard and
//!   credentials at rest.

/// mimalloc, not glibc's malloc: a policy call (Rhai clones its input, the
/// Wasm engine lowers it), a compile and a create's JSON allocate and free many
/// small blocks, and malloc and free were a fifth of their profiles. Set here,
/// in the library, so the binary, the tests and the benches all run on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod config;
pub mod console;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod metrics;
pub mod policy;
pub mod resolve;
pub mod rollout;
pub mod startup;
pub mod store;
pub mod telemetry;

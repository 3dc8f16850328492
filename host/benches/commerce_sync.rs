//! `POST /api/commerces/sync` at its documented maximum: 1,000 commerces,
//! each with one address and three users of two contacts, against the real
//! Postgres. Measures what the handler does with a body (parse, validate,
//! store in one transaction): once as 1,000 new commerces, once as a re-sync
//! of the same 1,000 (all updates).
//!
//! The HTTP layer is left out on purpose: this body is ~820 KiB, over the
//! API's 256 KiB body limit, and the layer's cost does not grow with items.
//!
//! Creates (and drops at the end) the scratch database
//! `reten_bench_commerce_sync` on the server of `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Run with
//! `cargo bench -p reten-host --bench commerce_sync`.

use std::str::FromStr;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use reten_host::domain::TenantId;
use reten_host::domain::commerce::SyncRequest;
use reten_host::store::{self, commerce_sync};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

const SCRATCH: &str = "reten_bench_commerce_sync";
const ITEMS: usize = 1_000;

fn server() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url).expect("DATABASE_URL is a Postgres URL")
}

/// Runs one statement on the server's own database (not the scratch one).
async fn admin(sql: &str) {
    let mut conn = PgConnection::connect_with(&server()).await.expect("connect to DATABASE_URL");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
}

/// A fresh, migrated scratch database with one tenant.
async fn scratch() -> (PgPool, TenantId) {
    admin(&format!("DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")).await;
    admin(&format!("CREATE DATABASE {SCRATCH}")).await;
    let pool = PgPoolOptions::new().max_connections(2).connect_with(server().database(SCRATCH)).await.expect("connect");
    store::MIGRATOR.run(&pool).await.expect("migrate");
    let tenant = TenantId::new();
    store::tenants::create(&pool, tenant, "bench", "bench").await.expect("tenant");
    (pool, tenant)
}

/// The JSON body of a sync of `ITEMS` commerces whose external ids and tax
/// ids start with `prefix`.
fn body(prefix: &str) -> Vec<u8> {
    let items: Vec<Value> = (0..ITEMS)
        .map(|i| {
            let users: Vec<Value> = ["OWNER", "COMMERCE_REP", "ORDERS"]
                .iter()
                .enumerate()
                .map(|(j, role)| {
                    json!({
                        "external_id": format!("u-{j}"),
                        "name": format!("User {j} of {i}"),
                        "roles": [role],
                        "contacts": [
                            {"contact_type": "PHONE", "value": format!("+569{i:04}{j:04}"), "is_primary": true},
                            {"contact_type": "EMAIL", "value": format!("u{j}.c{i}@example.com")}
                        ]
                    })
                })
                .collect();
            json!({
                "external_id": format!("{prefix}-c-{i}"),
                "name": format!("Commerce {i}"),
                "tax_id": format!("{prefix}-tax-{i}"),
                "is_active": true,
                "metadata": {"segment": "gold", "n": i},
                "addresses": [{"street": "Av. Siempre Viva", "street_number": format!("{i}"), "city": "Santiago",
                               "is_primary": true}],
                "users": users
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "items": items })).expect("serialise")
}

/// What the handler does with a body: parse, validate, store.
async fn sync(pool: &PgPool, tenant: TenantId, body: &[u8]) -> commerce_sync::SyncCounts {
    let request: SyncRequest = serde_json::from_slice(body).expect("a valid body");
    request.validate().expect("valid items");
    commerce_sync::sync(pool, tenant, &request).await.expect("sync")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (pool, tenant) = rt.block_on(scratch());
    let mut group = c.benchmark_group("commerce_sync");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(15));

    let mut run = 0u64;
    group.bench_function("create_1000_commerces_3_users_2_contacts", |b| {
        b.to_async(&rt).iter_batched(
            || {
                run += 1;
                body(&format!("new{run}"))
            },
            |body| {
                let pool = pool.clone();
                async move { assert_eq!(sync(&pool, tenant, &body).await.created, ITEMS as u64) }
            },
            BatchSize::PerIteration,
        )
    });

    let resync = body("resync");
    rt.block_on(sync(&pool, tenant, &resync));
    group.bench_function("resync_1000_commerces_as_updates", |b| {
        b.to_async(&rt).iter(|| async { assert_eq!(sync(&pool, tenant, &resync).await.updated, ITEMS as u64) })
    });
    group.finish();

    rt.block_on(async {
        pool.close().await;
        admin(&format!("DROP DATABASE {SCRATCH} WITH (FORCE)")).await;
    });
}

criterion_group!(commerce_sync_benches, benches);
criterion_main!(commerce_sync_benches);

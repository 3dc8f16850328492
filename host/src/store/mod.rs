//! Postgres: the pool, the migrations, and one module of queries per
//! aggregate. Every query takes the tenant id and filters on it.
//!
//! Invariant: no query reads or writes a row without `tenant_id = $1` (or a
//! join on it), so one tenant's data never reaches another's request.

pub mod activities;
pub mod api_keys;
pub mod commerce_sync;
pub mod commerces;
pub mod decision_inputs;
pub mod dispatch;
pub mod dispatch_configs;
pub mod dispatch_outcomes;
pub mod fast_pool;
pub mod replays;
pub mod results;
pub mod revisions;
pub mod shadows;
pub mod tenants;
pub mod transitions;
pub mod types;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Settings of the connection pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before it answers 503.
    pub acquire_timeout: Duration,
    /// The longest any one statement may run.
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url).await.context("failed to reach Postgres to check that the database exists")? {
        tracing::info!("creating the database named in DATABASE_URL");
        Postgres::create_database(url).await.context("failed to create the database")?;
    }
    Ok(())
}

/// Opens the pool.
pub async fn connect(url: &str, settings: &PoolSettings) -> anyhow::Result<PgPool> {
    let statement_timeout = settings.statement_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid Postgres URL")?
        .application_name("reten")
        .options([("statement_timeout", statement_timeout.as_str())]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        // A ping before every acquire would double the round trips of a
        // create: ping only connections idle for a while (those a restart
        // of Postgres may have cut); a busy one proves itself by its queries.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_secs(1) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .context("failed to connect to Postgres")
}

/// The create path's pool, with the same connection settings, size, and
/// lifetimes as `pool` (sqlx's defaults: 10 minutes idle, 30 minutes in all).
pub fn fast_pool(pool: &PgPool, settings: &PoolSettings) -> fast_pool::FastPool {
    let options = (*pool.connect_options()).clone();
    let pool_options = pool.options();
    let defaults = fast_pool::FastPoolSettings::default();
    fast_pool::FastPool::new(
        options,
        fast_pool::FastPoolSettings {
            max: settings.max_connections as usize,
            acquire_timeout: settings.acquire_timeout,
            idle_timeout: pool_options.get_idle_timeout().unwrap_or(defaults.idle_timeout),
            max_lifetime: pool_options.get_max_lifetime().unwrap_or(defaults.max_lifetime),
            ..defaults
        },
    )
}

/// Whether Postgres answers a trivial query within `within`.
pub async fn reachable(pool: &PgPool, within: Duration) -> bool {
    tokio::time::timeout(within, sqlx::query("SELECT 1").execute(pool)).await.is_ok_and(|r| r.is_ok())
}

/// The gauges of both pools, for `/metrics`.
pub fn pool_gauges(pool: &PgPool, fast: &fast_pool::FastPool) -> [(&'static str, crate::metrics::PoolGauges); 2] {
    let idle = pool.num_idle();
    let main = crate::metrics::PoolGauges {
        in_use: (pool.size() as usize).saturating_sub(idle),
        idle,
        max: pool.options().get_max_connections() as usize,
    };
    let (in_use, idle) = fast.usage();
    let create = crate::metrics::PoolGauges { in_use, idle, max: fast.max() };
    [("main", main), ("create", create)]
}

/// Applies the pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("failed to apply the migrations")?;
    Ok(())
}

/// The name of the unique or foreign-key constraint a database error broke.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => db.constraint(),
        _ => None,
    }
}

/// One page of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    /// The SQL `OFFSET`.
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }

    /// The SQL `LIMIT`.
    pub fn limit(&self) -> i64 {
        i64::from(self.per_page)
    }
}

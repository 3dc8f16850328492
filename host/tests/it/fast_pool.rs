//! The create path's connection pool: reuse, replacement of cut connections,
//! timeouts, lifetimes, idle trimming, closing, and its size in `/metrics`.

use std::time::Duration;

use axum::http::StatusCode;
use reten_host::store::fast_pool::{FastPool, FastPoolSettings};
use sqlx::PgPool;

use crate::support::TestApp;

fn settings(max: usize, timeout: Duration) -> FastPoolSettings {
    FastPoolSettings { max, acquire_timeout: timeout, ..FastPoolSettings::default() }
}

fn pool_for(pg: &PgPool, max: usize, timeout: Duration) -> FastPool {
    FastPool::new((*pg.connect_options()).clone(), settings(max, timeout))
}

fn pool_with(pg: &PgPool, settings: FastPoolSettings) -> FastPool {
    FastPool::new((*pg.connect_options()).clone(), settings)
}

/// Whether a backend with this pid still runs.
async fn backend_alive(pg: &PgPool, pid: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(pid)
        .fetch_one(pg)
        .await
        .unwrap()
}

/// Waits (bounded) until the backend is gone: a closed connection's backend
/// ends a moment after the client says goodbye.
async fn wait_backend_gone(pg: &PgPool, pid: i32) {
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            poll.tick().await;
            if !backend_alive(pg, pid).await {
                return;
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "backend {pid} still runs 10 s after its connection was closed");
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_connection_is_reused_only_after_done(pg: PgPool) {
    let pool = pool_for(&pg, 2, Duration::from_secs(3));
    let mut conn = pool.acquire().await.unwrap();
    let first = backend_pid(&mut conn).await;
    assert_eq!(pool.usage(), (1, 0), "one handed out, none idle");
    conn.done();
    assert_eq!(pool.usage(), (0, 1), "back in the pool after done");

    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut conn).await, first, "the idle connection is reused");
    drop(conn); // not done: as if cancelled mid-statement
    assert_eq!(pool.usage(), (0, 0), "a connection dropped without done is closed, not pooled");

    let mut conn = pool.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut conn).await, first, "a new connection replaces the closed one");
    conn.done();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_connection_cut_while_idle_is_replaced_not_failed_on(pg: PgPool) {
    let pool =
        pool_with(&pg, FastPoolSettings { check_after_idle: Duration::ZERO, ..settings(1, Duration::from_secs(3)) });
    let mut conn = pool.acquire().await.unwrap();
    let cut = backend_pid(&mut conn).await;
    conn.done();

    let terminated: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)").bind(cut).fetch_one(&pg).await.unwrap();
    assert!(terminated, "the backend ended");

    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    assert_ne!(pid, cut, "the cut connection was pinged, found dead and replaced");
    conn.done();
}

#[sqlx::test(migrations = "../migrations")]
async fn acquire_times_out_when_every_connection_is_busy(pg: PgPool) {
    let pool = pool_for(&pg, 1, Duration::from_millis(50));
    let held = pool.acquire().await.unwrap();
    let err = pool.acquire().await.err().expect("no connection is free");
    assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err:?}");
    held.done();
    pool.acquire().await.expect("free again once the holder is done").done();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_connection_past_its_lifetime_is_replaced_not_reused(pg: PgPool) {
    let pool = pool_with(&pg, FastPoolSettings { max_lifetime: Duration::ZERO, ..settings(1, Duration::from_secs(3)) });
    let mut conn = pool.acquire().await.unwrap();
    let old = backend_pid(&mut conn).await;
    conn.done();
    assert_eq!(pool.usage(), (0, 1));
    let mut conn = pool.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut conn).await, old, "a connection past its lifetime is not handed out again");
    conn.done();
    wait_backend_gone(&pg, old).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn trim_closes_connections_idle_past_the_idle_timeout_and_keeps_fresh_ones(pg: PgPool) {
    let pool = pool_with(&pg, FastPoolSettings { idle_timeout: Duration::ZERO, ..settings(2, Duration::from_secs(3)) });
    let mut conn = pool.acquire().await.unwrap();
    let idle = backend_pid(&mut conn).await;
    conn.done();
    assert_eq!(pool.trim().await, 1, "the idle connection is closed");
    assert_eq!(pool.usage(), (0, 0));
    wait_backend_gone(&pg, idle).await;

    let keep = pool_for(&pg, 2, Duration::from_secs(3));
    keep.acquire().await.unwrap().done();
    assert_eq!(keep.trim().await, 0, "a connection idle for less than ten minutes stays");
    assert_eq!(keep.usage(), (0, 1));
}

#[sqlx::test(migrations = "../migrations")]
async fn close_ends_idle_connections_refuses_acquires_and_drops_those_in_use_on_return(pg: PgPool) {
    let pool = pool_for(&pg, 2, Duration::from_secs(3));
    let mut idle = pool.acquire().await.unwrap();
    let idle_pid = backend_pid(&mut idle).await;
    let mut busy = pool.acquire().await.unwrap();
    let busy_pid = backend_pid(&mut busy).await;
    idle.done();

    pool.close().await;
    assert!(pool.is_closed());
    wait_backend_gone(&pg, idle_pid).await;
    let err = pool.acquire().await.err().expect("a closed pool hands out nothing");
    assert!(matches!(err, sqlx::Error::PoolClosed), "{err:?}");

    busy.done();
    assert_eq!(pool.usage(), (0, 0), "a connection coming back to a closed pool is not kept");
    wait_backend_gone(&pg, busy_pid).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_report_the_create_pools_size_and_its_acquire_waits(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("pool-metrics").await;
    app.create_activity(tenant, &crate::support::seed_body(commerce, "pool-1"))
        .await
        .assert_status(StatusCode::CREATED);
    let res = app.metrics().await;
    let max = app.state.fast.max();
    assert!(res.contains(&format!("reten_db_pool_connections{{pool=\"create\",state=\"max\"}} {max}")), "{res}");
    assert!(res.contains("reten_db_pool_connections{pool=\"create\",state=\"idle\"} 1"), "{res}");
    assert!(res.contains("reten_db_pool_connections{pool=\"create\",state=\"in_use\"} 0"), "{res}");
    assert!(res.contains("reten_db_pool_acquire_seconds_count{outcome=\"ok\"}"), "{res}");
}

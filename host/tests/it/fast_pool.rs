//! The create path's connection pool: reuse, replacement of cut connections, timeouts.

use std::time::Duration;

use reten_host::store::fast_pool::FastPool;
use sqlx::PgPool;

fn pool_for(pg: &PgPool, max: usize, timeout: Duration) -> FastPool {
    FastPool::new((*pg.connect_options()).clone(), max, timeout)
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
    let pool = pool_for(&pg, 1, Duration::from_secs(3)).check_after_idle(Duration::ZERO);
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

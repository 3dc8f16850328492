//! When the dispatcher runs and for whom: a create of a due activity wakes
//! it at once (NOTIFY), one tenant's backlog does not delay another tenant,
//! and the oldest due activity's age is reported per tenant.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reten_host::dispatch::{DispatchMetrics, DispatchSettings};
use serde_json::json;
use sqlx::PgPool;

use crate::dispatch::{dispatching, local, webhook};
use crate::receiver::{Answer, Receiver};
use crate::support::{SECRETS_KEY, TestApp, seed_body, standard_commerce};

/// Waits until a dispatcher listens for NOTIFY on this test's database.
async fn listening(pool: &PgPool) {
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let listeners = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            poll.tick().await;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if n > 0 {
                break;
            }
        }
    });
    listeners.await.expect("the dispatcher listens within 20 s");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_create_of_a_due_activity_wakes_the_dispatcher_without_waiting_for_its_interval(pool: PgPool) {
    // A round a minute: only the create's NOTIFY can bring the send within 2 s.
    let settings = DispatchSettings { interval: Duration::from_secs(60), ..local(2_000, 1_000, 3) };
    let (app, receiver, tenant, commerce) = dispatching(pool.clone(), Answer::Accept, settings).await;
    listening(&pool).await;
    let sent_at = Instant::now();
    app.create_activity(tenant, &seed_body(commerce, "wake-1")).await.assert_status(StatusCode::CREATED);
    receiver.wait_for(1, Duration::from_secs(2)).await;
    assert!(sent_at.elapsed() < Duration::from_secs(2));
}

#[sqlx::test(migrations = "../migrations")]
async fn one_tenants_backlog_does_not_delay_another_tenants_activity(pool: PgPool) {
    // Two sends per tenant at once, 150 ms each: the busy tenant's 200 take
    // about 15 s to drain.
    let settings = DispatchSettings { per_tenant: 2, ..local(2_000, 1_000, 3) };
    let (mut app, receiver, busy, busy_commerce) =
        dispatching(pool, Answer::Hang(Duration::from_millis(150)), settings).await;
    let quiet = app.create_tenant("quiet").await;
    app.sync(quiet, json!([standard_commerce("c-1")])).await.assert_status(StatusCode::CREATED);
    let quiet_commerce = app.commerce_id(quiet, "c-1").await;
    webhook(&app, quiet, "WHATSAPP", &receiver).await;
    if let Some(d) = app.dispatcher.take() {
        d.shutdown(Duration::from_secs(5)).await;
    }
    for n in 0..200 {
        app.create_activity(busy, &seed_body(busy_commerce, &format!("backlog-{n}"))).await;
    }
    app.start_dispatcher();
    receiver.wait_for(10, Duration::from_secs(10)).await;
    let id =
        app.create_activity(quiet, &seed_body(quiet_commerce, "quiet-1")).await.body["id"].as_str().unwrap().to_owned();
    let created = Instant::now();
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            poll.tick().await;
            if receiver.received().iter().any(|r| r.header("idempotency-key").as_deref() == Some(id.as_str())) {
                return created.elapsed();
            }
        }
    })
    .await
    .expect("the quiet tenant's activity was sent within 5 s");
    let busy_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM activities WHERE tenant_id = $1 AND status = 'READY'")
            .bind(busy.0)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(busy_left > 50, "the busy tenant still had a backlog ({busy_left} left)");
    assert!(waited < Duration::from_secs(2), "the quiet tenant waited {waited:?} behind the backlog");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_oldest_due_activitys_age_is_reported_per_tenant(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 1_000, 3), Some(SECRETS_KEY));
    let receiver = Receiver::start(Answer::Accept).await;
    let (tenant, commerce) = app.seeded("oldest").await;
    webhook(&app, tenant, "WHATSAPP", &receiver).await;
    let other = app.create_tenant("idle").await;
    app.create_activity(tenant, &seed_body(commerce, "old-1")).await.assert_status(StatusCode::CREATED);
    sqlx::query("UPDATE activities SET created_at = now() - interval '90 seconds' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(&app.pool)
        .await
        .unwrap();
    let ages = reten_host::store::dispatch::oldest_due(&app.pool).await.unwrap();
    assert_eq!(ages.len(), 1, "only the tenant with a due activity and a config: {ages:?}");
    assert_eq!(ages[0].0, tenant);
    assert!(ages[0].1 >= 90.0, "{ages:?}");
    let registry = prometheus::Registry::new();
    let metrics = DispatchMetrics::new(&registry, true);
    metrics.set_oldest_due(&ages);
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    let line = text.lines().find(|l| l.starts_with("reten_dispatch_oldest_due_seconds{")).unwrap();
    assert!(line.contains(&tenant.to_string()) && !line.contains(&other.to_string()), "{line}");
}

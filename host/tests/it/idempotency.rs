//! Idempotency under pressure: 200 concurrent creates over 20 keys (10 per
//! key, some with a different body under the same key) make exactly 20
//! activities; every other answer is a 409 naming its key's activity; no
//! 5xx, and no activity is half-written.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{TestApp, seed_body};

const KEYS: usize = 20;
const PER_KEY: usize = 10;

/// The body of request `n` for key `k`: every third request under a key
/// differs (another channel, reason and score), the rest are the seed body.
fn body(commerce: Uuid, k: usize, n: usize) -> Value {
    let mut body = seed_body(commerce, &format!("pressure-{k:02}"));
    if n % 3 == 1 {
        body["reason"] = json!(format!("variant {n} of key {k}"));
        body["channel"] = json!("EMAIL");
        body["score"] = json!(n);
    }
    body
}

#[sqlx::test(migrations = "../migrations")]
async fn two_hundred_concurrent_creates_over_twenty_keys_make_exactly_twenty_activities(pool: PgPool) {
    let app = Arc::new(TestApp::new(pool).await);
    let (tenant, commerce) = app.seeded("pressure").await;

    // All 200 start together: each task waits on the barrier, then sends.
    let barrier = Arc::new(tokio::sync::Barrier::new(KEYS * PER_KEY));
    let mut tasks = Vec::new();
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            let (app, barrier) = (app.clone(), barrier.clone());
            let body = body(commerce, k, n);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let res = app.create_activity(tenant, &body).await;
                (k, body, res)
            }));
        }
    }

    // Per key: the 201s (id and the body that won) and the ids the 409s name.
    let mut created: BTreeMap<usize, Vec<(String, Value)>> = BTreeMap::new();
    let mut conflicts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut others = Vec::new();
    for t in tasks {
        let (k, body, res) = t.await.unwrap();
        match res.status {
            StatusCode::CREATED => {
                created.entry(k).or_default().push((res.body["id"].as_str().unwrap().to_owned(), body));
            }
            StatusCode::CONFLICT => {
                assert_eq!(res.body["type"], "https://reten.dev/problems/duplicate-idempotency-key", "{}", res.body);
                let id =
                    res.body["activityId"].as_str().unwrap_or_else(|| panic!("a 409 names the activity: {}", res.body));
                conflicts.entry(k).or_default().push(id.to_owned());
            }
            other => others.push(format!("key {k}: {other} {}", res.body)),
        }
    }
    assert!(others.is_empty(), "every answer is a 201 or a 409; got {others:#?}");

    for k in 0..KEYS {
        let winners = created.get(&k).map_or(&[][..], Vec::as_slice);
        assert_eq!(winners.len(), 1, "key {k}: exactly one 201, got {}", winners.len());
        let (id, winning_body) = &winners[0];
        let losers = conflicts.get(&k).map_or(&[][..], Vec::as_slice);
        assert_eq!(losers.len(), PER_KEY - 1, "key {k}: every other answer is a 409");
        assert!(losers.iter().all(|l| l == id), "key {k}: every 409 names {id}: {losers:?}");

        // The stored activity is the one the 201 described, whole.
        let stored = app.get(tenant, &format!("/api/activities/{id}")).await;
        stored.assert_status(StatusCode::OK);
        assert_eq!(stored.body["idempotencyKey"], format!("pressure-{k:02}").as_str());
        assert_eq!(stored.body["reason"], winning_body["reason"], "key {k}: the winner's body was stored");
        assert_eq!(stored.body["channel"], winning_body["channel"], "key {k}: the winner's body was stored");
    }

    assert_eq!(app.count("activities").await, KEYS as i64, "exactly one activity per key");
    let per_key: Vec<(String, i64)> =
        sqlx::query_as("SELECT idempotency_key, count(*) FROM activities GROUP BY 1 HAVING count(*) <> 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(per_key.is_empty(), "no key holds more than one activity: {per_key:?}");
    assert_eq!(app.count("activity_target_users").await, KEYS as i64, "one target user each");
    assert_eq!(app.count("activity_status_events").await, KEYS as i64, "one CREATED event each");
    assert_eq!(app.count("activity_attributes").await, KEYS as i64, "one commerce_info attribute each");
}

/// A key reused with another body later (not concurrently) is still the
/// first activity's, and a different tenant may use the same key.
#[sqlx::test(migrations = "../migrations")]
async fn a_key_is_per_tenant_and_a_later_different_body_does_not_replace_the_first(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant_a, commerce_a) = app.seeded("idem-a").await;
    let (tenant_b, commerce_b) = app.seeded("idem-b").await;

    let first = app.create_activity(tenant_a, &body(commerce_a, 1, 0)).await;
    first.assert_status(StatusCode::CREATED);
    let again = app.create_activity(tenant_a, &body(commerce_a, 1, 1)).await;
    again.assert_status(StatusCode::CONFLICT);
    assert_eq!(again.body["activityId"], first.body["id"]);
    let stored = app.get(tenant_a, &format!("/api/activities/{}", first.body["id"].as_str().unwrap())).await;
    assert_eq!(stored.body["reason"], "Monthly promotion", "the first body stays");

    let other = app.create_activity(tenant_b, &body(commerce_b, 1, 0)).await;
    other.assert_status(StatusCode::CREATED);
    assert_ne!(other.body["id"], first.body["id"]);
    assert_eq!(app.count("activities").await, 2);
}

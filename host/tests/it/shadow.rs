//! Shadow sets: a candidate decides on every live create after the answer
//! is sent, never changing it, with counts summed in Postgres; promote makes
//! it serve.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use reten_host::demo::{self, DEMO_TENANT};
use reten_host::rollout::RolloutSettings;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, copy_dir, repo_policies};

const DEMO_DIR: &str = "tenants/de000000-0000-4000-8000-00000000de40";

/// The demo's `tenant.toml` with the commerce rep first on WhatsApp.
fn reps_first(app: &TestApp) -> String {
    let live = std::fs::read_to_string(app.policies.path().join(DEMO_DIR).join("tenant.toml")).unwrap();
    live.replace("type = \"PREFERRED_CONTACT\"\npriority = 0", "type = \"PREFERRED_CONTACT\"\npriority = 5")
}

fn whatsapp(commerce: uuid::Uuid, key: &str) -> Value {
    json!({
        "type": "MESSAGE", "reason": "Monthly promotion", "channel": "WHATSAPP", "commerce_id": commerce,
        "idempotency_key": key, "scheduled_at": "2030-01-16T09:00:00.000Z",
    })
}

async fn put_shadow(app: &TestApp, body: &Value) -> crate::support::TestResponse {
    app.call(Method::PUT, "/api/policies/shadow", Some(&admin_token(DEMO_TENANT)), Some(DEMO_TENANT), Some(body)).await
}

/// Waits until the shadow summary satisfies `done`.
async fn summary_when(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    crate::support::until(what, async || {
        let res = app.get(DEMO_TENANT, "/api/policies/shadow").await;
        res.assert_status(StatusCode::OK);
        last = res.body;
        done(&last)
    })
    .await;
    last
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_shadow_set_decides_on_live_creates_without_changing_them_and_promotes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    demo::provision(&app.pool).await.unwrap();
    let commerce = app.commerce_id(DEMO_TENANT, "demo-c-1").await;
    let maria = app.user_id(DEMO_TENANT, commerce, "demo-u-maria").await;
    let juan = app.user_id(DEMO_TENANT, commerce, "demo-u-juan").await;
    app.get(DEMO_TENANT, "/api/policies/shadow").await.assert_status(StatusCode::NOT_FOUND);

    let installed = put_shadow(
        &app,
        &json!({"files": [{"path": "tenant.toml", "content": reps_first(&app)}], "message": "reps first"}),
    )
    .await;
    installed.assert_status(StatusCode::OK);
    assert_eq!(installed.body["files"][0]["path"], "tenant.toml", "{}", installed.body);
    assert_eq!(installed.body["evaluated"], 0);
    assert!(
        app.policies.path().join(DEMO_DIR).join("shadow/tenant.toml").is_file(),
        "the shadow set is a folder on disk"
    );

    for i in 0..100 {
        let res = app.create_activity(DEMO_TENANT, &whatsapp(commerce, &format!("shadow-{i}"))).await;
        res.assert_status(StatusCode::CREATED);
        // Exactly what the live set decides without a shadow.
        assert_eq!(res.body["targetUsers"][0]["commerceUserId"], maria.as_str(), "{}", res.body);
        assert_eq!(res.body["targetUsers"][0]["criterionType"], "PREFERRED_CONTACT");
    }
    let summary = summary_when(&app, "100 evaluations counted", |s| s["evaluated"] == 100).await;
    assert_eq!((summary["agreed"].as_i64(), summary["disagreed"].as_i64()), (Some(0), Some(100)), "{summary}");
    assert_eq!((summary["errors"].as_i64(), summary["dropped"].as_i64()), (Some(0), Some(0)));
    assert_eq!(summary["message"], "reps first");
    let samples = summary["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 50);
    for s in samples {
        assert_eq!(
            (s["before"]["targetCommerceUserId"].as_str(), s["after"]["targetCommerceUserId"].as_str()),
            (Some(maria.as_str()), Some(juan.as_str()))
        );
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM shadow_disagreements").fetch_one(&app.pool).await.unwrap();
    assert_eq!(kept, 100, "every disagreement is kept with both decisions");
    let metrics = app.metrics().await;
    let line = format!("reten_shadow_evaluations_total{{outcome=\"disagreed\",tenant=\"{DEMO_TENANT}\"}} 100");
    assert!(metrics.contains(&line), "{line} in /metrics");

    // Promote: the shadow set serves, as a new revision by the caller.
    let promoted = app.post(DEMO_TENANT, "/api/policies/shadow/promote", &json!({})).await;
    promoted.assert_status(StatusCode::OK);
    let revision = promoted.body["revision"].as_i64().unwrap();
    let recorded = app.get(DEMO_TENANT, &format!("/api/policies/revisions/{revision}")).await;
    assert_eq!(
        (recorded.body["source"].as_str(), recorded.body["message"].as_str()),
        (Some("PROMOTE"), Some("reps first"))
    );
    assert_eq!(recorded.body["author"], "admin@test", "{}", recorded.body);
    let res = app.create_activity(DEMO_TENANT, &whatsapp(commerce, "after-promote")).await;
    assert_eq!(res.body["targetUsers"][0]["commerceUserId"], juan.as_str(), "{}", res.body);
    app.get(DEMO_TENANT, "/api/policies/shadow").await.assert_status(StatusCode::NOT_FOUND);
    assert!(!app.policies.path().join(DEMO_DIR).join("shadow").exists());
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_full_shadow_queue_drops_and_counts_and_no_create_waits(pool: PgPool) {
    let policies = tempfile::tempdir().unwrap();
    copy_dir(&repo_policies(), policies.path());
    let settings = RolloutSettings { shadow_queue: 1, ..RolloutSettings::default() };
    let app = TestApp::with_rollout(pool, policies, settings).await;
    demo::provision(&app.pool).await.unwrap();
    let commerce = app.commerce_id(DEMO_TENANT, "demo-c-1").await;
    // A shadow criterion that loops until its one-second deadline on every
    // call (a Wasm component: the epoch deadline stops it, not an
    // operation budget).
    use base64::Engine as _;
    let looping = base64::engine::general_purpose::STANDARD.encode(crate::support::plugin("test_loop"));
    let config = std::fs::read_to_string(app.policies.path().join(DEMO_DIR).join("tenant.toml")).unwrap();
    let slow = json!({
        "files": [
            {"path": "criteria/preferred_contact.wasm", "content_base64": looping},
            {"path": "tenant.toml", "content": format!("{config}\n[limits]\ndeadline_ms = 1000\n")},
        ],
        "delete": ["criteria/preferred_contact.rhai"],
    });
    put_shadow(&app, &slow).await.assert_status(StatusCode::OK);

    let n = 20;
    let started = Instant::now();
    for i in 0..n {
        let res = app.create_activity(DEMO_TENANT, &whatsapp(commerce, &format!("tiny-{i}"))).await;
        res.assert_status(StatusCode::CREATED);
    }
    // Had each create waited for its shadow evaluation, this would take 20 s.
    assert!(started.elapsed() < Duration::from_secs(10), "the creates waited: {:?}", started.elapsed());
    let summary = summary_when(&app, "every create evaluated or dropped", |s| {
        s["evaluated"].as_i64().unwrap() + s["dropped"].as_i64().unwrap() == n
    })
    .await;
    // At most one evaluation per second of creates, plus the one queued.
    let ran = started.elapsed().as_secs() as i64 + 2;
    assert!(summary["dropped"].as_i64().unwrap() >= n - ran, "{summary}");
    assert_eq!(summary["errors"], summary["evaluated"], "each evaluation hit the deadline: {summary}");
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_shadow_that_does_not_compile_is_refused_and_delete_ends_one(pool: PgPool) {
    let app = TestApp::new(pool).await;
    demo::provision(&app.pool).await.unwrap();
    let bad =
        put_shadow(&app, &json!({"files": [{"path": "criteria/preferred_contact.rhai", "content": "fn resolve("}]}))
            .await;
    bad.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["field"], "criteria/preferred_contact.rhai");
    assert!(!app.policies.path().join(DEMO_DIR).join("shadow").exists(), "nothing written");

    // A deletion shows too: the shadow set is the whole folder.
    put_shadow(&app, &json!({"delete": ["attributes/loyalty_tier.rhai"], "files": [{"path": "tenant.toml", "content": "name = \"Demo\"\n"}]}))
        .await
        .assert_status(StatusCode::OK);
    let summary = app.get(DEMO_TENANT, "/api/policies/shadow").await;
    let changes: Vec<(String, String)> = summary.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_owned(), f["change"].as_str().unwrap().to_owned()))
        .collect();
    assert!(changes.contains(&("attributes/loyalty_tier.rhai".into(), "DELETED".into())), "{changes:?}");
    let ended = app
        .call(Method::DELETE, "/api/policies/shadow", Some(&admin_token(DEMO_TENANT)), Some(DEMO_TENANT), None)
        .await;
    ended.assert_status(StatusCode::NO_CONTENT);
    app.get(DEMO_TENANT, "/api/policies/shadow").await.assert_status(StatusCode::NOT_FOUND);
    assert_eq!(app.count("policy_shadows").await, 0);
}

/// A shadow's id is made like every other row id the service writes
/// (`domain::new_id`: time-ordered, UUIDv7).
#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_shadow_gets_a_time_ordered_id(pool: PgPool) {
    let app = TestApp::new(pool).await;
    demo::provision(&app.pool).await.unwrap();
    let installed = put_shadow(
        &app,
        &json!({"files": [{"path": "tenant.toml", "content": reps_first(&app)}], "message": "reps first"}),
    )
    .await;
    installed.assert_status(StatusCode::OK);
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM policy_shadows WHERE tenant_id = $1")
        .bind(DEMO_TENANT.0)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(id.get_version_num(), 7, "the shadow id {id} is not a UUIDv7");
}

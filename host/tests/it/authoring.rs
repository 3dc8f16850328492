//! The console's authoring routes: one file checked as it is typed, the
//! fixtures run with their traces, and an activity decided again on its
//! stored input, by the live set or a candidate; none writes anything.

use axum::http::StatusCode;
use reten_host::demo::{self, DEMO_TENANT};
use serde_json::json;
use sqlx::PgPool;

use crate::support::TestApp;

async fn demo_app(pool: PgPool) -> TestApp {
    let app = TestApp::new(pool).await;
    demo::provision(&app.pool).await.unwrap();
    app
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn check_marks_a_syntax_error_at_its_line_and_a_fixed_file_passes(pool: PgPool) {
    let app = demo_app(pool).await;
    let broken = "fn resolve(input) {\n    let x = ;\n    []\n}\n";
    let res = app
        .post(
            DEMO_TENANT,
            "/api/policies/check",
            &json!({"path": "criteria/preferred_contact.rhai", "content": broken}),
        )
        .await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["ok"], false, "{}", res.body);
    let error = &res.body["errors"][0];
    assert_eq!(
        (error["path"].as_str(), error["line"].as_u64()),
        (Some("criteria/preferred_contact.rhai"), Some(2)),
        "{error}"
    );
    assert!(error["column"].as_u64().is_some() && !error["message"].as_str().unwrap().is_empty());

    let fixed = app
        .post(
            DEMO_TENANT,
            "/api/policies/check",
            &json!({"path": "criteria/preferred_contact.rhai", "content": "fn resolve(input) { [] }"}),
        )
        .await;
    assert_eq!(fixed.body, json!({"ok": true, "errors": []}));
    // A tenant.toml naming a criterion nobody defines: the reference check.
    let dangling = app
        .post(
            DEMO_TENANT,
            "/api/policies/check",
            &json!({"path": "tenant.toml", "content": "[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n[[target_resolution.criteria]]\ntype = \"TOP_SPENDER\"\n"}),
        )
        .await;
    assert_eq!(dangling.body["ok"], false);
    assert!(dangling.body["errors"][0]["message"].as_str().unwrap().contains("TOP_SPENDER"), "{}", dangling.body);
    let bad_path =
        app.post(DEMO_TENANT, "/api/policies/check", &json!({"path": "../etc/passwd", "content": "x"})).await;
    bad_path.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(bad_path.body["errors"][0]["field"], "path");
    // Nothing was written.
    let on_disk = std::fs::read_to_string(
        app.policies.path().join("tenants").join(DEMO_TENANT.to_string()).join("criteria/preferred_contact.rhai"),
    )
    .unwrap();
    assert!(on_disk.contains("PREFERRED_CONTACT"));
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn the_tests_route_runs_the_fixtures_of_the_set_or_of_a_candidate_with_traces(pool: PgPool) {
    let app = demo_app(pool).await;
    let res = app.post(DEMO_TENANT, "/api/policies/tests", &json!({})).await;
    res.assert_status(StatusCode::OK);
    let total = res.body["results"].as_array().unwrap().len();
    assert!(total >= 5, "{}", res.body);
    assert_eq!(
        (res.body["passed"].as_u64(), res.body["failed"].as_u64()),
        (Some(total as u64), Some(0)),
        "{}",
        res.body
    );
    assert!(res.body["results"][0]["trace"]["generation"].is_u64(), "{}", res.body);

    // A candidate whose preferred contact picks nobody fails the fixture
    // that expects it, with its trace.
    let candidate =
        json!({"files": [{"path": "criteria/preferred_contact.rhai", "content": "fn resolve(input) { [] }"}]});
    let res = app.post(DEMO_TENANT, "/api/policies/tests", &candidate).await;
    res.assert_status(StatusCode::OK);
    let failed: Vec<&serde_json::Value> =
        res.body["results"].as_array().unwrap().iter().filter(|r| r["ok"] == false).collect();
    assert!(!failed.is_empty(), "{}", res.body);
    let whatsapp =
        failed.iter().find(|r| r["name"] == "whatsapp_goes_to_the_preferred_contact.toml").expect("that fixture fails");
    assert!(whatsapp["message"].as_str().unwrap().contains("expected"), "{whatsapp}");
    assert_eq!(whatsapp["trace"]["target"]["criteria"][0]["outcome"], "NO_MATCH", "{whatsapp}");
    assert_eq!(res.body["failed"], failed.len());
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn an_activity_is_decided_again_on_its_stored_input_by_the_live_set_or_a_candidate(pool: PgPool) {
    let app = demo_app(pool).await;
    let commerce = app.commerce_id(DEMO_TENANT, "demo-c-1").await;
    let maria = app.user_id(DEMO_TENANT, commerce, "demo-u-maria").await;
    let juan = app.user_id(DEMO_TENANT, commerce, "demo-u-juan").await;
    let body = json!({"type": "MESSAGE", "reason": "Promo", "channel": "WHATSAPP", "commerce_id": commerce,
                      "idempotency_key": "again-1", "scheduled_at": "2030-01-16T09:00:00Z"});
    let created = app.create_activity(DEMO_TENANT, &body).await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap();
    // Maria moves away: the commerce changes, the stored input does not.
    let mut c1 = serde_json::from_str::<serde_json::Value>(include_str!("../../../examples/demo/commerces.json"))
        .unwrap()["items"][0]
        .clone();
    c1["users"][0]["is_active"] = json!(false);
    app.sync(DEMO_TENANT, json!([c1])).await.assert_status(StatusCode::CREATED);

    let live = app.post(DEMO_TENANT, &format!("/api/activities/{id}/preview"), &json!({})).await;
    live.assert_status(StatusCode::OK);
    assert_eq!(
        live.body["targetUsers"][0]["commerceUserId"],
        maria.as_str(),
        "the stored input, not today's commerce: {}",
        live.body
    );
    assert_eq!(live.body["trace"]["target"]["criteria"][0]["type"], "PREFERRED_CONTACT");

    let candidate =
        json!({"files": [{"path": "criteria/preferred_contact.rhai", "content": "fn resolve(input) { [] }"}]});
    let again = app.post(DEMO_TENANT, &format!("/api/activities/{id}/preview"), &candidate).await;
    again.assert_status(StatusCode::OK);
    assert_eq!(again.body["targetUsers"][0]["commerceUserId"], juan.as_str(), "{}", again.body);
    assert_eq!(again.body["targetUsers"][0]["criterionType"], "ROLE_MATCH");

    let broken = json!({"files": [{"path": "criteria/preferred_contact.rhai", "content": "fn resolve("}]});
    app.post(DEMO_TENANT, &format!("/api/activities/{id}/preview"), &broken)
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing stored changed.
    let stored = app.get(DEMO_TENANT, &format!("/api/activities/{id}")).await;
    assert_eq!(stored.body["targetUsers"][0]["commerceUserId"], maria.as_str());
}

//! The activity lifecycle: retry-resolution, manual assignment, cancel, and
//! the status events every transition writes.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, seed_body, sha, token};

async fn patch(
    app: &TestApp,
    tenant: reten_host::domain::TenantId,
    uri: &str,
    body: Option<&Value>,
) -> crate::support::TestResponse {
    app.call(Method::PATCH, uri, Some(&admin_token(tenant)), Some(tenant), body).await
}

async fn events(app: &TestApp, tenant: reten_host::domain::TenantId, id: &str) -> Vec<(String, Value, String)> {
    let res = app.get(tenant, &format!("/api/activities/{id}/status-events")).await;
    res.body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap().to_owned(),
                e["fromStatus"].clone(),
                e["toStatus"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_fixed_attribute_policy_uploaded_through_the_admin_api_lets_retry_resolve_the_activity(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("retry-attr").await;
    let broken = "fn resolve(input) { throw \"the CRM is down\" }";
    let fixed = "fn resolve(input) { #{ name: input.commerce.name, fixed: true } }";
    let uri = "/api/policies/attributes/commerce_info.rhai";
    app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), broken.into())
        .await
        .assert_status(StatusCode::CREATED);

    let created = app.create_activity(tenant, &seed_body(commerce, "retry-1")).await;
    created.assert_status(StatusCode::CREATED);
    assert_eq!(created.body["status"], "UNRESOLVED");
    assert_eq!(created.body["attributes"][0]["resolutionStatus"], "FAILED");
    let id = created.body["id"].as_str().unwrap().to_owned();

    // Still broken: the retry fails and says why.
    let res = patch(&app, tenant, &format!("/api/activities/{id}/retry-resolution"), None).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["status"], "UNRESOLVED");

    app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), fixed.into())
        .await
        .assert_status(StatusCode::OK);
    let res = patch(&app, tenant, &format!("/api/activities/{id}/retry-resolution"), Some(&json!({}))).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["status"], "READY");
    let attr = &res.body["attributes"][0];
    assert_eq!(attr["resolutionStatus"], "RESOLVED");
    assert_eq!(attr["value"], json!({"name": "Almacén Don Pepe", "fixed": true}));
    assert_eq!(attr["policyVersion"], sha(fixed.as_bytes()).as_str(), "the attribute records the new version");
    assert_eq!(res.body["resolutionTrace"]["retries"].as_array().unwrap().len(), 2);

    let ev = events(&app, tenant, &id).await;
    assert_eq!(
        ev,
        [
            ("CREATED".into(), Value::Null, "UNRESOLVED".into()),
            ("RESOLUTION_RETRY_FAILED".into(), json!("UNRESOLVED"), "UNRESOLVED".into()),
            ("RESOLUTION_RETRY_SUCCESS".into(), json!("UNRESOLVED"), "READY".into()),
        ]
    );
    let failed = app.get(tenant, &format!("/api/activities/{id}/status-events")).await;
    assert!(failed.body[1]["errorMessage"].as_str().unwrap().contains("the CRM is down"));

    // Retry on READY is a 400.
    let res = patch(&app, tenant, &format!("/api/activities/{id}/retry-resolution"), None).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert!(res.body["detail"].as_str().unwrap().contains("READY"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_target_is_resolved_by_hand_and_the_activity_becomes_ready(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("manual").await;
    app.sync(
        tenant,
        json!([{"external_id": "c-1", "name": "Nadie", "users": [
            {"external_id": "u-1", "name": "Nico", "roles": ["OWNER"], "contacts": []},
            {"external_id": "u-2", "name": "Olga", "roles": ["ORDERS"], "contacts": [], "is_active": false}
        ]}]),
    )
    .await
    .assert_status(StatusCode::CREATED);
    let commerce = app.commerce_id(tenant, "c-1").await;
    let (other_tenant, other_commerce) = app.seeded("manual-other").await;
    let stranger = app.user_id(other_tenant, other_commerce, "u-maria").await;
    let nico = app.user_id(tenant, commerce, "u-1").await;
    let olga = app.user_id(tenant, commerce, "u-2").await;

    let created = app.create_activity(tenant, &seed_body(commerce, "man-1")).await;
    assert_eq!(created.body["status"], "UNRESOLVED");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let target = created.body["targetUsers"][0]["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/activities/{id}/target-users/{target}/resolve");

    let res = patch(&app, tenant, &uri, Some(&json!({"commerce_user_id": stranger}))).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["commerce_user_id"]);
    let res = patch(&app, tenant, &uri, Some(&json!({"commerce_user_id": olga}))).await;
    res.assert_status(StatusCode::BAD_REQUEST);

    let res = patch(&app, tenant, &uri, Some(&json!({"commerce_user_id": nico}))).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["resolutionStatus"], "LOCKED");
    assert_eq!(res.body["lockReason"], "MANUAL_ASSIGNMENT");
    assert_eq!(res.body["commerceUserId"], nico.as_str());
    let detail = app.get(tenant, &format!("/api/activities/{id}")).await;
    assert_eq!(detail.body["status"], "READY", "the last unresolved part was resolved");
    assert_eq!(
        events(&app, tenant, &id).await[1],
        ("TARGET_USER_RESOLVED".into(), json!("UNRESOLVED"), "READY".into())
    );

    // A locked target user cannot be resolved again.
    let res = patch(&app, tenant, &uri, Some(&json!({"commerce_user_id": nico}))).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    let res = patch(
        &app,
        tenant,
        &format!("/api/activities/{id}/target-users/{}/resolve", uuid::Uuid::new_v4()),
        Some(&json!({"commerce_user_id": nico})),
    )
    .await;
    res.assert_status(StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn cancel_applies_to_ready_and_unresolved_only_and_two_concurrent_cancels_have_one_winner(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("cancel").await;
    let created = app.create_activity(tenant, &seed_body(commerce, "c-1")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    let fde = token("fde", &[tenant], &["FDE"], &[]);
    let res = app.call(Method::PATCH, &format!("/api/activities/{id}/cancel"), Some(&fde), Some(tenant), None).await;
    res.assert_status(StatusCode::FORBIDDEN);

    let app = Arc::new(app);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { patch(&app, tenant, &format!("/api/activities/{id}/cancel"), None).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap().status);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);

    let res = patch(&app, tenant, &format!("/api/activities/{id}/cancel"), None).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert!(res.body["detail"].as_str().unwrap().contains("CANCELED"));
    let res = patch(&app, tenant, &format!("/api/activities/{id}/retry-resolution"), None).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(
        events(&app, tenant, &id).await,
        [("CREATED".into(), Value::Null, "READY".into()), ("CANCELED".into(), json!("READY"), "CANCELED".into())]
    );
    let detail = app.get(tenant, &format!("/api/activities/{id}")).await;
    assert_eq!(detail.body["status"], "CANCELED");
    let res = patch(&app, tenant, &format!("/api/activities/{}/cancel", uuid::Uuid::new_v4()), None).await;
    res.assert_status(StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_retries_cannot_both_win(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("retry-race").await;
    app.write_tenant_file(tenant, "attributes/commerce_info.rhai", "fn resolve(input) { throw \"down\" }");
    let created = app.create_activity(tenant, &seed_body(commerce, "rr-1")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    app.write_tenant_file(tenant, "attributes/commerce_info.rhai", "fn resolve(input) { 1 }");
    let app = Arc::new(app);
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(
                async move { patch(&app, tenant, &format!("/api/activities/{id}/retry-resolution"), None).await },
            )
        })
        .collect();
    let mut ok = 0;
    for r in racers {
        let res = r.await.unwrap();
        match res.status {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT | StatusCode::BAD_REQUEST => {}
            other => panic!("unexpected {other}: {}", res.body),
        }
    }
    assert_eq!(ok, 1, "exactly one retry applies");
    let ev = events(&app, tenant, &id).await;
    assert_eq!(ev.iter().filter(|e| e.0 == "RESOLUTION_RETRY_SUCCESS").count(), 1);
}

//! Every answer of the dispatch, result and integration routes, success and
//! error alike, is declared for its operation and fits the declared schema
//! (what the schemathesis run checks with generated input).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use reten_host::dispatch::providers::provider_id;
use reten_host::domain::ProviderCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::dispatch::{local, webhook};
use crate::openapi::Doc;
use crate::receiver::{Answer, Receiver};
use crate::support::{SECRETS_KEY, TestApp, TestResponse, admin_token, seed_body};

#[sqlx::test(migrations = "../migrations")]
async fn every_dispatch_and_result_answer_fits_its_declared_schema(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 60_000, 3), Some(SECRETS_KEY));
    let doc = Doc::fetch(&app).await;
    let receiver = Receiver::start(Answer::Accept).await;
    let (tenant, commerce) = app.seeded("schemas").await;
    let admin = admin_token(tenant);
    let app = &app;
    let call = |method: Method, uri: String, body: Option<Value>| {
        let admin = admin.clone();
        async move { app.call(method, &uri, Some(&admin), Some(tenant), body.as_ref()).await }
    };
    let check = |method: Method, template: &str, res: &TestResponse, status: StatusCode| {
        res.assert_status(status);
        if status == StatusCode::NO_CONTENT {
            assert!(doc.response(&method, template, status).is_some(), "{method} {template} does not declare 204");
        } else {
            doc.check(method, template, res);
        }
    };

    let webhook_id = provider_id(ProviderCode::Webhook);
    let res = call(Method::GET, "/api/dispatch-providers".into(), None).await;
    check(Method::GET, "/api/dispatch-providers", &res, StatusCode::OK);
    let defs = "/api/dispatch-providers/{id}/channel-definitions";
    for (id, status) in [
        (webhook_id.to_string(), StatusCode::OK),
        (uuid::Uuid::new_v4().to_string(), StatusCode::NOT_FOUND),
        ("x".into(), StatusCode::BAD_REQUEST),
    ] {
        let res = call(Method::GET, format!("/api/dispatch-providers/{id}/channel-definitions"), None).await;
        check(Method::GET, defs, &res, status);
    }

    let configs = "/api/dispatch-configs";
    let config = webhook(app, tenant, "WHATSAPP", &receiver).await;
    let duplicate = json!({"dispatch_provider_id": provider_id(ProviderCode::Mock), "channel": "WHATSAPP"});
    check(Method::POST, configs, &call(Method::POST, configs.into(), Some(duplicate)).await, StatusCode::CONFLICT);
    let bad = json!({"dispatch_provider_id": webhook_id, "channel": "SMS", "base_url": "https://10.0.0.1"});
    check(Method::POST, configs, &call(Method::POST, configs.into(), Some(bad)).await, StatusCode::BAD_REQUEST);
    check(Method::GET, configs, &call(Method::GET, configs.into(), None).await, StatusCode::OK);
    let one = format!("/api/dispatch-configs/{}", config["id"].as_str().unwrap());
    let patched = call(Method::PATCH, one.clone(), Some(json!({"settings": {"team": "north"}}))).await;
    check(Method::PATCH, "/api/dispatch-configs/{id}", &patched, StatusCode::OK);
    assert_eq!(patched.body["settings"]["team"], "north");

    let mut task = seed_body(commerce, "schema-task");
    task["type"] = json!("TASK");
    let task = app.create_activity(tenant, &task).await.body["id"].as_str().unwrap().to_owned();
    let dispatch = "/api/activities/tasks/{id}/dispatch";
    let res = call(Method::POST, format!("/api/activities/tasks/{task}/dispatch"), None).await;
    check(Method::POST, dispatch, &res, StatusCode::NO_CONTENT);
    let res = call(Method::POST, format!("/api/activities/tasks/{task}/dispatch"), None).await;
    check(Method::POST, dispatch, &res, StatusCode::BAD_REQUEST);
    let res = call(Method::PATCH, format!("/api/activities/{task}/retry-dispatch"), None).await;
    check(Method::PATCH, "/api/activities/{id}/retry-dispatch", &res, StatusCode::BAD_REQUEST);

    let results = "/api/activity-results/tasks";
    let result = json!({"activity_id": task, "commerce_external_id": "c-1", "occurred_at": "2025-01-16T15:30:00Z",
                        "status": "COMPLETED", "task_result": {"result": "SALE_COMPLETED", "payload": {"boxes": 12}}});
    check(Method::POST, results, &call(Method::POST, results.into(), Some(result.clone())).await, StatusCode::CREATED);
    check(Method::POST, results, &call(Method::POST, results.into(), Some(result)).await, StatusCode::CONFLICT);
    let listed = call(Method::GET, format!("/api/activities/{task}/results"), None).await;
    check(Method::GET, "/api/activities/{id}/results", &listed, StatusCode::OK);

    // The integration API, with a key and with a bearer token.
    let key = call(
        Method::POST,
        "/api/api-keys".into(),
        Some(json!({"name": "erp", "permissions": ["VIEW_ACTIVITIES", "SUBMIT_ACTIVITY_RESULT"]})),
    )
    .await;
    let key = key.body["plaintextKey"].as_str().unwrap().to_owned();
    let with_key = |method: Method, uri: &str, body: Option<&Value>| {
        let mut req = Request::builder().method(method).uri(uri).header("x-api-key", &key);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        app.send(req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap())
    };
    let pulled = with_key(Method::GET, "/api/integration/activities/tasks", None).await;
    check(Method::GET, "/api/integration/activities/tasks", &pulled, StatusCode::OK);
    let types = with_key(Method::GET, "/api/integration/task-result-type-configs", None).await;
    check(Method::GET, "/api/integration/task-result-type-configs", &types, StatusCode::OK);
    let standalone = json!({"provider_activity_id": "nothing-here", "commerce_external_id": "c-1",
                            "occurred_at": "2025-01-16T15:30:00Z", "status": "PENDING", "task_result": {"result": "NO_CONTACT"}});
    let res = with_key(Method::POST, "/api/integration/activity-results/tasks", Some(&standalone)).await;
    check(Method::POST, "/api/integration/activity-results/tasks", &res, StatusCode::CREATED);
    let bearer = call(Method::GET, "/api/integration/activities/tasks".into(), None).await;
    check(Method::GET, "/api/integration/activities/tasks", &bearer, StatusCode::FORBIDDEN);

    let deleted = call(Method::DELETE, one, None).await;
    check(Method::DELETE, "/api/dispatch-configs/{id}", &deleted, StatusCode::NO_CONTENT);
}

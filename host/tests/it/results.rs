//! Results and manual dispatch: how a result moves an activity, conflicts
//! and overrides, matching by provider id, the integration API's keys, and
//! `POST /api/activities/tasks/{id}/dispatch`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use reten_host::dispatch::providers::provider_id;
use reten_host::domain::{ProviderCode, TenantId};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::dispatch::{local, webhook};
use crate::receiver::{Answer, Receiver};
use crate::support::{SECRETS_KEY, TestApp, admin_token, seed_body, token};

fn result(activity: &str, status: &str) -> Value {
    json!({"activity_id": activity, "commerce_external_id": "c-1", "occurred_at": "2025-01-16T15:30:00Z",
           "status": status, "task_result": {"result": "SALE_COMPLETED", "contact_type": "OUTBOUND"}})
}

async fn create(app: &TestApp, tenant: TenantId, commerce: Uuid, key: &str, kind: &str) -> String {
    let mut body = seed_body(commerce, key);
    body["type"] = json!(kind);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::CREATED);
    res.body["id"].as_str().unwrap().to_owned()
}

async fn status(app: &TestApp, tenant: TenantId, id: &str) -> String {
    app.get(tenant, &format!("/api/activities/{id}")).await.body["status"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn results_move_activities_and_a_second_terminal_one_conflicts_unless_it_overrides(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("results").await;
    let done = create(&app, tenant, commerce, "r-1", "TASK").await;
    let res = app.post(tenant, "/api/activity-results/tasks", &result(&done, "COMPLETED")).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["source"], "RETEN_ACTIVITY");
    assert_eq!(
        (res.body["activityStatusBefore"].as_str(), res.body["activityStatusAfter"].as_str()),
        (Some("READY"), Some("COMPLETED"))
    );
    assert_eq!(status(&app, tenant, &done).await, "COMPLETED");

    let again = app.post(tenant, "/api/activity-results/tasks", &result(&done, "NOT_EXECUTED")).await;
    again.assert_status(StatusCode::CONFLICT);
    let pending = app.post(tenant, "/api/activity-results/tasks", &result(&done, "PENDING")).await;
    pending.assert_status(StatusCode::CREATED);
    let mut forced = result(&done, "NOT_EXECUTED");
    forced["hard_override"] = json!(true);
    app.post(tenant, "/api/activity-results/tasks", &forced).await.assert_status(StatusCode::CREATED);
    assert_eq!(status(&app, tenant, &done).await, "FAILED");
    let listed = app.get(tenant, &format!("/api/activities/{done}/results")).await;
    let results = listed.body.as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0]["replacedAt"].is_string(), "the overridden result is marked replaced");
    let events = app.get(tenant, &format!("/api/activities/{done}/status-events")).await;
    let moves: Vec<&str> = events.body.as_array().unwrap().iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(moves, ["CREATED", "RESULT_RECEIVED", "RESULT_RECEIVED"]);

    let failed = create(&app, tenant, commerce, "r-2", "TASK").await;
    app.post(tenant, "/api/activity-results/tasks", &result(&failed, "NOT_EXECUTED"))
        .await
        .assert_status(StatusCode::CREATED);
    assert_eq!(status(&app, tenant, &failed).await, "FAILED");

    // Validation: an unknown code, a reschedule without a date, a wrong commerce.
    let mut bad = result(&failed, "COMPLETED");
    bad["task_result"]["result"] = json!("WON_THE_LOTTERY");
    bad["occurred_at"] = json!("yesterday");
    let res = app.post(tenant, "/api/activity-results/tasks", &bad).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["occurred_at", "task_result.result"]);
    let mut reschedule = result(&failed, "PENDING");
    reschedule["task_result"]["result"] = json!("RESCHEDULE");
    let res = app.post(tenant, "/api/activity-results/tasks", &reschedule).await;
    assert_eq!(res.error_fields(), ["task_result.future_scheduled_at"]);
    let mut elsewhere = result(&failed, "PENDING");
    elsewhere["commerce_external_id"] = json!("c-2");
    app.post(tenant, "/api/activity-results/tasks", &elsewhere).await.assert_status(StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrations = "../migrations")]
async fn results_match_provider_ids_or_stand_alone_and_another_tenants_activity_is_404(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("matching").await;
    let (other, other_commerce) = app.seeded("other").await;
    let mock = json!({"dispatch_provider_id": provider_id(ProviderCode::Mock), "channel": "WHATSAPP"});
    app.post(tenant, "/api/dispatch-configs", &mock).await.assert_status(StatusCode::CREATED);
    let task = create(&app, tenant, commerce, "m-1", "TASK").await;
    let uri = format!("/api/activities/tasks/{task}/dispatch");
    app.call(Method::POST, &uri, Some(&admin_token(tenant)), Some(tenant), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    let provider_id = app.get(tenant, &format!("/api/activities/{task}")).await.body["providerActivityId"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut by_provider = result(&task, "COMPLETED");
    by_provider.as_object_mut().unwrap().remove("activity_id");
    by_provider["provider_activity_id"] = json!(provider_id);
    let res = app.post(tenant, "/api/activity-results/tasks", &by_provider).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["activityId"], task.as_str());
    assert_eq!(status(&app, tenant, &task).await, "COMPLETED");
    by_provider["provider_activity_id"] = json!("unknown-at-reten");
    let standalone = app.post(tenant, "/api/activity-results/tasks", &by_provider).await;
    standalone.assert_status(StatusCode::CREATED);
    assert_eq!(standalone.body["source"], "STANDALONE");
    assert!(standalone.body["activityId"].is_null());

    let theirs = create(&app, other, other_commerce, "o-1", "TASK").await;
    let res = app.post(tenant, "/api/activity-results/tasks", &result(&theirs, "COMPLETED")).await;
    res.assert_status(StatusCode::NOT_FOUND);
    assert_eq!(status(&app, other, &theirs).await, "READY");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_integration_api_takes_an_api_key_only(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("integration").await;
    let task = create(&app, tenant, commerce, "i-1", "TASK").await;
    let key = app
        .post(
            tenant,
            "/api/api-keys",
            &json!({"name": "erp", "permissions": ["VIEW_ACTIVITIES", "SUBMIT_ACTIVITY_RESULT"]}),
        )
        .await;
    key.assert_status(StatusCode::CREATED);
    let key = key.body["plaintextKey"].as_str().unwrap().to_owned();
    let with_key = |method: Method, uri: &str, body: Option<&Value>| {
        let mut req = Request::builder().method(method).uri(uri).header("x-api-key", &key);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap()
    };
    let types = app.send(with_key(Method::GET, "/api/integration/task-result-type-configs", None)).await;
    types.assert_status(StatusCode::OK);
    let reschedule = types.body.as_array().unwrap().iter().find(|t| t["code"] == "RESCHEDULE").unwrap().clone();
    assert_eq!(reschedule["requiresFutureScheduledAt"], true);
    let pulled = app.send(with_key(Method::GET, "/api/integration/activities/tasks?status=READY", None)).await;
    pulled.assert_status(StatusCode::OK);
    assert_eq!(pulled.body["meta"]["total"], 1);
    assert_eq!(pulled.body["data"][0]["activity"]["id"], task.as_str());
    assert_eq!(pulled.body["data"][0]["targetUser"]["externalId"], "u-juan");
    let submitted = app
        .send(with_key(Method::POST, "/api/integration/activity-results/tasks", Some(&result(&task, "EFFECTIVE"))))
        .await;
    submitted.assert_status(StatusCode::CREATED);
    assert_eq!(status(&app, tenant, &task).await, "COMPLETED");

    let bearer = app
        .call(Method::GET, "/api/integration/task-result-type-configs", Some(&admin_token(tenant)), Some(tenant), None)
        .await;
    bearer.assert_status(StatusCode::FORBIDDEN);
    assert!(bearer.body["detail"].as_str().unwrap().contains("x-api-key"));
}

#[sqlx::test(migrations = "../migrations")]
async fn manual_dispatch_sends_a_ready_task_now_and_refuses_messages_and_the_rest(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 60_000, 3), Some(SECRETS_KEY));
    let receiver = Receiver::start(Answer::Accept).await;
    let (tenant, commerce) = app.seeded("manual").await;
    let admin = admin_token(tenant);
    let dispatch = |id: &str| format!("/api/activities/tasks/{id}/dispatch");

    let task = create(&app, tenant, commerce, "t-1", "TASK").await;
    let none = app.call(Method::POST, &dispatch(&task), Some(&admin), Some(tenant), None).await;
    none.assert_status(StatusCode::NOT_FOUND);
    webhook(&app, tenant, "WHATSAPP", &receiver).await;
    let viewer = token("viewer@test", &[tenant], &["VIEWER"], &[]);
    app.call(Method::POST, &dispatch(&task), Some(&viewer), Some(tenant), None)
        .await
        .assert_status(StatusCode::FORBIDDEN);
    let fde = token("fde@test", &[tenant], &["FDE"], &[]);
    app.call(Method::POST, &dispatch(&task), Some(&fde), Some(tenant), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    assert_eq!(status(&app, tenant, &task).await, "DISPATCHED");
    assert_eq!(receiver.received().len(), 1);
    app.call(Method::POST, &dispatch(&task), Some(&admin), Some(tenant), None)
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    let message = create(&app, tenant, commerce, "t-2", "MESSAGE").await;
    app.call(Method::POST, &dispatch(&message), Some(&admin), Some(tenant), None)
        .await
        .assert_status(StatusCode::BAD_REQUEST);

    receiver.answer(Answer::Status(503));
    let refused = create(&app, tenant, commerce, "t-3", "TASK").await;
    let res = app.call(Method::POST, &dispatch(&refused), Some(&admin), Some(tenant), None).await;
    res.assert_status(StatusCode::BAD_GATEWAY);
    assert!(res.body["detail"].as_str().unwrap().contains("503"), "{}", res.body);
    assert_eq!(status(&app, tenant, &refused).await, "READY", "one attempt of three");
}

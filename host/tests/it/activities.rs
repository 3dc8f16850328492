//! Creating and reading activities: the seed contract, idempotency, tenant
//! isolation and the read routes.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, seed_body};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_seed_example_answers_201_with_exactly_the_documented_fields(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("seed").await;

    let res = app.create_activity(tenant, &seed_body(commerce, "msg-2025-01-15-001")).await;
    res.assert_status(StatusCode::CREATED);
    let b = &res.body;
    let expected: BTreeSet<String> = [
        "id",
        "type",
        "channel",
        "status",
        "idempotencyKey",
        "scheduledAt",
        "commerceAssignment",
        "reason",
        "targetUsers",
        "attributes",
        "createdAt",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys(b), expected);
    assert_eq!(b["type"], "MESSAGE");
    assert_eq!(b["channel"], "WHATSAPP");
    assert_eq!(b["status"], "READY");
    assert_eq!(b["idempotencyKey"], "msg-2025-01-15-001");
    assert_eq!(b["scheduledAt"], "2025-01-16T09:00:00.000Z");
    assert_eq!(b["reason"], "Monthly promotion");
    assert_eq!(b["commerceAssignment"], json!({"commerceId": commerce.to_string()}));
    let id = b["id"].as_str().unwrap();
    assert_eq!(res.headers["location"], format!("/api/activities/{id}").as_str());
    assert!(b["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(b["targetUsers"][0]["resolutionStatus"], "LOCKED");
    assert_eq!(b["attributes"][0]["key"], "commerce_info");
    assert_eq!(b["attributes"][0]["resolutionStatus"], "RESOLVED");
}

/// Every row a create writes gets a time-ordered id (UUIDv7), so each index
/// on an id takes its inserts at its right edge: a random id (v4) lands on
/// a random leaf page, and after each checkpoint every leaf page's first
/// change writes the whole page to the WAL.
#[sqlx::test(migrations = "../migrations")]
async fn a_creates_rows_get_time_ordered_ids(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("seed").await;
    let mut activities = Vec::new();
    for key in ["ordered-1", "ordered-2"] {
        let res = app.create_activity(tenant, &seed_body(commerce, key)).await;
        res.assert_status(StatusCode::CREATED);
        activities.push(uuid::Uuid::parse_str(res.body["id"].as_str().unwrap()).unwrap());
    }
    assert!(activities[0] < activities[1], "ids of later creates sort after earlier ones: {activities:?}");
    let ids: Vec<(String, uuid::Uuid)> = sqlx::query_as(
        "SELECT 'activity', id FROM activities WHERE id = ANY($1) \
         UNION ALL SELECT 'target user', id FROM activity_target_users WHERE activity_id = ANY($1) \
         UNION ALL SELECT 'attribute', id FROM activity_attributes WHERE activity_id = ANY($1) \
         UNION ALL SELECT 'status event', id FROM activity_status_events WHERE activity_id = ANY($1)",
    )
    .bind(&activities)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ids.len(), 8, "an activity, a target user, an attribute and an event each: {ids:?}");
    for (row, id) in &ids {
        assert_eq!(id.get_version_num(), 7, "the {row} id {id} is not a UUIDv7");
    }
}

/// Ids that statements make themselves (status events of dispatch and
/// results, commerce sync) come from `reten_uuid_v7()`: a UUIDv7 of the
/// current millisecond, as the service makes in Rust.
#[sqlx::test(migrations = "../migrations")]
async fn ids_made_in_sql_are_uuidv7_of_the_current_millisecond(pool: PgPool) {
    let (id, now_ms): (uuid::Uuid, i64) =
        sqlx::query_as("SELECT reten_uuid_v7(), (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(id.get_version_num(), 7, "{id}");
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
    let (secs, nanos) = id.get_timestamp().expect("a v7 id has a timestamp").to_unix();
    let id_ms = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
    assert!((now_ms - id_ms).abs() <= 1_000, "{id} is of {id_ms} ms, the database's clock says {now_ms}");
    // Both carry the millisecond in the same place: one made in Rust after
    // one made in SQL is of the same millisecond or later.
    let rust_id = reten_host::domain::new_id();
    assert!(rust_id.as_bytes()[..6] >= id.as_bytes()[..6], "{rust_id} made after {id}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_same_request_again_answers_409_naming_the_existing_activity(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("dup").await;
    let body = seed_body(commerce, "k-1");
    let first = app.create_activity(tenant, &body).await;
    first.assert_status(StatusCode::CREATED);

    let second = app.create_activity(tenant, &body).await;
    second.assert_status(StatusCode::CONFLICT);
    assert_eq!(second.body["activityId"], first.body["id"]);
    assert_eq!(second.headers["content-type"], "application/problem+json");
    assert!(second.body["detail"].as_str().unwrap().contains("k-1"));
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_requests_with_one_key_create_exactly_one_activity(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("race").await;
    let body = seed_body(commerce, "race-key");
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move { app.create_activity(tenant, &body).await })
        })
        .collect();
    let mut created = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        let res = t.await.unwrap();
        match res.status {
            StatusCode::CREATED => created.push(res.body["id"].clone()),
            StatusCode::CONFLICT => conflicts.push(res.body["activityId"].clone()),
            other => panic!("unexpected {other}: {}", res.body),
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(conflicts.len(), 49);
    assert!(conflicts.iter().all(|id| *id == created[0]), "every 409 names the winner");
    assert_eq!(app.count("activities").await, 1);
    assert_eq!(app.count("activity_target_users").await, 1);
    assert_eq!(app.count("activity_status_events").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_commerce_is_404(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("unknown").await;
    let res = app.create_activity(tenant, &seed_body(uuid::Uuid::new_v4(), "k")).await;
    res.assert_status(StatusCode::NOT_FOUND);
    assert!(res.body["detail"].as_str().unwrap().contains("commerce"));
    assert_eq!(app.count("activities").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn another_tenants_commerce_and_activity_are_404(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant_a, commerce_a) = app.seeded("tenant-a").await;
    let (tenant_b, _) = app.seeded("tenant-b").await;
    let created = app.create_activity(tenant_a, &seed_body(commerce_a, "a-1")).await;
    created.assert_status(StatusCode::CREATED);
    let activity_a = created.body["id"].as_str().unwrap();

    let res = app.create_activity(tenant_b, &seed_body(commerce_a, "b-1")).await;
    res.assert_status(StatusCode::NOT_FOUND);
    for path in ["", "/target-users", "/attributes", "/status-events"] {
        let res = app.get(tenant_b, &format!("/api/activities/{activity_a}{path}")).await;
        res.assert_status(StatusCode::NOT_FOUND);
        assert!(!res.body.to_string().contains(&commerce_a.to_string()));
    }
    let res = app.get(tenant_b, &format!("/api/commerces/{commerce_a}")).await;
    res.assert_status(StatusCode::NOT_FOUND);
    let list = app.get(tenant_b, "/api/activities").await;
    assert_eq!(list.body["meta"]["total"], 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_read_routes_show_what_was_stored_in_camel_case(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("reads").await;
    let mut body = seed_body(commerce, "read-1");
    body["attribute_keys"] = json!(["commerce_info", "promotions"]);
    body["score"] = json!(7);
    body["suggested_execution_time"] = json!("2025-01-16T12:30:00+03:00");
    let created = app.create_activity(tenant, &body).await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap();

    let detail = app.get(tenant, &format!("/api/activities/{id}")).await;
    detail.assert_status(StatusCode::OK);
    let d = &detail.body;
    assert_eq!(d["status"], "READY");
    assert_eq!(d["score"], 7);
    assert_eq!(d["suggestedExecutionTime"], "2025-01-16T09:30:00.000Z");
    assert_eq!(d["commerceAssignment"]["commerce"]["name"], "Almacén Don Pepe");
    assert_eq!(d["targetUsers"], created.body["targetUsers"], "create and read render the same target users");
    assert_eq!(d["attributes"], created.body["attributes"], "create and read render the same attributes");
    assert_eq!(d["createdAt"], created.body["createdAt"]);

    let targets = app.get(tenant, &format!("/api/activities/{id}/target-users")).await;
    let t = &targets.body[0];
    assert_eq!(t["resolutionStatus"], "LOCKED");
    assert_eq!(t["resolutionStrategy"], "ON_CREATION");
    assert_eq!(t["lockReason"], "CRITERIA_MATCH");
    assert_eq!(t["criterionType"], "ROLE_MATCH");
    assert_eq!(t["policyName"], "role_match");
    assert_eq!(t["policyEngine"], "RHAI");
    assert_eq!(t["policyVersion"].as_str().unwrap().len(), 64);
    assert_eq!(t["commerceUser"]["firstName"], "Juan");
    assert_eq!(t["commerceUser"]["lastName"], "Perez");

    let attrs = app.get(tenant, &format!("/api/activities/{id}/attributes")).await;
    let a = attrs.body.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["key"], "commerce_info");
    assert_eq!(a[0]["value"]["name"], "Almacén Don Pepe");
    assert_eq!(a[0]["value"]["address"]["street"], "Av. Siempre Viva");
    assert_eq!(a[0]["resolverType"], "INTERNAL_SERVICE");
    assert_eq!(a[1]["key"], "promotions");
    assert_eq!(a[1]["value"], json!([{"code": "2x1"}]));
    assert!(a[0]["attributeKeyId"].as_str().is_some());

    let events = app.get(tenant, &format!("/api/activities/{id}/status-events")).await;
    let e = &events.body[0];
    assert_eq!(e["eventType"], "CREATED");
    assert_eq!(e["fromStatus"], Value::Null);
    assert_eq!(e["toStatus"], "READY");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_activity_list_filters_and_pages(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("list").await;
    for i in 0..3 {
        let mut body = seed_body(commerce, &format!("list-{i}"));
        if i == 2 {
            body["channel"] = json!("EMAIL");
            body["type"] = json!("TASK");
        }
        app.create_activity(tenant, &body).await.assert_status(StatusCode::CREATED);
    }
    let all = app.get(tenant, "/api/activities?per_page=2").await;
    all.assert_status(StatusCode::OK);
    assert_eq!(all.body["meta"], json!({"page": 1, "limit": 2, "total": 3, "totalPages": 2}));
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2);

    let email = app.get(tenant, "/api/activities?channel=EMAIL&type=TASK").await;
    assert_eq!(email.body["meta"]["total"], 1);
    assert_eq!(email.body["data"][0]["idempotencyKey"], "list-2");

    let searched = app.get(tenant, "/api/activities?search=LIST-1&limit=10").await;
    assert_eq!(searched.body["meta"]["total"], 1);

    let bad = app.get(tenant, "/api/activities?status=DONE&per_page=500&colour=red").await;
    bad.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_fields(), ["status", "per_page", "colour"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_activity_id_is_a_400_naming_the_parameter(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("badid").await;
    let res = app.call(Method::GET, "/api/activities/not-a-uuid", Some(&admin_token(tenant)), Some(tenant), None).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["id"]);
}

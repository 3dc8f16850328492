//! `POST /api/activities` validation: every rule answers 400 naming its
//! field, and malformed requests get their own status.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, seed_body};

/// One rule of DESIGN.md: a change to the seed body and the field it names.
struct Case {
    rule: &'static str,
    field: &'static str,
    change: fn(&mut Value),
}

fn cases() -> Vec<Case> {
    vec![
        Case { rule: "type must be TASK or MESSAGE", field: "type", change: |b| b["type"] = json!("LETTER") },
        Case {
            rule: "type is required",
            field: "type",
            change: |b| {
                b.as_object_mut().unwrap().remove("type");
            },
        },
        Case { rule: "channel must be known", field: "channel", change: |b| b["channel"] = json!("FAX") },
        Case { rule: "reason must not be empty", field: "reason", change: |b| b["reason"] = json!("  ") },
        Case {
            rule: "reason is at most 1000 characters",
            field: "reason",
            change: |b| b["reason"] = json!("x".repeat(1001)),
        },
        Case { rule: "commerce_id must be a UUID", field: "commerce_id", change: |b| b["commerce_id"] = json!("c-1") },
        Case {
            rule: "idempotency_key must not be empty",
            field: "idempotency_key",
            change: |b| b["idempotency_key"] = json!(""),
        },
        Case {
            rule: "idempotency_key is at most 255 characters",
            field: "idempotency_key",
            change: |b| b["idempotency_key"] = json!("k".repeat(256)),
        },
        Case {
            rule: "idempotency_key has no control characters",
            field: "idempotency_key",
            change: |b| b["idempotency_key"] = json!("a\nb"),
        },
        Case {
            rule: "scheduled_at is RFC 3339",
            field: "scheduled_at",
            change: |b| b["scheduled_at"] = json!("16/01/2025"),
        },
        Case {
            rule: "scheduled_at needs an offset",
            field: "scheduled_at",
            change: |b| b["scheduled_at"] = json!("2025-01-16T09:00:00"),
        },
        Case {
            rule: "suggested_execution_time is RFC 3339",
            field: "suggested_execution_time",
            change: |b| b["suggested_execution_time"] = json!("soon"),
        },
        Case { rule: "score is a 32-bit integer", field: "score", change: |b| b["score"] = json!(4_294_967_296_i64) },
        Case { rule: "score is an integer", field: "score", change: |b| b["score"] = json!("10") },
        Case {
            rule: "target_criteria has at most 20 items",
            field: "target_criteria",
            change: |b| b["target_criteria"] = json!(vec![json!({"type": "ROLE_MATCH"}); 21]),
        },
        Case {
            rule: "target_criteria type names a criterion the tenant has",
            field: "target_criteria[0].type",
            change: |b| b["target_criteria"] = json!([{"type": "ASTROLOGY"}]),
        },
        Case {
            rule: "target_criteria config is an object",
            field: "target_criteria[0].config",
            change: |b| b["target_criteria"] = json!([{"type": "ROLE_MATCH", "config": [1]}]),
        },
        Case {
            rule: "attribute_keys has at most 50 keys",
            field: "attribute_keys",
            change: |b| b["attribute_keys"] = json!(vec!["commerce_info"; 51]),
        },
        Case {
            rule: "attribute_keys are unique",
            field: "attribute_keys[1]",
            change: |b| b["attribute_keys"] = json!(["commerce_info", "commerce_info"]),
        },
        Case {
            rule: "attribute_keys come from the catalogue",
            field: "attribute_keys[0]",
            change: |b| b["attribute_keys"] = json!(["weather"]),
        },
        Case {
            rule: "attributes has at most 50 items",
            field: "attributes",
            change: |b| b["attributes"] = json!(vec![json!({"key": "promotions"}); 51]),
        },
        Case {
            rule: "attributes keys are unique",
            field: "attributes[1].key",
            change: |b| b["attributes"] = json!([{"key": "promotions"}, {"key": "promotions"}]),
        },
        Case {
            rule: "attributes keys come from the catalogue",
            field: "attributes[0].key",
            change: |b| b["attributes"] = json!([{"key": "weather", "value": 1}]),
        },
        Case { rule: "unknown fields are refused", field: "colour", change: |b| b["colour"] = json!("red") },
    ]
}

#[sqlx::test(migrations = "../migrations")]
async fn each_validation_rule_answers_400_naming_its_field(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("rules").await;
    for case in cases() {
        let mut body = seed_body(commerce, "rule");
        (case.change)(&mut body);
        let res = app.create_activity(tenant, &body).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}: {}", case.rule, res.body);
        assert_eq!(res.error_fields(), [case.field], "{}: {}", case.rule, res.body);
        assert_eq!(res.headers["content-type"], "application/problem+json", "{}", case.rule);
        assert!(!res.body["errors"][0]["message"].as_str().unwrap().is_empty(), "{}", case.rule);
    }
    assert_eq!(app.count("activities").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_body_with_several_bad_fields_lists_them_all(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("several").await;
    let mut body = seed_body(commerce, "");
    body["type"] = json!("LETTER");
    body["channel"] = json!(3);
    body["scheduled_at"] = json!(null);
    body["extra"] = json!(true);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["type", "channel", "idempotency_key", "scheduled_at", "extra"]);
    assert_eq!(res.body["title"], "Bad Request");
    assert_eq!(res.body["status"], 400);
    assert!(res.body["type"].as_str().unwrap().ends_with("validation-error"));
}

async fn raw(
    app: &TestApp,
    tenant: reten_host::domain::TenantId,
    content_type: &str,
    body: Vec<u8>,
) -> crate::support::TestResponse {
    let req = Request::post("/api/activities")
        .header("authorization", format!("Bearer {}", admin_token(tenant)))
        .header("x-tenant-id", tenant.to_string())
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    app.send(req).await
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("malformed").await;

    let res = raw(&app, tenant, "application/json", b"{\"type\": ".to_vec()).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert!(res.body["detail"].as_str().unwrap().contains("not valid JSON"));

    let res = raw(&app, tenant, "text/plain", seed_body(commerce, "ct").to_string().into_bytes()).await;
    res.assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(res.body["detail"].as_str().unwrap().contains("text/plain"));

    let mut big = seed_body(commerce, "big");
    big["assignment_reason"] = json!("x".repeat(300 << 10));
    let res = raw(&app, tenant, "application/json", big.to_string().into_bytes()).await;
    res.assert_status(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(res.body["detail"].as_str().unwrap().contains("256 KiB"));

    let res = raw(&app, tenant, "application/json", b"[1, 2]".to_vec()).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["body"]);
    assert_eq!(app.count("activities").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_nul_character_anywhere_is_a_400_naming_its_field_not_a_500(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("nul").await;
    let mut body = seed_body(commerce, "nul-1");
    body["reason"] = json!("before\u{0}after");
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["reason"]);

    let res = app.sync(tenant, json!([{"external_id": "c-9", "name": "x", "metadata": {"note": "a\u{0}b"}}])).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["items[0].metadata.note"]);

    let res = app.get(tenant, "/api/commerces?search=a%00b").await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["search"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn json_nested_deeper_than_the_limit_is_refused_before_any_policy_sees_it(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("deep").await;
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let mut body = seed_body(commerce, "deep-1");
    body["attributes"] = json!([{"key": "promotions", "value": deep}]);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert!(res.body["detail"].as_str().unwrap().contains("nested"), "{}", res.body);
    assert_eq!(app.count("activities").await, 0);
}

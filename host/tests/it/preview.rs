//! `POST /api/activities/preview`: the decision create would store, with the
//! full trace, and nothing written.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, seed_body};

#[sqlx::test(migrations = "../migrations")]
async fn preview_returns_the_decision_create_then_stores_and_writes_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("preview").await;
    let mut body = seed_body(commerce, "pv-1");
    body["attribute_keys"] = json!(["commerce_info", "promotions"]);
    body["target_criteria"] = json!([{"type": "ROLE_MATCH", "config": {"role": "ORDERS"}}, {"type": "ROLE_MATCH", "config": {"role": "COMMERCE_REP"}, "priority": 1}]);
    let tables = [
        "activities",
        "activity_target_users",
        "activity_attributes",
        "activity_status_events",
        "commerce_user_last_targets",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(app.count(t).await);
    }

    let preview = app.post(tenant, "/api/activities/preview", &body).await;
    preview.assert_status(StatusCode::OK);
    let mut after = Vec::new();
    for t in tables {
        after.push(app.count(t).await);
    }
    assert_eq!(before, after, "preview writes nothing");

    let trace = &preview.body["trace"];
    let criteria = trace["target"]["criteria"].as_array().unwrap();
    assert_eq!(criteria.len(), 2);
    for step in criteria {
        assert_eq!(step["policy"]["name"], "role_match");
        assert_eq!(step["policy"]["engine"], "RHAI");
        assert_eq!(step["policy"]["version"].as_str().unwrap().len(), 64);
        assert!(step["durationUs"].as_u64().is_some());
    }
    assert_eq!(criteria[0]["outcome"], "NO_MATCH");
    assert_eq!(criteria[0]["candidates"][0]["skipReason"], "UNREACHABLE");
    assert_eq!(criteria[1]["outcome"], "MATCHED");
    assert_eq!(trace["target"]["configsConsidered"][0]["applies"], true);
    let attrs = trace["attributes"].as_array().unwrap();
    assert_eq!(attrs[0]["policy"]["name"], "commerce_info");
    assert_eq!(attrs[1]["policy"]["name"], "promotions");

    // The same body, created: the same decision.
    let created = app.create_activity(tenant, &body).await;
    created.assert_status(StatusCode::CREATED);
    assert_eq!(created.body["status"], preview.body["status"]);
    for field in ["commerceUserId", "resolutionStatus", "lockReason", "criterionType", "policyName", "policyVersion"] {
        assert_eq!(created.body["targetUsers"][0][field], preview.body["targetUsers"][0][field], "{field}");
    }
    for (c, p) in
        created.body["attributes"].as_array().unwrap().iter().zip(preview.body["attributes"].as_array().unwrap())
    {
        for field in ["key", "value", "resolutionStatus", "resolverType", "policyVersion"] {
            assert_eq!(c[field], p[field], "{field}");
        }
    }

    // No idempotency check: the key is taken now, preview still answers.
    let again = app.post(tenant, "/api/activities/preview", &body).await;
    again.assert_status(StatusCode::OK);
    // Validation is the create's.
    body["channel"] = json!("FAX");
    let bad = app.post(tenant, "/api/activities/preview", &body).await;
    bad.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_fields(), ["channel"]);
}

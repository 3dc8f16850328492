//! Abuse limits (header size, request deadline, requests in flight, per-tenant
//! rate) and the metrics that count what happened.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use reten_host::api::limits::LimitSettings;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, seed_body};

/// A tenant criterion that loops until its (raised) deadline of one second.
/// A Wasm call yields to the executor at every epoch tick, so the request's
/// own deadline can cut it; a Rhai call runs to its policy deadline.
fn slow_tenant(app: &TestApp, tenant: reten_host::domain::TenantId) {
    app.write_tenant_bytes(tenant, "criteria/slow.wasm", &crate::support::plugin("test_loop"));
    app.write_tenant_file(tenant, "tenant.toml", "[limits]\ndeadline_ms = 1000\n");
}

fn slow_body(commerce: uuid::Uuid, key: &str) -> serde_json::Value {
    let mut body = seed_body(commerce, key);
    body["target_criteria"] = json!([{"type": "SLOW"}]);
    body
}

#[sqlx::test(migrations = "../migrations")]
async fn oversized_headers_are_431(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("headers").await;
    let req = Request::get("/api/activities")
        .header("authorization", format!("Bearer {}", admin_token(tenant)))
        .header("x-tenant-id", tenant.to_string())
        .header("x-padding", "p".repeat(20 << 10))
        .body(Body::empty())
        .unwrap();
    let res = app.send(req).await;
    res.assert_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(res.body["detail"].as_str().unwrap().contains("16384"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tenant_past_its_rate_gets_429_with_retry_after_and_another_tenant_does_not(pool: PgPool) {
    let limits = LimitSettings { tenant_rate: 0.5, tenant_burst: 3.0, ..LimitSettings::default() };
    let app = TestApp::with_limits(pool, limits).await;
    let (a, _) = app.seeded("rate-a").await;
    let (b, _) = app.seeded("rate-b").await;
    // Seeding spent a's and b's first tokens; spend the rest of a's burst.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.get(a, "/api/activities").await.status);
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let res = app.get(a, "/api/activities").await;
    res.assert_status(StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers["retry-after"].to_str().unwrap().parse::<u32>().unwrap() >= 1);
    app.get(b, "/api/activities").await.assert_status(StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_request_past_its_deadline_is_503_with_retry_after(pool: PgPool) {
    let limits = LimitSettings { request_timeout: Duration::from_millis(200), ..LimitSettings::default() };
    let app = TestApp::with_limits(pool, limits).await;
    let (tenant, commerce) = app.seeded("timeout").await;
    slow_tenant(&app, tenant);
    let res = app.create_activity(tenant, &slow_body(commerce, "slow-1")).await;
    res.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers.contains_key("retry-after"));
    assert!(res.body["detail"].as_str().unwrap().contains("200 ms"));
    // Nothing was half-written, and the service answers on.
    assert_eq!(app.count("activity_target_users").await, app.count("activities").await);
    app.get(tenant, "/api/activities").await.assert_status(StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn past_the_in_flight_bound_requests_are_shed_with_503_but_health_answers(pool: PgPool) {
    let limits = LimitSettings { max_in_flight: 1, ..LimitSettings::default() };
    let app = Arc::new(TestApp::with_limits(pool, limits).await);
    let (tenant, commerce) = app.seeded("inflight").await;
    slow_tenant(&app, tenant);
    let slow = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.create_activity(tenant, &slow_body(commerce, "slow-2")).await })
    };
    // Wait (bounded) until the slow request holds the only slot.
    for _ in 0..10_000 {
        if app.state.limits.in_flight() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(app.state.limits.in_flight(), 1, "the slow request is in flight");
    let res = app.get(tenant, "/api/activities").await;
    res.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.body["detail"].as_str().unwrap().contains("capacity"));
    let health = app.send(Request::get("/readyz").body(Body::empty()).unwrap()).await;
    health.assert_status(StatusCode::OK);
    slow.await.unwrap().assert_status(StatusCode::CREATED);
}

#[test]
fn the_metrics_token_is_recognised_and_nothing_else_is() {
    let auth = reten_host::api::auth::Authenticator::new(&reten_host::api::auth::JwtSettings {
        secret: Some(crate::support::SECRET.into()),
        metrics_token: Some("scraper-token-scraper-token-scraper-token".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(auth.is_metrics_token("scraper-token-scraper-token-scraper-token"));
    assert!(!auth.is_metrics_token("scraper-token"));
    let without = reten_host::api::auth::Authenticator::new(&reten_host::api::auth::JwtSettings {
        secret: Some(crate::support::SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    assert!(!without.is_metrics_token(""));
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_count_requests_policy_calls_and_activities(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("metrics").await;
    app.create_activity(tenant, &seed_body(commerce, "m-1")).await.assert_status(StatusCode::CREATED);
    let anonymous = app.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    anonymous.assert_status(StatusCode::UNAUTHORIZED);
    let tenant_admin = app.call(axum::http::Method::GET, "/metrics", Some(&admin_token(tenant)), None, None).await;
    tenant_admin.assert_status(StatusCode::FORBIDDEN);
    let res =
        app.call(axum::http::Method::GET, "/metrics", Some(&crate::support::super_admin_token()), None, None).await;
    res.assert_status(StatusCode::OK);
    let text = res.body.as_str().unwrap().to_owned();
    assert!(
        text.contains(r#"reten_http_requests_total{method="POST",route="/api/activities",status="201"}"#),
        "{text}"
    );
    assert!(text.contains(&format!(r#"policy="role_match",tenant="{tenant}""#)), "{text}");
    assert!(text.contains("reten_policy_call_duration_seconds_bucket"));
    assert!(text.contains(r#"reten_activities_created_total{status="READY"}"#));
    assert!(text.contains(r#"reten_db_pool_connections{pool="create",state="max"}"#));
    assert!(text.contains("reten_db_pool_acquire_seconds_bucket"));
    assert!(text.contains(r#"reten_policy_reloads_total{result="published"}"#));
}

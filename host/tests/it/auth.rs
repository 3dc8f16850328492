//! The auth matrix: each failure has its documented status.

use axum::http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{SECRET, TestApp, admin_token, seed_body, token};

fn claims(exp_offset: i64) -> serde_json::Value {
    json!({"sub": "x", "exp": chrono::Utc::now().timestamp() + exp_offset, "tenant_ids": [], "roles": ["SUPER_ADMIN"]})
}

#[sqlx::test(migrations = "../migrations")]
async fn each_auth_failure_has_its_documented_status(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("auth").await;
    let (other_tenant, _) = app.seeded("auth-other").await;
    let body = seed_body(commerce, "auth-1");
    let unknown_tenant = reten_host::domain::TenantId::new();

    let bad_signature = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(3600),
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(-3600),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    // An unsigned token: header {"alg":"none"}.
    let alg_none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#), b64.encode(claims(3600).to_string()))
    };
    let viewer = token("viewer", &[tenant], &["VIEWER"], &[]);
    let other = admin_token(other_tenant);
    let admin = admin_token(tenant);
    let root = crate::support::super_admin_token();

    let cases: Vec<(&str, Option<&str>, Option<String>, StatusCode)> = vec![
        ("no token", None, Some(tenant.to_string()), StatusCode::UNAUTHORIZED),
        ("bad signature", Some(&bad_signature), Some(tenant.to_string()), StatusCode::UNAUTHORIZED),
        ("expired", Some(&expired), Some(tenant.to_string()), StatusCode::UNAUTHORIZED),
        ("alg none", Some(&alg_none), Some(tenant.to_string()), StatusCode::UNAUTHORIZED),
        ("garbage token", Some("not.a.jwt"), Some(tenant.to_string()), StatusCode::UNAUTHORIZED),
        ("token for another tenant", Some(&other), Some(tenant.to_string()), StatusCode::FORBIDDEN),
        ("missing permission", Some(&viewer), Some(tenant.to_string()), StatusCode::FORBIDDEN),
        ("missing x-tenant-id", Some(&admin), None, StatusCode::BAD_REQUEST),
        ("malformed x-tenant-id", Some(&admin), Some("tenant-1".into()), StatusCode::BAD_REQUEST),
        ("unknown tenant", Some(&root), Some(unknown_tenant.to_string()), StatusCode::NOT_FOUND),
    ];
    for (name, tok, tenant_header, expected) in cases {
        let mut req = axum::http::Request::post("/api/activities").header("content-type", "application/json");
        if let Some(t) = tok {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(t) = &tenant_header {
            req = req.header("x-tenant-id", t);
        }
        let res = app.send(req.body(axum::body::Body::from(body.to_string())).unwrap()).await;
        assert_eq!(res.status, expected, "{name}: {}", res.body);
        assert_eq!(res.headers["content-type"], "application/problem+json", "{name}");
        assert!(!res.body["detail"].as_str().unwrap().is_empty(), "{name}");
    }
    assert_eq!(app.count("activities").await, 0);

    // The same admin with the right header succeeds, and a VIEWER may read.
    app.create_activity(tenant, &body).await.assert_status(StatusCode::CREATED);
    let res = app.call(Method::GET, "/api/activities", Some(&viewer), Some(tenant), None).await;
    res.assert_status(StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_explicit_permission_grants_what_no_role_does(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("perm").await;
    let creator = token("integration", &[tenant], &[], &["CREATE_ACTIVITY"]);
    let res = app
        .call(Method::POST, "/api/activities", Some(&creator), Some(tenant), Some(&seed_body(commerce, "p-1")))
        .await;
    res.assert_status(StatusCode::CREATED);
    let res = app.call(Method::GET, "/api/activities", Some(&creator), Some(tenant), None).await;
    res.assert_status(StatusCode::FORBIDDEN);
    assert!(res.body["detail"].as_str().unwrap().contains("VIEW_ACTIVITIES"));
}

#[sqlx::test(migrations = "../migrations")]
async fn only_create_tenant_may_set_up_tenants_and_slugs_are_unique(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = token("admin", &[], &["ADMIN"], &[]);
    let body = json!({"name": "Acme", "slug": "acme"});
    let res = app.call(Method::POST, "/api/tenant/setup", Some(&admin), None, Some(&body)).await;
    res.assert_status(StatusCode::FORBIDDEN);
    app.create_tenant("acme").await;
    let res = app
        .call(Method::POST, "/api/tenant/setup", Some(&crate::support::super_admin_token()), None, Some(&body))
        .await;
    res.assert_status(StatusCode::CONFLICT);
    let res = app
        .call(
            Method::POST,
            "/api/tenant/setup",
            Some(&crate::support::super_admin_token()),
            None,
            Some(&json!({"name": "", "slug": "Bad Slug"})),
        )
        .await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["name", "slug"]);
}

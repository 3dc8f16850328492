//! API keys: created once in plaintext, stored hashed, used without
//! `x-tenant-id`, bounded by their permissions, and refused once revoked or
//! expired.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, TestResponse, admin_token, seed_body, token};

async fn with_key(
    app: &TestApp,
    method: Method,
    uri: &str,
    key: &str,
    body: Option<&serde_json::Value>,
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(uri).header("x-api-key", key);
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => {
            req = req.header("accept", "application/json");
            req.body(Body::empty())
        }
    };
    app.send(req.unwrap()).await
}

#[sqlx::test(migrations = "../migrations")]
async fn an_api_key_works_without_a_tenant_header_within_its_permissions_until_revoked(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("keys").await;
    let admin = admin_token(tenant);
    let res = app
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&admin),
            Some(tenant),
            Some(&json!({"name": "integration", "permissions": ["CREATE_ACTIVITY", "view_activities"]})),
        )
        .await;
    res.assert_status(StatusCode::CREATED);
    let key = res.body["plaintextKey"].as_str().unwrap().to_owned();
    let id = res.body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("rtn_sk_"));
    assert!(key.starts_with(res.body["keyPrefix"].as_str().unwrap()));
    assert_eq!(res.body["permissions"], json!(["VIEW_ACTIVITIES", "CREATE_ACTIVITY"]));
    assert_eq!(res.body["isActive"], true);

    // The plaintext is nowhere in the table.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key_prefix, key_hash FROM api_keys").fetch_all(&app.pool).await.unwrap();
    assert_eq!(rows.len(), 1);
    let dump: String =
        sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k").fetch_one(&app.pool).await.unwrap();
    assert!(!dump.contains(&key[7..]), "the secret part of the key is not stored");
    assert_eq!(rows[0].1, reten_host::api::auth::hash_key(&key));

    let res = with_key(&app, Method::POST, "/api/activities", &key, Some(&seed_body(commerce, "key-1"))).await;
    res.assert_status(StatusCode::CREATED);
    let res = with_key(&app, Method::GET, "/api/activities", &key, None).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["meta"]["total"], 1);
    let res = with_key(&app, Method::GET, "/api/commerces", &key, None).await;
    res.assert_status(StatusCode::FORBIDDEN);
    let other = app.create_tenant("keys-other").await;
    let mut req = Request::get("/api/activities").header("x-api-key", &key).header("x-tenant-id", other.to_string());
    req = req.header("accept", "application/json");
    let res = app.send(req.body(Body::empty()).unwrap()).await;
    res.assert_status(StatusCode::FORBIDDEN);

    let listed = app.call(Method::GET, "/api/api-keys", Some(&admin), Some(tenant), None).await;
    assert_eq!(listed.body[0]["id"], id.as_str());
    assert!(listed.body[0]["lastUsedAt"].as_str().is_some(), "the use was recorded");
    assert!(listed.body[0].get("plaintextKey").is_none());

    let someone_else = token("someone-else", &[tenant], &["ADMIN"], &[]);
    let res =
        app.call(Method::POST, &format!("/api/api-keys/{id}/revoke"), Some(&someone_else), Some(tenant), None).await;
    res.assert_status(StatusCode::FORBIDDEN);
    let res = app.call(Method::POST, &format!("/api/api-keys/{id}/revoke"), Some(&admin), Some(tenant), None).await;
    res.assert_status(StatusCode::OK);
    let res = app.call(Method::POST, &format!("/api/api-keys/{id}/revoke"), Some(&admin), Some(tenant), None).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    let res = with_key(&app, Method::GET, "/api/activities", &key, None).await;
    res.assert_status(StatusCode::UNAUTHORIZED);
    assert!(res.body["detail"].as_str().unwrap().contains("revoked"));
    let listed = app.call(Method::GET, "/api/api-keys", Some(&admin), Some(tenant), None).await;
    assert_eq!(listed.body[0]["isActive"], false);
}

#[sqlx::test(migrations = "../migrations")]
async fn keys_are_bounded_by_their_creator_and_refused_when_expired_or_unknown(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("keys-bounds").await;
    let limited = token("limited", &[tenant], &[], &["MANAGE_API_KEYS", "VIEW_ACTIVITIES"]);
    let res = app
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&limited),
            Some(tenant),
            Some(&json!({"name": "x", "permissions": ["CREATE_ACTIVITY"]})),
        )
        .await;
    res.assert_status(StatusCode::FORBIDDEN);
    assert!(res.body["detail"].as_str().unwrap().contains("CREATE_ACTIVITY"));
    let res = app
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&limited),
            Some(tenant),
            Some(&json!({"name": "", "permissions": ["FLY"], "expiresAt": "2020-01-01T00:00:00Z"})),
        )
        .await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["name", "permissions[0]", "expiresAt"]);

    let res = app
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&limited),
            Some(tenant),
            Some(&json!({"name": "soon", "permissions": ["VIEW_ACTIVITIES"], "expiresAt": "2999-01-01T00:00:00Z"})),
        )
        .await;
    res.assert_status(StatusCode::CREATED);
    let key = res.body["plaintextKey"].as_str().unwrap().to_owned();
    // Let it lapse before its first use.
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 minute'").execute(&app.pool).await.unwrap();
    let res = with_key(&app, Method::GET, "/api/activities", &key, None).await;
    res.assert_status(StatusCode::UNAUTHORIZED);
    assert!(res.body["detail"].as_str().unwrap().contains("expired"));

    let res = with_key(&app, Method::GET, "/api/activities", "rtn_sk_0000000000000000", None).await;
    res.assert_status(StatusCode::UNAUTHORIZED);
    let res = with_key(&app, Method::GET, "/api/activities", "not-a-key", None).await;
    res.assert_status(StatusCode::UNAUTHORIZED);
}

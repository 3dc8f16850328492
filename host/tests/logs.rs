//! No token, API key or secret ever reaches a log line: every level, every
//! target, in both formats the service offers, through bearer-token,
//! API-key and refused-credential flows, and a dispatch with credentials.
//!
//! A test binary of its own, so that its capturing subscriber is the
//! process's global one (a thread-local subscriber can lose events to the
//! callsite interest cache when other tests log on other threads).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "it/receiver.rs"]
mod receiver;

use support::{SECRET, TestApp, admin_token, seed_body};

/// A dispatch config's credentials, which must never be logged.
const DISPATCH_KEY: &str = "sk-dispatch-logs-0123456789";
const SIGNING_SECRET: &str = "whsec-dispatch-logs-secret";

fn claims(tenant: TenantId) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": "logs@test", "exp": now + 3_600, "iat": now, "tenant_ids": [tenant.to_string()], "roles": ["ADMIN"]})
}

fn claims_with(tenant: TenantId, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims(tenant);
    edit(c.as_object_mut().unwrap());
    c
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A `Write` into a shared buffer: what the log-capturing subscriber writes to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn no_token_and_no_api_key_appears_in_the_logs(pool: PgPool) {
    use tracing_subscriber::layer::SubscriberExt as _;

    // Every level, every target, in both formats the service offers, into a
    // buffer; for this test's futures only.
    let captured = Captured::default();
    let (text, json_out) = (captured.clone(), captured.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || text.clone()))
        .with(tracing_subscriber::fmt::layer().json().with_writer(move || json_out.clone()));
    // The process's only subscriber: tests running beside it in another
    // binary cannot race its callsite interest, as thread-local ones can.
    tracing::subscriber::set_global_default(subscriber).expect("this binary's only subscriber");

    async move {
        let app = TestApp::new(pool).await;
        let (tenant, commerce) = app.seeded("logs").await;
        let admin = admin_token(tenant);

        // A bearer token: accepted, on a create, a read, a 404 and a 400.
        app.create_activity(tenant, &seed_body(commerce, "log-1")).await.assert_status(StatusCode::CREATED);
        app.get(tenant, "/api/activities").await.assert_status(StatusCode::OK);
        app.get(tenant, &format!("/api/activities/{}", uuid::Uuid::new_v4()))
            .await
            .assert_status(StatusCode::NOT_FOUND);
        // Someone pastes the token into the query string: refused, not logged.
        app.get(tenant, &format!("/api/activities?access_token={admin}")).await.assert_status(StatusCode::BAD_REQUEST);

        // Refused tokens: another signature, expired, garbage.
        let forged = hs256(b"another-secret-another-secret-xx", &claims(tenant));
        let expired = hs256(
            SECRET.as_bytes(),
            &claims_with(tenant, |c| drop(c.insert("exp".into(), json!(chrono::Utc::now().timestamp() - 3_600)))),
        );
        for bad in [&forged, &expired] {
            let res = app.call(axum::http::Method::GET, "/api/activities", Some(bad), Some(tenant), None).await;
            res.assert_status(StatusCode::UNAUTHORIZED);
        }

        // An API key: created (its plaintext in the answer), used, misused,
        // revoked, then refused.
        let res = app
            .post(
                tenant,
                "/api/api-keys",
                &json!({"name": "logs", "permissions": ["CREATE_ACTIVITY", "VIEW_ACTIVITIES"]}),
            )
            .await;
        res.assert_status(StatusCode::CREATED);
        let key = res.body["plaintextKey"].as_str().unwrap().to_owned();
        let key_id = res.body["id"].as_str().unwrap().to_owned();
        let key_prefix = res.body["keyPrefix"].as_str().unwrap().to_owned();
        let with_key = |key: String, uri: &str, body: Option<Value>| {
            let req = Request::builder()
                .method(if body.is_some() { "POST" } else { "GET" })
                .uri(uri)
                .header("x-api-key", key);
            match body {
                Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
                None => req.body(Body::empty()).unwrap(),
            }
        };
        app.send(with_key(key.clone(), "/api/activities", None)).await.assert_status(StatusCode::OK);
        app.send(with_key(key.clone(), "/api/activities", Some(seed_body(commerce, "log-2"))))
            .await
            .assert_status(StatusCode::CREATED);
        // The key sent as a bearer token, and a near-miss of the key.
        let res = app.call(axum::http::Method::GET, "/api/activities", Some(&key), Some(tenant), None).await;
        res.assert_status(StatusCode::UNAUTHORIZED);
        let last = if key.ends_with('0') { '1' } else { '0' };
        let near_miss = format!("{}{last}", &key[..key.len() - 1]);
        app.send(with_key(near_miss.clone(), "/api/activities", None)).await.assert_status(StatusCode::UNAUTHORIZED);
        app.post(tenant, &format!("/api/api-keys/{key_id}/revoke"), &json!({})).await.assert_status(StatusCode::OK);
        app.send(with_key(key.clone(), "/api/activities", None)).await.assert_status(StatusCode::UNAUTHORIZED);

        // Dispatch: credentials written, sealed, opened and sent with a task
        // dispatched by hand, and a webhook config listed and changed.
        let mut app = app;
        app.set_dispatch(
            reten_host::dispatch::DispatchSettings {
                allow_hosts: vec!["127.0.0.1".into()],
                allow_public: false,
                ..Default::default()
            },
            Some(support::SECRETS_KEY),
        );
        let receiver = receiver::Receiver::start(receiver::Answer::Accept).await;
        let webhook = reten_host::dispatch::providers::provider_id(reten_host::domain::ProviderCode::Webhook);
        let config = app
            .post(
                tenant,
                "/api/dispatch-configs",
                &json!({"dispatch_provider_id": webhook, "channel": "WHATSAPP", "base_url": receiver.base_url(),
                        "credentials": {"api_key": DISPATCH_KEY, "signing_secret": SIGNING_SECRET}}),
            )
            .await;
        config.assert_status(StatusCode::CREATED);
        let mut task = seed_body(commerce, "log-task");
        task["type"] = json!("TASK");
        let task = app.create_activity(tenant, &task).await.body["id"].as_str().unwrap().to_owned();
        let uri = format!("/api/activities/tasks/{task}/dispatch");
        app.call(axum::http::Method::POST, &uri, Some(&admin), Some(tenant), None)
            .await
            .assert_status(StatusCode::NO_CONTENT);
        assert_eq!(receiver.received()[0].header("x-api-key").as_deref(), Some(DISPATCH_KEY));
        let patch = format!("/api/dispatch-configs/{}", config.body["id"].as_str().unwrap());
        app.call(axum::http::Method::PATCH, &patch, Some(&admin), Some(tenant), Some(&json!({"is_active": true})))
            .await
            .assert_status(StatusCode::OK);

        let logs = captured.text();
        assert!(logs.contains("dispatch config created"), "the dispatch was logged:\n{logs}");
        // The capture works: the requests were logged, by route.
        assert!(logs.contains("/api/activities"), "the requests were logged:\n{logs}");
        assert!(logs.contains("/api/api-keys"), "the key routes were logged:\n{logs}");

        let key_secret = key.strip_prefix(&key_prefix).unwrap_or(&key[7..]).to_owned();
        let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
        let secrets = [
            ("the admin token", admin.clone()),
            ("the admin token's signature", signature(&admin)),
            ("the forged token", forged.clone()),
            ("the expired token", expired.clone()),
            ("the JWT secret", SECRET.to_owned()),
            ("the API key", key.clone()),
            ("the API key's secret part", key_secret),
            ("the near-miss key", near_miss),
            ("the API key's hash", reten_host::api::auth::hash_key(&key)),
            ("a dispatch config's api_key", DISPATCH_KEY.to_owned()),
            ("a dispatch config's signing secret", SIGNING_SECRET.to_owned()),
            ("the secrets key", support::SECRETS_KEY.to_owned()),
        ];
        for (what, secret) in &secrets {
            assert!(!secret.is_empty());
            assert!(!logs.contains(secret.as_str()), "{what} appears in the logs:\n{logs}");
        }
        assert!(!logs.to_lowercase().contains("authorization: bearer"), "no header is logged");
    }
    .await;
}

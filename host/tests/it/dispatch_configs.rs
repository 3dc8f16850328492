//! Dispatch configs: credentials sealed and never answered, the secrets key
//! and its rotation, and the SSRF guard at config time and at send time.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use reten_host::dispatch::providers::provider_id;
use reten_host::dispatch::{DispatchSettings, Secrets};
use reten_host::domain::ProviderCode;
use serde_json::json;
use sqlx::PgPool;

use crate::dispatch::{API_KEY, SIGNING_SECRET, events, local, wait_activity, webhook};
use crate::receiver::{Answer, Receiver};
use crate::support::{SECRETS_KEY, TestApp, admin_token, seed_body};

#[sqlx::test(migrations = "../migrations")]
async fn credentials_are_sealed_at_rest_and_never_answered(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 1_000, 3), Some(SECRETS_KEY));
    let receiver = Receiver::start(Answer::Accept).await;
    let tenant = app.create_tenant("sealed").await;
    let created = webhook(&app, tenant, "SMS", &receiver).await;
    assert_eq!(created["hasApiKey"], true);
    assert_eq!(created["hasSigningSecret"], true);
    assert_eq!(created["dispatchProvider"]["code"], "WEBHOOK");
    let listed = app.get(tenant, "/api/dispatch-configs").await;
    listed.assert_status(StatusCode::OK);
    for body in [created.to_string(), listed.body.to_string()] {
        assert!(!body.contains(API_KEY) && !body.contains(SIGNING_SECRET), "credentials in an answer: {body}");
    }
    let row: String = sqlx::query_scalar("SELECT row_to_json(c)::text FROM dispatch_configs c WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT credentials_sealed FROM dispatch_configs WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let raw = String::from_utf8_lossy(&sealed);
    assert!(!row.contains(API_KEY) && !raw.contains(API_KEY) && !raw.contains(SIGNING_SECRET));

    // One active config per channel.
    let again = app
        .post(
            tenant,
            "/api/dispatch-configs",
            &json!({"dispatch_provider_id": provider_id(ProviderCode::Mock), "channel": "SMS"}),
        )
        .await;
    again.assert_status(StatusCode::CONFLICT);
    let inactive = app
        .post(
            tenant,
            "/api/dispatch-configs",
            &json!({"dispatch_provider_id": provider_id(ProviderCode::Mock), "channel": "SMS", "is_active": false}),
        )
        .await;
    inactive.assert_status(StatusCode::CREATED);
}

#[sqlx::test(migrations = "../migrations")]
async fn without_a_secrets_key_credentials_are_refused_but_mock_works(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 1_000, 3), None);
    let tenant = app.create_tenant("keyless").await;
    let res = app
        .post(
            tenant,
            "/api/dispatch-configs",
            &json!({"dispatch_provider_id": provider_id(ProviderCode::Webhook), "channel": "SMS",
                    "base_url": "http://127.0.0.1:9/hooks", "credentials": {"api_key": API_KEY}}),
        )
        .await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert!(res.body["detail"].as_str().unwrap().contains("RETEN_SECRETS_KEY"), "{}", res.body);
    let mock = app
        .post(
            tenant,
            "/api/dispatch-configs",
            &json!({"dispatch_provider_id": provider_id(ProviderCode::Mock), "channel": "SMS"}),
        )
        .await;
    mock.assert_status(StatusCode::CREATED);
    // Every bad field at once.
    let bad = app
        .post(
            tenant,
            "/api/dispatch-configs",
            &json!({"dispatch_provider_id": provider_id(ProviderCode::Webhook), "channel": "PUSH",
                    "credentials": {"signing_secret": "short"}}),
        )
        .await;
    bad.assert_status(StatusCode::BAD_REQUEST);
    let mut fields = bad.error_fields();
    fields.sort();
    assert_eq!(fields, ["base_url", "credentials.api_key", "credentials.signing_secret"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn private_loopback_and_link_local_base_urls_are_refused_at_config_time(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    // Public hosts allowed here: only literals and a refused scheme are tried,
    // so nothing is resolved.
    app.set_dispatch(DispatchSettings { allow_public: true, ..DispatchSettings::default() }, Some(SECRETS_KEY));
    let tenant = app.create_tenant("ssrf").await;
    for url in ["https://10.0.0.1", "https://169.254.169.254/latest", "https://[::1]:8443/x", "http://localhost:8080"] {
        let res = app
            .post(
                tenant,
                "/api/dispatch-configs",
                &json!({"dispatch_provider_id": provider_id(ProviderCode::Webhook), "channel": "SMS",
                        "base_url": url, "credentials": {"api_key": API_KEY}}),
            )
            .await;
        res.assert_status(StatusCode::BAD_REQUEST);
        assert_eq!(res.error_fields(), ["base_url"], "{url}: {}", res.body);
    }
    assert_eq!(app.count("dispatch_configs").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_name_that_resolves_to_a_private_address_at_send_time_is_refused_then(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    let receiver = Receiver::start(Answer::Accept).await;
    // Allowed when the config was written …
    app.set_dispatch(
        DispatchSettings { allow_hosts: vec!["localhost".into()], ..local(2_000, 100, 1) },
        Some(SECRETS_KEY),
    );
    let (tenant, commerce) = app.seeded("rebinding").await;
    let url = format!("https://localhost:{}/hooks", receiver.addr.port());
    let body = json!({"dispatch_provider_id": provider_id(ProviderCode::Webhook), "channel": "WHATSAPP",
                      "base_url": url, "credentials": {"api_key": API_KEY}});
    app.post(tenant, "/api/dispatch-configs", &body).await.assert_status(StatusCode::CREATED);
    // … no longer when it is sent: localhost resolves to a loopback address.
    app.set_dispatch(DispatchSettings { allow_public: true, ..local(2_000, 100, 1) }, Some(SECRETS_KEY));
    app.start_dispatcher();
    let id =
        app.create_activity(tenant, &seed_body(commerce, "rebind-1")).await.body["id"].as_str().unwrap().to_owned();
    wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "FAILED").await;
    let events = events(&app, tenant, &id).await;
    assert_eq!(events[1]["errorCode"], "ADDRESS_REFUSED", "{events:#?}");
    assert!(receiver.received().is_empty(), "nothing reached the receiver");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_previous_key_still_opens_and_a_write_seals_under_the_new_one(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 1_000, 3), Some(SECRETS_KEY));
    let receiver = Receiver::start(Answer::Accept).await;
    let (tenant, commerce) = app.seeded("rotation").await;
    let config = webhook(&app, tenant, "WHATSAPP", &receiver).await;
    let pool = app.pool.clone();
    let key_id = || async {
        sqlx::query_scalar::<_, String>("SELECT credentials_key_id FROM dispatch_configs WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let old_id = key_id().await;
    let new_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let rotated = Secrets::from_base64(Some(&new_key), Some(SECRETS_KEY)).unwrap();
    app.set_dispatch_secrets(local(2_000, 1_000, 3), rotated);
    app.start_dispatcher();
    let id = app.create_activity(tenant, &seed_body(commerce, "rot-1")).await.body["id"].as_str().unwrap().to_owned();
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].header("x-api-key").as_deref(), Some(API_KEY), "the previous key opened the credentials");
    wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "DISPATCHED").await;

    let uri = format!("/api/dispatch-configs/{}", config["id"].as_str().unwrap());
    let token = admin_token(tenant);
    let patched = app.call(Method::PATCH, &uri, Some(&token), Some(tenant), Some(&json!({}))).await;
    patched.assert_status(StatusCode::OK);
    assert_ne!(key_id().await, old_id, "written again under the new key");
    // Without the previous key it still opens.
    let only_new = Secrets::from_base64(Some(&new_key), None).unwrap();
    app.set_dispatch_secrets(local(2_000, 1_000, 3), only_new);
    let patched = app
        .call(Method::PATCH, &uri, Some(&token), Some(tenant), Some(&json!({"credentials": {"signing_secret": null}})))
        .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(patched.body["hasSigningSecret"], false);
    assert_eq!(patched.body["hasApiKey"], true);
    let deleted = app.call(Method::DELETE, &uri, Some(&token), Some(tenant), None).await;
    deleted.assert_status(StatusCode::NO_CONTENT);
}

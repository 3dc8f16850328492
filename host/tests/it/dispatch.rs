//! The dispatcher end to end, in process: the real router and dispatcher
//! over a fresh database, sending to a real HTTP receiver on 127.0.0.1.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use hmac::{Hmac, Mac};
use reten_host::dispatch::DispatchSettings;
use reten_host::dispatch::providers::provider_id;
use reten_host::domain::{ProviderCode, TenantId};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::receiver::{Answer, Receiver};
use crate::support::{SECRETS_KEY, TestApp, seed_body};

pub const API_KEY: &str = "sk-test-dispatch-0123456789";
pub const SIGNING_SECRET: &str = "whsec-test-signing-secret";

/// Settings for a dispatcher that sends only to 127.0.0.1, quickly.
pub fn local(timeout_ms: u64, retry_base_ms: u64, max_attempts: u32) -> DispatchSettings {
    DispatchSettings {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(timeout_ms),
        retry_base: Duration::from_millis(retry_base_ms),
        max_attempts,
        allow_hosts: vec!["127.0.0.1".into()],
        allow_public: false,
        ..DispatchSettings::default()
    }
}

/// A WEBHOOK config of `channel` pointing at `receiver`, with credentials.
pub async fn webhook(app: &TestApp, tenant: TenantId, channel: &str, receiver: &Receiver) -> Value {
    let body = json!({
        "dispatch_provider_id": provider_id(ProviderCode::Webhook),
        "channel": channel,
        "base_url": receiver.base_url(),
        "credentials": {"api_key": API_KEY, "signing_secret": SIGNING_SECRET}
    });
    let res = app.post(tenant, "/api/dispatch-configs", &body).await;
    res.assert_status(StatusCode::CREATED);
    res.body
}

/// An app that dispatches to a receiver answering `answer`, a tenant with
/// the standard commerce, and a WHATSAPP webhook config.
pub async fn dispatching(
    pool: PgPool,
    answer: Answer,
    settings: DispatchSettings,
) -> (TestApp, Receiver, TenantId, Uuid) {
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(settings, Some(SECRETS_KEY));
    let receiver = Receiver::start(answer).await;
    let (tenant, commerce) = app.seeded("dispatch").await;
    webhook(&app, tenant, "WHATSAPP", &receiver).await;
    app.start_dispatcher();
    (app, receiver, tenant, commerce)
}

/// Polls the activity until `cond` holds; fails after `limit`.
pub async fn wait_activity(
    app: &TestApp,
    tenant: TenantId,
    id: &str,
    limit: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let deadline = Instant::now() + limit;
    loop {
        poll.tick().await;
        let res = app.get(tenant, &format!("/api/activities/{id}")).await;
        if cond(&res.body) {
            return res.body;
        }
        assert!(Instant::now() < deadline, "the activity did not get there within {limit:?}: {:#}", res.body);
    }
}

/// The event types of an activity, in order.
pub async fn events(app: &TestApp, tenant: TenantId, id: &str) -> Vec<Value> {
    let res = app.get(tenant, &format!("/api/activities/{id}/status-events")).await;
    res.body.as_array().unwrap().clone()
}

fn event_types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["eventType"].as_str().unwrap()).collect()
}

fn verify(header: &str, body: &[u8]) -> bool {
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = hex::decode(v1.strip_prefix("v1=").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_due_activity_reaches_the_receiver_within_2_s_signed_and_becomes_dispatched(pool: PgPool) {
    let (app, receiver, tenant, commerce) = dispatching(pool, Answer::Accept, local(2_000, 1_000, 3)).await;
    let created_at = Instant::now();
    let res = app.create_activity(tenant, &seed_body(commerce, "due-1")).await;
    res.assert_status(StatusCode::CREATED);
    let id = res.body["id"].as_str().unwrap().to_owned();

    let got = receiver.wait_for(1, Duration::from_secs(2)).await;
    assert!(created_at.elapsed() < Duration::from_secs(2));
    let req = &got[0];
    assert_eq!(req.path, "/hooks/activities");
    assert_eq!(req.header("x-api-key").as_deref(), Some(API_KEY));
    assert_eq!(req.header("idempotency-key").as_deref(), Some(id.as_str()));
    assert_eq!(req.header("content-type").as_deref(), Some("application/json"));
    let signature = req.header("x-reten-signature").expect("a signed request");
    assert!(verify(&signature, &req.body), "the signature verifies: {signature}");
    let body = req.json();
    assert_eq!(body["activity"]["id"], id.as_str());
    assert_eq!(body["activity"]["type"], "MESSAGE");
    assert_eq!(body["activity"]["channel"], "WHATSAPP");
    assert_eq!(body["activity"]["scheduledAt"], "2025-01-16T09:00:00.000Z");
    assert_eq!(body["commerce"], json!({"id": commerce, "externalId": "c-1", "name": "Almacén Don Pepe"}));
    assert_eq!(body["targetUser"]["externalId"], "u-juan", "{body:#}");
    assert_eq!(body["targetUser"]["contacts"][0], json!({"type": "PHONE", "value": "+56922222222", "isPrimary": true}));
    assert_eq!(body["attributes"]["commerce_info"]["name"], "Almacén Don Pepe", "{body:#}");

    let done = wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "DISPATCHED").await;
    assert_eq!(done["providerActivityId"], "prov-1");
    assert_eq!(event_types(&events(&app, tenant, &id).await), ["CREATED", "DISPATCH_SUCCESS"]);
    let attempts = app.state.dispatch.metrics.attempts(tenant, "WHATSAPP", "success");
    assert_eq!(attempts, 1);
    assert_eq!(app.state.dispatch.metrics.lag_count(), 1);
}

const ON_DISPATCH: &str = r#"
[[target_resolution]]
resolution_strategy = "ON_DISPATCH"
priority = 0
[[target_resolution.criteria]]
type = "ROLE_MATCH"
config = { role = "COMMERCE_REP" }
priority = 0

[attributes.commerce_info]
strategy = "ON_DISPATCH"
"#;

#[sqlx::test(migrations = "../migrations")]
async fn on_dispatch_items_are_pending_until_dispatch_then_resolved_by_policy_and_sent(pool: PgPool) {
    let (app, receiver, tenant, commerce) = dispatching(pool, Answer::Accept, local(2_000, 1_000, 3)).await;
    webhook(&app, tenant, "EMAIL", &receiver).await;
    app.write_tenant_file(tenant, "tenant.toml", ON_DISPATCH);

    // Nobody of the commerce is reachable by e-mail but Ana (ORDERS): the
    // EMAIL activity's target cannot resolve at dispatch.
    let mut email = seed_body(commerce, "od-email");
    email["channel"] = json!("EMAIL");
    let unresolvable = app.create_activity(tenant, &email).await;
    unresolvable.assert_status(StatusCode::CREATED);
    let res = app.create_activity(tenant, &seed_body(commerce, "od-1")).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["status"], "READY");
    assert_eq!(res.body["targetUsers"][0]["resolutionStatus"], "PENDING");
    assert_eq!(res.body["attributes"][0]["resolutionStatus"], "PENDING");
    let id = res.body["id"].as_str().unwrap().to_owned();
    let bad = unresolvable.body["id"].as_str().unwrap().to_owned();

    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let body = got[0].json();
    assert_eq!(body["activity"]["id"], id.as_str(), "only the resolvable one is sent");
    assert_eq!(body["targetUser"]["externalId"], "u-juan");
    assert_eq!(body["attributes"]["commerce_info"]["name"], "Almacén Don Pepe");

    let done = wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "DISPATCHED").await;
    let target = &done["targetUsers"][0];
    assert_eq!(target["resolutionStatus"], "LOCKED");
    assert_eq!(target["resolutionStrategy"], "ON_DISPATCH");
    assert_eq!(target["lockReason"], "CRITERIA_MATCH");
    assert_eq!(target["criterionType"], "ROLE_MATCH");
    assert_eq!(target["policyName"], "role_match");
    assert_eq!(target["policyVersion"].as_str().unwrap().len(), 64);
    let attribute = &done["attributes"][0];
    assert_eq!(attribute["resolutionStatus"], "RESOLVED");
    assert_eq!(attribute["policyName"], "commerce_info");
    assert_eq!(attribute["policyVersion"].as_str().unwrap().len(), 64);
    assert_eq!(done["resolutionTrace"]["dispatch"]["outcome"], "READY");

    let failed = wait_activity(&app, tenant, &bad, Duration::from_secs(5), |a| a["status"] == "UNRESOLVED").await;
    assert_eq!(failed["targetUsers"][0]["resolutionStatus"], "FAILED");
    let events = events(&app, tenant, &bad).await;
    assert_eq!(event_types(&events), ["CREATED", "DISPATCH_RESOLUTION_FAILED"]);
    assert!(receiver.received().iter().all(|r| r.header("idempotency-key").as_deref() != Some(bad.as_str())));

    // Ana becomes a commerce rep: retry-resolution resolves the target now,
    // and the dispatcher sends it.
    let mut commerce_now = crate::support::standard_commerce("c-1");
    commerce_now["users"][2]["roles"] = json!(["COMMERCE_REP"]);
    app.sync(tenant, json!([commerce_now])).await.assert_status(StatusCode::CREATED);
    let uri = format!("/api/activities/{bad}/retry-resolution");
    let retried = app.call(Method::PATCH, &uri, Some(&crate::support::admin_token(tenant)), Some(tenant), None).await;
    retried.assert_status(StatusCode::OK);
    assert_eq!(retried.body["targetUsers"][0]["resolutionStatus"], "LOCKED", "{:#}", retried.body);
    assert_eq!(retried.body["targetUsers"][0]["commerceUser"]["externalId"], "u-ana");
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].header("idempotency-key").as_deref(), Some(bad.as_str()));
    wait_activity(&app, tenant, &bad, Duration::from_secs(5), |a| a["status"] == "DISPATCHED").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_receiver_answering_500_gets_every_attempt_at_the_backoff_then_the_activity_fails(pool: PgPool) {
    let (app, receiver, tenant, commerce) = dispatching(pool, Answer::Status(500), local(2_000, 300, 3)).await;
    let res = app.create_activity(tenant, &seed_body(commerce, "fails-1")).await;
    let id = res.body["id"].as_str().unwrap().to_owned();

    let got = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert!(
        got.iter().all(|r| r.header("idempotency-key").as_deref() == Some(id.as_str())),
        "one key for every attempt"
    );
    let attempts: Vec<Option<String>> = got.iter().map(|r| r.header("x-reten-attempt")).collect();
    assert_eq!(attempts, [Some("1".into()), Some("2".into()), Some("3".into())]);
    assert!(got[1].at - got[0].at >= Duration::from_millis(300), "the first retry waits the base");
    assert!(got[2].at - got[1].at >= Duration::from_millis(1_200), "the second waits 4 × the base");

    wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "FAILED").await;
    let events = events(&app, tenant, &id).await;
    assert_eq!(
        event_types(&events),
        ["CREATED", "DISPATCH_ATTEMPT_FAILED", "DISPATCH_ATTEMPT_FAILED", "DISPATCH_ATTEMPT_FAILED", "DISPATCH_FAILED"]
    );
    assert_eq!(events[1]["errorCode"], "HTTP_500");
    assert_eq!(events[4]["toStatus"], "FAILED");
    assert_eq!(receiver.received().len(), 3, "nothing after the last attempt");

    // retry-dispatch: READY again, attempts from zero; the receiver accepts now.
    receiver.answer(Answer::Accept);
    let retried = app
        .call(
            Method::PATCH,
            &format!("/api/activities/{id}/retry-dispatch"),
            Some(&crate::support::admin_token(tenant)),
            Some(tenant),
            None,
        )
        .await;
    retried.assert_status(StatusCode::OK);
    let done = wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "DISPATCHED").await;
    assert_eq!(done["providerActivityId"], "prov-4");
    let events = self::events(&app, tenant, &id).await;
    let retry = events.iter().find(|e| e["eventType"] == "DISPATCH_RETRY").expect("a DISPATCH_RETRY event");
    assert_eq!((retry["fromStatus"].as_str(), retry["toStatus"].as_str()), (Some("FAILED"), Some("READY")));
    let again = app
        .call(
            Method::PATCH,
            &format!("/api/activities/{id}/retry-dispatch"),
            Some(&crate::support::admin_token(tenant)),
            Some(tenant),
            None,
        )
        .await;
    again.assert_status(StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_receiver_that_hangs_past_the_timeout_counts_as_a_failed_attempt(pool: PgPool) {
    let (app, receiver, tenant, commerce) =
        dispatching(pool, Answer::Hang(Duration::from_secs(10)), local(300, 100, 1)).await;
    let res = app.create_activity(tenant, &seed_body(commerce, "hangs-1")).await;
    let id = res.body["id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, Duration::from_secs(5)).await;
    wait_activity(&app, tenant, &id, Duration::from_secs(5), |a| a["status"] == "FAILED").await;
    let events = events(&app, tenant, &id).await;
    assert_eq!(events[1]["eventType"], "DISPATCH_ATTEMPT_FAILED");
    assert_eq!(events[1]["errorCode"], "TIMEOUT");
    assert_eq!(app.state.dispatch.metrics.attempts(tenant, "WHATSAPP", "timeout"), 1);
}

/// Only a create that a dispatcher would send wakes the dispatchers: a due
/// activity whose tenant has no active config for its channel commits
/// without a `NOTIFY` (which would serialise it with every other notifying
/// commit and wake a claim that finds nothing).
#[sqlx::test(migrations = "../migrations")]
async fn only_a_create_a_dispatcher_would_send_wakes_the_dispatchers(pool: PgPool) {
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen(reten_host::store::dispatch::WAKE_CHANNEL).await.unwrap();
    let mut app = TestApp::new(pool).await;
    app.set_dispatch(local(2_000, 1_000, 3), Some(SECRETS_KEY));
    let receiver = Receiver::start(Answer::Accept).await;
    let (quiet, quiet_commerce) = app.seeded("quiet").await;
    let (sending, sending_commerce) = app.seeded("sending").await;
    // The quiet tenant sends e-mail only; the create below is a WhatsApp message.
    webhook(&app, quiet, "EMAIL", &receiver).await;
    webhook(&app, sending, "WHATSAPP", &receiver).await;

    let res = app.create_activity(quiet, &seed_body(quiet_commerce, "quiet-1")).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["status"], "READY", "a due activity: {:#}", res.body);
    let res = app.create_activity(sending, &seed_body(sending_commerce, "sending-1")).await;
    res.assert_status(StatusCode::CREATED);

    // Notifications arrive in commit order: the first is the second create's.
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await.expect("a wake").unwrap();
    assert_eq!(first.payload(), sending.to_string(), "the quiet tenant's create notified");
}

//! Target and attribute resolution end to end, through real policy files.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, seed_body};

/// Creates an activity and returns the 201 body.
async fn create(app: &TestApp, tenant: reten_host::domain::TenantId, body: Value) -> Value {
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::CREATED);
    res.body
}

/// The stored resolution trace of an activity.
async fn trace(app: &TestApp, tenant: reten_host::domain::TenantId, created: &Value) -> Value {
    let id = created["id"].as_str().unwrap();
    app.get(tenant, &format!("/api/activities/{id}")).await.body["resolutionTrace"].clone()
}

fn body_with(commerce: uuid::Uuid, key: &str, channel: &str, criteria: Value) -> Value {
    let mut b = seed_body(commerce, key);
    b["channel"] = json!(channel);
    if !criteria.is_null() {
        b["target_criteria"] = criteria;
    }
    b
}

#[sqlx::test(migrations = "../migrations")]
async fn role_match_picks_the_commerce_rep(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("rolematch").await;
    let juan = app.user_id(tenant, commerce, "u-juan").await;
    let b = create(&app, tenant, seed_body(commerce, "rm-1")).await;
    let t = &b["targetUsers"][0];
    assert_eq!(t["commerceUserId"], juan.as_str());
    assert_eq!(t["lockReason"], "CRITERIA_MATCH");
    assert_eq!(t["criterionType"], "ROLE_MATCH");
    assert_eq!(b["status"], "READY");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_whatsapp_activity_skips_a_user_without_phone_or_whatsapp(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("reach").await;
    let ana = app.user_id(tenant, commerce, "u-ana").await;
    let juan = app.user_id(tenant, commerce, "u-juan").await;
    let criteria = json!([{"type": "ROLE_MATCH", "config": {"role": "ORDERS"}}]);
    let b = create(&app, tenant, body_with(commerce, "reach-1", "WHATSAPP", criteria)).await;
    assert_eq!(b["targetUsers"][0]["commerceUserId"], juan.as_str());
    assert_eq!(b["targetUsers"][0]["lockReason"], "FALLBACK_COMMERCE_REP");
    let tr = trace(&app, tenant, &b).await;
    let step = &tr["target"]["criteria"][0];
    assert_eq!(step["outcome"], "NO_MATCH");
    assert_eq!(step["candidates"][0]["commerceUserId"], ana.as_str());
    assert_eq!(step["candidates"][0]["skipReason"], "UNREACHABLE");
    assert_eq!(tr["target"]["criteriaSource"], "REQUEST", "the request's criteria replaced the config's");

    // The same criterion on EMAIL reaches her.
    let criteria = json!([{"type": "ROLE_MATCH", "config": {"role": "ORDERS"}}]);
    let b = create(&app, tenant, body_with(commerce, "reach-2", "EMAIL", criteria)).await;
    assert_eq!(b["targetUsers"][0]["commerceUserId"], ana.as_str());
}

#[sqlx::test(migrations = "../migrations")]
async fn last_contacted_picks_the_user_most_recently_targeted_on_the_channel(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("lastcontact").await;
    let maria = app.user_id(tenant, commerce, "u-maria").await;
    let ana = app.user_id(tenant, commerce, "u-ana").await;
    let role = |r: &str| json!([{"type": "ROLE_MATCH", "config": {"role": r}}]);
    create(&app, tenant, body_with(commerce, "lc-1", "SALESMAN", role("OWNER"))).await;
    create(&app, tenant, body_with(commerce, "lc-2", "SALESMAN", role("ORDERS"))).await;
    create(&app, tenant, body_with(commerce, "lc-3", "WHATSAPP", role("OWNER"))).await;

    let same = json!([{"type": "LAST_CONTACTED_SAME_CHANNEL"}]);
    let b = create(&app, tenant, body_with(commerce, "lc-4", "SALESMAN", same)).await;
    assert_eq!(b["targetUsers"][0]["commerceUserId"], ana.as_str(), "Ana was the last on SALESMAN");
    assert_eq!(b["targetUsers"][0]["criterionType"], "LAST_CONTACTED_SAME_CHANNEL");

    let all = json!([{"type": "LAST_CONTACTED_ALL_CHANNELS"}]);
    let b = create(&app, tenant, body_with(commerce, "lc-5", "PUSH", all)).await;
    assert_eq!(b["targetUsers"][0]["commerceUserId"], ana.as_str(), "lc-4 targeted Ana last of all");
    assert_eq!(b["targetUsers"][0]["criterionType"], "LAST_CONTACTED_ALL_CHANNELS");

    let same = json!([{"type": "LAST_CONTACTED_SAME_CHANNEL"}]);
    let b = create(&app, tenant, body_with(commerce, "lc-6", "WHATSAPP", same)).await;
    assert_eq!(b["targetUsers"][0]["commerceUserId"], maria.as_str(), "Maria was the last on WHATSAPP");
}

#[sqlx::test(migrations = "../migrations")]
async fn no_match_falls_back_to_the_rep_then_the_owner_then_fails(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("fallbacks").await;
    app.sync(
        tenant,
        json!([
            {"external_id": "owner-only", "name": "Solo", "users": [
                {"external_id": "o", "name": "Olga", "roles": ["OWNER"], "contacts": [{"contact_type": "WHATSAPP", "value": "+1"}]}]},
            {"external_id": "unreachable", "name": "Nadie", "users": [
                {"external_id": "n", "name": "Nico", "roles": ["OWNER", "COMMERCE_REP"], "contacts": []}]}
        ]),
    )
    .await
    .assert_status(StatusCode::CREATED);
    let owner_only = app.commerce_id(tenant, "owner-only").await;
    let unreachable = app.commerce_id(tenant, "unreachable").await;

    let b = create(&app, tenant, seed_body(owner_only, "fb-1")).await;
    assert_eq!(b["targetUsers"][0]["lockReason"], "FALLBACK_OWNER");
    assert_eq!(b["status"], "READY");

    let b = create(&app, tenant, seed_body(unreachable, "fb-2")).await;
    assert_eq!(b["status"], "UNRESOLVED");
    let t = &b["targetUsers"][0];
    assert_eq!(t["resolutionStatus"], "FAILED");
    assert_eq!(t["commerceUserId"], Value::Null);
    assert!(t["errorMessage"].as_str().unwrap().contains("WHATSAPP"));
    let id = b["id"].as_str().unwrap();
    let stored = app.get(tenant, &format!("/api/activities/{id}")).await;
    assert_eq!(stored.body["status"], "UNRESOLVED", "an unresolved activity is still stored");
    let events = app.get(tenant, &format!("/api/activities/{id}/status-events")).await;
    assert_eq!(events.body[0]["toStatus"], "UNRESOLVED");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tenant_criterion_overrides_the_global_one_of_the_same_name(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("override").await;
    let maria = app.user_id(tenant, commerce, "u-maria").await;
    let source = "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"OWNER\")).map(|u| u.id) }";
    app.write_tenant_file(tenant, "criteria/role_match.rhai", source);
    let b = create(&app, tenant, seed_body(commerce, "ov-1")).await;
    let t = &b["targetUsers"][0];
    assert_eq!(t["commerceUserId"], maria.as_str());
    assert_eq!(t["policyName"], "role_match");
    let sha = reten_host::policy::loader::sha256_hex(source.as_bytes());
    assert_eq!(t["policyVersion"], sha.as_str(), "the tenant's file decided");

    // Another tenant still gets the global policy.
    let (other, other_commerce) = app.seeded("override-other").await;
    let b = create(&app, other, seed_body(other_commerce, "ov-2")).await;
    assert_ne!(b["targetUsers"][0]["policyVersion"], sha.as_str());
}

#[sqlx::test(migrations = "../migrations")]
async fn manual_and_on_dispatch_strategies_leave_the_target_pending(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("pending").await;
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        r#"
        [[target_resolution]]
        resolution_strategy = "MANUAL"
        priority = 0
        channels = ["EMAIL"]

        [[target_resolution]]
        resolution_strategy = "ON_DISPATCH"
        priority = 1
        "#,
    );
    let b = create(&app, tenant, body_with(commerce, "p-1", "EMAIL", Value::Null)).await;
    assert_eq!(b["targetUsers"][0]["resolutionStatus"], "PENDING");
    assert_eq!(b["targetUsers"][0]["resolutionStrategy"], "MANUAL");
    assert_eq!(b["status"], "READY");
    let b = create(&app, tenant, body_with(commerce, "p-2", "WHATSAPP", Value::Null)).await;
    assert_eq!(b["targetUsers"][0]["resolutionStrategy"], "ON_DISPATCH");
    assert_eq!(b["targetUsers"][0]["resolutionStatus"], "PENDING");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_caller_value_wins_over_the_policy(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("callerwins").await;
    let mut body = seed_body(commerce, "cv-1");
    body["attributes"] = json!([{"key": "commerce_info", "value": {"name": "from caller"}}]);
    let b = create(&app, tenant, body).await;
    let a = &b["attributes"][0];
    assert_eq!(a["value"], json!({"name": "from caller"}));
    assert_eq!(a["resolutionStatus"], "RESOLVED");
    assert_eq!(a["resolverType"], "CALLER_PROVIDED");
    assert_eq!(a["policyName"], Value::Null);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_attribute_policy_uses_the_fallback_or_fails_the_activity(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("attrfail").await;
    app.write_tenant_file(tenant, "attributes/commerce_info.rhai", "fn resolve(input) { throw \"crm down\" }");

    let mut body = seed_body(commerce, "af-1");
    body["attributes"] = json!([{"key": "commerce_info", "fallback": {"name": "unknown"}}]);
    let b = create(&app, tenant, body).await;
    let a = &b["attributes"][0];
    assert_eq!(a["resolutionStatus"], "FALLBACK");
    assert_eq!(a["value"], json!({"name": "unknown"}));
    assert!(a["errorMessage"].as_str().unwrap().contains("crm down"), "{a}");
    assert_eq!(b["status"], "READY");

    let b = create(&app, tenant, seed_body(commerce, "af-2")).await;
    let a = &b["attributes"][0];
    assert_eq!(a["resolutionStatus"], "FAILED");
    assert_eq!(a["value"], Value::Null);
    assert_eq!(a["policyName"], "commerce_info");
    assert!(a["errorMessage"].as_str().unwrap().contains("no fallback"));
    assert_eq!(b["status"], "UNRESOLVED");
}

#[sqlx::test(migrations = "../migrations")]
async fn configured_strategies_and_fallbacks_apply(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("strategies").await;
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        r#"
        [attribute_keys.coupon]
        label = "Coupon"

        [attributes.coupon]
        strategy = "CALLER_PROVIDED"
        fallback = "WELCOME10"

        [attributes.promotions]
        strategy = "ON_DISPATCH"
        "#,
    );
    let mut body = seed_body(commerce, "st-1");
    body["attribute_keys"] = json!(["coupon", "promotions"]);
    let b = create(&app, tenant, body).await;
    let attrs = b["attributes"].as_array().unwrap();
    assert_eq!(attrs[0]["key"], "coupon");
    assert_eq!(attrs[0]["resolutionStatus"], "FALLBACK");
    assert_eq!(attrs[0]["value"], "WELCOME10");
    assert_eq!(attrs[0]["resolverType"], "CLIENT_HOOK");
    assert_eq!(attrs[1]["key"], "promotions");
    assert_eq!(attrs[1]["resolutionStatus"], "PENDING");
    assert_eq!(attrs[1]["resolverType"], Value::Null);
    assert_eq!(b["status"], "READY");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_looping_a_throwing_and_a_misshapen_policy_are_skipped_with_the_reason_traced(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("broken").await;
    app.write_tenant_file(tenant, "criteria/spin.rhai", "fn resolve(input) { let x = 0; loop { x += 1; } }");
    app.write_tenant_file(tenant, "criteria/boom.rhai", "fn resolve(input) { throw \"boom\" }");
    app.write_tenant_file(tenant, "criteria/shape.rhai", "fn resolve(input) { 42 }");
    app.write_tenant_file(tenant, "attributes/commerce_info.rhai", "fn resolve(input) { loop {} }");
    let criteria = json!([{"type": "SPIN"}, {"type": "BOOM", "priority": 1}, {"type": "SHAPE", "priority": 2}]);
    let started = std::time::Instant::now();
    let b = create(&app, tenant, body_with(commerce, "br-1", "WHATSAPP", criteria)).await;
    let elapsed = started.elapsed();

    assert_eq!(b["targetUsers"][0]["lockReason"], "FALLBACK_COMMERCE_REP", "every criterion was skipped");
    assert_eq!(b["attributes"][0]["resolutionStatus"], "FAILED");
    assert_eq!(b["status"], "UNRESOLVED");
    let tr = trace(&app, tenant, &b).await;
    let steps = tr["target"]["criteria"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["error"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["DEADLINE", "POLICY_ERROR", "BAD_OUTPUT"]);
    assert!(steps.iter().all(|s| s["outcome"] == "FAILED"));
    assert!(steps[1]["error"]["message"].as_str().unwrap().contains("boom"));
    assert_eq!(tr["attributes"][0]["error"]["kind"], "DEADLINE");
    // Each looping call was cut at its 20 ms deadline, so the two of them
    // cannot account for more than a fraction of a second.
    let spin_us = steps[0]["durationUs"].as_u64().unwrap();
    assert!((20_000..500_000).contains(&spin_us), "the loop ran {spin_us} µs");
    assert!(elapsed.as_secs() < 5, "the request took {elapsed:?}");

    // The tenant keeps working.
    let b = create(
        &app,
        tenant,
        body_with(commerce, "br-2", "WHATSAPP", json!([{"type": "ROLE_MATCH", "config": {"role": "OWNER"}}])),
    )
    .await;
    assert_eq!(b["targetUsers"][0]["lockReason"], "CRITERIA_MATCH");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_policy_that_keeps_hitting_its_deadline_is_skipped_until_it_changes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("breaker").await;
    app.write_tenant_file(tenant, "criteria/spin.rhai", "fn resolve(input) { loop {} }");
    let spin = json!([{"type": "SPIN"}]);
    let mut kinds = Vec::new();
    for i in 0..6 {
        let b = create(&app, tenant, body_with(commerce, &format!("br-{i}"), "WHATSAPP", spin.clone())).await;
        assert_eq!(b["targetUsers"][0]["lockReason"], "FALLBACK_COMMERCE_REP", "every call ends in the fallback");
        let tr = trace(&app, tenant, &b).await;
        kinds.push((
            tr["target"]["criteria"][0]["error"]["kind"].as_str().unwrap().to_owned(),
            tr["target"]["criteria"][0]["durationUs"].as_u64().unwrap(),
        ));
    }
    let names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["DEADLINE", "DEADLINE", "DEADLINE", "DEADLINE", "DEADLINE", "CIRCUIT_OPEN"]);
    assert_eq!(kinds[5].1, 0, "a skipped call costs nothing");

    // A fixed version starts with a closed breaker.
    app.write_tenant_file(tenant, "criteria/spin.rhai", "fn resolve(input) { input.commerce.users.map(|u| u.id) }");
    let b = create(&app, tenant, body_with(commerce, "br-fixed", "WHATSAPP", spin)).await;
    assert_eq!(b["targetUsers"][0]["lockReason"], "CRITERIA_MATCH");
    // Another tenant with the same looping file is not affected by this one's breaker.
    let (other, other_commerce) = app.seeded("breaker-other").await;
    app.write_tenant_file(other, "criteria/spin.rhai", "fn resolve(input) { loop {} }");
    let b = create(&app, other, body_with(other_commerce, "o-1", "WHATSAPP", json!([{"type": "SPIN"}]))).await;
    let tr = trace(&app, other, &b).await;
    assert_eq!(tr["target"]["criteria"][0]["error"]["kind"], "DEADLINE");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_breaker_opens_after_the_apps_own_setting_and_another_app_in_the_process_keeps_its_own(pool: PgPool) {
    use reten_host::policy::gate::GateSettings;
    let app = TestApp::with_gates(pool.clone(), GateSettings { per_tenant: 1, breaker_after: 2 }).await;
    let (tenant, commerce) = app.seeded("breaker-two").await;
    app.write_tenant_file(tenant, "criteria/spin.rhai", "fn resolve(input) { loop {} }");
    let spin = json!([{"type": "SPIN"}]);
    let mut kinds = Vec::new();
    for i in 0..3 {
        let b = create(&app, tenant, body_with(commerce, &format!("bt-{i}"), "WHATSAPP", spin.clone())).await;
        let tr = trace(&app, tenant, &b).await;
        kinds.push(tr["target"]["criteria"][0]["error"]["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["DEADLINE", "DEADLINE", "CIRCUIT_OPEN"], "two deadlines open this app's breaker");

    // A second app in the same process, breakers off: its own state, its own setting.
    let off = TestApp::with_gates(pool, GateSettings { per_tenant: 1, breaker_after: 0 }).await;
    let (tenant, commerce) = off.seeded("breaker-off").await;
    off.write_tenant_file(tenant, "criteria/spin.rhai", "fn resolve(input) { loop {} }");
    for i in 0..3 {
        let b = create(&off, tenant, body_with(commerce, &format!("bo-{i}"), "WHATSAPP", spin.clone())).await;
        let tr = trace(&off, tenant, &b).await;
        assert_eq!(
            tr["target"]["criteria"][0]["error"]["kind"], "DEADLINE",
            "call {i}: a switched-off breaker never opens"
        );
    }
}

//! WebAssembly policies: the example plugins decide activities end to end,
//! and every failure-mode plugin is contained.

use axum::http::{Method, StatusCode};
use reten_host::policy::loader::sha256_hex;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, plugin, seed_body};

async fn stored_trace(app: &TestApp, tenant: reten_host::domain::TenantId, created: &Value) -> Value {
    let id = created["id"].as_str().unwrap();
    app.get(tenant, &format!("/api/activities/{id}")).await.body["resolutionTrace"].clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_wasm_criterion_and_a_wasm_attribute_decide_an_activity(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("wasm-e2e").await;
    let maria = app.user_id(tenant, commerce, "u-maria").await;
    let orders = json!({"total_spend": 12500, "orders": [
        {"user_external_id": "u-ana", "status": "DELIVERED", "placed_at": "2025-01-10T10:00:00Z"},
        {"user_external_id": "u-maria", "status": "PAID", "placed_at": "2025-01-12T10:00:00Z"},
        {"user_external_id": "u-juan", "status": "CANCELLED", "placed_at": "2025-01-14T10:00:00Z"}
    ]});
    let res = app
        .call(
            Method::PATCH,
            &format!("/api/commerces/{commerce}"),
            Some(&admin_token(tenant)),
            Some(tenant),
            Some(&json!({"metadata": orders})),
        )
        .await;
    res.assert_status(StatusCode::OK);

    let criterion = plugin("last_order");
    let attribute = plugin("loyalty_tier");
    app.write_tenant_bytes(tenant, "criteria/last_order.wasm", &criterion);
    app.write_tenant_bytes(tenant, "attributes/loyalty_tier.wasm", &attribute);
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        r#"
        [[target_resolution]]
        resolution_strategy = "ON_CREATION"
        fallback_to_commerce_rep = false
        fallback_to_owner = false
        [[target_resolution.criteria]]
        type = "LAST_ORDER"

        [attribute_keys.loyalty_tier]
        label = "Loyalty tier"

        [attributes.loyalty_tier]
        strategy = "UPFRONT"
        config = { gold = 10000, silver = 2000 }
        "#,
    );
    assert_eq!(app.state.registry.state().errors().count(), 0);

    let mut body = seed_body(commerce, "wasm-1");
    body["attribute_keys"] = json!(["loyalty_tier"]);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::CREATED);
    let t = &res.body["targetUsers"][0];
    assert_eq!(t["commerceUserId"], maria.as_str(), "Maria has the latest successful order");
    assert_eq!(t["criterionType"], "LAST_ORDER");
    assert_eq!(t["policyName"], "last_order");
    assert_eq!(t["policyEngine"], "WASM");
    assert_eq!(t["policyVersion"], sha256_hex(&criterion).as_str());
    let a = &res.body["attributes"][0];
    assert_eq!(a["value"], json!({"tier": "GOLD", "total_spend": 12500}));
    assert_eq!(a["resolverType"], "CLIENT_HOOK");
    assert_eq!(a["policyEngine"], "WASM");
    assert_eq!(a["policyVersion"], sha256_hex(&attribute).as_str());

    let tr = stored_trace(&app, tenant, &res.body).await;
    assert!(tr["target"]["criteria"][0]["candidates"][0]["note"].as_str().unwrap().contains("last successful order"));
}

#[sqlx::test(migrations = "../migrations")]
async fn every_failure_mode_plugin_is_contained_and_the_tenant_keeps_working(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("wasm-fail").await;
    for name in ["test_loop", "test_oom", "test_trap", "test_bad_output", "test_huge_output"] {
        app.write_tenant_bytes(tenant, &format!("criteria/{name}.wasm"), &plugin(name));
    }
    for name in ["test_attr_trap", "test_attr_bad_json", "test_attr_huge", "test_attr_loop"] {
        app.write_tenant_bytes(tenant, &format!("attributes/{name}.wasm"), &plugin(name));
    }
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        r#"
        # Generous, so that a loaded test machine cannot push the memory hog
        # past its deadline before it reaches its memory cap.
        [limits]
        deadline_ms = 250

        [attribute_keys.a_trap]
        label = "trap"
        [attribute_keys.a_bad_json]
        label = "bad json"
        [attribute_keys.a_huge]
        label = "huge"
        [attribute_keys.a_loop]
        label = "loop"

        [attributes.a_trap]
        strategy = "UPFRONT"
        policy = "test_attr_trap"
        [attributes.a_bad_json]
        strategy = "UPFRONT"
        policy = "test_attr_bad_json"
        [attributes.a_huge]
        strategy = "UPFRONT"
        policy = "test_attr_huge"
        [attributes.a_loop]
        strategy = "UPFRONT"
        policy = "test_attr_loop"
        "#,
    );
    assert_eq!(
        app.state.registry.state().errors().count(),
        0,
        "{:?}",
        app.state.registry.state().errors().collect::<Vec<_>>()
    );

    let mut body = seed_body(commerce, "fail-1");
    body["target_criteria"] = json!([
        {"type": "TEST_LOOP", "priority": 0},
        {"type": "TEST_OOM", "priority": 1},
        {"type": "TEST_TRAP", "priority": 2},
        {"type": "TEST_BAD_OUTPUT", "priority": 3},
        {"type": "TEST_HUGE_OUTPUT", "priority": 4}
    ]);
    body["attribute_keys"] = json!(["a_trap", "a_bad_json", "a_huge", "a_loop"]);
    body["attributes"] = json!([{"key": "a_trap", "fallback": "fb"}]);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["targetUsers"][0]["lockReason"], "FALLBACK_COMMERCE_REP");
    assert_eq!(res.body["status"], "UNRESOLVED");

    let tr = stored_trace(&app, tenant, &res.body).await;
    let steps = tr["target"]["criteria"].as_array().unwrap();
    let kind = |i: usize| steps[i]["error"]["kind"].as_str().unwrap_or("none").to_owned();
    assert_eq!(kind(0), "DEADLINE", "{}", steps[0]);
    let loop_us = steps[0]["durationUs"].as_u64().unwrap();
    assert!((250_000..2_000_000).contains(&loop_us), "the loop was cut at its 250 ms deadline, ran {loop_us} µs");
    assert_eq!(kind(1), "MEMORY", "{}", steps[1]);
    assert!(steps[1]["error"]["message"].as_str().unwrap().contains("16 MiB"));
    assert_eq!(kind(2), "TRAP", "{}", steps[2]);
    assert_eq!(steps[3]["outcome"], "NO_MATCH", "garbage ids are skipped: {}", steps[3]);
    assert!(steps[3]["candidates"].as_array().unwrap().iter().all(|c| c["skipReason"] == "NOT_A_COMMERCE_USER"));
    assert!(["MEMORY", "OUTPUT_TOO_LARGE"].contains(&kind(4).as_str()), "{}", steps[4]);

    let attrs = res.body["attributes"].as_array().unwrap();
    let attr_trace = tr["attributes"].as_array().unwrap();
    assert_eq!(attrs[0]["resolutionStatus"], "FALLBACK");
    assert_eq!(attrs[0]["value"], "fb");
    assert_eq!(attr_trace[0]["error"]["kind"], "TRAP");
    assert_eq!(attrs[1]["resolutionStatus"], "FAILED");
    assert_eq!(attr_trace[1]["error"]["kind"], "BAD_OUTPUT");
    assert_eq!(attrs[2]["resolutionStatus"], "FAILED");
    assert!(
        ["MEMORY", "OUTPUT_TOO_LARGE"].contains(&attr_trace[2]["error"]["kind"].as_str().unwrap()),
        "{}",
        attr_trace[2]
    );
    assert_eq!(attrs[3]["resolutionStatus"], "FAILED");
    assert_eq!(attr_trace[3]["error"]["kind"], "DEADLINE");

    // The host is up and the same tenant's next request succeeds.
    let res = app.create_activity(tenant, &seed_body(commerce, "fail-2")).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["status"], "READY");
    assert_eq!(res.body["targetUsers"][0]["lockReason"], "CRITERIA_MATCH");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_plugin_with_a_forbidden_import_is_refused_at_load(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("wasm-imports").await;
    let cases = [
        ("test_forbidden_import", "reten:secrets/vault@0.1.0"),
        ("test_import_random", "wasi:random/random@0.2.6"),
        ("test_import_clock", "wasi:clocks/wall-clock@0.2.6"),
        ("test_import_filesystem", "wasi:filesystem/preopens@0.2.6"),
    ];
    for (name, _) in cases {
        app.write_tenant_bytes(tenant, &format!("criteria/{name}.wasm"), &plugin(name));
    }
    let state = app.state.registry.state();
    let errors: Vec<_> = state.errors().collect();
    for (name, import) in cases {
        let e = errors.iter().find(|e| e.path.ends_with(&format!("{name}.wasm"))).expect("an error per plugin");
        assert!(e.message.contains(import), "{}", e.message);
        assert!(e.message.contains("does not grant"), "{}", e.message);
    }
    let mut body = seed_body(commerce, "imp-1");
    body["target_criteria"] = json!([{"type": "TEST_IMPORT_RANDOM"}]);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["target_criteria[0].type"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_same_wasm_bytes_in_a_hundred_tenant_folders_compile_once(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let bytes = plugin("test_pick_owner");
    let before = app.state.registry.compile_count();
    for _ in 0..100 {
        let dir = app.policies.path().join("tenants").join(uuid::Uuid::new_v4().to_string()).join("criteria");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pick.wasm"), &bytes).unwrap();
    }
    app.state.registry.reload_all();
    let state = app.state.registry.state();
    let with_pick = state
        .tenants
        .values()
        .filter(|l| l.policies.contains_key(&(reten_host::policy::PolicyKind::Criterion, "pick".to_owned())))
        .count();
    assert_eq!(with_pick, 100);
    assert_eq!(app.state.registry.compile_count() - before, 1, "one compilation for 100 identical files");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_component_decides_on_winch_at_once_then_on_cranelift_and_the_trace_says_which(pool: PgPool) {
    let policies = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&crate::support::repo_policies(), policies.path());
    let options = reten_host::policy::registry::RegistryOptions { wasm_baseline_tier: true, ..Default::default() };
    let app = TestApp::with_registry_options(pool, policies, options, Default::default()).await;
    let engine = app.state.registry.wasm_engine().clone();
    let mut promoted = engine.subscribe_promotions();
    let (tenant, commerce) = app.seeded("wasm-tiers").await;
    app.write_tenant_bytes(tenant, "criteria/pick.wasm", &plugin("test_pick_owner"));
    let decide = async |key: &str| {
        let mut body = seed_body(commerce, key);
        body["target_criteria"] = json!([{"type": "PICK"}]);
        let res = app.create_activity(tenant, &body).await;
        res.assert_status(StatusCode::CREATED);
        let step = stored_trace(&app, tenant, &res.body).await["target"]["criteria"][0].clone();
        (res.body["targetUsers"][0]["commerceUser"]["externalId"].clone(), step["tier"].clone())
    };
    // Readiness did not wait for Cranelift: the first call may run on either
    // tier (the background compiler may already be done), and says which.
    let (first_user, first_tier) = decide("t-1").await;
    assert_eq!(first_user, "u-maria");
    assert!(first_tier == "BASELINE" || first_tier == "OPTIMIZED", "{first_tier}");
    if *promoted.borrow() == 0 {
        // The swap comes before the count: nothing promoted yet, so the call ran on Winch.
        assert_eq!(first_tier, "BASELINE");
    }
    tokio::time::timeout(std::time::Duration::from_secs(120), promoted.wait_for(|n| *n >= 1))
        .await
        .expect("Cranelift's code replaced Winch's")
        .unwrap();
    assert_eq!(decide("t-2").await, (json!("u-maria"), json!("OPTIMIZED")));
}

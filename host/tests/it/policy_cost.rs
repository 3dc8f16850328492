//! What a policy call costs and says: fuel and operations in the trace and
//! in the tenant's counters, per-tenant budgets that stop a call with their
//! own reason, log lines (Rhai `print`/`debug`, Wasm `log` of WIT 0.2) in
//! preview and in the stored trace, and traces a person can read.

use axum::http::{Method, StatusCode};
use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, plugin, seed_body};

/// The sum of a metric's series for one tenant.
fn tenant_metric(metrics: &str, name: &str, tenant: TenantId) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("tenant=\"{tenant}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn one_criterion(criterion_type: &str, limits: &str) -> String {
    format!(
        r#"
        [limits]
        {limits}

        [[target_resolution]]
        resolution_strategy = "ON_CREATION"
        [[target_resolution.criteria]]
        type = "{criterion_type}"
        "#
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn a_fuel_budget_stops_a_looping_wasm_policy_before_its_deadline_and_the_tenant_pays_the_fuel(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("fuel").await;
    app.write_tenant_bytes(tenant, "criteria/spin.wasm", &plugin("test_loop"));
    app.write_tenant_file(tenant, "tenant.toml", &one_criterion("SPIN", "fuel = 2_000_000\ndeadline_ms = 1000"));
    assert_eq!(app.state.registry.state().errors().count(), 0);
    let before = tenant_metric(&app.metrics().await, "reten_policy_fuel_total", tenant);

    let started = std::time::Instant::now();
    let res = app.post(tenant, "/api/activities/preview", &seed_body(commerce, "fuel-1")).await;
    res.assert_status(StatusCode::OK);
    let step = &res.body["trace"]["target"]["criteria"][0];
    assert_eq!(step["outcome"], "FAILED", "{step}");
    assert_eq!(step["error"]["kind"], "BUDGET_EXHAUSTED", "{step}");
    assert!(step["error"]["message"].as_str().unwrap().contains("limits.fuel"), "{step}");
    let fuel = step["fuel"].as_u64().expect("the trace gives the fuel burned");
    assert!((2_000_000..2_100_000).contains(&fuel), "the call burned its budget, not more: {fuel}");
    // The deadline (1 s) did not stop it: the budget did, first.
    assert!(step["durationUs"].as_u64().unwrap() < 1_000_000, "{step}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));

    let after = tenant_metric(&app.metrics().await, "reten_policy_fuel_total", tenant);
    assert_eq!(after - before, fuel as f64, "the tenant's fuel counter rose by the fuel the call burned");
    let calls = tenant_metric(&app.metrics().await, "reten_policy_calls_total{", tenant);
    assert!(calls >= 1.0);
    assert!(app.metrics().await.contains("outcome=\"budget_exhausted\""));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_operations_budget_stops_a_looping_rhai_policy_with_its_own_reason(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("ops").await;
    app.write_tenant_file(tenant, "criteria/spin.rhai", "fn resolve(input) { let n = 0; loop { n += 1; } }");
    app.write_tenant_file(tenant, "tenant.toml", &one_criterion("SPIN", "operations = 50_000\ndeadline_ms = 1000"));
    let before = tenant_metric(&app.metrics().await, "reten_policy_operations_total", tenant);
    let res = app.post(tenant, "/api/activities/preview", &seed_body(commerce, "ops-1")).await;
    res.assert_status(StatusCode::OK);
    let step = &res.body["trace"]["target"]["criteria"][0];
    assert_eq!(step["error"]["kind"], "BUDGET_EXHAUSTED", "{step}");
    let ops = step["operations"].as_u64().unwrap();
    assert!((50_000..50_010).contains(&ops), "{ops}");
    let after = tenant_metric(&app.metrics().await, "reten_policy_operations_total", tenant);
    let traced: u64 = res.body["trace"]["target"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .chain(res.body["trace"]["attributes"].as_array().unwrap())
        .filter_map(|c| c["operations"].as_u64())
        .sum();
    assert_eq!(after - before, traced as f64, "the counter rose by the operations the trace shows");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_budget_beyond_the_ceiling_is_refused_at_load_naming_the_field(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("budget-ceiling").await;
    app.write_tenant_file(tenant, "tenant.toml", "[limits]\nfuel = 0\n");
    let errors: Vec<String> = app.state.registry.state().errors().map(|e| e.message.clone()).collect();
    assert!(errors.iter().any(|e| e.contains("limits.fuel must be between 1 and")), "{errors:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn rhai_print_and_debug_land_in_the_trace_bounded_and_in_the_stored_activity(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("rhai-logs").await;
    app.write_tenant_file(
        tenant,
        "criteria/chatty.rhai",
        r#"fn resolve(input) {
            print("looking at " + input.commerce.users.len() + " users");
            debug("first: " + input.commerce.users[0].external_id);
            for i in 0..100 { print("line " + i); }
            []
        }"#,
    );
    app.write_tenant_file(tenant, "tenant.toml", &one_criterion("CHATTY", ""));
    let res = app.post(tenant, "/api/activities/preview", &seed_body(commerce, "logs-1")).await;
    res.assert_status(StatusCode::OK);
    let logs = res.body["trace"]["target"]["criteria"][0]["logs"].as_array().unwrap().clone();
    assert_eq!(logs[0], json!({"level": "INFO", "message": "looking at 4 users"}));
    assert_eq!(logs[1]["level"], "DEBUG");
    assert!(logs[1]["message"].as_str().unwrap().starts_with("first: u-"));
    let last = logs.last().unwrap();
    assert_eq!(last["fromHost"], true, "the flood is capped with a marker: {last}");
    assert!(last["message"].as_str().unwrap().contains("more lines dropped"), "{last}");
    assert_eq!(logs.len(), reten_host::policy::logs::MAX_LINES + 1);

    let created = app.create_activity(tenant, &seed_body(commerce, "logs-2")).await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap();
    let stored = app.get(tenant, &format!("/api/activities/{id}")).await;
    let stored_logs = &stored.body["resolutionTrace"]["target"]["criteria"][0]["logs"];
    assert_eq!(stored_logs.as_array().unwrap().len(), logs.len(), "the stored trace keeps the capped lines");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_trace_names_candidates_marks_the_applied_config_and_lists_criteria_that_did_not_run(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("readable").await;
    app.write_tenant_file(
        tenant,
        "criteria/everyone_reversed.rhai",
        "fn resolve(input) { let ids = input.commerce.users.map(|u| u.id); ids.reverse(); ids }",
    );
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        r#"
        [[target_resolution]]
        resolution_strategy = "ON_CREATION"
        channels = ["EMAIL"]
        priority = 1
        [[target_resolution.criteria]]
        type = "ROLE_MATCH"
        config = { role = "ORDERS" }

        [[target_resolution]]
        resolution_strategy = "ON_CREATION"
        priority = 2
        [[target_resolution.criteria]]
        type = "EVERYONE_REVERSED"
        priority = 1
        [[target_resolution.criteria]]
        type = "ROLE_MATCH"
        config = { role = "OWNER" }
        priority = 2
        "#,
    );
    let errors: Vec<_> = app.state.registry.state().errors().map(|e| e.message.clone()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let res = app.post(tenant, "/api/activities/preview", &seed_body(commerce, "readable-1")).await;
    res.assert_status(StatusCode::OK);
    let target = &res.body["trace"]["target"];
    let considered = target["configsConsidered"].as_array().unwrap();
    let applied: Vec<&Value> = considered.iter().filter(|c| c["applied"] == true).collect();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0]["priority"], 2, "the EMAIL-only config does not cover WHATSAPP");
    let criteria = target["criteria"].as_array().unwrap();
    assert_eq!(criteria.len(), 2, "{criteria:?}");
    let seen: Vec<(String, String, String)> = criteria[0]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let verdict = c["skipReason"].as_str().unwrap_or("KEPT").to_owned();
            (c["externalId"].as_str().unwrap().to_owned(), c["name"].as_str().unwrap().to_owned(), verdict)
        })
        .collect();
    let expected = [
        ("u-pedro", "Pedro Inactivo", "INACTIVE"),
        ("u-ana", "Ana Diaz", "UNREACHABLE"),
        // A phone reaches WhatsApp.
        ("u-juan", "Juan Perez", "KEPT"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into())).collect();
    assert_eq!(seen, expected);
    assert_eq!(criteria[0]["outcome"], "MATCHED");
    assert!(criteria[0]["operations"].as_u64().unwrap() > 0, "a Rhai call's cost is in the trace");
    assert_eq!(criteria[1]["type"], "ROLE_MATCH");
    assert_eq!(criteria[1]["outcome"], "NOT_RUN");
    let why = criteria[1]["notRunReason"].as_str().unwrap();
    assert!(why.contains("EVERYONE_REVERSED (priority 1) chose the user first"), "{why}");
    assert_eq!(criteria[1]["policy"]["name"], "role_match", "a criterion that did not run still names its policy");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_on_dispatch_config_lists_its_criteria_as_not_run_with_why(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("deferred").await;
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        "[[target_resolution]]\nresolution_strategy = \"ON_DISPATCH\"\n[[target_resolution.criteria]]\ntype = \"ROLE_MATCH\"\nconfig = { role = \"OWNER\" }\n",
    );
    let res = app.post(tenant, "/api/activities/preview", &seed_body(commerce, "deferred-1")).await;
    res.assert_status(StatusCode::OK);
    let step = &res.body["trace"]["target"]["criteria"][0];
    assert_eq!(step["outcome"], "NOT_RUN");
    assert!(step["notRunReason"].as_str().unwrap().contains("ON_DISPATCH"), "{step}");
}

#[sqlx::test(migrations = "../migrations")]
async fn sync_takes_a_contacts_type_under_either_name(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("contact-type").await;
    let mut commerce = crate::support::standard_commerce("c-t");
    commerce["users"][0]["contacts"] = json!([{"type": "WHATSAPP", "value": "+56911111111", "is_primary": true}]);
    app.sync(tenant, json!([commerce])).await.assert_status(StatusCode::CREATED);
    let id = app.commerce_id(tenant, "c-t").await;
    let res = app.get(tenant, &format!("/api/commerces/{id}")).await;
    let maria = res.body["users"].as_array().unwrap().iter().find(|u| u["externalId"] == "u-maria").unwrap().clone();
    assert_eq!(maria["contacts"][0]["type"], "WHATSAPP", "{maria}");
}

#[sqlx::test(migrations = "../migrations")]
async fn random_bytes_as_a_component_get_a_one_line_error(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("random-bytes").await;
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let res = app
        .send_bytes(Method::PUT, "/api/policies/criteria/noise.wasm", &admin_token(tenant), Some(tenant), bytes)
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    let detail = res.body["detail"].as_str().unwrap();
    assert!(!detail.contains('\n'), "{detail}");
    let message = res.body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains('\n') && message.contains("not a WebAssembly file"), "{message}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_0_1_and_a_0_2_component_serve_side_by_side_and_0_2_log_lines_show_in_preview_and_eval(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("wit-versions").await;
    let maria = app.user_id(tenant, commerce, "u-maria").await;
    app.write_tenant_bytes(tenant, "criteria/v01.wasm", &plugin("test_v01_owner"));
    app.write_tenant_bytes(tenant, "criteria/logger.wasm", &plugin("test_log_v2"));
    app.write_tenant_bytes(tenant, "criteria/flood.wasm", &plugin("test_log_flood"));
    // Room for 2,000 host calls on a busy machine's baseline tier.
    app.write_tenant_file(tenant, "tenant.toml", "[limits]\ndeadline_ms = 500\n");
    let errors: Vec<_> = app.state.registry.state().errors().map(|e| e.message.clone()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let decide = |criterion: &'static str| {
        let mut body = seed_body(commerce, criterion);
        body["target_criteria"] = json!([{ "type": criterion }]);
        let app = &app;
        async move {
            let res = app.post(tenant, "/api/activities/preview", &body).await;
            res.assert_status(StatusCode::OK);
            res.body
        }
    };

    let v01 = decide("V01").await;
    assert_eq!(v01["targetUsers"][0]["commerceUserId"], maria.as_str());
    let step = &v01["trace"]["target"]["criteria"][0];
    assert_eq!(step["candidates"][0]["note"], "owner (0.1)");
    assert!(step["fuel"].as_u64().unwrap() > 0);
    assert!(step.get("logs").is_none(), "a 0.1 component cannot log: {step}");

    let v02 = decide("LOGGER").await;
    assert_eq!(v02["targetUsers"][0]["commerceUserId"], maria.as_str());
    let step = &v02["trace"]["target"]["criteria"][0];
    assert_eq!(step["candidates"][0]["note"], "owner (0.2)");
    assert_eq!(
        step["logs"],
        json!([{"level": "INFO", "message": "looking for the owner"}, {"level": "DEBUG", "message": "users: 4"}])
    );

    let flood = decide("FLOOD").await;
    let step = &flood["trace"]["target"]["criteria"][0];
    assert_eq!(flood["targetUsers"][0]["commerceUserId"], maria.as_str(), "a flood does not fail the call: {step}");
    let logs = flood["trace"]["target"]["criteria"][0]["logs"].as_array().unwrap().clone();
    assert_eq!(logs.len(), reten_host::policy::logs::MAX_LINES + 1);
    assert_eq!(logs[0]["message"], "line 0");
    let marker = logs.last().unwrap();
    assert_eq!(marker["fromHost"], true);
    let dropped = 2_000 - reten_host::policy::logs::MAX_LINES;
    assert!(marker["message"].as_str().unwrap().contains(&format!("{dropped} more lines dropped")), "{marker}");

    // The same components offline: `reten policy eval` prints the 0.2 lines.
    let dir = tempfile::tempdir().unwrap();
    crate::support::write(&dir.path().join("criteria/v01.wasm"), &plugin("test_v01_owner"));
    crate::support::write(&dir.path().join("criteria/logger.wasm"), &plugin("test_log_v2"));
    crate::support::write(
        &dir.path().join("tenant.toml"),
        b"[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n[[target_resolution.criteria]]\ntype = \"LOGGER\"\n[[target_resolution.criteria]]\ntype = \"V01\"\npriority = 1\n",
    );
    let mut activity = seed_body(commerce, "x").as_object().unwrap().clone();
    activity.remove("commerce_id");
    activity.remove("idempotency_key");
    let fixture = json!({"activity": activity, "commerce": crate::support::standard_commerce("c-1")});
    let input = dir.path().join("input.json");
    std::fs::write(&input, serde_json::to_vec(&fixture).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reten"))
        .args(["policy", "eval", dir.path().to_str().unwrap(), "--input", input.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("log INFO  looking for the owner") && text.contains("log DEBUG users: 4"), "{text}");
    assert!(text.contains("by LOGGER (logger WASM)"), "{text}");
    assert!(text.contains("fuel"), "{text}");
}

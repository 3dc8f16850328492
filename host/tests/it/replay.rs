//! Decision inputs and replay: every decision keeps the exact input its
//! policies saw, and a candidate set is tried on those inputs, its report
//! checked against numbers the test works out from the stored rows itself.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use reten_host::demo::{self, DEMO_TENANT};
use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{TestApp, admin_token};

/// The demo tenant's folder, relative to the policies directory.
const DEMO_DIR: &str = "tenants/de000000-0000-4000-8000-00000000de40";

/// The demo tenant, provisioned in an app over a copy of the repository's
/// policies.
async fn demo_app(pool: PgPool) -> TestApp {
    let app = TestApp::new(pool).await;
    demo::provision(&app.pool).await.unwrap();
    app
}

/// A demo commerce's users: id → (roles, contact types, active).
async fn users(app: &TestApp, commerce: Uuid) -> HashMap<String, (Vec<String>, Vec<String>, bool)> {
    let res = app.get(DEMO_TENANT, &format!("/api/commerces/{commerce}")).await;
    res.assert_status(StatusCode::OK);
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s["role"].as_str().unwrap().to_owned()).collect();
    res.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let contacts: Vec<String> =
                u["contacts"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap().into()).collect();
            (u["id"].as_str().unwrap().to_owned(), (strings(&u["roles"]), contacts, u["isActive"] == true))
        })
        .collect()
}

/// `n` creates on the demo commerces, cycling through commerces and the
/// WhatsApp and SMS channels; returns each activity's id, commerce and
/// channel.
async fn create_many(app: &TestApp, n: usize) -> Vec<(String, Uuid, &'static str)> {
    let commerces = [
        app.commerce_id(DEMO_TENANT, "demo-c-1").await,
        app.commerce_id(DEMO_TENANT, "demo-c-2").await,
        app.commerce_id(DEMO_TENANT, "demo-c-3").await,
    ];
    let mut out = Vec::new();
    for i in 0..n {
        let commerce = commerces[i % 3];
        let channel = if (i / 3) % 2 == 0 { "WHATSAPP" } else { "SMS" };
        let body = json!({
            "type": "MESSAGE", "reason": "Monthly promotion", "channel": channel, "commerce_id": commerce,
            "idempotency_key": format!("replay-{i}"), "scheduled_at": "2030-01-16T09:00:00.000Z",
        });
        let res = app.create_activity(DEMO_TENANT, &body).await;
        res.assert_status(StatusCode::CREATED);
        out.push((res.body["id"].as_str().unwrap().to_owned(), commerce, channel));
    }
    out
}

/// The demo's `tenant.toml` with the criteria of each config in the
/// opposite order (priorities swapped).
fn swapped_config(app: &TestApp) -> String {
    let live = std::fs::read_to_string(app.policies.path().join(DEMO_DIR).join("tenant.toml")).unwrap();
    let mut doc: toml::Table = live.parse().unwrap();
    for config in doc["target_resolution"].as_array_mut().unwrap() {
        let criteria = config["criteria"].as_array_mut().unwrap();
        let priorities: Vec<toml::Value> = criteria.iter().map(|c| c["priority"].clone()).collect();
        for (c, p) in criteria.iter_mut().zip(priorities.into_iter().rev()) {
            c.as_table_mut().unwrap().insert("priority".into(), p);
        }
    }
    toml::to_string(&doc).unwrap()
}

/// Starts a replay and waits for its report.
async fn replay(app: &TestApp, tenant: TenantId, body: &Value) -> Value {
    let started = app.post(tenant, "/api/policies/replays", body).await;
    started.assert_status(StatusCode::ACCEPTED);
    let id = started.body["id"].as_str().unwrap().to_owned();
    let mut last = Value::Null;
    crate::support::until("the replay to end", async || {
        let res = app.get(tenant, &format!("/api/policies/replays/{id}")).await;
        res.assert_status(StatusCode::OK);
        last = res.body;
        last["status"] != "RUNNING"
    })
    .await;
    last
}

/// The stored target user of each of the tenant's activities.
async fn stored_targets(pool: &PgPool) -> HashMap<String, Option<String>> {
    let rows: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT activity_id, commerce_user_id FROM activity_target_users WHERE tenant_id = $1")
            .bind(DEMO_TENANT)
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().map(|(a, u)| (a.to_string(), u.map(|u| u.to_string()))).collect()
}

/// Everything stored about the tenant's activities, as one digest.
async fn stored_digest(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(coalesce((SELECT string_agg(to_jsonb(a)::text, '|' ORDER BY id) FROM activities a), '') || \
                    coalesce((SELECT string_agg(to_jsonb(t)::text, '|' ORDER BY id) FROM activity_target_users t), '') || \
                    coalesce((SELECT string_agg(to_jsonb(v)::text, '|' ORDER BY id) FROM activity_attributes v), ''))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_replay_of_swapped_criteria_counts_exactly_the_targets_that_change(pool: PgPool) {
    let app = demo_app(pool).await;
    let created = create_many(&app, 200).await;

    // Worked out independently: with the commerce rep's criterion first, an
    // activity goes to its commerce's active rep when the rep can be
    // reached on its channel, and where it went before otherwise.
    let stored = stored_targets(&app.pool).await;
    let mut reps = HashMap::new();
    for (_, commerce, _) in &created {
        if !reps.contains_key(commerce) {
            reps.insert(*commerce, users(&app, *commerce).await);
        }
    }
    let reaches = |channel: &str, contacts: &[String]| match channel {
        "WHATSAPP" => contacts.iter().any(|c| c == "WHATSAPP" || c == "PHONE"),
        _ => contacts.iter().any(|c| c == "PHONE"),
    };
    let mut expected = HashMap::new();
    for (id, commerce, channel) in &created {
        let rep = reps[commerce]
            .iter()
            .find(|(_, (roles, contacts, active))| {
                *active && roles.iter().any(|r| r == "COMMERCE_REP") && reaches(channel, contacts)
            })
            .map(|(id, _)| id.clone());
        let before = stored[id].clone();
        let after = rep.or_else(|| before.clone());
        if before != after {
            expected.insert(id.clone(), (before, after));
        }
    }
    assert!(!expected.is_empty() && expected.len() < 200, "the data must have changes and non-changes");

    let report = replay(
        &app,
        DEMO_TENANT,
        &json!({"files": [{"path": "tenant.toml", "content": swapped_config(&app)}], "message": "reps first"}),
    )
    .await;
    assert_eq!(report["status"], "DONE", "{report}");
    assert_eq!(report["total"], 200);
    assert_eq!(report["evaluated"], 200);
    assert_eq!(report["changed"], expected.len(), "{report}");
    assert_eq!(report["changes"]["target"], expected.len());
    assert_eq!(report["unchanged"], 200 - expected.len());
    assert_eq!(report["errors"], 0);
    assert_eq!(
        report["files"],
        json!([{"path": "tenant.toml", "sha256": report["files"][0]["sha256"], "change": "MODIFIED"}])
    );
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 50);
    for s in samples.iter().take(expected.len().min(50)) {
        let id = s["activityId"].as_str().unwrap();
        let (before, after) = expected.get(id).unwrap_or_else(|| panic!("sample {id} is not a change: {s}"));
        assert_eq!(s["before"]["targetCommerceUserId"].as_str(), before.as_deref(), "{s}");
        assert_eq!(s["after"]["targetCommerceUserId"].as_str(), after.as_deref(), "{s}");
        assert_eq!(s["after"]["criterionType"], "ROLE_MATCH", "{s}");
    }

    // The live set against itself changes nothing.
    let same = replay(&app, DEMO_TENANT, &json!({})).await;
    assert_eq!(
        (same["status"].as_str(), same["evaluated"].as_i64(), same["changed"].as_i64()),
        (Some("DONE"), Some(200), Some(0))
    );
    assert_eq!(same["files"], json!([]));

    // The window: `limit` keeps the most recent.
    let recent = replay(&app, DEMO_TENANT, &json!({"limit": 7})).await;
    assert_eq!((recent["total"].as_i64(), recent["evaluated"].as_i64()), (Some(7), Some(7)));

    // Both replays are listed, newest first.
    let list = app.get(DEMO_TENANT, "/api/policies/replays").await;
    assert_eq!(list.body["meta"]["total"], 3);
    assert_eq!(list.body["data"][2]["message"], "reps first");
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_candidate_that_throws_is_reported_per_activity_and_changes_nothing_stored(pool: PgPool) {
    let app = demo_app(pool).await;
    let created = create_many(&app, 30).await;
    let before = stored_digest(&app.pool).await;
    let report = replay(
        &app,
        DEMO_TENANT,
        &json!({"files": [{"path": "criteria/preferred_contact.rhai", "content": "fn resolve(input) { throw \"boom\" }"}]}),
    )
    .await;
    assert_eq!(report["status"], "DONE", "{report}");
    // Every activity here is on WhatsApp or SMS, whose config runs PREFERRED_CONTACT.
    assert_eq!(report["errors"], created.len(), "{report}");
    for s in report["samples"].as_array().unwrap() {
        let error = s["error"].as_str().unwrap_or_else(|| panic!("a sample without its error: {s}"));
        assert!(error.contains("PREFERRED_CONTACT") && error.contains("boom"), "{error}");
    }
    assert_eq!(stored_digest(&app.pool).await, before, "a replay writes nothing to activities");
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_candidate_that_does_not_compile_starts_no_replay(pool: PgPool) {
    let app = demo_app(pool).await;
    let res = app
        .post(
            DEMO_TENANT,
            "/api/policies/replays",
            &json!({"files": [{"path": "criteria/preferred_contact.rhai", "content": "fn resolve(input) {"}]}),
        )
        .await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.body["errors"][0]["field"], "criteria/preferred_contact.rhai", "{}", res.body);
    let bad_window = app.post(DEMO_TENANT, "/api/policies/replays", &json!({"limit": 0})).await;
    bad_window.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(bad_window.body["errors"][0]["field"], "limit");
    assert_eq!(app.count("policy_replays").await, 0);
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn the_decision_input_read_back_is_what_the_policies_saw(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("echo").await;
    // An attribute that answers its whole input.
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        "[attribute_keys.echo]\nlabel = \"Echo\"\n\n[attributes.echo]\nstrategy = \"UPFRONT\"\nconfig = { a = 1 }\n",
    );
    app.write_tenant_file(tenant, "attributes/echo.rhai", "fn resolve(input) { input }");
    let mut body = crate::support::seed_body(commerce, "echo-1");
    body["attribute_keys"] = json!(["echo"]);
    body["score"] = json!(7);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::CREATED);
    let id = res.body["id"].as_str().unwrap();
    let mut echoed = res.body["attributes"][0]["value"].clone();
    assert_eq!(echoed["config"], json!({"a": 1}), "{echoed}");
    echoed.as_object_mut().unwrap().remove("config");

    let stored = app.get(tenant, &format!("/api/activities/{id}/decision-input")).await;
    stored.assert_status(StatusCode::OK);
    assert_eq!(stored.body, echoed);
    assert_eq!(stored.body["activity"]["score"], 7);

    // Another tenant does not see it.
    let other = app.create_tenant("other").await;
    let res = app
        .call(
            Method::GET,
            &format!("/api/activities/{id}/decision-input"),
            Some(&admin_token(other)),
            Some(other),
            None,
        )
        .await;
    res.assert_status(StatusCode::NOT_FOUND);

    // Past the retention it is gone, even before the pruner runs; the pruner
    // then deletes it.
    sqlx::query("UPDATE decision_inputs SET recorded_at = recorded_at - interval '31 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    let gone = app.get(tenant, &format!("/api/activities/{id}/decision-input")).await;
    gone.assert_status(StatusCode::NOT_FOUND);
    assert!(gone.body["detail"].as_str().unwrap().contains("30 days"), "{}", gone.body);
    let cutoff = reten_host::rollout::RolloutSettings::default().decision_input_cutoff(chrono::Utc::now());
    assert_eq!(reten_host::store::decision_inputs::prune(&app.pool, cutoff).await.unwrap(), 1);
    assert_eq!(app.count("decision_inputs").await, 0);
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn a_retry_keeps_its_input_too(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("retry-input").await;
    // Nobody answers: the activity is UNRESOLVED.
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        "[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\npriority = 0\nfallback_to_commerce_rep = false\n\
         fallback_to_owner = false\n\n[[target_resolution.criteria]]\ntype = \"NOBODY\"\npriority = 0\n",
    );
    app.write_tenant_file(tenant, "criteria/nobody.rhai", "fn resolve(input) { [] }");
    let res = app.create_activity(tenant, &crate::support::seed_body(commerce, "retry-1")).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["status"], "UNRESOLVED", "{}", res.body);
    let id = res.body["id"].as_str().unwrap().to_owned();
    let retried = app
        .call(
            Method::PATCH,
            &format!("/api/activities/{id}/retry-resolution"),
            Some(&admin_token(tenant)),
            Some(tenant),
            None,
        )
        .await;
    retried.assert_status(StatusCode::OK);
    let stages: Vec<String> =
        sqlx::query_scalar("SELECT stage FROM decision_inputs WHERE activity_id = $1::uuid ORDER BY seq")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(stages, ["CREATE", "RETRY"]);
}

#[sqlx::test(migrator = "reten_host::store::MIGRATOR")]
async fn the_cli_replay_reports_what_the_api_replay_reports(pool: PgPool) {
    let app = demo_app(pool).await;
    // The recorder records the demo's set as its revision 1: the live set
    // the command line replays against.
    let _tasks = reten_host::rollout::Tasks::spawn(&app.pool, &app.state.registry, Default::default());
    crate::support::until("revision 1 to be recorded", async || {
        app.get(DEMO_TENANT, "/api/policies/revisions").await.body["meta"]["total"] != 0
    })
    .await;
    create_many(&app, 30).await;

    // The candidate: the demo's folder with its criteria swapped.
    let scratch = tempfile::tempdir().unwrap();
    let candidate = scratch.path().join(DEMO_TENANT.to_string());
    crate::support::copy_dir(&app.policies.path().join(DEMO_DIR), &candidate);
    std::fs::write(candidate.join("tenant.toml"), swapped_config(&app)).unwrap();
    let api =
        replay(&app, DEMO_TENANT, &json!({"files": [{"path": "tenant.toml", "content": swapped_config(&app)}]})).await;

    let database = app.pool.connect_options().get_database().unwrap().to_owned();
    let global = crate::support::repo_policies().join("global");
    let run = |json: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reten"));
        cmd.args(["policy", "replay", candidate.to_str().unwrap(), "--global", global.to_str().unwrap()])
            .env("DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{database}"));
        if json {
            cmd.arg("--json");
        }
        async move {
            let out = cmd.output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            text
        }
    };
    let cli: Value = serde_json::from_str(&run(true).await).unwrap();
    assert_eq!(cli["liveRevision"], 1, "{cli}");
    for field in ["total", "evaluated", "changed", "unchanged", "errors", "changes"] {
        assert_eq!(cli[field], api[field], "{field}: the CLI {cli} and the API {api}");
    }
    assert!(cli["changed"].as_i64().unwrap() > 0);
    let table = run(false).await;
    assert!(table.contains("MODIFIED  tenant.toml"), "{table}");
    let changed = table.lines().find_map(|l| l.trim().strip_prefix("changed")).map(str::trim);
    assert_eq!(changed, Some(cli["changed"].to_string().as_str()), "{table}");
}

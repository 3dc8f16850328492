//! The `reten` binary's offline commands.

use std::process::Command;

use crate::support::{plugin, repo_policies};

fn reten(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reten")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn policy_check_passes_the_shipped_policies() {
    let (ok, out) = reten(&["policy", "check", repo_policies().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("global/criteria/role_match.rhai") && out.contains("0 failed"), "{out}");
}

#[test]
fn policy_check_reports_errors_with_their_position_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = dir.path().join("tenants").join(uuid::Uuid::new_v4().to_string());
    crate::support::write(&tenant.join("criteria/bad.rhai"), b"fn resolve(input) {\n  let = 1;\n}\n");
    crate::support::write(&tenant.join("criteria/spy.wasm"), &plugin("test_forbidden_import"));
    crate::support::write(&tenant.join("tenant.toml"), b"limit = 3\n");
    crate::support::copy_dir(&repo_policies().join("global"), &dir.path().join("global"));
    let (ok, out) = reten(&["policy", "check", tenant.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("criteria/bad.rhai:2:"), "{out}");
    assert!(out.contains("reten:secrets/vault@0.1.0"), "{out}");
    assert!(out.contains("tenant.toml:1:"), "{out}");
    assert!(out.contains("3 failed"), "{out}");
}

#[test]
fn policy_check_names_the_type_a_tenant_toml_references_without_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = dir.path().join("tenants").join(uuid::Uuid::new_v4().to_string());
    crate::support::write(
        &tenant.join("tenant.toml"),
        b"[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n[[target_resolution.criteria]]\ntype = \"TOP_SPENDER\"\n",
    );
    crate::support::copy_dir(&repo_policies().join("global"), &dir.path().join("global"));
    let (ok, out) = reten(&["policy", "check", tenant.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("tenant.toml") && out.contains("criteria/top_spender.{rhai,wasm}"), "{out}");
    assert!(out.contains("TOP_SPENDER"), "{out}");
}

#[test]
fn policy_check_takes_single_files() {
    let (ok, out) = reten(&["policy", "check", repo_policies().join("global/defaults.toml").to_str().unwrap()]);
    assert!(ok, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("loyalty_tier.wasm");
    std::fs::write(&wasm, plugin("loyalty_tier")).unwrap();
    let (ok, out) = reten(&["policy", "check", wasm.to_str().unwrap()]);
    assert!(ok && out.contains("ATTRIBUTE WASM"), "{out}");
}

#[test]
fn token_mints_a_token_the_service_accepts() {
    let tenant = uuid::Uuid::new_v4();
    let out = Command::new(env!("CARGO_BIN_EXE_reten"))
        .args([
            "token",
            "--sub",
            "ci",
            "--tenant",
            &tenant.to_string(),
            "--permission",
            "CREATE_ACTIVITY",
            "--ttl",
            "5m",
        ])
        .env("RETEN_JWT_SECRET", crate::support::SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let auth = reten_host::api::auth::Authenticator::new(&reten_host::api::auth::JwtSettings {
        secret: Some(crate::support::SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let caller = auth.verify(token.trim()).unwrap();
    assert_eq!(caller.tenant_ids, [reten_host::domain::TenantId(tenant)]);
    assert!(caller.permissions.contains(reten_host::domain::Permission::CreateActivity));
}

#[test]
fn policy_test_passes_the_shipped_fixtures() {
    for dir in ["global", "tenants/de000000-0000-4000-8000-00000000de40"] {
        let (ok, out) = reten(&["policy", "test", repo_policies().join(dir).to_str().unwrap()]);
        assert!(ok, "{dir}: {out}");
        assert!(out.contains("PASS") && out.contains(" 0 failed"), "{out}");
    }
}

#[test]
fn policy_test_fails_naming_the_fixture_whose_expectation_changed() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&repo_policies(), dir.path());
    let fixture = dir.path().join("global/tests/role_match_picks_the_commerce_rep.toml");
    let text = std::fs::read_to_string(&fixture).unwrap().replace("user = \"u-juan\"", "user = \"u-maria\"");
    std::fs::write(&fixture, text).unwrap();
    let (ok, out) = reten(&["policy", "test", dir.path().join("global").to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  role_match_picks_the_commerce_rep.toml"), "{out}");
    assert!(out.contains("target user: expected u-maria, got u-juan"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
}

/// A folder outside any policies directory, laid out like a tenant's: one
/// Rhai criterion that prints, a tenant.toml that uses it, and two fixtures.
fn scratch_tenant() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    crate::support::write(
        &root.join("criteria/first_owner.rhai"),
        br#"fn resolve(input) {
    print("users: " + input.commerce.users.len());
    input.commerce.users.filter(|u| u.roles.contains("OWNER")).map(|u| #{id: u.id, note: "an owner"})
}
"#,
    );
    crate::support::write(
        &root.join("tenant.toml"),
        b"[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n[[target_resolution.criteria]]\ntype = \"FIRST_OWNER\"\n",
    );
    let fixture = |user: &str| {
        format!(
            r#"
[activity]
type = "MESSAGE"
channel = "WHATSAPP"
reason = "r"
scheduled_at = "2025-01-16T09:00:00.000Z"

[[commerce.users]]
external_id = "u-rep"
name = "Rita Rep"
roles = ["COMMERCE_REP"]
contacts = [{{ contact_type = "WHATSAPP", value = "+1" }}]

[[commerce.users]]
external_id = "u-owner"
name = "Oscar Owner"
roles = ["OWNER"]
contacts = [{{ type = "WHATSAPP", value = "+2" }}]

[expect.target]
user = "{user}"
engine = "RHAI"

[[expect.criteria]]
type = "FIRST_OWNER"
outcome = "MATCHED"
engine = "RHAI"
note = "an owner"
skipped = []
logs_include = ["users: 2"]
"#
        )
    };
    crate::support::write(&root.join("tests/owner_wins.toml"), fixture("u-owner").as_bytes());
    crate::support::write(&root.join("tests/rep_wins.toml"), fixture("u-rep").as_bytes());
    dir
}

#[test]
fn policy_test_runs_a_folder_anywhere_over_the_built_in_global_layer_with_traces_on_demand() {
    let dir = scratch_tenant();
    let path = dir.path().to_str().unwrap();
    let (ok, out) = reten(&["policy", "test", path]);
    assert!(!ok, "{out}");
    assert!(out.contains("PASS  owner_wins.toml") && out.contains("FAIL  rep_wins.toml"), "{out}");
    assert!(out.contains("target user: expected u-rep, got u-owner"), "{out}");
    assert!(out.contains("global layer: the defaults built into reten"), "{out}");
    assert!(!out.contains("criterion  1. FIRST_OWNER"), "no trace without -v: {out}");

    // -v: the failing fixture's trace, with names, notes, cost and log lines.
    let (_, out) = reten(&["policy", "test", path, "-v"]);
    assert_eq!(out.matches("criterion  1. FIRST_OWNER").count(), 1, "{out}");
    assert!(out.contains("+ u-owner (Oscar Owner) kept  note: an owner"), "{out}");
    assert!(out.contains("operations"), "{out}");
    assert!(out.contains("log INFO  users: 2"), "{out}");
    // -vv: every fixture's.
    let (_, out) = reten(&["policy", "test", path, "-vv"]);
    assert_eq!(out.matches("criterion  1. FIRST_OWNER").count(), 2, "{out}");

    // --run selects; a fixture file runs alone.
    let (ok, out) = reten(&["policy", "test", path, "--run", "^owner"]);
    assert!(ok && out.contains("1 fixtures: 1 passed, 0 failed, 1 not selected by --run"), "{out}");
    let (ok, out) = reten(&["policy", "test", dir.path().join("tests/owner_wins.toml").to_str().unwrap()]);
    assert!(ok && out.contains("1 fixtures: 1 passed"), "{out}");
}

#[test]
fn policy_check_takes_many_paths_and_a_folder_anywhere() {
    let dir = scratch_tenant();
    let (ok, out) = reten(&[
        "policy",
        "check",
        dir.path().to_str().unwrap(),
        repo_policies().join("global/defaults.toml").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("criteria/first_owner.rhai  CRITERION RHAI"), "{out}");
    assert!(out.contains("defaults.toml  CONFIG"), "{out}");
}

#[test]
fn policy_eval_prints_the_decision_trace_logs_and_cost_and_json_on_demand() {
    let dir = scratch_tenant();
    let path = dir.path().to_str().unwrap();
    let fixture = dir.path().join("tests/owner_wins.toml");
    let (ok, out) = reten(&["policy", "eval", path, "--input", fixture.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("status     READY"), "{out}");
    assert!(
        out.contains("target     u-owner (Oscar Owner): LOCKED, CRITERIA_MATCH by FIRST_OWNER (first_owner RHAI)"),
        "{out}"
    );
    assert!(out.contains("log INFO  users: 2"), "{out}");
    assert!(out.contains("cost       ") && out.contains("operations (Rhai)"), "{out}");
    let (ok, out) = reten(&["policy", "eval", path, "--input", fixture.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["targetUsers"][0]["commerceUser"]["externalId"], "u-owner");
    assert_eq!(v["trace"]["target"]["criteria"][0]["logs"][0]["message"], "users: 2");
}

/// `policy eval` on a fixture and `POST /api/activities/preview` on the same
/// input (the fixture's commerce synced, its activity sent) decide the same.
#[sqlx::test(migrations = "../migrations")]
async fn policy_eval_on_a_fixture_decides_as_preview_does(pool: sqlx::PgPool) {
    use axum::http::StatusCode;
    let app = crate::support::TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("eval-vs-preview").await;
    let body = crate::support::seed_body(commerce, "eval-1");
    let mut activity = body.as_object().unwrap().clone();
    activity.remove("commerce_id");
    activity.remove("idempotency_key");
    activity.insert("attribute_keys".into(), serde_json::json!(["commerce_info", "promotions"]));
    let fixture = serde_json::json!({"activity": activity, "commerce": crate::support::standard_commerce("c-1")});
    let dir = tempfile::tempdir().unwrap();
    let tenant_dir = dir.path().join(tenant.to_string());
    crate::support::copy_dir(&repo_policies().join("tenants/de000000-0000-4000-8000-00000000de40"), &tenant_dir);
    std::fs::remove_dir_all(tenant_dir.join("tests")).unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, serde_json::to_vec(&fixture).unwrap()).unwrap();
    for rel in ["tenant.toml", "criteria/preferred_contact.rhai", "attributes/loyalty_tier.rhai"] {
        app.write_tenant_bytes(tenant, rel, &std::fs::read(tenant_dir.join(rel)).unwrap());
    }
    assert_eq!(app.state.registry.state().errors().count(), 0);

    let (ok, out) = reten(&[
        "policy",
        "eval",
        tenant_dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--global",
        repo_policies().join("global").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{out}");
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut body = body.clone();
    body["attribute_keys"] = serde_json::json!(["commerce_info", "promotions"]);
    let preview = app.post(tenant, "/api/activities/preview", &body).await;
    preview.assert_status(StatusCode::OK);
    let p = &preview.body;
    assert_eq!(eval["status"], p["status"]);
    for field in [
        "resolutionStatus",
        "lockReason",
        "criterionType",
        "policyName",
        "policyEngine",
        "policyVersion",
        "commerceUser",
    ] {
        assert_eq!(eval["targetUsers"][0][field], p["targetUsers"][0][field], "{field}");
    }
    assert!(p["targetUsers"][0]["commerceUser"]["externalId"].is_string());
    let values = |v: &serde_json::Value| {
        v["attributes"].as_array().unwrap().iter().map(|a| (a["key"].clone(), a["status"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(values(&eval), values(p));
    let promotions = |v: &serde_json::Value| {
        v["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "promotions").unwrap()["value"].clone()
    };
    assert_eq!(promotions(&eval), promotions(p));
    let outcomes = |v: &serde_json::Value| {
        v["trace"]["target"]["criteria"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].clone(), c["outcome"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&eval), outcomes(p));
}

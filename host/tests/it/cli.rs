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

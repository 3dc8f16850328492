//! The README's "Your first Wasm policy in five commands", run as an author
//! runs them, with the real `reten` binary, in a folder outside this
//! repository: scaffold, edit, build, test, and deploy into the policies
//! directory a running `reten serve` watches. The next create is decided by
//! the new criterion.
//!
//! The scaffolded crate builds in a target folder kept under Cargo's
//! (`CARGO_TARGET_TMPDIR`), with the SDK written beside it, so a second run
//! does not build wit-bindgen again; `CARGO_NET_OFFLINE` holds it to what the
//! machine's cargo cache has, as the scaffold promises.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::replicas::{database_url, replica};
use crate::support::{TestApp, copy_dir, repo_policies, seed_body};

/// Step 2's edit: the active user whose name sorts first, whatever the roles.
const FIRST_NAME_RS: &str = r#"//! FIRST_NAME: the active user whose name sorts first.

use reten_policy_sdk::log;
use reten_policy_sdk::prelude::*;

fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
    let mut named: Vec<&CommerceUser> = input.commerce.active_users().filter(|user| user.name.is_some()).collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    log::info(format!("{} named users", named.len()));
    Ok(named.first().map(|user| Candidate::new(&user.id).with_note("first by name")).into_iter().collect())
}

reten_policy_sdk::export_criterion!(resolve);
"#;

/// Step 2's edit of the fixture, to match.
const FIRST_NAME_FIXTURE: &str = r#"description = "FIRST_NAME picks Ana over the owner"

[activity]
type = "MESSAGE"
channel = "EMAIL"
reason = "Invoice"
scheduled_at = "2025-01-16T09:00:00.000Z"

[[commerce.users]]
external_id = "u-zoe"
name = "Zoe"
roles = ["OWNER"]
contacts = [{ type = "EMAIL", value = "zoe@example.com" }]

[[commerce.users]]
external_id = "u-ana"
name = "Ana"
roles = ["ORDERS"]
contacts = [{ type = "EMAIL", value = "ana@example.com" }]

[expect]
status = "READY"
target = { user = "u-ana", criterion_type = "FIRST_NAME", engine = "WASM" }

[[expect.criteria]]
type = "FIRST_NAME"
note = "first by name"
logs_include = ["2 named users"]
"#;

/// A folder kept between runs under Cargo's target folder.
fn kept(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("authoring-cli").join(name)
}

/// Runs `reten` in `dir` as an author's shell would, with the SDK and the
/// crate's build kept between runs.
fn reten(dir: &Path, args: &[&str]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reten"))
        .args(args)
        .current_dir(dir)
        .env("RETEN_SDK_DIR", kept("sdk"))
        .env("CARGO_TARGET_DIR", kept("target"))
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RETEN_POLICIES_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reten {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_readmes_five_commands_take_a_new_wasm_criterion_from_scaffold_to_deciding_a_create(pool: PgPool) {
    // A tenant with the standard commerce, whose folder a running server watches.
    let app = TestApp::new(pool.clone()).await;
    let (tenant, commerce) = app.seeded("first-wasm-policy").await;
    let ana = app.user_id(tenant, commerce, "u-ana").await;
    let policies = tempfile::tempdir().unwrap();
    copy_dir(&repo_policies(), policies.path());
    let tenant_dir = policies.path().join("tenants").join(tenant.to_string());
    std::fs::create_dir_all(&tenant_dir).unwrap();
    let server = replica(&database_url(&pool), policies.path(), &[]).await;
    let t = tenant.to_string();
    let work = tempfile::tempdir().unwrap();
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().canonicalize().unwrap();
    assert!(!work.path().canonicalize().unwrap().starts_with(&repository), "the author works outside the repository");
    let work = work.path();

    // 1. Scaffold.
    let scaffold = stdout(&reten(work, &["policy", "new", "criterion", "first_name", "--wasm"]));
    assert!(scaffold.contains("wrote first_name/Cargo.toml"), "{scaffold}");

    // 2. Edit: another rule, and the fixture to match.
    std::fs::write(work.join("first_name/src/lib.rs"), FIRST_NAME_RS).unwrap();
    std::fs::write(work.join("first_name/tests/first_name.toml"), FIRST_NAME_FIXTURE).unwrap();

    // 3. Build.
    let built = stdout(&reten(work, &["policy", "build", "first_name"]));
    assert_eq!(built.trim(), "first_name/target/first_name.wasm");

    // 4. Test.
    let tested = stdout(&reten(work, &["policy", "test", "first_name"]));
    assert!(tested.contains("PASS  first_name.toml") && tested.contains("1 passed, 0 failed"), "{tested}");

    // 5. Deploy: into the tenant's folder, which the server watches.
    let copied = std::process::Command::new("cp")
        .args(["-rL", "first_name/tenant.toml", "first_name/criteria"])
        .arg(format!("{}/", tenant_dir.display()))
        .current_dir(work)
        .status()
        .unwrap();
    assert!(copied.success());

    // The server picks both files up; a preview says when the set serves.
    let mut body = seed_body(commerce, "first-wasm-policy");
    body["channel"] = json!("EMAIL");
    let serving = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let (status, preview) = server.call("POST", "/api/activities/preview", &t, Some(&body)).await;
            if status == 200 && preview["targetUsers"][0]["criterionType"] == "FIRST_NAME" {
                return;
            }
        }
    })
    .await;
    assert!(serving.is_ok(), "the deployed criterion did not start serving within 30 s");

    let (status, created) = server.call("POST", "/api/activities", &t, Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let target = &created["targetUsers"][0];
    assert_eq!(target["commerceUserId"], ana.as_str(), "Ana Diaz sorts first: {target}");
    assert_eq!(target["criterionType"], "FIRST_NAME");
    assert_eq!(target["policyName"], "first_name");
    assert_eq!(target["policyEngine"], "WASM");
    let (status, stored) =
        server.call("GET", &format!("/api/activities/{}", created["id"].as_str().unwrap()), &t, None).await;
    assert_eq!(status, 200, "{stored}");
    let step = &stored["resolutionTrace"]["target"]["criteria"][0];
    assert_eq!(step["type"], "FIRST_NAME", "{step}");
    assert_eq!(step["candidates"][0]["note"], "first by name", "{step}");
    assert_eq!(step["logs"], json!([{"level": "INFO", "message": "3 named users"}]), "{step}");
}

/// Runs `reten` in `dir` and expects it to fail; returns its stderr.
fn reten_fails(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reten"))
        .args(args)
        .current_dir(dir)
        .env("RETEN_SDK_DIR", kept("sdk"))
        .env_remove("RETEN_POLICIES_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success(), "reten {args:?} succeeded:\n{}", stdout(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn each_wasm_scaffold_builds_and_passes_its_own_fixture_unedited() {
    let work = tempfile::tempdir().unwrap();
    for (kind, name) in [("criterion", "owner_first"), ("attribute", "active_users")] {
        reten(work.path(), &["policy", "new", kind, name, "--wasm", "--dir", name]);
        let out = work.path().join(format!("{name}.wasm"));
        let built = stdout(&reten(work.path(), &["policy", "build", name, "--out", out.to_str().unwrap()]));
        assert_eq!(built.trim(), out.to_str().unwrap());
        // The crate's link points at the default output, which --out bypassed.
        let target = work.path().join(name).join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(&out, target.join(format!("{name}.wasm"))).unwrap();
        let tested = stdout(&reten(work.path(), &["policy", "test", name]));
        assert!(tested.contains("1 passed, 0 failed"), "{tested}");
    }
}

#[test]
fn each_rhai_scaffold_passes_its_own_fixture_at_once() {
    let work = tempfile::tempdir().unwrap();
    for (kind, name) in [("criterion", "owner_first"), ("attribute", "active_users")] {
        let dir = work.path().join(kind);
        let made = stdout(&reten(work.path(), &["policy", "new", kind, name, "--rhai", "--dir", kind]));
        assert!(made.contains("tenant.toml"), "{made}");
        let tested = stdout(&reten(&dir, &["policy", "test", "."]));
        assert!(tested.contains("1 passed, 0 failed"), "{tested}");
    }
    let criterion = std::fs::read_to_string(work.path().join("criterion/tenant.toml")).unwrap();
    assert!(criterion.contains("type = \"OWNER_FIRST\""), "the type is the name in upper case: {criterion}");
}

#[test]
fn new_leaves_an_existing_tenant_toml_alone_and_says_what_to_add() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("tenant.toml"), "name = \"mine\"\n").unwrap();
    let made = stdout(&reten(work.path(), &["policy", "new", "attribute", "tier", "--rhai"]));
    assert_eq!(std::fs::read_to_string(work.path().join("tenant.toml")).unwrap(), "name = \"mine\"\n");
    assert!(made.contains("left alone") && made.contains("[attributes.tier]"), "{made}");
    assert!(work.path().join("attributes/tier.rhai").is_file() && work.path().join("tests/tier.toml").is_file());
}

#[test]
fn new_refuses_to_overwrite_a_policy_in_either_engine_and_bad_names() {
    let work = tempfile::tempdir().unwrap();
    reten(work.path(), &["policy", "new", "criterion", "pick", "--rhai"]);
    let script = std::fs::read(work.path().join("criteria/pick.rhai")).unwrap();
    let again = reten_fails(work.path(), &["policy", "new", "criterion", "pick", "--rhai"]);
    assert!(again.contains("refusing to overwrite") && again.contains("criteria/pick.rhai"), "{again}");
    let twin = reten_fails(work.path(), &["policy", "new", "criterion", "pick", "--wasm", "--dir", "."]);
    assert!(twin.contains("criteria/pick.rhai"), "the same policy in Wasm would clash: {twin}");
    assert_eq!(std::fs::read(work.path().join("criteria/pick.rhai")).unwrap(), script);
    assert!(!work.path().join("Cargo.toml").exists(), "nothing was written");

    let bad = reten_fails(work.path(), &["policy", "new", "criterion", "Top-Spender", "--rhai"]);
    assert!(bad.contains("snake_case") && bad.lines().count() == 1, "{bad}");
    let no_engine = reten_fails(work.path(), &["policy", "new", "criterion", "pick2"]);
    assert!(no_engine.contains("--wasm") && no_engine.contains("--rhai"), "{no_engine}");
}

#[test]
fn build_of_a_folder_without_a_crate_says_so_on_one_line() {
    let work = tempfile::tempdir().unwrap();
    let error = reten_fails(work.path(), &["policy", "build", "."]);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("has no Cargo.toml"), "{error}");
}

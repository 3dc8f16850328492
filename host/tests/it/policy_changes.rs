//! Policy changes through the API: a changeset is checked as a whole (every
//! problem listed, nothing written), applied in one swap that no request
//! sees half of, refused against a stale base revision, and the older PUT
//! and DELETE routes are one-file changesets with the same answers.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, TestResponse, admin_token, plugin, seed_body, sha, super_admin_token};

pub const PICK_OWNER: &str =
    "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"OWNER\")).map(|u| u.id) }";
pub const PICK_REP: &str =
    "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"COMMERCE_REP\")).map(|u| u.id) }";
/// A tenant.toml whose only config runs the criterion `PICK`.
pub const USES_PICK: &str = "[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\npriority = 0\n\
                             [[target_resolution.criteria]]\ntype = \"PICK\"\n";

/// `POST /api/policies/changes` as the tenant's admin.
pub async fn change(app: &TestApp, tenant: TenantId, body: Value) -> TestResponse {
    app.post(tenant, "/api/policies/changes", &body).await
}

/// A tenant whose tenant.toml runs `criteria/pick.rhai` (the owner first).
pub async fn tenant_using_pick(app: &TestApp, slug: &str) -> (TenantId, uuid::Uuid) {
    let (tenant, commerce) = app.seeded(slug).await;
    let files =
        json!([{"path": "criteria/pick.rhai", "content": PICK_OWNER}, {"path": "tenant.toml", "content": USES_PICK}]);
    change(app, tenant, json!({"files": files})).await.assert_status(StatusCode::OK);
    (tenant, commerce)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The engine and outcome of the first criterion of every stored activity.
async fn first_criteria(app: &TestApp, tenant: TenantId) -> Vec<(String, String)> {
    let traces: Vec<Value> = sqlx::query_scalar("SELECT resolution_trace FROM activities WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    traces
        .iter()
        .map(|t| {
            let c = &t["target"]["criteria"][0];
            (
                c["policy"]["engine"].as_str().unwrap_or("none").to_owned(),
                c["outcome"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn deleting_a_criterion_that_tenant_toml_names_is_422_naming_it_and_deletes_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = tenant_using_pick(&app, "dangling-delete").await;
    let generation = app.state.registry.generation();
    let res = app
        .send_bytes(Method::DELETE, "/api/policies/criteria/pick.rhai", &admin_token(tenant), Some(tenant), vec![])
        .await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.error_fields().iter().any(|f| f.ends_with("tenant.toml")), "{}", res.body);
    assert!(res.body["errors"][0]["message"].as_str().unwrap().contains("PICK"), "{}", res.body);
    assert!(res.body["detail"].as_str().unwrap().contains("was not written"), "{}", res.body);
    assert!(app.tenant_path(tenant, "criteria/pick.rhai").exists(), "nothing was deleted");
    assert_eq!(app.state.registry.generation(), generation);

    let created = app.create_activity(tenant, &seed_body(commerce, "after-refused-delete")).await;
    created.assert_status(StatusCode::CREATED);
    let target = &created.body["targetUsers"][0];
    assert_eq!(target["criterionType"], "PICK", "the next create decides as before: {target}");
    assert_eq!(target["commerceUser"]["externalId"], "u-maria");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_engine_swap_serves_in_one_generation_and_no_concurrent_create_sees_neither_engine(pool: PgPool) {
    let (app, _watcher) = TestApp::watching(pool).await;
    let (tenant, commerce) = tenant_using_pick(&app, "engine-swap").await;
    let before = app.state.registry.generation();
    let wasm = plugin("test_pick_owner");
    let swap = json!({"files": [{"path": "criteria/pick.wasm", "content_base64": b64(&wasm)}],
                      "delete": ["criteria/pick.rhai"], "message": "Rhai to Wasm"});

    // 50 clients create back to back from before the change until after it
    // serves (each sends one more once it has seen the answer).
    let done = AtomicBool::new(false);
    let client = |w: usize| {
        let (app, done) = (&app, &done);
        async move {
            let mut statuses = Vec::new();
            for n in 0.. {
                let last = done.load(Ordering::SeqCst);
                statuses.push(app.create_activity(tenant, &seed_body(commerce, &format!("swap-{w}-{n}"))).await.status);
                if last {
                    break;
                }
            }
            statuses
        }
    };
    let swapping = async {
        let res = change(&app, tenant, swap).await;
        done.store(true, Ordering::SeqCst);
        res
    };
    let (res, answers) = tokio::join!(swapping, futures::future::join_all((0..50).map(client)));
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["generation"], before + 1, "one swap, one generation: {}", res.body);
    let changes: Vec<(&str, &str)> = res.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["change"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, [("criteria/pick.rhai", "DELETED"), ("criteria/pick.wasm", "ADDED")]);
    assert!(answers.iter().flatten().all(|s| *s == StatusCode::CREATED), "every create answered 201");
    assert!(!app.tenant_path(tenant, "criteria/pick.rhai").exists());
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(&wasm)));

    let seen = first_criteria(&app, tenant).await;
    assert!(seen.len() >= 100, "{} creates", seen.len());
    for engine in ["RHAI", "WASM"] {
        assert!(seen.iter().any(|(e, _)| e == engine), "some creates ran on {engine}");
    }
    let odd: Vec<&(String, String)> = seen
        .iter()
        .filter(|(engine, outcome)| !["RHAI", "WASM"].contains(&engine.as_str()) || outcome != "MATCHED")
        .collect();
    assert!(odd.is_empty(), "every create ran the old or the new engine and matched: {odd:?}");
    // The watcher saw the change's files too, and published nothing more.
    app.state.registry.reload_all();
    assert_eq!(app.state.registry.generation(), before + 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_changeset_with_one_bad_file_among_three_is_422_listing_it_and_writes_none(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("bad-among-three").await;
    let generation = app.state.registry.generation();
    let files = json!([
        {"path": "criteria/pick.rhai", "content": PICK_OWNER},
        {"path": "criteria/broken.rhai", "content": "fn resolve(input) {\n  let = 1;\n}\n"},
        {"path": "tenant.toml", "content": USES_PICK}
    ]);
    let res = change(&app, tenant, json!({"files": files})).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.error_fields(), ["criteria/broken.rhai"], "{}", res.body);
    assert_eq!(res.body["errors"][0]["line"], 2);
    for path in ["criteria/pick.rhai", "criteria/broken.rhai", "tenant.toml"] {
        assert!(!app.tenant_path(tenant, path).exists(), "{path} was written");
    }
    assert_eq!(app.state.registry.generation(), generation);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_dry_run_checks_and_answers_the_same_shape_writing_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("dry-run").await;
    let generation = app.state.registry.generation();
    let files =
        json!([{"path": "criteria/pick.rhai", "content": PICK_OWNER}, {"path": "tenant.toml", "content": USES_PICK}]);
    let res = change(&app, tenant, json!({"files": files, "dry_run": true})).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["revision"], Value::Null);
    assert_eq!(res.body["generation"], generation);
    assert_eq!(res.body["files"][0]["path"], "criteria/pick.rhai");
    assert_eq!(res.body["files"][0]["sha256"], sha(PICK_OWNER.as_bytes()).as_str());
    assert_eq!(res.body["files"][1]["change"], "ADDED");
    assert!(
        !app.tenant_path(tenant, "criteria/pick.rhai").exists() && !app.tenant_path(tenant, "tenant.toml").exists()
    );
    assert_eq!(app.count("policy_revisions").await, 0);

    // A dry run that would fail is the same 422 as the real change.
    let bad = json!({"files": [{"path": "tenant.toml", "content": USES_PICK}], "dry_run": true});
    let res = change(&app, tenant, bad).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.error_fields(), ["tenant.toml"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn run_tests_with_a_failing_fixture_is_422_naming_the_fixture(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("run-tests").await;
    let fixture = |user: &str| {
        format!(
            "[activity]\ntype = \"MESSAGE\"\nchannel = \"WHATSAPP\"\nreason = \"r\"\n\
             scheduled_at = \"2025-01-16T09:00:00.000Z\"\n\n[commerce]\n\
             [[commerce.users]]\nexternal_id = \"u-owner\"\nroles = [\"OWNER\"]\n\
             contacts = [{{ type = \"WHATSAPP\", value = \"+56911111111\" }}]\n\
             [[commerce.users]]\nexternal_id = \"u-rep\"\nroles = [\"COMMERCE_REP\"]\n\
             contacts = [{{ type = \"WHATSAPP\", value = \"+56922222222\" }}]\n\n\
             [expect]\ntarget = {{ user = \"{user}\", criterion_type = \"PICK\" }}\n"
        )
    };
    let body = |user: &str| {
        json!({"files": [
            {"path": "criteria/pick.rhai", "content": PICK_OWNER},
            {"path": "tenant.toml", "content": USES_PICK},
            {"path": "tests/owner_first.toml", "content": fixture(user)}
        ], "run_tests": true})
    };
    let res = change(&app, tenant, body("u-rep")).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.error_fields(), ["tests/owner_first.toml"], "{}", res.body);
    assert!(res.body["errors"][0]["message"].as_str().unwrap().contains("u-owner"), "{}", res.body);
    assert!(!app.tenant_path(tenant, "criteria/pick.rhai").exists());

    // Without run_tests the fixture is only a file; with a passing one, it applies.
    let res = change(&app, tenant, body("u-owner")).await;
    res.assert_status(StatusCode::OK);
    assert!(app.tenant_path(tenant, "tests/owner_first.toml").exists());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_base_revision_older_than_the_serving_one_is_409_and_writes_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = tenant_using_pick(&app, "base-revision").await;
    let first = change(
        &app,
        tenant,
        json!({"files": [{"path": "criteria/other.rhai", "content": PICK_REP}], "base_revision": 1}),
    )
    .await;
    first.assert_status(StatusCode::OK);
    assert_eq!(first.body["revision"], 2);

    let stale = json!({"files": [{"path": "criteria/pick.rhai", "content": PICK_REP}], "base_revision": 1});
    let res = change(&app, tenant, stale).await;
    res.assert_status(StatusCode::CONFLICT);
    assert!(res.body["detail"].as_str().unwrap().contains("base_revision 1"), "{}", res.body);
    assert_eq!(std::fs::read_to_string(app.tenant_path(tenant, "criteria/pick.rhai")).unwrap(), PICK_OWNER);
    assert_eq!(app.count("policy_revisions").await, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_changeset_that_changes_nothing_answers_the_serving_revision_and_no_files(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = tenant_using_pick(&app, "no-op").await;
    let generation = app.state.registry.generation();
    let res = change(&app, tenant, json!({"files": [{"path": "criteria/pick.rhai", "content": PICK_OWNER}]})).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body, json!({"revision": 1, "generation": generation, "files": []}));
    assert_eq!(app.count("policy_revisions").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_paths_and_a_path_both_written_and_deleted_are_422_on_their_fields(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("bad-paths").await;
    let body = json!({
        "files": [
            {"path": "../../global/criteria/role_match.rhai", "content": PICK_OWNER},
            {"path": "criteria/pick.rhai", "content": PICK_OWNER},
            {"path": "criteria/x.wasm", "content_base64": "not base64!"}
        ],
        "delete": ["criteria/pick.rhai", "criteria/missing.rhai"]
    });
    let res = change(&app, tenant, body).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.error_fields(), ["files[0].path", "files[1].path", "files[2].content_base64"], "{}", res.body);
    assert!(res.body["errors"][1]["message"].as_str().unwrap().contains("both written and deleted"));

    let res = change(&app, tenant, json!({"delete": ["criteria/missing.rhai"]})).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.error_fields(), ["delete[0]"]);
    let res = change(&app, tenant, json!({"files": [], "surprise": true})).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    let walk = std::fs::read_dir(app.policies.path().join("global/criteria")).unwrap().count();
    assert_eq!(walk, 3, "the global folder is untouched");
}

#[sqlx::test(migrations = "../migrations")]
async fn putting_a_wasm_beside_its_rhai_is_422_and_leaves_no_file_behind(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = tenant_using_pick(&app, "put-beside").await;
    let res = app
        .send_bytes(
            Method::PUT,
            "/api/policies/criteria/pick.wasm",
            &admin_token(tenant),
            Some(tenant),
            plugin("test_pick_owner"),
        )
        .await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["detail"].as_str().unwrap().contains("define the same policy"), "{}", res.body);
    assert!(!app.tenant_path(tenant, "criteria/pick.wasm").exists(), "a failed upload writes nothing");
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(PICK_OWNER.as_bytes())));
}

#[sqlx::test(migrations = "../migrations")]
async fn put_and_delete_answer_as_before_plus_the_revision(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("put-delete").await;
    let uri = "/api/policies/criteria/pick.rhai";
    let res = app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), PICK_OWNER.into()).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["revision"], 1);
    assert_eq!(res.body["version"], sha(PICK_OWNER.as_bytes()).as_str());
    let res = app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), PICK_REP.into()).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["revision"], 2);
    let res = app.send_bytes(Method::DELETE, uri, &admin_token(tenant), Some(tenant), vec![]).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["revision"], 3);
    assert_eq!(res.body["deleted"], format!("tenants/{tenant}/criteria/pick.rhai").as_str());
    assert_eq!(app.criterion_version(tenant, "PICK"), None);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_global_change_that_would_leave_a_tenant_dangling_is_422_naming_the_tenants_file(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("global-dangling").await;
    let uses_global = "[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n\
                       [[target_resolution.criteria]]\ntype = \"LAST_CONTACTED_ALL_CHANNELS\"\n";
    change(&app, tenant, json!({"files": [{"path": "tenant.toml", "content": uses_global}]}))
        .await
        .assert_status(StatusCode::OK);
    let body = json!({"delete": ["criteria/last_contacted_all_channels.rhai"]});
    let res =
        app.call(Method::POST, "/api/global-policies/changes", Some(&super_admin_token()), None, Some(&body)).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    // The demo tenant's config names it too: every tenant it would break is listed.
    assert!(res.error_fields().contains(&format!("tenants/{tenant}/tenant.toml")), "{}", res.body);
    assert!(res.body["errors"][0]["message"].as_str().unwrap().contains("LAST_CONTACTED_ALL_CHANNELS"));
    assert!(app.policies.path().join("global/criteria/last_contacted_all_channels.rhai").exists());
}

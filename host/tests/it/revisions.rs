//! Revisions: every set that starts serving is recorded once, with who made
//! it and how — the API's changes with the caller, file edits as
//! `filesystem` — and an earlier revision can be restored as a new one.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use reten_host::domain::TenantId;
use reten_host::rollout::Tasks;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::policy_changes::{PICK_OWNER, PICK_REP, USES_PICK, change, tenant_using_pick};
use crate::support::{TestApp, plugin, sha, super_admin_token, token, write};

/// Polls the tenant's revisions until `cond` holds; fails after 20 s.
async fn revisions_until(app: &TestApp, tenant: TenantId, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tick.tick().await;
            let res = app.get(tenant, "/api/policies/revisions").await;
            res.assert_status(StatusCode::OK);
            let data = res.body["data"].as_array().unwrap().clone();
            if cond(&data) {
                return data;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn revisions_list_the_api_change_with_the_callers_sub_and_the_file_edit_as_filesystem(pool: PgPool) {
    let (app, _watcher) = TestApp::watching(pool.clone()).await;
    let _tasks = Tasks::spawn(&pool, &app.state.registry, Default::default());
    let (tenant, _) = app.seeded("history").await;
    let maria = token("maria@acme", &[tenant], &["ADMIN"], &[]);
    let body = json!({"files": [{"path": "criteria/pick.rhai", "content": PICK_OWNER},
                                {"path": "tenant.toml", "content": USES_PICK}],
                      "message": "owner first"});
    let res = app.call(Method::POST, "/api/policies/changes", Some(&maria), Some(tenant), Some(&body)).await;
    res.assert_status(StatusCode::OK);
    let api_revision = res.body["revision"].as_i64().unwrap();

    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_REP.as_bytes());
    let data = revisions_until(&app, tenant, "the file edit's revision", |d| d.len() as i64 > api_revision).await;
    let (edit, api) = (&data[0], &data[1]);
    assert_eq!(edit["revision"], api_revision + 1);
    assert_eq!((edit["author"].as_str(), edit["source"].as_str()), (Some("filesystem"), Some("FILESYSTEM")));
    assert_eq!(
        edit["files"],
        json!([{"path": "criteria/pick.rhai", "sha256": sha(PICK_REP.as_bytes()), "change": "MODIFIED"}])
    );
    assert_eq!((api["author"].as_str(), api["source"].as_str()), (Some("maria@acme"), Some("API")));
    assert_eq!(api["message"], "owner first");
    assert_eq!(api["files"].as_array().unwrap().len(), 2, "{api}");
    assert!(api["createdAt"].as_str().unwrap().ends_with('Z'));
    // The API's own files, seen again by the watcher, made no revision of
    // their own: the edit's is the very next number.
    assert_eq!(data.len() as i64, api_revision + 1, "{data:#?}");

    let listing = app.get(tenant, "/api/policies").await;
    assert_eq!(listing.body["revision"], api_revision + 1, "the listing names the serving revision");
    let page = app.get(tenant, "/api/policies/revisions?per_page=1&page=2").await;
    assert_eq!(page.body["data"][0]["revision"], api_revision);
    assert_eq!(page.body["meta"]["total"], api_revision + 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn restoring_revision_1_serves_its_bytes_again_as_a_new_revision(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = tenant_using_pick(&app, "restore").await;
    let wasm = plugin("test_pick_rep");
    let swap = json!({"files": [{"path": "criteria/pick.wasm",
                                 "content_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &wasm)}],
                      "delete": ["criteria/pick.rhai"]});
    change(&app, tenant, swap).await.assert_status(StatusCode::OK);
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(&wasm)));

    let res = app.post(tenant, "/api/policies/revisions/1/restore", &json!({"message": "back to Rhai"})).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["revision"], 3);
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(PICK_OWNER.as_bytes())), "revision 1's bytes serve");
    assert!(!app.tenant_path(tenant, "criteria/pick.wasm").exists(), "files not in revision 1 are deleted");

    let first = app.get(tenant, "/api/policies/revisions/1").await;
    let restored = app.get(tenant, "/api/policies/revisions/3").await;
    restored.assert_status(StatusCode::OK);
    assert_eq!(restored.body["source"], "RESTORE");
    assert_eq!(restored.body["author"], "admin@test");
    assert_eq!(restored.body["message"], "back to Rhai");
    assert_eq!(restored.body["set"], first.body["set"], "the same files, the same sha256s and contents");
    assert_eq!(restored.body["setSha256"], first.body["setSha256"]);
    let pick = restored.body["set"].as_array().unwrap().iter().find(|f| f["path"] == "criteria/pick.rhai").unwrap();
    assert_eq!(pick["sha256"], sha(PICK_OWNER.as_bytes()).as_str());
    assert_eq!(pick["content"], PICK_OWNER);

    let two = app.get(tenant, "/api/policies/revisions/2").await;
    let wasm_file = two.body["set"].as_array().unwrap().iter().find(|f| f["path"] == "criteria/pick.wasm").unwrap();
    assert_eq!(wasm_file["contentBase64"].as_str().map(|s| s.len() > 100), Some(true), "a component comes as base64");
    assert_eq!(app.post(tenant, "/api/policies/revisions/99/restore", &json!({})).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn another_tenants_revision_is_a_404_and_an_api_key_is_the_author(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (a, _) = tenant_using_pick(&app, "rev-a").await;
    let (b, _) = app.seeded("rev-b").await;
    assert_eq!(app.get(b, "/api/policies/revisions/1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(b, "/api/policies/revisions").await.body["meta"]["total"], 0);
    assert_eq!(app.post(b, "/api/policies/revisions/1/restore", &json!({})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(a, "/api/policies/revisions/0").await.status, StatusCode::BAD_REQUEST);

    let key = app.post(a, "/api/api-keys", &json!({"name": "ci", "permissions": ["MANAGE_ACTIVITY_CONFIG"]})).await;
    key.assert_status(StatusCode::CREATED);
    let body = json!({"files": [{"path": "criteria/pick.rhai", "content": PICK_REP}]}).to_string();
    let req = axum::http::Request::post("/api/policies/changes")
        .header("x-api-key", key.body["plaintextKey"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    app.send(req).await.assert_status(StatusCode::OK);
    let newest = app.get(a, "/api/policies/revisions/2").await;
    assert_eq!(newest.body["author"], format!("api-key:{}", key.body["id"].as_str().unwrap()).as_str());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_sets_found_at_start_up_are_revision_1_of_their_layers(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let demo = TenantId::parse("de000000-0000-4000-8000-00000000de40").unwrap();
    sqlx::query("INSERT INTO tenants (id, name, slug) VALUES ($1, 'Demo', 'demo')")
        .bind(demo.0)
        .execute(&pool)
        .await
        .unwrap();
    let _tasks = Tasks::spawn(&pool, &app.state.registry, Default::default());
    let data = revisions_until(&app, demo, "the demo tenant's first revision", |d| !d.is_empty()).await;
    assert_eq!(data.len(), 1);
    assert_eq!((data[0]["revision"].as_i64(), data[0]["source"].as_str()), (Some(1), Some("FILESYSTEM")));
    assert_eq!(data[0]["author"], "filesystem");
    assert_eq!(data[0]["message"], "the set found at start-up");
    let listed: Vec<&str> = data[0]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(listed.contains(&"tenant.toml") && listed.contains(&"criteria/preferred_contact.rhai"), "{listed:?}");
    assert!(listed.iter().any(|p| p.starts_with("tests/")), "fixtures are part of the set: {listed:?}");

    let global =
        app.call(Method::GET, "/api/global-policies/revisions/1", Some(&super_admin_token()), None, None).await;
    global.assert_status(StatusCode::OK);
    let paths: Vec<&str> = global.body["set"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"defaults.toml") && paths.contains(&"attribute-keys.toml"), "{paths:?}");
}

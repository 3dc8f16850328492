//! The policy admin API: uploads are validated before they are written, serve
//! when answered, and stay inside the caller's own folder.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, plugin, seed_body, sha, super_admin_token, token};

const GOOD: &str = "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"OWNER\")).map(|u| u.id) }";

#[sqlx::test(migrations = "../migrations")]
async fn a_good_upload_serves_when_answered(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("admin-good").await;
    let res = app
        .send_bytes(Method::PUT, "/api/policies/criteria/pick.rhai", &admin_token(tenant), Some(tenant), GOOD.into())
        .await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["version"], sha(GOOD.as_bytes()).as_str());
    assert_eq!(res.body["path"], format!("tenants/{tenant}/criteria/pick.rhai").as_str());
    // No waiting: the answer means it serves.
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(GOOD.as_bytes())));
    let mut body = seed_body(commerce, "adm-1");
    body["target_criteria"] = json!([{"type": "PICK"}]);
    let created = app.create_activity(tenant, &body).await;
    created.assert_status(StatusCode::CREATED);
    assert_eq!(created.body["targetUsers"][0]["commerceUser"]["externalId"], "u-maria");

    let again = app
        .send_bytes(Method::PUT, "/api/policies/criteria/pick.rhai", &admin_token(tenant), Some(tenant), GOOD.into())
        .await;
    again.assert_status(StatusCode::OK);

    let wasm = plugin("test_pick_rep");
    let res = app
        .send_bytes(Method::PUT, "/api/policies/criteria/rep.wasm", &admin_token(tenant), Some(tenant), wasm.clone())
        .await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(app.criterion_version(tenant, "REP"), Some(sha(&wasm)));

    let listing = app.get(tenant, "/api/policies").await;
    let names: Vec<&str> =
        listing.body["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"pick") && names.contains(&"rep") && names.contains(&"role_match"), "{names:?}");
    let rep = listing.body["policies"].as_array().unwrap().iter().find(|p| p["name"] == "rep").unwrap();
    assert_eq!(rep["engine"], "WASM");
    assert_eq!(rep["origin"], "TENANT");
    assert_eq!(rep["criterionType"], "REP");
    assert!(rep["loadedAt"].as_str().is_some());
    assert_eq!(listing.body["generation"], app.state.registry.generation());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_bad_upload_is_422_with_its_error_and_the_old_file_stays(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("admin-bad").await;
    let uri = "/api/policies/criteria/pick.rhai";
    app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), GOOD.into())
        .await
        .assert_status(StatusCode::CREATED);
    let generation = app.state.registry.generation();

    let broken = "fn resolve(input) {\n  let = 1;\n}\n";
    let res = app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), broken.into()).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.body["errors"][0]["line"], 2, "{}", res.body);
    assert!(res.body["errors"][0]["column"].as_u64().is_some());
    assert!(res.body["detail"].as_str().unwrap().contains("was not written"));
    assert_eq!(
        std::fs::read_to_string(app.tenant_path(tenant, "criteria/pick.rhai")).unwrap(),
        GOOD,
        "the old file is untouched"
    );
    assert_eq!(app.state.registry.generation(), generation, "nothing was reloaded");

    let no_resolve = "fn decide(x) { [] }";
    let res = app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), no_resolve.into()).await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["detail"].as_str().unwrap().contains("fn resolve(input)"));

    let res = app
        .send_bytes(
            Method::PUT,
            "/api/policies/criteria/rand.wasm",
            &admin_token(tenant),
            Some(tenant),
            plugin("test_import_random"),
        )
        .await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["detail"].as_str().unwrap().contains("wasi:random/random"));
    assert!(!app.tenant_path(tenant, "criteria/rand.wasm").exists());

    let res = app
        .send_bytes(
            Method::PUT,
            "/api/policies/attributes/x.wasm",
            &admin_token(tenant),
            Some(tenant),
            plugin("test_pick_owner"),
        )
        .await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["detail"].as_str().unwrap().contains("attribute world"), "{}", res.body);

    let config = "[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n[[target_resolution.criteria]]\ntype = \"NOPE\"\n";
    let res = app
        .send_bytes(Method::PUT, "/api/policies/config/tenant.toml", &admin_token(tenant), Some(tenant), config.into())
        .await;
    res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["detail"].as_str().unwrap().contains("NOPE"));
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_names_are_400(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("admin-names").await;
    for uri in [
        "/api/policies/criteria/..%2Fx.rhai",
        "/api/policies/criteria/%2Fetc%2Fpasswd",
        "/api/policies/criteria/..",
        "/api/policies/scripts/x.rhai",
        "/api/policies/criteria/Role.rhai",
        "/api/policies/criteria/x.lua",
        "/api/policies/config/defaults.toml",
    ] {
        let res = app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), GOOD.into()).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{uri}: {}", res.body);
    }
    let written: Vec<_> = walk(app.policies.path());
    assert!(written.iter().all(|p| !p.ends_with("passwd") && !p.ends_with("x.rhai")), "{written:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().to_string_lossy().into_owned());
        }
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tenant_token_cannot_touch_another_tenant_or_the_global_folder(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("admin-a").await;
    let (other, _) = app.seeded("admin-b").await;
    let mine = admin_token(tenant);
    let res = app.send_bytes(Method::PUT, "/api/policies/criteria/pick.rhai", &mine, Some(other), GOOD.into()).await;
    res.assert_status(StatusCode::FORBIDDEN);
    let res =
        app.send_bytes(Method::PUT, "/api/global-policies/criteria/role_match.rhai", &mine, None, GOOD.into()).await;
    res.assert_status(StatusCode::FORBIDDEN);
    let res =
        app.send_bytes(Method::DELETE, "/api/global-policies/criteria/role_match.rhai", &mine, None, vec![]).await;
    res.assert_status(StatusCode::FORBIDDEN);
    let res = app.call(Method::GET, "/api/global-policies", Some(&mine), None, None).await;
    res.assert_status(StatusCode::FORBIDDEN);
    let viewer = token("v", &[tenant], &["VIEWER"], &[]);
    let res = app.send_bytes(Method::PUT, "/api/policies/criteria/pick.rhai", &viewer, Some(tenant), GOOD.into()).await;
    res.assert_status(StatusCode::FORBIDDEN);
    assert!(!app.tenant_path(other, "criteria/pick.rhai").exists());
    assert!(!app.tenant_path(tenant, "criteria/pick.rhai").exists());

    // A SUPER_ADMIN may change the global folder.
    let global = "fn resolve(input) { [] }";
    let res = app
        .send_bytes(Method::PUT, "/api/global-policies/criteria/nobody.rhai", &super_admin_token(), None, global.into())
        .await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(
        app.criterion_version(other, "NOBODY"),
        Some(sha(global.as_bytes())),
        "global policies reach every tenant"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn deleting_an_override_through_the_api_falls_back_to_the_global_policy(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("admin-delete").await;
    let global = app.criterion_version(tenant, "ROLE_MATCH").unwrap();
    let uri = "/api/policies/criteria/role_match.rhai";
    app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), GOOD.into())
        .await
        .assert_status(StatusCode::CREATED);
    assert_eq!(app.criterion_version(tenant, "ROLE_MATCH"), Some(sha(GOOD.as_bytes())));
    let res = app.send_bytes(Method::DELETE, uri, &admin_token(tenant), Some(tenant), vec![]).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(app.criterion_version(tenant, "ROLE_MATCH"), Some(global));
    let res = app.send_bytes(Method::DELETE, uri, &admin_token(tenant), Some(tenant), vec![]).await;
    res.assert_status(StatusCode::NOT_FOUND);
}

/// Found by Schemathesis: deleting the global `defaults.toml` and then the
/// global `attribute-keys.toml` answered 500 ("the written set did not serve
/// as checked"), with the demo tenant's folder beside them.
#[sqlx::test(migrations = "../migrations")]
async fn deleting_the_global_config_files_one_after_the_other_never_answers_500(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let root = super_admin_token();
    let mut statuses = Vec::new();
    for file in ["config/defaults.toml", "config/attribute-keys.toml"] {
        let uri = format!("/api/global-policies/{file}");
        let res = app.send_bytes(Method::DELETE, &uri, &root, None, vec![]).await;
        assert!(res.status.is_success() || res.status.is_client_error(), "{file}: {} {:#}", res.status, res.body);
        statuses.push(res.status);
    }
    let listing = app.call(Method::GET, "/api/global-policies", Some(&root), None, None).await;
    listing.assert_status(StatusCode::OK);
    assert!(statuses.iter().all(|s| *s != StatusCode::INTERNAL_SERVER_ERROR), "{statuses:?}");
}

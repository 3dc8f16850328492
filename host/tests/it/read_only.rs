//! `RETEN_POLICIES_READ_ONLY`: for a ConfigMap or git-sync directory, every
//! route that writes policy files answers 409 with the reason, and nothing is
//! written; reads, dry runs, previews and listings still work.

use axum::http::{Method, StatusCode};
use reten_host::rollout::RolloutSettings;
use serde_json::json;
use sqlx::PgPool;

use crate::policy_changes::PICK_OWNER;
use crate::support::{TestApp, admin_token, copy_dir, repo_policies, seed_body, super_admin_token};

#[sqlx::test(migrations = "../migrations")]
async fn in_read_only_mode_every_write_route_is_409_and_reads_preview_and_listing_work(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_policies(), dir.path());
    let app = TestApp::with_rollout(pool, dir, RolloutSettings { read_only: true, ..RolloutSettings::default() }).await;
    let (tenant, commerce) = app.seeded("read-only").await;
    let (admin, root) = (admin_token(tenant), super_admin_token());
    let files_before = walk(app.policies.path());

    let change = json!({"files": [{"path": "criteria/pick.rhai", "content": PICK_OWNER}]});
    let writes = [
        (Method::PUT, "/api/policies/criteria/pick.rhai", Some(tenant), PICK_OWNER.as_bytes().to_vec(), false),
        (Method::DELETE, "/api/policies/criteria/pick.rhai", Some(tenant), vec![], false),
        (Method::PUT, "/api/global-policies/criteria/pick.rhai", None, PICK_OWNER.as_bytes().to_vec(), false),
        (Method::DELETE, "/api/global-policies/criteria/role_match.rhai", None, vec![], false),
        (Method::POST, "/api/policies/changes", Some(tenant), change.to_string().into_bytes(), true),
        (Method::POST, "/api/global-policies/changes", None, change.to_string().into_bytes(), true),
        (Method::POST, "/api/policies/revisions/1/restore", Some(tenant), vec![], true),
        (Method::POST, "/api/global-policies/revisions/1/restore", None, vec![], true),
    ];
    for (method, uri, tenant_header, body, json) in writes {
        let token = if tenant_header.is_some() { &admin } else { &root };
        let res = if json {
            let body = (!body.is_empty()).then(|| String::from_utf8(body).unwrap());
            app.call_raw(method.clone(), uri, Some(token), tenant_header, body).await
        } else {
            app.send_bytes(method.clone(), uri, token, tenant_header, body).await
        };
        res.assert_status(StatusCode::CONFLICT);
        let detail = res.body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("policies are managed in the directory"), "{method} {uri}: {}", res.body);
    }
    assert_eq!(walk(app.policies.path()), files_before, "nothing was written");
    assert_eq!(app.count("policy_revisions").await, 0);

    let dry = app.post(tenant, "/api/policies/changes", &json!({"files": change["files"], "dry_run": true})).await;
    dry.assert_status(StatusCode::OK);
    assert_eq!(dry.body["files"][0]["change"], "ADDED");
    for uri in ["/api/policies", "/api/policies/revisions", "/api/activity-config/target-resolution"] {
        app.get(tenant, uri).await.assert_status(StatusCode::OK);
    }
    app.call(Method::GET, "/api/global-policies", Some(&root), None, None).await.assert_status(StatusCode::OK);
    app.post(tenant, "/api/activities/preview", &seed_body(commerce, "ro-preview")).await.assert_status(StatusCode::OK);
    app.create_activity(tenant, &seed_body(commerce, "ro-create")).await.assert_status(StatusCode::CREATED);
}

fn walk(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

//! Tenant isolation audit. Every route of the OpenAPI document (read from
//! `reten_host::api::openapi()`, so that a new route cannot escape the audit:
//! a route without a case here fails the test) is called as tenant B —
//! with B's token and B's header, with B's token and A's header, and with
//! B's API key — against tenant A's real ids: activities, target users,
//! commerces, commerce users, API keys and policy files. Each answer is a
//! 403/404 (or a refusal, or B's own data); no answer to B holds any id of
//! A that B did not send itself; and A's rows and files are the same after.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{TestApp, TestResponse, admin_token, seed_body, sha, standard_commerce};

/// What an attempt must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// 403 or 404: A's resource is not B's to see or touch.
    Denied,
    /// A 4xx: refused (B names A's data as an input of its own request).
    Refused,
    /// B's own data (a list, a view, a write to B's own folder): anything
    /// but a 5xx; the leak check decides.
    Own,
}

#[derive(Clone, Debug)]
struct Attempt {
    method: Method,
    uri: String,
    body: Option<Vec<u8>>,
    json: bool,
    expect: Expect,
    /// Whether the answer is searched for A's ids here (`/metrics` has a
    /// test of its own, below).
    leak_checked: bool,
}

fn attempt(method: Method, uri: impl Into<String>, body: Option<Value>, expect: Expect) -> Attempt {
    let body = body.map(|b| b.to_string().into_bytes());
    Attempt { method, uri: uri.into(), body, json: true, expect, leak_checked: true }
}

fn upload(method: Method, uri: impl Into<String>, bytes: &[u8], expect: Expect) -> Attempt {
    Attempt { method, uri: uri.into(), body: Some(bytes.to_vec()), json: false, expect, leak_checked: true }
}

/// How B authenticates.
#[derive(Clone, Debug)]
enum As {
    /// B's admin token with `x-tenant-id: <tenant>`.
    Token(TenantId),
    /// B's API key, without a tenant header or with one.
    Key(Option<TenantId>),
}

/// The two tenants and A's ids.
struct World {
    a: TenantId,
    b: TenantId,
    a_commerce: Uuid,
    a_user: String,
    a_ready: String,
    a_unresolved: String,
    a_pending: String,
    a_pending_target: String,
    a_ready_target: String,
    a_key_id: String,
    a_key: String,
    a_config: String,
    /// A replay of A's (done or running).
    a_replay: String,
    b_commerce: Uuid,
    b_user: String,
    b_pending: String,
    b_pending_target: String,
    b_key: String,
}

const A_CRITERION: &str =
    "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"OWNER\")).map(|u| u.id) }";
const A_ATTRIBUTE: &str =
    "fn resolve(input) { if input.activity.reason == \"fail\" { throw \"no tier\" } \"ALPHA-GOLD\" }";
const MANUAL_EMAIL: &str = r#"
[[target_resolution]]
resolution_strategy = "MANUAL"
priority = 0
channels = ["EMAIL"]
"#;

/// The A-side data of an attempt's body: a create for A's commerce.
fn create_for(commerce: Uuid, key: &str) -> Value {
    seed_body(commerce, key)
}

/// Every attempt for one route, or `None` when the route has no case.
fn attempts(w: &World, method: &str, template: &str) -> Option<Vec<Attempt>> {
    use Expect::*;
    let (get, post, patch, put, delete) = (Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE);
    let a_activities = [&w.a_ready, &w.a_unresolved, &w.a_pending];
    let per_activity = |suffix: &str, m: &Method, body: Option<Value>| -> Vec<Attempt> {
        a_activities
            .iter()
            .map(|id| attempt(m.clone(), format!("/api/activities/{id}{suffix}"), body.clone(), Denied))
            .collect()
    };
    let b_config_using_a = format!(
        "{MANUAL_EMAIL}\n[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\npriority = 1\n\
         [[target_resolution.criteria]]\ntype = \"A_PRIVATE_PICK\"\n"
    );
    Some(match (method, template) {
        ("POST", "/api/activities") => vec![
            attempt(post.clone(), "/api/activities", Some(create_for(w.a_commerce, "b-into-a")), Denied),
            // B may not run A's policies or use A's attribute keys.
            attempt(
                post.clone(),
                "/api/activities",
                Some({
                    let mut b = create_for(w.b_commerce, "b-a-criterion");
                    b["target_criteria"] = json!([{"type": "A_PRIVATE_PICK"}]);
                    b
                }),
                Refused,
            ),
            attempt(
                post.clone(),
                "/api/activities",
                Some({
                    let mut b = create_for(w.b_commerce, "b-a-key");
                    b["attribute_keys"] = json!(["a_secret_tier"]);
                    b
                }),
                Refused,
            ),
        ],
        ("GET", "/api/activities") => vec![
            attempt(get.clone(), "/api/activities", None, Own),
            attempt(get.clone(), format!("/api/activities?commerce_id={}", w.a_commerce), None, Own),
            attempt(get.clone(), "/api/activities?search=alpha", None, Own),
            attempt(get.clone(), "/api/activities?per_page=100&status=UNRESOLVED", None, Own),
        ],
        ("POST", "/api/activities/preview") => {
            vec![attempt(post, "/api/activities/preview", Some(create_for(w.a_commerce, "preview")), Denied)]
        }
        ("GET", "/api/activities/{id}") => per_activity("", &get, None),
        ("GET", "/api/activities/{id}/target-users") => per_activity("/target-users", &get, None),
        ("GET", "/api/activities/{id}/attributes") => per_activity("/attributes", &get, None),
        ("GET", "/api/activities/{id}/status-events") => per_activity("/status-events", &get, None),
        ("PATCH", "/api/activities/{id}/retry-resolution") => per_activity("/retry-resolution", &patch, None),
        ("PATCH", "/api/activities/{id}/cancel") => per_activity("/cancel", &patch, None),
        ("PATCH", "/api/activities/{id}/target-users/{targetUserId}/resolve") => vec![
            attempt(
                patch.clone(),
                format!("/api/activities/{}/target-users/{}/resolve", w.a_pending, w.a_pending_target),
                Some(json!({"commerce_user_id": w.a_user})),
                Denied,
            ),
            attempt(
                patch.clone(),
                format!("/api/activities/{}/target-users/{}/resolve", w.a_pending, w.a_pending_target),
                Some(json!({"commerce_user_id": w.b_user})),
                Denied,
            ),
            // B's own activity, A's target user: not B's.
            attempt(
                patch.clone(),
                format!("/api/activities/{}/target-users/{}/resolve", w.b_pending, w.a_ready_target),
                Some(json!({"commerce_user_id": w.b_user})),
                Denied,
            ),
            // B's own pending target, A's commerce user: refused.
            attempt(
                patch,
                format!("/api/activities/{}/target-users/{}/resolve", w.b_pending, w.b_pending_target),
                Some(json!({"commerce_user_id": w.a_user})),
                Refused,
            ),
        ],
        ("GET", "/api/activity-config/target-resolution")
        | ("GET", "/api/activity-config/attribute-keys")
        | ("GET", "/api/activity-config/attribute-policies") => vec![attempt(get, template, None, Own)],
        ("POST", "/api/api-keys") => vec![attempt(
            post,
            "/api/api-keys",
            Some(json!({"name": "b's key", "permissions": ["VIEW_ACTIVITIES"]})),
            Own,
        )],
        ("GET", "/api/api-keys") => vec![attempt(get, "/api/api-keys", None, Own)],
        ("POST", "/api/api-keys/{id}/revoke") => {
            vec![attempt(post, format!("/api/api-keys/{}/revoke", w.a_key_id), Some(json!({})), Denied)]
        }
        ("GET", "/api/commerces") => vec![
            attempt(get.clone(), "/api/commerces", None, Own),
            attempt(get.clone(), "/api/commerces?external_id=c-1", None, Own),
            attempt(get.clone(), "/api/commerces?search=Alpha", None, Own),
            attempt(get, "/api/commerces?global_external_id=alpha-global", None, Own),
        ],
        ("POST", "/api/commerces/sync") => {
            // B syncs the same external id: B's own commerce, A's untouched.
            let mut item = standard_commerce("c-1");
            item["name"] = json!("B's store, same external id");
            vec![attempt(post, "/api/commerces/sync", Some(json!({"items": [item]})), Own)]
        }
        ("GET", "/api/commerces/{id}") => vec![attempt(get, format!("/api/commerces/{}", w.a_commerce), None, Denied)],
        ("PATCH", "/api/commerces/{id}") => vec![attempt(
            patch,
            format!("/api/commerces/{}", w.a_commerce),
            Some(json!({"name": "hijacked", "is_active": false})),
            Denied,
        )],
        ("POST", "/api/tenant/setup") => vec![attempt(
            post,
            "/api/tenant/setup",
            Some(json!({"name": "Alpha again", "slug": "alpha-secret-tenant"})),
            Denied,
        )],
        ("GET", "/api/policies") => vec![attempt(get, "/api/policies", None, Own)],
        ("PUT", "/api/policies/{kind}/{file}") => vec![
            // B's config may not name A's criterion (first: B has no file of
            // that name yet).
            upload(put.clone(), "/api/policies/config/tenant.toml", b_config_using_a.as_bytes(), Refused),
            // B's own folder: a file of the same name as A's.
            upload(put, "/api/policies/criteria/a_private_pick.rhai", b"fn resolve(input) { [] }", Own),
        ],
        ("DELETE", "/api/policies/{kind}/{file}") => {
            vec![upload(delete, "/api/policies/attributes/a_secret_tier.rhai", b"", Denied)]
        }
        ("GET", "/api/global-policies") => vec![attempt(get, "/api/global-policies", None, Denied)],
        ("PUT", "/api/global-policies/{kind}/{file}") => {
            vec![upload(put, "/api/global-policies/criteria/a_private_pick.rhai", b"fn resolve(input) { [] }", Denied)]
        }
        ("DELETE", "/api/global-policies/{kind}/{file}") => {
            vec![upload(delete, "/api/global-policies/criteria/role_match.rhai", b"", Denied)]
        }
        ("POST", "/api/policies/changes") => vec![
            // B's config may not name A's criterion, nor delete A's file.
            attempt(
                post.clone(),
                "/api/policies/changes",
                Some(json!({"files": [{"path": "tenant.toml", "content": b_config_using_a}], "dry_run": true})),
                Refused,
            ),
            attempt(
                post.clone(),
                "/api/policies/changes",
                Some(json!({"delete": ["attributes/a_secret_tier.rhai"]})),
                Refused,
            ),
        ],
        ("GET", "/api/policies/revisions") => vec![attempt(get, "/api/policies/revisions", None, Own)],
        ("GET", "/api/activities/{id}/decision-input") => per_activity("/decision-input", &get, None),
        ("POST", "/api/activities/{id}/preview") => per_activity("/preview", &post, Some(json!({}))),
        // B's file may not name A's criterion; B's fixtures are B's own.
        ("POST", "/api/policies/check") => vec![attempt(
            post.clone(),
            "/api/policies/check",
            Some(json!({"path": "tenant.toml", "content": b_config_using_a})),
            Own,
        )],
        ("POST", "/api/policies/tests") => vec![
            attempt(post.clone(), "/api/policies/tests", Some(json!({})), Own),
            attempt(
                post.clone(),
                "/api/policies/tests",
                Some(json!({"files": [{"path": "tenant.toml", "content": b_config_using_a}]})),
                Refused,
            ),
        ],
        ("POST", "/api/policies/replays") => vec![
            // B's candidate may not name A's criterion.
            attempt(
                post.clone(),
                "/api/policies/replays",
                Some(json!({"files": [{"path": "tenant.toml", "content": b_config_using_a}]})),
                Refused,
            ),
            attempt(post, "/api/policies/replays", Some(json!({})), Own),
        ],
        ("GET", "/api/policies/replays") => vec![attempt(get, "/api/policies/replays", None, Own)],
        ("GET", "/api/policies/replays/{id}") => {
            vec![attempt(get, format!("/api/policies/replays/{}", w.a_replay), None, Denied)]
        }
        ("DELETE", "/api/policies/replays/{id}") => {
            vec![attempt(delete, format!("/api/policies/replays/{}", w.a_replay), None, Denied)]
        }
        ("PUT", "/api/policies/shadow") => vec![attempt(
            put,
            "/api/policies/shadow",
            Some(json!({"files": [{"path": "tenant.toml", "content": b_config_using_a}]})),
            Refused,
        )],
        // B has no shadow set; A's stays A's.
        ("GET", "/api/policies/shadow") | ("DELETE", "/api/policies/shadow") => {
            vec![attempt(Method::from_bytes(method.as_bytes()).unwrap(), "/api/policies/shadow", None, Denied)]
        }
        ("POST", "/api/policies/shadow/promote") => {
            vec![attempt(post, "/api/policies/shadow/promote", None, Denied)]
        }
        // A's revisions 1 to 3 exist; B's number 1 and 2 are B's own, so only
        // A's third (which B lacks) must be a 404.
        ("GET", "/api/policies/revisions/{n}") => vec![attempt(get, "/api/policies/revisions/3", None, Denied)],
        ("POST", "/api/policies/revisions/{n}/restore") => {
            vec![attempt(post, "/api/policies/revisions/3/restore", Some(json!({"dry_run": true})), Denied)]
        }
        ("POST", "/api/global-policies/changes") => {
            vec![attempt(
                post,
                "/api/global-policies/changes",
                Some(json!({"delete": ["criteria/role_match.rhai"]})),
                Denied,
            )]
        }
        ("GET", "/api/global-policies/revisions") => vec![attempt(get, "/api/global-policies/revisions", None, Denied)],
        ("GET", "/api/global-policies/revisions/{n}") => {
            vec![attempt(get, "/api/global-policies/revisions/1", None, Denied)]
        }
        ("POST", "/api/global-policies/revisions/{n}/restore") => {
            vec![attempt(post, "/api/global-policies/revisions/1/restore", None, Denied)]
        }
        ("GET", "/api/dispatch-providers") | ("GET", "/api/dispatch-configs") => vec![attempt(get, template, None, Own)],
        ("GET", "/api/dispatch-providers/{id}/channel-definitions") => {
            let webhook = reten_host::dispatch::providers::provider_id(reten_host::domain::ProviderCode::Webhook);
            vec![attempt(get, format!("/api/dispatch-providers/{webhook}/channel-definitions"), None, Own)]
        }
        ("POST", "/api/dispatch-configs") => {
            let mock = reten_host::dispatch::providers::provider_id(reten_host::domain::ProviderCode::Mock);
            vec![attempt(post, template, Some(json!({"dispatch_provider_id": mock, "channel": "PUSH"})), Own)]
        }
        ("PATCH", "/api/dispatch-configs/{id}") => vec![attempt(
            patch,
            format!("/api/dispatch-configs/{}", w.a_config),
            Some(json!({"is_active": false})),
            Denied,
        )],
        ("DELETE", "/api/dispatch-configs/{id}") => {
            vec![attempt(delete, format!("/api/dispatch-configs/{}", w.a_config), None, Denied)]
        }
        ("POST", "/api/activities/tasks/{id}/dispatch") => {
            a_activities.iter().map(|id| attempt(post.clone(), format!("/api/activities/tasks/{id}/dispatch"), None, Denied)).collect()
        }
        ("PATCH", "/api/activities/{id}/retry-dispatch") => per_activity("/retry-dispatch", &patch, None),
        ("GET", "/api/activities/{id}/results") => per_activity("/results", &get, None),
        ("POST", "/api/activity-results/tasks") | ("POST", "/api/integration/activity-results/tasks") => a_activities
            .iter()
            .map(|id| {
                let body = json!({"activity_id": id, "commerce_external_id": "c-1", "occurred_at": "2025-01-16T15:30:00Z",
                                  "status": "COMPLETED", "task_result": {"result": "SALE_COMPLETED"}});
                attempt(post.clone(), template, Some(body), Denied)
            })
            .collect(),
        ("GET", "/api/integration/activities/tasks") | ("GET", "/api/integration/task-result-type-configs") => {
            vec![attempt(get, template, None, Own)]
        }
        ("GET", "/healthz") | ("GET", "/readyz") | ("GET", "/openapi.json") => vec![attempt(get, template, None, Own)],
        // Its content is audited by `metrics_show_a_tenant_nothing_of_another_tenant`.
        ("GET", "/metrics") => vec![Attempt { leak_checked: false, ..attempt(get, template, None, Own) }],
        _ => return None,
    })
}

/// Every id of tenant A in the database: each uuid column of each table
/// with a `tenant_id` (found in the catalogue, so new tables are covered),
/// except attribute key ids of global keys (UUID v5 of the key name, the
/// same for every tenant).
async fn ids_of(app: &TestApp, tenant: TenantId) -> BTreeSet<String> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c
         WHERE c.table_schema = 'public' AND c.data_type = 'uuid' AND c.column_name <> 'attribute_key_id'
           AND EXISTS (SELECT 1 FROM information_schema.columns t
                       WHERE t.table_schema = 'public' AND t.table_name = c.table_name AND t.column_name = 'tenant_id')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(columns.len() > 10, "the catalogue lists the tenant tables: {columns:?}");
    let mut ids = BTreeSet::new();
    for (table, column) in columns {
        let sql = format!("SELECT DISTINCT {column}::text FROM {table} WHERE tenant_id = $1 AND {column} IS NOT NULL");
        let found: Vec<String> = sqlx::query_scalar(&sql).bind(tenant.0).fetch_all(&app.pool).await.unwrap();
        ids.extend(found);
    }
    let custom_keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT attribute_key_id::text FROM activity_attributes WHERE tenant_id = $1 AND key = 'a_secret_tier'",
    )
    .bind(tenant.0)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    ids.extend(custom_keys);
    ids
}

/// A's rows, every table, as text: compared before and after.
async fn rows_of(app: &TestApp, tenant: TenantId) -> BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let sql = format!(
            "SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n' ORDER BY row_to_json(t)::text), '')
             FROM {table} t WHERE tenant_id = $1"
        );
        let rows: String = sqlx::query_scalar(&sql).bind(tenant.0).fetch_one(&app.pool).await.unwrap();
        out.insert(table, rows);
    }
    let tenant_row: String = sqlx::query_scalar("SELECT row_to_json(t)::text FROM tenants t WHERE id = $1")
        .bind(tenant.0)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    out.insert("tenants".into(), tenant_row);
    out
}

/// A's policy files, by path, with their sha256.
fn files_of(app: &TestApp, tenant: TenantId) -> BTreeMap<String, String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.insert(e.path().display().to_string(), sha(&std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&app.tenant_path(tenant, ""), &mut out);
    out
}

async fn send(app: &TestApp, who: &As, w: &World, a: &Attempt) -> (TestResponse, String) {
    let mut req = Request::builder().method(a.method.clone()).uri(&a.uri);
    let mut sent = a.uri.clone();
    match who {
        As::Token(tenant) => {
            req = req
                .header("authorization", format!("Bearer {}", admin_token(w.b)))
                .header("x-tenant-id", tenant.to_string());
            sent.push_str(&tenant.to_string());
        }
        As::Key(tenant) => {
            req = req.header("x-api-key", &w.b_key);
            if let Some(t) = tenant {
                req = req.header("x-tenant-id", t.to_string());
                sent.push_str(&t.to_string());
            }
        }
    }
    let body = match &a.body {
        Some(bytes) => {
            sent.push_str(&String::from_utf8_lossy(bytes));
            let ct = if a.json { "application/json" } else { "application/octet-stream" };
            req = req.header("content-type", ct);
            Body::from(bytes.clone())
        }
        None => Body::empty(),
    };
    (app.send(req.body(body).unwrap()).await, sent)
}

/// Builds the two tenants: A with its own policies, three activities (one
/// READY, one UNRESOLVED, one with a PENDING target) and an API key; B with
/// a pending activity of its own and an API key with every permission.
async fn world(app: &TestApp) -> World {
    let a = app.create_tenant("alpha-secret-tenant").await;
    let b = app.create_tenant("bravo").await;
    let admin_a = admin_token(a);
    let mut alpha = standard_commerce("c-1");
    alpha["name"] = json!("Alpha Secret Store");
    alpha["tax_id"] = json!("tax-alpha");
    alpha["global_external_id"] = json!("alpha-global");
    app.sync(a, json!([alpha])).await.assert_status(StatusCode::CREATED);
    app.sync(b, json!([standard_commerce("c-1")])).await.assert_status(StatusCode::CREATED);
    let (a_commerce, b_commerce) = (app.commerce_id(a, "c-1").await, app.commerce_id(b, "c-1").await);
    assert_ne!(a_commerce, b_commerce);

    // A's policies, through the admin API.
    for (uri, bytes) in [
        ("/api/policies/criteria/a_private_pick.rhai", A_CRITERION.to_owned()),
        ("/api/policies/attributes/a_secret_tier.rhai", A_ATTRIBUTE.to_owned()),
        (
            "/api/policies/config/tenant.toml",
            format!(
                "{MANUAL_EMAIL}\n[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\npriority = 1\n\
                 [[target_resolution.criteria]]\ntype = \"A_PRIVATE_PICK\"\n\n\
                 [attribute_keys.a_secret_tier]\nlabel = \"Alpha's secret tier\"\n\n\
                 [attributes.a_secret_tier]\nstrategy = \"UPFRONT\"\n"
            ),
        ),
    ] {
        app.send_bytes(Method::PUT, uri, &admin_a, Some(a), bytes.into_bytes())
            .await
            .assert_status(StatusCode::CREATED);
    }
    app.send_bytes(Method::PUT, "/api/policies/config/tenant.toml", &admin_token(b), Some(b), MANUAL_EMAIL.into())
        .await
        .assert_status(StatusCode::CREATED);

    let create = |tenant: TenantId, body: Value| async move {
        let res = app.create_activity(tenant, &body).await;
        res.assert_status(StatusCode::CREATED);
        res.body
    };
    let mut ready = create_for(a_commerce, "alpha-ready");
    ready["attribute_keys"] = json!(["commerce_info", "a_secret_tier"]);
    let ready = create(a, ready).await;
    assert_eq!(ready["status"], "READY", "{ready}");
    let mut unresolved = create_for(a_commerce, "alpha-unresolved");
    unresolved["reason"] = json!("fail");
    unresolved["attribute_keys"] = json!(["a_secret_tier"]);
    let unresolved = create(a, unresolved).await;
    assert_eq!(unresolved["status"], "UNRESOLVED", "{unresolved}");
    let mut pending = create_for(a_commerce, "alpha-pending");
    pending["channel"] = json!("EMAIL");
    let pending = create(a, pending).await;
    assert_eq!(pending["targetUsers"][0]["resolutionStatus"], "PENDING", "{pending}");
    let mut b_pending = create_for(b_commerce, "bravo-pending");
    b_pending["channel"] = json!("EMAIL");
    let b_pending = create(b, b_pending).await;
    assert_eq!(b_pending["targetUsers"][0]["resolutionStatus"], "PENDING", "{b_pending}");

    let key = |tenant: TenantId, permissions: Value| async move {
        let res = app.post(tenant, "/api/api-keys", &json!({"name": "audit", "permissions": permissions})).await;
        res.assert_status(StatusCode::CREATED);
        (res.body["id"].as_str().unwrap().to_owned(), res.body["plaintextKey"].as_str().unwrap().to_owned())
    };
    let (a_key_id, a_key) = key(a, json!(["VIEW_ACTIVITIES"])).await;
    let every = json!([
        "CREATE_ACTIVITY",
        "VIEW_ACTIVITIES",
        "CANCEL_ACTIVITY",
        "MANAGE_ACTIVITY_CONFIG",
        "MANAGE_COMMERCES",
        "SYNC_COMMERCES",
        "MANAGE_API_KEYS",
        "DISPATCH_ACTIVITY",
        "SUBMIT_ACTIVITY_RESULT"
    ]);
    let (_, b_key) = key(b, every).await;
    let mock = json!({"dispatch_provider_id": reten_host::dispatch::providers::provider_id(
        reten_host::domain::ProviderCode::Mock), "channel": "SMS"});
    let a_config = app.post(a, "/api/dispatch-configs", &mock).await;
    a_config.assert_status(StatusCode::CREATED);
    // A replay and a shadow set of A's own.
    let a_replay = app.post(a, "/api/policies/replays", &json!({"message": "alpha's replay"})).await;
    a_replay.assert_status(StatusCode::ACCEPTED);
    let a_shadow = app
        .call(Method::PUT, "/api/policies/shadow", Some(&admin_a), Some(a), Some(&json!({"message": "alpha's shadow"})))
        .await;
    a_shadow.assert_status(StatusCode::OK);

    let id = |v: &Value| v.as_str().unwrap().to_owned();
    World {
        a,
        b,
        a_commerce,
        a_user: app.user_id(a, a_commerce, "u-maria").await,
        a_ready: id(&ready["id"]),
        a_unresolved: id(&unresolved["id"]),
        a_pending: id(&pending["id"]),
        a_pending_target: id(&pending["targetUsers"][0]["id"]),
        a_ready_target: id(&ready["targetUsers"][0]["id"]),
        a_key_id,
        a_key,
        a_config: id(&a_config.body["id"]),
        a_replay: id(&a_replay.body["id"]),
        b_commerce,
        b_user: app.user_id(b, b_commerce, "u-maria").await,
        b_pending: id(&b_pending["id"]),
        b_pending_target: id(&b_pending["targetUsers"][0]["id"]),
        b_key,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn tenant_b_can_neither_see_nor_touch_anything_of_tenant_a_on_any_route(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let w = world(&app).await;

    // What must never reach B: A's ids, and the names only A uses.
    let mut secrets: BTreeSet<String> = ids_of(&app, w.a).await;
    assert!(secrets.contains(&w.a_ready) && secrets.contains(&w.a_user) && secrets.contains(&w.a_key_id));
    assert!(secrets.contains(&w.a.to_string()) && secrets.contains(&w.a_commerce.to_string()));
    let a_key_prefix: String = sqlx::query_scalar("SELECT key_prefix FROM api_keys WHERE tenant_id = $1")
        .bind(w.a.0)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    secrets.extend(
        [
            a_key_prefix.as_str(),
            &w.a_key,
            "alpha-secret-tenant",
            "Alpha Secret Store",
            "tax-alpha",
            "alpha-global",
            "ALPHA-GOLD",
            "a_secret_tier",
            "Alpha's secret tier",
            "A_PRIVATE_PICK",
            "alpha-ready",
            "alpha-unresolved",
            "alpha-pending",
            &sha(A_CRITERION.as_bytes()),
            &sha(A_ATTRIBUTE.as_bytes()),
        ]
        .map(str::to_owned),
    );
    let rows_before = rows_of(&app, w.a).await;
    let files_before = files_of(&app, w.a);
    let a_criterion = app.criterion_version(w.a, "A_PRIVATE_PICK");
    assert_eq!(a_criterion, Some(sha(A_CRITERION.as_bytes())));

    // Every route of the document, each method.
    let doc = serde_json::to_value(reten_host::api::openapi()).unwrap();
    let mut routes: Vec<(String, String, bool)> = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                continue;
            }
            let tenant_route = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "x-tenant-id" && p["in"] == "header"));
            routes.push((method.to_uppercase(), template.clone(), tenant_route));
        }
    }
    assert!(routes.len() >= 30, "the document lists the routes: {routes:?}");
    let uncovered: Vec<String> =
        routes.iter().filter(|(m, t, _)| attempts(&w, m, t).is_none()).map(|(m, t, _)| format!("{m} {t}")).collect();
    assert!(uncovered.is_empty(), "routes without an isolation case (add them to `attempts`): {uncovered:?}");

    let mut failures = Vec::new();
    let mut calls = 0;
    for (method, template, tenant_route) in &routes {
        for a in attempts(&w, method, template).unwrap() {
            let ways = [
                (As::Token(w.b), a.expect, "B's token, B's header"),
                // Naming A in the header is refused outright on every tenant route.
                (As::Token(w.a), if *tenant_route { Expect::Denied } else { a.expect }, "B's token, A's header"),
                (As::Key(None), a.expect, "B's API key"),
                (As::Key(Some(w.a)), if *tenant_route { Expect::Denied } else { a.expect }, "B's API key, A's header"),
            ];
            for (who, expect, how) in ways {
                let (res, sent) = send(&app, &who, &w, &a).await;
                calls += 1;
                let what = format!("{} {} as {how} ({template})", a.method, a.uri);
                let naming_a = matches!(who, As::Token(t) if t == w.a) || matches!(who, As::Key(Some(_)));
                let ok = match expect {
                    Expect::Denied if naming_a && *tenant_route => res.status == StatusCode::FORBIDDEN,
                    Expect::Denied => matches!(res.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
                    Expect::Refused => res.status.is_client_error(),
                    Expect::Own => res.status.as_u16() < 500,
                };
                if !ok {
                    failures.push(format!("{what}: expected {expect:?}, got {} {}", res.status, res.body));
                }
                if !a.leak_checked {
                    continue;
                }
                let body = res.body.to_string();
                let leaked: Vec<&String> =
                    secrets.iter().filter(|s| body.contains(s.as_str()) && !sent.contains(s.as_str())).collect();
                if !leaked.is_empty() {
                    failures.push(format!("{what}: the answer holds A's {leaked:?}: {}", truncate(&body)));
                }
            }
        }
    }
    assert!(calls > 150, "{calls} calls");
    assert!(failures.is_empty(), "{} isolation failure(s):\n{}", failures.len(), failures.join("\n"));

    // A is exactly as it was: rows, files, serving policies, and its key.
    let rows_after = rows_of(&app, w.a).await;
    for (table, before) in &rows_before {
        assert_eq!(&rows_after[table], before, "A's rows in {table} changed");
    }
    assert_eq!(files_of(&app, w.a), files_before, "A's policy files changed");
    assert_eq!(app.criterion_version(w.a, "A_PRIVATE_PICK"), a_criterion);
    let res =
        app.send(Request::get("/api/activities").header("x-api-key", &w.a_key).body(Body::empty()).unwrap()).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["meta"]["total"], 3, "A's key still works and sees A's three activities");
    // And B's writes landed in B's own space.
    assert!(app.tenant_path(w.b, "criteria/a_private_pick.rhai").exists());
    let b_stores = app.get(w.b, "/api/commerces?external_id=c-1").await;
    assert_eq!(b_stores.body["data"][0]["name"], "B's store, same external id");
}

fn truncate(s: &str) -> String {
    if s.len() > 600 { format!("{}…", &s[..s.floor_char_boundary(600)]) } else { s.to_owned() }
}

/// `GET /metrics` answers anyone (no credentials), so it must not name a
/// tenant or a tenant's policies: otherwise any tenant (or anyone who can
/// reach the port) learns every other tenant's id, the names of its
/// policies and how often they run.
#[sqlx::test(migrations = "../migrations")]
async fn metrics_show_a_tenant_nothing_of_another_tenant(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let w = world(&app).await;
    let secrets = [w.a.to_string(), "a_private_pick".to_owned(), "a_secret_tier".to_owned(), w.a_commerce.to_string()];
    for (name, token, tenant) in [("B's token", Some(admin_token(w.b)), Some(w.b)), ("no credentials", None, None)] {
        let res = app.call(Method::GET, "/metrics", token.as_deref(), tenant, None).await;
        let body = res.body.to_string();
        let leaked: Vec<&String> = secrets.iter().filter(|s| body.contains(s.as_str())).collect();
        assert!(leaked.is_empty(), "GET /metrics as {name} ({}) names tenant A's {leaked:?}", res.status);
    }
}
